"""Times detkit's detectors against torchvision's with the same weights, on
the same 480x640 input, in one process.

    python benchmarks/models.py [--threads 2] [--repeats 7]

For each model: per-image inference (eval mode, no grad) and one training
step (forward, loss, backward, SGD step), median of alternating runs.

SSD is timed with channels_last=True, which runs the convolutions in
oneDNN's faster layout and changes results by rounding only; the R-CNNs run
in the default NCHW layout, where detkit's detections are bit-identical to
torchvision's. The check before timing: the same labels, scores within 1e-4,
boxes within 1e-2 px (channels-last rounding, scaled by box sizes), masks
within 1e-4, losses within 1e-3 relative (FC-layer GEMM rounding on random
weights). It exits 1 otherwise. Random weights saturate some objectness
scores to exactly equal values, and detkit's NMS orders such ties otherwise
than torchvision's: the same training proposals in another order, so the
sampler draws other boxes. With the default model list the seed gives no
such tie in the sampled boxes; `--models fasterrcnn_resnet50_fpn` alone
(another draw of weights) does, and reports a loss_classifier difference;
the inference detections, sorted by class score, are unaffected.

Roofline columns: the FLOPs of one inference per image (torch's
FlopCounterMode on one eval forward of detkit's model: convolutions and
matrix products, a multiply-add counting 2, where torchvision's model tables
count 1; RoI pooling, NMS and elementwise ops are not counted), the
GFLOP/s detkit achieves (FLOPs / its median inference time), and that as a
fraction of this machine's fp32 GEMM peak (detkit.runtimes.machine.gemm_gflops(),
measured in the same run with the same threads).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from detkit import models
from detkit.runtimes import machine


def _torchvision_rcnn(kind):
    """torchvision's R50-FPN model laid out as its published weights are (FrozenBatchNorm)."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    body = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    return (MaskRCNN if kind == "mask" else FasterRCNN)(_resnet_fpn_extractor(body, 5), num_classes=91)


# name -> (torchvision builder, detkit build options). SSD runs channels-last (faster here);
# the R-CNNs run NCHW: channels-last makes ResNet-50-FPN slower on this CPU.
MODELS = {
    "ssd300_vgg16": (lambda: torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None),
                     {"channels_last": True}),
    "fasterrcnn_resnet50_fpn": (lambda: _torchvision_rcnn("box"), {}),
    "maskrcnn_resnet50_fpn": (lambda: _torchvision_rcnn("mask"), {}),
}


def same_detections(ours, theirs) -> bool:
    for a, b in zip(ours, theirs):
        if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
            return False
        if len(a["boxes"]) and ((a["boxes"] - b["boxes"]).abs().max() > 1e-2
                                or (a["scores"] - b["scores"]).abs().max() > 1e-4):
            return False
        if "masks" in b and len(b["masks"]) and (a["masks"] - b["masks"]).abs().max() > 1e-4:
            return False
    return True


def same_losses(ours, theirs) -> bool:
    values = {k: (float(ours[k].detach()), float(theirs[k].detach())) for k in theirs}
    return all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in values.values())


def inference_flops(model, images) -> float:
    """FLOPs per image of one eval forward of `model`, as FlopCounterMode counts them."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images)
    return counter.get_total_flops() / len(images)


def train_step(model, images, targets):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def step():
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return step


def alternate(fn_ours, fn_theirs, repeats: int) -> tuple[float, float]:
    fn_ours(), fn_theirs()  # warm up
    ours, theirs = [], []
    for _ in range(repeats):
        for fn, times in ((fn_theirs, theirs), (fn_ours, ours)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(theirs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=list(MODELS), help=f"subset of {list(MODELS)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = [torch.rand(3, 480, 640)]
    masks = torch.zeros(2, 480, 640, dtype=torch.uint8)
    masks[0, 20:300, 10:200] = 1
    masks[1, 100:400, 300:500] = 1
    targets = [{"boxes": torch.tensor([[10.0, 20, 200, 300], [300, 100, 500, 400]]), "labels": torch.tensor([3, 17]),
                "masks": masks}]
    peak = machine.gemm_gflops()
    print(f"detkit vs torchvision {torchvision.__version__}, CPU, {args.threads} threads, one 480x640 image; "
          f"fp32 GEMM peak ({machine.GEMM_SIZE}x{machine.GEMM_SIZE} torch.mm) {peak:.1f} GFLOP/s\n")
    print("| model | inference detkit ms | torchvision ms | ratio | GFLOP/img | detkit GFLOP/s | of GEMM peak "
          "| train step detkit ms | torchvision ms | ratio | outputs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for name in args.models:
        torchvision_builder, options = MODELS[name]
        theirs = torchvision_builder()
        ours = models.build(name, **options)
        ours.load_state_dict(theirs.state_dict())
        ours.eval(), theirs.eval()
        with torch.no_grad():
            same = same_detections(ours(images), theirs(images))
        flops = inference_flops(ours, images)
        with torch.no_grad():
            infer = alternate(lambda: ours(images), lambda: theirs(images), args.repeats)
        ours.train(), theirs.train()
        torch.manual_seed(1)
        ours_losses = ours(images, targets)
        torch.manual_seed(1)
        same &= same_losses(ours_losses, theirs(images, [dict(t) for t in targets]))
        train = alternate(train_step(ours, images, targets), train_step(theirs, images, targets), args.repeats)
        ok &= same
        achieved = flops / infer[0] / 1e9
        print(f"| {name} | {infer[0] * 1e3:.0f} | {infer[1] * 1e3:.0f} | {infer[0] / infer[1]:.2f}x "
              f"| {flops / 1e9:.1f} | {achieved:.1f} | {achieved / peak:.0%} "
              f"| {train[0] * 1e3:.0f} | {train[1] * 1e3:.0f} | {train[0] / train[1]:.2f}x "
              f"| {'equal' if same else 'DIFFER'} |")
    print("\nratio = detkit time / torchvision time (lower is faster); GFLOP/img: convolutions and matrix "
          "products of one inference; detkit GFLOP/s = GFLOP/img / detkit's median inference time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
