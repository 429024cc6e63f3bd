"""Where bfloat16 autocast can and cannot speed a training step up: one
step of each Shapes config's model, float32 against bfloat16 autocast,
alternating in one process on the same batch, one thread (as each of the
configs' two DDP ranks runs), and the share of the float32 step that the
convolutions and matrix products take (the only work autocast moves to
bfloat16).

    python benchmarks/amp_step.py [--repeats 15] [--configs ssd_shapes fasterrcnn_shapes maskrcnn_shapes]

Amdahl's law bounds the step's speed-up by 1 / (1 - share + share / g),
with g the speed-up of the dense ops themselves; the table prints the bound
for g = the bf16 / fp32 GEMM ratio measured here. The machine's fp32 and
bf16 GEMM GFLOP/s (one thread) are printed beside the times.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DENSE_OPS = ("convolution", "conv2d", "mkldnn_convolution", "linear", "addmm", "mm", "bmm", "matmul")


def batch(config_name: str, root: str):
    """(model in train mode with the trainer's layout, images, targets) of a config's first training batch."""
    from detkit.config import load_config
    from detkit.data import collate
    from detkit.engine.build import build_datasets, build_model
    from detkit.engine.evaluate import loss_target
    from detkit.engine.precision import single_pixel_convolutions_at_stride_one

    config = load_config(os.path.join(REPO, "configs", f"{config_name}.py"))
    splits = build_datasets(config)
    torch.manual_seed(0)
    model = build_model(config.model, len(splits.classes) + 1).train()
    if hasattr(model, "convert_weights_layout"):
        model.convert_weights_layout()
    single_pixel_convolutions_at_stride_one(model)  # as the trainer does under bf16; exact in float32 too
    images, targets = collate([splits.train[i] for i in range(config.data.batch_size)])
    return model, list(images), [loss_target(t, torch.device("cpu")) for t in targets]


def step_fn(model, images, targets, dtype):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: every call sees the same weights

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    return step


def dense_share(step) -> float:
    """The share of one step's self CPU time spent in convolutions and matrix products."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    dense = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in DENSE_OPS))
    return dense / total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--configs", nargs="+", default=["ssd_shapes", "fasterrcnn_shapes", "maskrcnn_shapes"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from detkit.runtimes.machine import gemm_gflops

    fp32, bf16 = gemm_gflops(), gemm_gflops(dtype=torch.bfloat16)
    print(f"one thread; GEMM fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s (ratio {bf16 / fp32:.1f}x)\n")
    print("| config | fp32 step ms | bf16 step ms | speed-up | dense ops' share of the fp32 step | Amdahl bound |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.configs:
        model, images, targets = batch(name, os.path.join(REPO, "datasets", "shapes"))
        steps = {"fp32": step_fn(model, images, targets, None), "bf16": step_fn(model, images, targets, torch.bfloat16)}
        for fn in steps.values():
            fn()  # warm-up
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for key, fn in steps.items():
                started = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - started)
        median = {k: statistics.median(v) for k, v in times.items()}
        share = dense_share(steps["fp32"])
        bound = 1 / (1 - share + share / (bf16 / fp32))
        print(f"| {name} | {median['fp32'] * 1e3:.0f} | {median['bf16'] * 1e3:.0f} | "
              f"{median['fp32'] / median['bf16']:.2f}x | {share:.0%} | {bound:.2f}x |", flush=True)
    print(f"\nafter: GEMM fp32 {gemm_gflops.__wrapped__():.0f} GFLOP/s, bf16 "
          f"{gemm_gflops.__wrapped__(dtype=torch.bfloat16):.0f} GFLOP/s (one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
