"""detkit.ops on inputs torchvision accepts and detkit once refused (issue 22,
items 6-9): zero-size matched boxes in BoxCoder.encode, float16/bfloat16,
box_iou's fmt and batched IoU, and detkit's ops swapped into torchvision.
Every expected value comes from torchvision on the same inputs."""
import inspect
import math
import sys

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead

from detkit import ops
from detkit.data.synthetic import clustered_boxes, random_boxes
from detkit.modeling.poolers import MultiScaleRoIAlign
from detkit.ops import _ext
from detkit.ops.roi_align import compiled_serves

HALF = [torch.float16, torch.bfloat16]
# One rounding of a float16 / bfloat16 result (relative), for comparisons with
# torchvision's native half arithmetic, which rounds at every step.
ULP = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def boxes_of(n, seed, dtype=torch.float32):
    """xyxy boxes in a 300 px image with sides >= 4 px, so none is empty after rounding to bfloat16."""
    boxes = random_boxes(n, size=300.0, max_side=100.0, seed=seed, dtype=torch.float64)
    boxes[:, 2:] += 4
    return boxes.to(dtype)


# --- 6. BoxCoder.encode with zero-size matched boxes ---------------------------------------------


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_zero_size_reference_boxes_as_torchvision(weights):
    proposals = boxes_of(6, 1)
    reference = boxes_of(6, 2)
    reference[0] = 0  # an image without objects: torchvision matches all-zero boxes
    reference[1, 2] = reference[1, 0]  # zero width
    reference[2, 3] = reference[2, 1]  # zero height
    ours = ops.BoxCoder(weights).encode_single(reference, proposals)
    theirs = tv_utils.BoxCoder(weights).encode_single(reference, proposals)
    assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs)) and torch.isneginf(theirs).sum() == 4
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def rpn_losses(box_coder, targets):
    """torchvision's RPN, training, on one image with objects and one without."""
    torch.manual_seed(0)
    anchors = AnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),))
    rpn = RegionProposalNetwork(anchors, RPNHead(8, 6), 0.7, 0.3, 64, 0.5, {"training": 50}, {"training": 20}, 0.7)
    rpn.box_coder = box_coder
    images = ImageList(torch.zeros(2, 3, 128, 128), [(128, 128), (128, 128)])
    features = {"0": torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(1))}
    torch.manual_seed(2)  # the sampler's draws
    return rpn.train()(images, features, targets)[1]


def test_torchvision_rpn_trains_on_an_image_without_objects_with_detkits_coder():
    targets = [{"boxes": torch.tensor([[10.0, 20, 70, 90], [60, 60, 120, 100]])}, {"boxes": torch.zeros(0, 4)}]
    theirs = rpn_losses(tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)), targets)
    ours = rpn_losses(ops.BoxCoder((1.0, 1.0, 1.0, 1.0)), targets)
    assert torch.isfinite(theirs["loss_rpn_box_reg"]) and theirs["loss_rpn_box_reg"] > 0
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-6, atol=1e-7)


# --- 7. float16 and bfloat16 --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
def test_elementwise_box_ops_take_half_precision_as_torchvision(dtype):
    boxes = boxes_of(500, 3, dtype)
    for in_fmt, out_fmt in [("xyxy", "cxcywh"), ("xyxy", "xywh"), ("xywh", "cxcywh"), ("cxcywh", "xyxy")]:
        src = torchvision.ops.box_convert(boxes, "xyxy", in_fmt)
        ours, theirs = ops.box_convert(src, in_fmt, out_fmt), torchvision.ops.box_convert(src, in_fmt, out_fmt)
        assert ours.dtype == theirs.dtype == dtype
        # computed in float32 and rounded once; torchvision rounds each step
        assert torch.equal(ours, torchvision.ops.box_convert(src.float(), in_fmt, out_fmt).to(dtype))
        torch.testing.assert_close(ours, theirs, rtol=2 * ULP[dtype], atol=0)
    for fmt in ("xyxy", "cxcywh"):
        src = torchvision.ops.box_convert(boxes, "xyxy", fmt)
        ours, theirs = ops.box_area(src, fmt), torchvision.ops.box_area(src, fmt)
        assert ours.dtype == theirs.dtype == torch.float32 and torch.equal(ours, theirs)  # no float16 overflow
    ours, theirs = ops.clip_boxes_to_image(boxes, (200, 250)), torchvision.ops.clip_boxes_to_image(boxes, (200, 250))
    assert ours.dtype == dtype and torch.equal(ours, theirs)
    assert torch.equal(ops.remove_small_boxes(boxes, 50.0), torchvision.ops.remove_small_boxes(boxes, 50.0))


