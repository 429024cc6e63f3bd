"""Does starting from a trained detector beat starting from scratch? Measured
with the engine as users run it (tools/train.py, spawned ranks).

    python benchmarks/finetune.py [--pretrained CKPT] [--epochs 8] [--work-dir work_dirs/finetune_bench]

1. Pretrain: the default SSD (configs/ssd_shapes.py) on the "basic" Shapes
   preset (circle, square, triangle, hexagon, star), shortened to
   --pretrain-epochs, unless --pretrained names a checkpoint of it.
2. Fine-tune: configs/ssd_shapes_finetune.py, three shapes the model has never
   seen ("novel": ellipse, cross, ring), for --epochs epochs; the
   classification head starts anew (5 classes -> 3), the rest from step 1.
3. From scratch: the same config, data, iterations and seed with random
   weights, at the learning rate the default config tuned for training from
   scratch (6e-3; the fine-tune uses 2e-3); and once more with
   --scratch-epochs (5x as many), to see how long scratch takes to reach 0.8.

Prints, per run: the validation AP50 after each epoch, the iterations it took
to reach AP50 0.8, and the AP50/AP of its last checkpoint on a fresh "novel"
set generated with another seed that nothing was tuned on; wall times beside
the machine's fp32 GEMM GFLOP/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detkit.runtimes.machine import gemm_gflops  # noqa: E402

TARGET = 0.8
SCRATCH_LR = 6e-3  # configs/ssd_shapes.py's, tuned for training this model from scratch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", help="a checkpoint of configs/ssd_shapes.py (skips step 1)")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8, help="fine-tune and scratch epochs (default: %(default)s)")
    parser.add_argument("--scratch-epochs", type=int, default=40, help="the longer scratch run (default: %(default)s)")
    parser.add_argument("--work-dir", default=os.path.join("work_dirs", "finetune_bench"))
    parser.add_argument("--held-out", type=int, default=300, help="images in the fresh held-out set")
    return parser.parse_args(argv)


def train(config: str, work_dir: str, overrides: list[str]) -> float:
    """Runs tools/train.py from an empty work dir; returns the wall seconds."""
    if os.path.exists(os.path.join(work_dir, "last.pth")):
        raise SystemExit(f"{work_dir} holds an earlier run; remove it or pass another --work-dir")
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), os.path.join(REPO, "configs", config),
               "--work-dir", work_dir, "--no-progress", "--set", *overrides]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def curve(work_dir: str) -> list[dict]:
    """The evaluation records of a run, in order."""
    with open(os.path.join(work_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("type") == "eval"]


def held_out(checkpoint: str, images: str, ann: str, out: str) -> dict:
    from detkit import load_model
    from detkit.engine.report import evaluate_model

    evaluate_model(load_model(checkpoint, "cpu"), out, data="coco", images=images, ann=ann)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)["stats"]


def fresh_novel_set(root: str, count: int):
    """A "novel" Shapes set with seed 7: no config here uses that seed."""
    from detkit.config import load_config
    from detkit.engine.build import prepare_shapes

    data = load_config(os.path.join(REPO, "configs", "ssd_shapes_finetune.py"),
                       [f"data.root={root}", "data.shapes.seed=7", "data.shapes.num_train=1",
                        f"data.shapes.num_val={count}"]).data
    paths = prepare_shapes(data)
    return paths.image_root, paths.coco_val


def main(argv=None) -> int:
    args = parse_args(argv)
    work = os.path.abspath(args.work_dir)
    gflops = gemm_gflops()
    print(f"fp32 GEMM 1024x1024: {gflops:.1f} GFLOP/s")
    walls = {}
    pretrained = args.pretrained
    if pretrained is None:
        folder = os.path.join(work, "pretrain")
        walls["pretrain (basic)"] = train("ssd_shapes.py", folder, [f"schedule.epochs={args.pretrain_epochs}",
                                                                    f"eval.period={args.pretrain_epochs}"])
        pretrained = os.path.join(folder, "best.pth")
        print(f"pretrained on basic: AP50 {curve(folder)[-1]['AP50']:.3f} on its validation split")
    scratch = ["model.weights=None", f"solver.lr={SCRATCH_LR}"]
    runs = {"fine-tune": [f"model.weights={os.path.abspath(pretrained)}", f"schedule.epochs={args.epochs}"],
            "from scratch": [*scratch, f"schedule.epochs={args.epochs}"],
            "from scratch, longer": [*scratch, f"schedule.epochs={args.scratch_epochs}"]}
    images, ann = fresh_novel_set(os.path.join(work, "held_out"), args.held_out)
    rows = []
    for name, overrides in runs.items():
        folder = os.path.join(work, name.replace(",", "").replace(" ", "_"))
        walls[name] = train("ssd_shapes_finetune.py", folder, overrides)
        evals = curve(folder)
        reached = next((r["iteration"] for r in evals if r["AP50"] >= TARGET), None)
        stats = held_out(os.path.join(folder, "last.pth"), images, ann, os.path.join(folder, "held_out_eval"))
        rows.append((name, evals, reached, stats))
    print("\nvalidation AP50 (novel preset) after each epoch, as iteration: AP50")
    for name, evals, _, _ in rows:
        print(f"- {name}: " + ", ".join(f"{r['iteration']}: {r['AP50']:.3f}" for r in evals))
    print(f"\n| run | iterations | val AP50 | held-out AP50 | held-out AP | iterations to AP50 {TARGET} | wall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, evals, reached, stats in rows:
        print(f"| {name} | {evals[-1]['iteration']} | {evals[-1]['AP50']:.3f} | {stats['AP50']:.3f} | "
              f"{stats['AP']:.3f} | {reached if reached is not None else 'not reached'} | "
              f"{walls[name] / 60:.1f} min |")
    for name, seconds in walls.items():
        print(f"wall {name}: {seconds / 60:.1f} min at {gflops:.1f} GFLOP/s fp32 GEMM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
