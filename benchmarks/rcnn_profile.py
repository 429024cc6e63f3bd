"""Where an R-CNN training step spends its time on the CPU: the forward time
of each part (backbone+FPN, RPN, RoI sampling, RoIAlign, box head, mask head),
the backward and optimizer, and the operators that dominate, for a Shapes
config's model on a real Shapes batch, one thread (as each DDP rank runs).

    python benchmarks/rcnn_profile.py                               # configs/maskrcnn_shapes.py
    python benchmarks/rcnn_profile.py configs/fasterrcnn_shapes.py --threads 2
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detkit.runtimes.machine import gemm_gflops  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=os.path.join(REPO, "configs", "maskrcnn_shapes.py"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    return parser.parse_args(argv)


ROI_HEADS = "RoI heads: sampling, box loss, mask targets"
INSIDE_ROI_HEADS = ("RoIAlign (box)", "box head + predictor", "RoIAlign (mask)", "mask head + predictor")


def parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The timed parts, by name. The RoI heads' own time, minus the parts
    inside them, is the sampling and losses."""
    heads = model.roi_heads
    named = {"backbone + FPN": [model.backbone], "RPN (head, anchors, targets, proposals)": [model.rpn],
             "RoIAlign (box)": [heads.box_roi_pool], "box head + predictor": [heads.box_head, heads.box_predictor],
             ROI_HEADS: [heads]}
    if heads.mask_head is not None:
        named["RoIAlign (mask)"] = [heads.mask_roi_pool]
        named["mask head + predictor"] = [heads.mask_head, heads.mask_predictor]
    return named


class ForwardTimer:
    """Wall time of each part's forward calls, summed per name, via hooks."""

    def __init__(self, model: nn.Module):
        self.seconds = collections.defaultdict(float)
        self._start = {}
        for name, modules in parts(model).items():
            for module in modules:
                module.register_forward_pre_hook(self._enter(name))
                module.register_forward_hook(self._leave(name))

    def _enter(self, name):
        def hook(module, args):
            self._start[name] = time.perf_counter()
        return hook

    def _leave(self, name):
        def hook(module, args, output):
            self.seconds[name] += time.perf_counter() - self._start.pop(name)
        return hook


def main(argv=None) -> int:
    args = parse_args(argv)
    from detkit.config import load_config
    from detkit.engine.build import build_datasets, build_model, build_optimizer
    from detkit.engine.trainer import _training_target

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(args.config)
    splits = build_datasets(config)
    model = build_model(config.model, len(splits.classes) + 1).train()
    optimizer = build_optimizer(config.solver, model)
    batch = config.data.batch_size
    batches = [[splits.train[i * batch + j] for j in range(batch)] for i in range(args.steps + 2)]
    timer = ForwardTimer(model)
    totals = collections.defaultdict(list)
    for step, samples in enumerate(batches):
        images = [image for image, _ in samples]
        targets = [_training_target(target, torch.device("cpu")) for _, target in samples]
        timer.seconds.clear()
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        forward = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        if step < 2:  # warm-up: numba cache loads, allocator
            continue
        seconds = dict(timer.seconds)
        seconds[ROI_HEADS] -= sum(seconds.get(name, 0.0) for name in INSIDE_ROI_HEADS)
        seconds["(forward, the rest: transform, glue)"] = (forward - start) - sum(seconds.values())
        seconds["backward"] = backward - forward
        seconds["optimizer step"] = end - backward
        for name, value in seconds.items():
            totals[name].append(value)
    step_ms = sum(statistics.median(v) for v in totals.values()) * 1000
    print(f"{config.name}: {config.model.name}, batch {batch}, {args.threads} thread(s); "
          f"fp32 GEMM {gemm_gflops():.0f} GFLOP/s; median over {args.steps} steps\n")
    print("| part | ms | share |\n|---|---:|---:|")
    for name, values in totals.items():
        ms = statistics.median(values) * 1000
        print(f"| {name} | {ms:.1f} | {ms / step_ms:.0%} |")
    print(f"| step | {step_ms:.1f} | |\n")
    _operator_table(model, optimizer, batches[:3])
    return 0


def _operator_table(model, optimizer, batches, rows: int = 10) -> None:
    """Operators by self time over three steps, forward and backward together."""
    from torch.profiler import profile

    from detkit.engine.trainer import _training_target

    with profile() as prof:
        for samples in batches:
            targets = [_training_target(t, torch.device("cpu")) for _, t in samples]
            loss = sum(model([image for image, _ in samples], targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print("| operator (self time, 3 steps) | ms | share |\n|---|---:|---:|")
    for event in events[:rows]:
        print(f"| {event.key} | {event.self_cpu_time_total / 1000:.1f} | {event.self_cpu_time_total / total:.0%} |")


if __name__ == "__main__":
    sys.exit(main())
