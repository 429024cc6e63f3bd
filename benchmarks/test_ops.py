"""detkit.ops against torchvision on the same inputs, 2 threads.

    pytest benchmarks/test_ops.py --benchmark-only [-k nms]

Each case is a benchmark group of two tests, detkit and torchvision; their
outputs are checked equal before either is timed. Numba kernels' first call
(compile or cache load) is reported apart, at the end of the run.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection import anchor_utils as tv_anchors
from torchvision.models.detection.image_list import ImageList

from benchmarks.peers import Case
from detkit import ops
from detkit.data.synthetic import clustered_boxes, random_boxes

THREADS = 2


def exact(a, b) -> bool:
    return torch.equal(a, b)


def close(a, b) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def ssd300_anchors() -> tuple[ImageList, list, torch.Tensor]:
    images = ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)])
    feats = [torch.zeros(1, 1, g, g) for g in (38, 19, 10, 5, 3, 1)]
    gen = ops.DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]], steps=[8, 16, 32, 64, 100, 300])
    return images, feats, gen(images, feats)[0]


def torchvision_ssd_assign(anchors, gt_boxes, gt_labels):
    matches = tv_utils.SSDMatcher(0.5)(torchvision.ops.box_iou(gt_boxes, anchors))
    fg = matches >= 0
    labels = torch.zeros(len(anchors), dtype=torch.int64)
    labels[fg] = gt_labels[matches[fg]]
    targets = torch.zeros_like(anchors)
    targets[fg] = tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(gt_boxes[matches[fg]], anchors[fg])
    return targets, labels


def pair(name: str, ours, theirs, same=exact) -> Case:
    return Case(name, ours, {"torchvision": theirs}, same)


def cases() -> list[Case]:
    out = []
    for n in (5000, 20000):
        boxes, scores = clustered_boxes(n)
        out.append(pair(f"nms, {n:,} clustered boxes, IoU 0.5",
                        lambda b=boxes, s=scores: ops.nms(b, s, 0.5),
                        lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.5)))
    boxes, scores = clustered_boxes(20000)
    idxs = torch.randint(0, 80, (20000,), generator=torch.Generator().manual_seed(1))
    out.append(pair("batched_nms, 20,000 boxes, 80 classes",
                    lambda: ops.batched_nms(boxes, scores, idxs, 0.5),
                    lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)))
    a = random_boxes(2000, seed=1)
    out.append(pair("box_iou, 2000 x 2000", lambda: ops.box_iou(a, a), lambda: torchvision.ops.box_iou(a, a)))
    images, feats, anchors = ssd300_anchors()
    gt = random_boxes(20, size=250.0, max_side=120.0, seed=2)
    gt[:, 2:] += 4
    out.append(pair("box_iou, 8732 x 20", lambda: ops.box_iou(anchors, gt),
                    lambda: torchvision.ops.box_iou(anchors, gt)))
    gt10, labels10 = gt[:10], torch.arange(1, 11)
    out.append(pair("ssd_assign, 8732 anchors x 10 GT (vs box_iou + SSDMatcher + encode)",
                    lambda: ops.ssd_assign(anchors, gt10, labels10),
                    lambda: torchvision_ssd_assign(anchors, gt10, labels10),
                    lambda x, y: exact(x[1], y[1]) and close(x[0], y[0])))
    codes = torch.randn(8732, 4, generator=torch.Generator().manual_seed(3))
    coder, tv_coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    out.append(pair("BoxCoder.decode, 8732 boxes", lambda: coder.decode_single(codes, anchors),
                    lambda: tv_coder.decode_single(codes, anchors), close))
    out.append(pair("BoxCoder.encode, 8732 boxes", lambda: coder.encode_single(anchors.flip(0), anchors),
                    lambda: tv_coder.encode_single(anchors.flip(0), anchors), close))
    q = ops.box_iou(gt10, anchors)
    out.append(pair("Matcher(0.7, 0.3, low-quality), 10 x 8732", lambda: ops.Matcher(0.7, 0.3, True)(q),
                    lambda: tv_utils.Matcher(0.7, 0.3, True)(q)))
    ssd_args = dict(aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]], steps=[8, 16, 32, 64, 100, 300])
    ours_gen, tv_gen = ops.DefaultBoxGenerator(**ssd_args), tv_anchors.DefaultBoxGenerator(**ssd_args)

    def fresh_default_boxes():  # uncached: what one call costs before the cache helps
        ours_gen._cache.entries.clear()
        return ours_gen(images, feats)[0]

    out.append(pair("DefaultBoxGenerator SSD300, uncached", fresh_default_boxes,
                    lambda: tv_gen(images, feats)[0]))
    fpn = dict(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    fpn_images = ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1216)])
    fpn_feats = [torch.zeros(1, 1, 800 // s, 1216 // s) for s in (4, 8, 16, 32, 64)]
    ours_fpn, tv_fpn = ops.AnchorGenerator(**fpn), tv_anchors.AnchorGenerator(**fpn)

    def fresh_fpn_anchors():
        ours_fpn._cache.entries.clear()
        return ours_fpn(fpn_images, fpn_feats)[0]

    out.append(pair("AnchorGenerator FPN 800x1216, uncached", fresh_fpn_anchors,
                    lambda: tv_fpn(fpn_images, fpn_feats)[0]))
    out.append(pair("AnchorGenerator FPN 800x1216, cached", lambda: ours_fpn(fpn_images, fpn_feats)[0],
                    lambda: tv_fpn(fpn_images, fpn_feats)[0]))
    out.append(roi_align_backward_case())
    out.extend(roi_align_inference_cases())
    return out


def roi_align_inference_cases() -> list[Case]:
    """Faster R-CNN R50-FPN's box pooling at inference: 1,000 RoIs to 7x7
    (sampling ratio 2) on one 256-channel 200x272 map (P2 of an 800x1088
    input), NCHW (a copy to channels-last is part of detkit's time) and
    channels-last."""
    g = torch.Generator().manual_seed(5)
    features = torch.randn(1, 256, 200, 272, generator=g)
    corners = torch.rand(1000, 2, generator=g) * 900
    rois = torch.cat([torch.zeros(1000, 1), corners, corners + 16 + torch.rand(1000, 2, generator=g) * 200], dim=1)
    out = []
    for layout, name in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "channels-last")):
        x = features.contiguous(memory_format=layout)

        def pool(roi_align, x=x):
            with torch.no_grad():
                return roi_align(x, rois, 7, 0.25, 2)
        out.append(pair(f"roi_align inference, 1,000 RoIs 7x7, 256 x 200 x 272 {name}",
                        lambda pool=pool: pool(ops.roi_align), lambda pool=pool: pool(torchvision.ops.roi_align)))
    return out


def roi_align_backward_case() -> Case:
    """A small R-CNN box head's RoIAlign in training: 8 images, 64 channels on a
    64x64 map, 1,024 RoIs to 7x7 (sampling ratio 2); forward and backward."""
    g = torch.Generator().manual_seed(4)
    features = torch.randn(8, 64, 64, 64, generator=g)
    corners = torch.rand(1024, 2, generator=g) * 200
    rois = torch.cat([torch.randint(0, 8, (1024, 1), generator=g).float(), corners,
                      corners + 8 + torch.rand(1024, 2, generator=g) * 60], dim=1)
    grad = torch.randn(1024, 64, 7, 7, generator=g)

    def gradient(roi_align):
        leaf = features.clone().requires_grad_(True)
        return torch.autograd.grad(roi_align(leaf, rois, 7, 0.25, 2), leaf, grad)[0]

    return pair("roi_align forward + backward, 1,024 RoIs 7x7, 8 x 64 x 64 x 64", lambda: gradient(ops.roi_align),
                lambda: gradient(torchvision.ops.roi_align))


CASES = cases()  # milliseconds to build; collection needs the names


@pytest.fixture(autouse=True, scope="module")
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("side", ["detkit", "torchvision"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_op(peer_benchmark, case: Case, side: str):
    peer_benchmark(case, side)
