"""What the training options buy on the Shapes configs: bfloat16 autocast
(solver.amp) against float32, and the weights' moving average
(solver.ema_decay) against the trained weights, scored on the held-out
Shapes set (seed 7, 500 images) that nothing was tuned on.

    python benchmarks/training.py configs/ssd_shapes.py --amp False bf16 --seeds 0 1 2
    python benchmarks/training.py configs/fasterrcnn_shapes.py --amp bf16 --seeds 0 1 2 --ema 0.998 --ema-tau 200

Each (amp, seed) pair is one `tools/train.py` run, from the config as it is
plus the overrides, timed from start to end (Shapes generation aside: the set
is made once before the first run). With --ema every run keeps the moving
average; the EMA does not feed back into training, so the trained weights of
the same run are exactly those of a run without it (tests/engine/test_ema.py
checks that), and both are scored: a paired comparison at the same budget.
The machine's fp32 and bf16 GEMM GFLOP/s are printed before and after.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a Shapes config, e.g. configs/ssd_shapes.py")
    parser.add_argument("--amp", nargs="+", default=["False", "bf16"], help="solver.amp values (default: False bf16)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--ema", type=float, default=0.0, help="solver.ema_decay for every run (0: off)")
    parser.add_argument("--ema-tau", type=float, default=200.0, help="solver.ema_tau (default: %(default)s)")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "work_dirs", "training_bench"))
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="more config overrides")
    return parser.parse_args(argv)


def gemm_line() -> str:
    import torch

    from detkit.runtimes.machine import gemm_gflops

    gemm_gflops.cache_clear()
    fp32 = gemm_gflops()
    bf16 = gemm_gflops(dtype=torch.bfloat16)
    return f"GEMM fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s ({torch.get_num_threads()} threads)"


def train_once(config: str, work_dir: str, overrides: list[str]) -> float:
    """Runs tools/train.py; returns its wall time in seconds."""
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), config, "--work-dir", work_dir,
               "--no-progress", "--set", *overrides]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    print(done.stdout.strip().splitlines()[-3:], flush=True)
    return seconds


def trained_weights_copy(checkpoint: str) -> str:
    """A copy of an EMA run's checkpoint whose "model" is the trained weights."""
    from detkit.engine import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    state["model"] = state.pop("train_weights")
    state.pop("ema_updates")
    path = checkpoint.replace(".pth", "_trained_weights.pth")
    save_checkpoint(path, {k: v for k, v in state.items() if k not in ("format", "version")})
    return path


def held_out(checkpoint: str) -> dict[str, dict[str, float]]:
    from benchmarks.heldout import HELD_OUT_SEED, score

    return score(checkpoint, os.path.join(REPO, "datasets", "shapes_heldout"), 500, HELD_OUT_SEED)


def main(argv=None) -> int:
    args = parse_args(argv)
    name = os.path.splitext(os.path.basename(args.config))[0]
    print(f"before: {gemm_line()}", flush=True)
    rows = []
    for amp in args.amp:
        for seed in args.seeds:
            work_dir = os.path.join(args.work_dir, f"{name}_amp-{amp}_seed{seed}")
            overrides = [f"seed={seed}", f"solver.amp={amp}", f"solver.ema_decay={args.ema}",
                         f"solver.ema_tau={args.ema_tau}", *args.overrides]
            seconds = train_once(args.config, work_dir, overrides)
            last = os.path.join(work_dir, "last.pth")
            scores = {"trained": held_out(trained_weights_copy(last) if args.ema else last)}
            if args.ema:
                scores["ema"] = held_out(last)
            rows.append((amp, seed, seconds, scores))
            print(f"{name} amp={amp} seed={seed}: {seconds / 60:.1f} min, held-out "
                  + ", ".join(f"{k} box AP50 {v['bbox']['AP50']:.3f}" for k, v in scores.items()), flush=True)
    print(f"after: {gemm_line()}")
    kinds = list(rows[0][3])
    iou_types = list(rows[0][3]["trained"])
    header = " | ".join(f"{kind} {iou} AP50 / AP" for kind in kinds for iou in iou_types)
    print(f"\n| config | amp | seed | wall | {header} |\n|---|---|---:|---:|" + "---:|" * (len(kinds) * len(iou_types)))
    for amp, seed, seconds, scores in rows:
        minutes, rest = divmod(round(seconds), 60)
        cells = " | ".join(f"{scores[kind][iou]['AP50']:.3f} / {scores[kind][iou]['AP']:.3f}"
                           for kind in kinds for iou in iou_types)
        print(f"| {name} | {amp} | {seed} | {minutes} min {rest:02d} s | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
