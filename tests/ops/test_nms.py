import importlib

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from detkit import ops
from detkit.data.synthetic import clustered_boxes, random_boxes

# detkit.ops.nms (the function) shadows the module of the same name.
N = importlib.import_module("detkit.ops.nms")
DTYPES = [torch.float32, torch.float64]


# --- nms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 50, 255, 256, 3000])  # both sides of the flat/grid switch
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_reference_and_torchvision(n, threshold, dtype):
    boxes, scores = clustered_boxes(n, centers=max(1, n // 20), seed=n, dtype=dtype)
    keep = ops.nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, N._nms_reference(boxes, scores, threshold))
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, threshold))


def test_nms_threshold_compared_in_double_like_torchvision():
    # IoU of these boxes is exactly float32(0.3) > 0.3 (double): torchvision suppresses.
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 3.0000001192092896]], dtype=torch.float32)
    scores = torch.tensor([1.0, 0.5])
    iou = float(ops.box_iou(boxes[:1], boxes[1:]))
    assert iou > 0.3 and torch.tensor(iou, dtype=torch.float32) == torch.tensor(0.3, dtype=torch.float32)
    assert torch.equal(ops.nms(boxes, scores, 0.3), torchvision.ops.nms(boxes, scores, 0.3))
    assert torch.equal(ops.nms(boxes, scores, 0.3), N._nms_reference(boxes, scores, 0.3))


def test_nms_large_and_spread_sizes_grid_path_is_exact():
    # Boxes from 1 px to 900 px and a huge box: exercises every grid level.
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(4000, 2, generator=g) * 2000
    wh = torch.exp(torch.rand(4000, 2, generator=g) * 6.8)
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[17] = torch.tensor([0, 0, 3000, 3000.0])
    scores = torch.randperm(4000, generator=g).float() / 4000
    for threshold in (0.0, 0.1, 0.5):
        assert torch.equal(ops.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_nms_ties_keep_lower_index_on_every_backend():
    boxes = torch.tensor([[0, 0, 10, 10.0]] * 5 + [[100, 100, 110, 110.0]] * 3)
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.9, 0.3, 0.3, 0.3])
    expected = torch.tensor([1, 5])
    assert torch.equal(ops.nms(boxes, scores, 0.5), expected)
    assert torch.equal(N._nms_reference(boxes, scores, 0.5), expected)
    assert torch.equal(N._nms_torchvision(boxes, scores, 0.5), expected)
    many = torch.full((3000,), 0.5)
    boxes, _ = clustered_boxes(3000)
    assert torch.equal(ops.nms(boxes, many, 0.5), N._nms_reference(boxes, many, 0.5))


def test_nms_zero_area_and_empty():
    boxes = torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0.0]])
    assert torch.equal(ops.nms(boxes, torch.tensor([0.3, 0.2, 0.1]), 0.0), torch.tensor([0, 1, 2]))
    keep = ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


def test_nms_100k_boxes():
    boxes, scores = clustered_boxes(100_000, centers=2000, size=5000.0)
    keep = ops.nms(boxes, scores, 0.5)
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))


@settings(deadline=None)
@given(
    st.integers(0, 300),
    st.integers(1, 30),
    st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_nms_property_matches_reference(n, centers, threshold, seed, ties):
    boxes, scores = clustered_boxes(n, centers=centers, size=300.0, seed=seed)
    if ties:  # few distinct scores: ties everywhere
        scores = (scores * 4).floor() / 4
    keep = ops.nms(boxes, scores, threshold)
    assert torch.equal(keep, N._nms_reference(boxes, scores, threshold))
    # Kept boxes never overlap beyond the threshold.
    if len(keep) > 1:
        iou = ops.box_iou(boxes[keep], boxes[keep]).fill_diagonal_(0)
        assert (iou.double() <= threshold).all()


# --- batched_nms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,classes", [(1, 1), (100, 3), (5000, 80), (3000, 2)])
def test_batched_nms_matches_reference_and_torchvision(n, classes, dtype):
    boxes, scores = clustered_boxes(n, centers=max(1, n // 20), seed=n, dtype=dtype)
    idxs = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(n))
    keep = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, N._batched_nms_reference(boxes, scores, idxs, 0.5))
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
    assert torch.equal(keep, N._batched_nms_torchvision(boxes, scores, idxs, 0.5))


def test_batched_nms_categories_do_not_suppress_each_other():
    boxes = torch.tensor([[0, 0, 10, 10.0]] * 3)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torch.equal(ops.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5), torch.tensor([0, 1]))
    assert torch.equal(ops.batched_nms(boxes, scores, torch.tensor([-5, 2**40, 7]), 0.5), torch.tensor([0, 1, 2]))