@pytest.mark.parametrize("dtype", HALF)
def test_iou_takes_half_precision_as_torchvision(dtype):
    a, b = boxes_of(60, 4, dtype), boxes_of(50, 5, dtype)
    for fn in ("box_iou", "generalized_box_iou"):
        ours, theirs = getattr(ops, fn)(a, b), getattr(torchvision.ops, fn)(a, b)
        assert ours.dtype == theirs.dtype == torch.float32
        # torchvision takes the intersection's sides in half precision first
        torch.testing.assert_close(ours, theirs, rtol=0, atol=4 * ULP[dtype])
        torch.testing.assert_close(ours, getattr(torchvision.ops, fn)(a.float(), b.float()), rtol=1e-6, atol=1e-6)
    assert ops.box_iou(a, b.double()).dtype == torchvision.ops.box_iou(a, b.double()).dtype == torch.float64


def autocast_cpu():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("dtype", HALF)
def test_nms_takes_half_precision_as_torchvisions_autocast(dtype):
    """torchvision's CPU nms kernel refuses float16/bfloat16; its autocast wrapper
    (what a model under torch.autocast reaches) runs it on float32 copies."""
    boxes, _ = clustered_boxes(250, centers=20, size=300.0)
    boxes = boxes.to(dtype)
    scores = torch.randperm(250, generator=torch.Generator().manual_seed(6)).to(dtype)  # distinct in bfloat16 too
    idxs = torch.randint(0, 3, (250,), generator=torch.Generator().manual_seed(7))
    with pytest.raises(RuntimeError, match="not implemented"):
        torchvision.ops.nms(boxes, scores, 0.5)
    with autocast_cpu():
        expected = torchvision.ops.nms(boxes, scores, 0.5)
        assert torch.equal(ops.nms(boxes, scores, 0.5), expected)  # the same, inside autocast
    assert 20 <= len(expected) < 250
    assert torch.equal(ops.nms(boxes, scores, 0.5), expected)
    assert torch.equal(ops.nms(boxes, scores.float(), 0.5), expected)  # mixed with float32, as autocast allows
    # torchvision's batched_nms shifts each category's boxes apart in their own
    # dtype, which rounds half-precision boxes before its nms; on float32 copies it does not
    expected_batched = torchvision.ops.batched_nms(boxes.float(), scores.float(), idxs, 0.5)
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), expected_batched)
    keep, rescored = ops.soft_nms(boxes, scores / 250)
    assert rescored.dtype == dtype and len(keep) > len(expected)
    with pytest.raises(TypeError, match="dtype of boxes"):  # as torchvision's kernels, also under autocast
        ops.nms(boxes.double(), scores, 0.5)
    bad = boxes.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"boxes\[3\] is not finite"):
        ops.nms(bad, scores, 0.5)


