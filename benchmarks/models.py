"""Times detkit's detectors against torchvision's with the same weights, on
the same 480x640 input, in one process.

    python benchmarks/models.py [--threads 2] [--repeats 7]

For each model: per-image inference (eval mode, no grad) and one training
step (forward, loss, backward, SGD step), median of alternating runs.

Each peer runs in its best configuration on this CPU: SSD channels-last on
both sides (detkit's channels_last=True; torchvision's model and input
converted with `.to(memory_format=torch.channels_last)`, the one call a
torchvision user makes), the R-CNNs in NCHW on both sides (channels-last
makes ResNet-50-FPN slower here). The check before timing: the R-CNNs'
detections must be bit-identical (torch.equal boxes, scores, labels, masks);
SSD's the same labels, scores within 1e-4 and boxes within 1e-2 px (the two
channels-last graphs may round differently; the "bit-identical" column says
whether they did); losses within 1e-3 relative (FC-layer GEMM rounding on
random weights). It exits 1 otherwise. Every model is built right after
torch.manual_seed(0), so a model's weights, and its result, are the same
whether it runs alone (`--models NAME`) or in the list.

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
import sys

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


# name -> (torchvision builder, detkit build options, both run channels-last, detections must be bit-identical).
# SSD runs channels-last on both sides (faster here); the R-CNNs NCHW (channels-last is slower for R50-FPN).
MODELS = {
    "ssd300_vgg16": (lambda: torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None),
                     {"channels_last": True}, True, False),
    "fasterrcnn_resnet50_fpn": (lambda: _torchvision_rcnn("box"), {}, False, True),
    "maskrcnn_resnet50_fpn": (lambda: _torchvision_rcnn("mask"), {}, False, True),
}


class ChannelsLast(torch.nn.Module):
    """torchvision's detector with its weights and its input images in channels-last."""

    def __init__(self, model):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, images, targets=None):
        images = [image.unsqueeze(0).to(memory_format=torch.channels_last).squeeze(0) for image in images]
        return self.model(images, targets)


def bit_identical(ours, theirs) -> bool:
    return all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b) for a, b in zip(ours, theirs))


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
    """Median seconds of (ours, theirs), called in turn (theirs first) after one warm-up round."""
    medians = machine.alternated_medians({"theirs": fn_theirs, "ours": fn_ours}, repeats)
    return medians["ours"], medians["theirs"]


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
    print("| model | layout | inference detkit ms | torchvision ms | ratio | GFLOP/img | detkit GFLOP/s | of GEMM peak "
          "| train step detkit ms | torchvision ms | ratio | outputs | bit-identical |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    ok = True
    for name in args.models:
        torchvision_builder, options, channels_last, exact = MODELS[name]
        torch.manual_seed(0)  # the same weights alone or in the list
        theirs = torchvision_builder()
        ours = models.build(name, **options)
        ours.load_state_dict(theirs.state_dict())
        theirs = ChannelsLast(theirs) if channels_last else theirs
        ours.eval(), theirs.eval()
        with torch.no_grad():
            ours_out, theirs_out = ours(images), theirs(images)
        identical = bit_identical(ours_out, theirs_out)
        same = identical if exact else same_detections(ours_out, theirs_out)
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
        print(f"| {name} | {'channels-last' if channels_last else 'NCHW'} | {infer[0] * 1e3:.0f} | "
              f"{infer[1] * 1e3:.0f} | {infer[0] / infer[1]:.2f}x "
              f"| {flops / 1e9:.1f} | {achieved:.1f} | {achieved / peak:.0%} "
              f"| {train[0] * 1e3:.0f} | {train[1] * 1e3:.0f} | {train[0] / train[1]:.2f}x "
              f"| {'equal' if same else 'DIFFER'} | {'yes' if identical else 'no'} |")
    print("\nratio = detkit time / torchvision time (lower is faster); GFLOP/img: convolutions and matrix "
          "products of one inference; detkit GFLOP/s = GFLOP/img / detkit's median inference time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