# --- soft_nms ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("n", [0, 1, 40, 400])
def test_soft_nms_matches_reference(n, method, dtype):
    boxes, scores = clustered_boxes(n, centers=max(1, n // 10), size=400.0, seed=n, dtype=dtype)
    keep, rescored = ops.soft_nms(boxes, scores, 0.3, 0.5, 0.001, method)
    ref_keep, ref_rescored = N._soft_nms_reference(boxes, scores, 0.3, 0.5, 0.001, method == "gaussian")
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(rescored, ref_rescored, rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
    assert rescored.dtype == dtype and keep.dtype == torch.int64
    assert (rescored[1:] <= rescored[:-1]).all()  # selection order = decreasing score
    assert (rescored >= 0.001).all()
    assert (rescored <= scores[keep]).all()


def test_soft_nms_follows_the_paper():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)
    iou = 0.5  # box 1 covers half of box 0
    keep, rescored = ops.soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(rescored, torch.tensor([0.9, 0.7, 0.8 * torch.exp(torch.tensor(-iou**2 / 0.5)).item()],
                                                      dtype=torch.float64))
    keep, rescored = ops.soft_nms(boxes, scores, iou_threshold=0.3, method="linear")
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(rescored[2], torch.tensor(0.8 * (1 - iou), dtype=torch.float64))
    # Below the linear threshold, no decay; above score_threshold, dropped.
    keep, rescored = ops.soft_nms(boxes, scores, iou_threshold=0.6, method="linear")
    assert keep.tolist() == [0, 1, 2] and rescored.tolist() == [0.9, 0.8, 0.7]
    keep, _ = ops.soft_nms(boxes, scores, iou_threshold=0.3, method="linear", score_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_soft_nms_bounds_the_overlap_of_kept_boxes():
    # A box survives a selected one only if s * exp(-iou^2 / sigma) >= score_threshold,
    # so with s <= 1 two kept boxes overlap by at most sqrt(sigma * ln(1 / score_threshold)).
    boxes, scores = clustered_boxes(300, centers=20, size=300.0, dtype=torch.float64)
    sigma, score_threshold = 1e-3, 1e-3
    keep, _ = ops.soft_nms(boxes, scores, sigma=sigma, score_threshold=score_threshold)
    bound = (sigma * torch.log(torch.tensor(1 / score_threshold, dtype=torch.float64))).sqrt()
    iou = ops.box_iou(boxes[keep], boxes[keep]).fill_diagonal_(0)
    assert iou.max() <= bound
    assert 1 < len(keep) < 300


# --- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda b, s: ops.nms(b, s, 0.5),
        lambda b, s: ops.batched_nms(b, s, torch.zeros(len(b), dtype=torch.int64), 0.5),
        lambda b, s: ops.soft_nms(b, s),
    ],
)
def test_nms_family_rejects_hostile_input(call):
    boxes, scores = random_boxes(5), torch.rand(5)
    bad_scores = scores.clone()
    bad_scores[3] = float("nan")
    with pytest.raises(ValueError, match=r"scores\[3\] is not finite"):
        call(boxes, bad_scores)
    bad_boxes = boxes.clone()
    bad_boxes[1, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"boxes\[1\] is not finite"):
        call(bad_boxes, scores)
    inverted = boxes.clone()
    inverted[4] = torch.tensor([10.0, 10, 0, 20])
    with pytest.raises(ValueError, match=r"boxes\[4\] has x2 < x1"):
        call(inverted, scores)
    with pytest.raises(ValueError, match="scores has 4 entries but boxes has 5"):
        call(boxes, scores[:4])
    with pytest.raises(TypeError, match="boxes must be a float16, bfloat16, float32 or float64"):
        call(boxes.long(), scores)
    with pytest.raises(TypeError, match="dtype of boxes"):
        call(boxes, scores.double())


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_nms_rejects_thresholds_outside_unit_interval(threshold):
    boxes, scores = random_boxes(3), torch.rand(3)
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        ops.nms(boxes, scores, threshold)
    with pytest.raises(ValueError, match="score_threshold must be in"):
        ops.soft_nms(boxes, scores, score_threshold=threshold)


def test_batched_and_soft_nms_reject_bad_arguments():
    boxes, scores = random_boxes(3), torch.rand(3)
    with pytest.raises(TypeError, match="idxs must be an integer tensor"):
        ops.batched_nms(boxes, scores, torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"idxs must have shape \(3,\)"):
        ops.batched_nms(boxes, scores, torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        ops.soft_nms(boxes, scores, method="hard")
    with pytest.raises(ValueError, match="sigma must be positive"):
        ops.soft_nms(boxes, scores, sigma=0.0)


def test_nms_accepts_boxes_that_require_grad():
    boxes, scores = clustered_boxes(200, centers=10)
    keep = ops.nms(boxes.requires_grad_(), scores, 0.5)
    assert torch.equal(keep, torchvision.ops.nms(boxes.detach(), scores, 0.5))