@pytest.mark.parametrize("dtype", HALF)
def test_roi_align_takes_half_precision_as_torchvisions_autocast(dtype):
    """torchvision's autocast wrapper runs roi_align on float32 copies and
    casts back; outside autocast its CPU kernel refuses bfloat16."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 20, 24, generator=g).to(dtype)
    index = torch.randint(0, 2, (30, 1), generator=g).double()
    rois = torch.cat([index, boxes_of(30, 9, torch.float64) / 4], dim=1).to(dtype)
    grad = torch.randn(30, 3, 5, 5, generator=g).to(dtype)
    for ratio in (2, -1):  # -1: adaptive sampling, which detkit leaves to torchvision
        leaf, twin = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ours = ops.roi_align(leaf, rois, 5, 0.25, ratio)
        (ours_grad,) = torch.autograd.grad(ours, leaf, grad)
        with autocast_cpu():
            theirs = torchvision.ops.roi_align(twin, rois, 5, 0.25, ratio)
        (theirs_grad,) = torch.autograd.grad(theirs, twin, grad)
        assert ours.dtype == theirs.dtype == dtype and ours_grad.dtype == dtype
        assert torch.equal(ours, theirs) and torch.equal(ours_grad, theirs_grad)


def test_fpn_pooler_under_cpu_autocast_equals_torchvisions():
    g = torch.Generator().manual_seed(10)
    names = ["0", "1"]
    features = {n: torch.randn(2, 4, 32 // 2 ** i, 32 // 2 ** i, generator=g).bfloat16() for i, n in enumerate(names)}
    boxes = [boxes_of(20, 11) / 3, boxes_of(15, 12) / 2]
    assert compiled_serves(features["0"], 2)  # detkit's pooler runs detkit's roi_align, not torchvision's pooler
    with autocast_cpu():
        ours = MultiScaleRoIAlign(names, 4, 2)(features, boxes, [(128, 128)] * 2)
        theirs = torchvision.ops.MultiScaleRoIAlign(names, 4, 2)(features, boxes, [(128, 128)] * 2)
    assert ours.dtype == theirs.dtype == torch.bfloat16 and torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", HALF)
def test_coder_takes_half_precision_as_torchvision(dtype):
    """In the dtype torchvision's arithmetic gives; the values are torchvision's
    on float32 copies, rounded once (torchvision rounds every step)."""
    proposals, reference = boxes_of(400, 13, dtype), boxes_of(400, 14, dtype)
    codes = torch.randn(400, 8, generator=torch.Generator().manual_seed(15)).to(dtype)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        ours, theirs = ops.BoxCoder(weights), tv_utils.BoxCoder(weights)
        for ref, prop in [(reference, proposals), (reference, proposals.float()), (reference.float(), proposals)]:
            out = ours.encode_single(ref, prop)
            assert out.dtype == theirs.encode_single(ref, prop).dtype
            expected = theirs.encode_single(ref.float(), prop.float()).to(out.dtype)
            torch.testing.assert_close(out, expected, rtol=ULP[dtype], atol=1e-6)
        decoded = ours.decode(codes, [proposals[:100], proposals[100:]])
        assert decoded.dtype == theirs.decode(codes, [proposals]).dtype == dtype
        expected = theirs.decode(codes.float(), [proposals.float()]).to(dtype)
        torch.testing.assert_close(decoded, expected, rtol=ULP[dtype], atol=1e-6)


@pytest.mark.parametrize("dtype", HALF)
def test_matcher_and_sampler_take_half_precision_as_torchvision(dtype):
    quality = ops.box_iou(boxes_of(30, 16), boxes_of(400, 17)).to(dtype)
    # torch compares a half tensor with a threshold rounded to its dtype, which
    # is below 0.4 in float16 and below 0.7 in bfloat16: put those values in
    for t in (0.4, 0.7):
        quality[5, int(t * 100)] = t
    assert float(quality[5, 40]) < 0.4 if dtype == torch.float16 else float(quality[5, 70]) < 0.7
    for matcher, peer in [(ops.Matcher(0.7, 0.4, True), tv_utils.Matcher(0.7, 0.4, True)),
                          (ops.Matcher(0.7, 0.4), tv_utils.Matcher(0.7, 0.4)),
                          (ops.SSDMatcher(0.4), tv_utils.SSDMatcher(0.4))]:
        assert torch.equal(matcher(quality), peer(quality))
    labels = (torch.arange(400) % 3 - 1).to(dtype)  # the RPN's float labels: 1, 0, -1
    torch.manual_seed(16)
    ours = ops.BalancedPositiveNegativeSampler(64, 0.25)([labels])
    torch.manual_seed(16)
    theirs = tv_utils.BalancedPositiveNegativeSampler(64, 0.25)([labels])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(ours, theirs))


# --- 8. box_iou(fmt=), batched IoU ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_iou_fmt_as_torchvision(fmt):
    a = torchvision.ops.box_convert(boxes_of(40, 17, torch.float64), "xyxy", fmt)
    b = torchvision.ops.box_convert(boxes_of(30, 18, torch.float64), "xyxy", fmt)
    # converted to xyxy first: equal to a float rounding, not bit for bit
    torch.testing.assert_close(ops.box_iou(a, b, fmt=fmt), torchvision.ops.box_iou(a, b, fmt=fmt), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(ops.box_iou(a[None], b[None], fmt), torchvision.ops.box_iou(a[None], b[None], fmt),
                               rtol=1e-12, atol=1e-12)


def test_box_iou_fmt_rejects_rotated_and_unknown_formats():
    a = boxes_of(3, 19)
    for fmt in ("cxcywhr", "yxyx"):  # torchvision takes rotated formats; detkit does not (README)
        with pytest.raises(ValueError, match=f"fmt must be one of .* got '{fmt}'"):
            ops.box_iou(a, a, fmt=fmt)
    flipped = torchvision.ops.box_convert(a, "xyxy", "xywh")
    flipped[1, 2] = -1.0
    with pytest.raises(ValueError, match=r"boxes2\[1\] has a negative width"):
        ops.box_iou(a, flipped, fmt="xywh")


@pytest.mark.parametrize("fn", ["box_iou", "generalized_box_iou"])
@pytest.mark.parametrize("shape1, shape2", [
    ((3, 20), (3, 15)), ((20,), (2, 15)), ((2, 1, 20), (3, 15)), ((0, 20), (0, 15)), ((2, 0), (2, 15)),
])
def test_iou_batches_as_torchvision(fn, shape1, shape2):
    """[..., N, 4] x [..., M, 4] -> [..., N, M], leading dimensions broadcast."""
    a = boxes_of(max(1, math.prod(shape1)), 20)[: math.prod(shape1)].reshape(*shape1, 4)
    b = boxes_of(max(1, math.prod(shape2)), 21)[: math.prod(shape2)].reshape(*shape2, 4)
    ours, theirs = getattr(ops, fn)(a, b), getattr(torchvision.ops, fn)(a, b)
    assert ours.shape == theirs.shape
    tol = 0 if fn == "box_iou" else 1e-6  # as for [N, 4] x [M, 4] (tests/ops/test_boxes.py)
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


def test_batched_iou_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="leading dimensions of boxes1 .* do not broadcast"):
        ops.box_iou(boxes_of(6, 22).reshape(2, 3, 4), boxes_of(6, 23).reshape(3, 2, 4))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[\.\.\., N, 4\]"):
        ops.generalized_box_iou(boxes_of(1, 24)[0], boxes_of(2, 25))


# --- 9. detkit's ops swapped into torchvision ----------------------------------------------------


@pytest.fixture
def swap_in_detkit(monkeypatch):
    """swap_in_detkit() puts detkit's nms and roi_align in place of torchvision's,
    everywhere torchvision looks them up. A fallback that calls itself then
    stops within 300 frames (traced, the default 1,000 take minutes)."""
    limit = sys.getrecursionlimit()

    def swap():
        for module in ("torchvision.ops", "torchvision.ops.boxes"):
            monkeypatch.setattr(sys.modules[module], "nms", ops.nms)
        for module in ("torchvision.ops", "torchvision.ops.roi_align", "torchvision.ops.poolers"):
            monkeypatch.setattr(sys.modules[module], "roi_align", ops.roi_align)
        sys.setrecursionlimit(len(inspect.stack(0)) + 300)

    yield swap
    sys.setrecursionlimit(limit)


@pytest.mark.parametrize("n", [300, 1100])  # torchvision's batched_nms: coordinate trick; one nms per class
def test_torchvision_batched_nms_with_detkits_nms_swapped_in(swap_in_detkit, monkeypatch, n):
    boxes, scores = clustered_boxes(n, centers=15, size=300.0)
    idxs = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(26))
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    swap_in_detkit()
    assert torch.equal(torchvision.ops.batched_nms(boxes, scores, idxs, 0.5), expected)
    monkeypatch.setattr(_ext, "cpp", None)  # no compiled kernel: detkit's nms falls back to torchvision's
    assert torch.equal(torchvision.ops.batched_nms(boxes, scores, idxs, 0.5), expected)
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), expected)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_traced_detkit_nms_with_detkits_nms_swapped_in(swap_in_detkit):
    """Under tracing detkit's nms and batched_nms record torchvision's exportable op."""
    boxes, scores = clustered_boxes(300, centers=15, size=300.0)
    idxs = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(26))
    later = boxes[:200] * 1.5, scores[:200], idxs[:200]  # other inputs: a traced graph, not a replay
    expected = torchvision.ops.nms(*later[:2], 0.5), torchvision.ops.batched_nms(*later, 0.5)
    swap_in_detkit()
    traced = torch.jit.trace(lambda b, s: ops.nms(b, s, 0.5), (boxes, scores))
    traced_batched = torch.jit.trace(lambda b, s, i: ops.batched_nms(b, s, i, 0.5), (boxes, scores, idxs))
    assert torch.equal(traced(*later[:2]), expected[0])
    assert torch.equal(traced_batched(*later), expected[1])


def pool(ratio):
    """torchvision's MultiScaleRoIAlign on two levels, with the input gradients."""
    g = torch.Generator().manual_seed(27)
    names = ["0", "1"]
    features = {n: torch.randn(2, 4, 32 // 2 ** i, 32 // 2 ** i, generator=g).requires_grad_(True)
                for i, n in enumerate(names)}
    boxes = [boxes_of(20, 28) / 3, boxes_of(15, 29) / 2]
    out = torchvision.ops.MultiScaleRoIAlign(names, 4, ratio)(features, boxes, [(128, 128)] * 2)
    return out, torch.autograd.grad(out.sum(), list(features.values()))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchvision_pooler_with_detkits_roi_align_swapped_in(swap_in_detkit):
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(30))
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), boxes_of(3, 31) / 8], dim=1)
    expected = {ratio: pool(ratio) for ratio in (2, -1)}
    expected_roi_align = torchvision.ops.roi_align(x * 2, rois, 4, 0.5, 2)
    swap_in_detkit()
    for ratio in (2, -1):  # -1: detkit's roi_align falls back to torchvision's
        out, grads = pool(ratio)
        assert torch.equal(out, expected[ratio][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, expected[ratio][1]))
    traced = torch.jit.trace(lambda x, r: ops.roi_align(x, r, 4, 0.5, 2), (x, rois))  # falls back while tracing
    assert torch.equal(traced(x * 2, rois), expected_roi_align)
