"""Train a detector from a config.

    python tools/train.py                                  # the Shapes demo (configs/ssd_shapes.py)
    python tools/train.py configs/maskrcnn_shapes.py --work-dir work_dirs/mr
    python tools/train.py configs/ssd300_vgg16_voc.py --set data.root=/data/VOCdevkit solver.lr=0.002
    python tools/train.py configs/ssd_shapes.py --resume   # continue from work_dirs/ssd_shapes/last.pth
    torchrun --nproc_per_node=2 tools/train.py configs/ssd_shapes.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from _common import DEFAULT_CONFIG, fail_cleanly, load_tool_config  # tools/ is on sys.path when run as a script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="a configs/*.py file (default: %(default)s)")
    parser.add_argument("--work-dir", help="output folder (default: work_dirs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from <work dir>/last.pth")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: this rank's GPU if any, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.engine import distributed as dist
    from detkit.engine.launch import RankFailedError, launch

    config = load_tool_config(args.config, args.set)
    work_dir = args.work_dir or os.path.join("work_dirs", config.name)
    on_cpu = dist.local_device(args.device).type == "cpu"
    processes = config.processes if on_cpu else 1  # local ranks share CPU cores; GPUs take torchrun
    start = time.perf_counter()
    try:
        launch(run, processes, config, work_dir, args)
    except RankFailedError as exc:
        if os.environ.get("DETKIT_TRACEBACK") and exc.traceback:
            print(exc.traceback, file=sys.stderr)
        last = os.path.join(work_dir, "last.pth")
        hint = f"; --resume continues from {last}" if os.path.exists(last) else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":  # torchrun starts one of these per rank
        print(wall_time_line(time.perf_counter() - start, on_cpu))
    return 0


def wall_time_line(seconds: float, on_cpu: bool) -> str:
    """The run's wall time, with this machine's measured CPU speed beside it
    (machines differ: one 2-core box trains the default config 1.7x slower)."""
    minutes, rest = divmod(round(seconds), 60)
    line = f"wall time {minutes} min {rest:02d} s"
    if on_cpu:
        from detkit.runtimes.machine import gemm_gflops

        line += f" on this CPU: fp32 GEMM {gemm_gflops():.0f} GFLOP/s (1024x1024 torch.mm, {_threads()} threads)"
    return line


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def run(config, work_dir: str, args: argparse.Namespace) -> None:
    """One rank's training (the whole run outside DDP); errors print one line
    and exit 1, in spawned ranks too."""
    code = fail_cleanly(lambda: _train(config, work_dir, args))
    if code:
        sys.exit(code)


def _train(config, work_dir: str, args: argparse.Namespace) -> int:
    from detkit.engine import distributed as dist
    from detkit.engine import train

    try:
        state = train(config, work_dir, resume=args.resume, device=args.device, progress=not args.no_progress)
        main_rank = dist.is_main_process()
    finally:
        dist.cleanup()
    if main_rank and state.last_metrics:
        key = config.eval.key
        stopped = f" of {config.schedule.epochs}, stopped early (eval.patience)" if state.stopped else ""
        print(f"{config.name}: {key} {state.last_metrics.get(key, float('nan')):.4f} on the validation split "
              f"after {state.epoch} epochs{stopped} (best {state.best:.4f}); outputs in {work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(fail_cleanly(main))
