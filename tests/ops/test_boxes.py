import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from detkit import ops
from detkit.ops import boxes as B
from detkit.data.synthetic import random_boxes

DTYPES = [torch.float32, torch.float64]
FORMATS = ["xyxy", "xywh", "cxcywh"]


def boxes_strategy(max_n=40):
    """Finite xyxy boxes, including zero-area and duplicated ones."""
    coord = st.floats(-1e4, 1e4, allow_nan=False, width=32)
    side = st.one_of(st.just(0.0), st.floats(0, 1e3, width=32))
    row = st.tuples(coord, coord, side, side).map(lambda r: [r[0], r[1], r[0] + r[2], r[1] + r[3]])
    return st.lists(row, min_size=0, max_size=max_n).map(
        lambda rows: torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    )


# --- conversion, area, clipping, filtering -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_matches_reference_and_torchvision(in_fmt, out_fmt, dtype):
    boxes = ops.box_convert(random_boxes(500, dtype=dtype), "xyxy", in_fmt)
    out = ops.box_convert(boxes, in_fmt, out_fmt)
    assert out.dtype == dtype
    torch.testing.assert_close(out, B._box_convert_reference(boxes, in_fmt, out_fmt), rtol=0, atol=0)
    torch.testing.assert_close(out, torchvision.ops.box_convert(boxes, in_fmt, out_fmt), rtol=0, atol=0)


def test_box_convert_round_trip_and_batch_dims():
    boxes = random_boxes(60).reshape(3, 20, 4)
    there = ops.box_convert(boxes, "xyxy", "cxcywh")
    assert there.shape == (3, 20, 4)
    torch.testing.assert_close(ops.box_convert(there, "cxcywh", "xyxy"), boxes)


def test_box_convert_rejects_unknown_format_and_negative_size():
    with pytest.raises(ValueError, match="in_fmt"):
        ops.box_convert(random_boxes(2), "yxyx", "xyxy")
    with pytest.raises(ValueError, match=r"boxes\[1\] has a negative width"):
        ops.box_convert(torch.tensor([[0, 0, 1, 1], [0, 0, -1, 1.0]]), "xywh", "xyxy")


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_area_clip_remove_small_match_torchvision(dtype):
    boxes = random_boxes(1000, dtype=dtype)
    torch.testing.assert_close(ops.box_area(boxes), torchvision.ops.box_area(boxes), rtol=0, atol=0)
    torch.testing.assert_close(ops.box_area(boxes), B._box_area_reference(boxes), rtol=0, atol=0)
    wh = ops.box_convert(boxes, "xyxy", "cxcywh")
    torch.testing.assert_close(ops.box_area(wh, fmt="cxcywh"), B._box_area_reference(wh, "cxcywh"))
    clipped = ops.clip_boxes_to_image(boxes, (480, 640))
    torch.testing.assert_close(clipped, torchvision.ops.clip_boxes_to_image(boxes, (480, 640)), rtol=0, atol=0)
    assert clipped[:, 0::2].max() <= 640 and clipped[:, 1::2].max() <= 480
    keep = ops.remove_small_boxes(boxes, 50.0)
    assert torch.equal(keep, torchvision.ops.remove_small_boxes(boxes, 50.0))
    assert 0 < len(keep) < len(boxes)


def test_clip_keeps_leading_dims_and_rejects_bad_size():
    boxes = random_boxes(12).reshape(3, 4, 4)
    assert ops.clip_boxes_to_image(boxes, (100, 100)).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="size"):
        ops.clip_boxes_to_image(boxes, (100,))


# --- IoU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (37, 5), (300, 700), (8732, 20)])
def test_box_iou_matches_reference_and_torchvision(shape, dtype):
    a = random_boxes(shape[0], seed=1, dtype=dtype)
    b = random_boxes(shape[1], seed=2, dtype=dtype)
    iou = ops.box_iou(a, b)
    assert iou.shape == shape and iou.dtype == dtype
    torch.testing.assert_close(iou, B._box_iou_reference(a, b), rtol=0, atol=0)
    torch.testing.assert_close(iou, torchvision.ops.box_iou(a, b), rtol=0, atol=0)
    giou = ops.generalized_box_iou(a, b)
    torch.testing.assert_close(giou, B._generalized_box_iou_reference(a, b), rtol=0, atol=0)
    torch.testing.assert_close(giou, torchvision.ops.generalized_box_iou(a, b), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(ops.backend()["box_iou"] != "cpp", reason="the C++ kernel is the threaded one")
def test_box_iou_threads_give_identical_results():
    a, b = random_boxes(700, seed=3), random_boxes(600, seed=4)  # 420k pairs: above the kernel's 2^18 for threads
    before = torch.get_num_threads()
    by_threads = {}
    try:
        for threads in (1, 2, 3):  # 3: rows do not split evenly
            torch.set_num_threads(threads)
            assert torch.get_num_threads() == threads
            by_threads[threads] = ops.box_iou(a, b)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(by_threads[1], by_threads[2]) and torch.equal(by_threads[1], by_threads[3])
    torch.testing.assert_close(by_threads[2], B._box_iou_reference(a, b), rtol=0, atol=0)


def test_zero_area_boxes_have_iou_zero_not_nan():
    boxes = torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0], [0, 0, 10, 10.0]])
    for fn in (ops.box_iou, B._box_iou_reference, ops.generalized_box_iou, B._generalized_box_iou_reference):
        out = fn(boxes, boxes)
        assert not torch.isnan(out).any(), fn
    assert ops.box_iou(boxes, boxes)[:3].eq(0).all()
    assert ops.box_iou(boxes, boxes)[3, 3] == 1


def test_identical_boxes_have_iou_one_and_giou_bounds():
    boxes = random_boxes(50)
    assert torch.allclose(ops.box_iou(boxes, boxes).diagonal(), torch.ones(50))
    giou = ops.generalized_box_iou(boxes, random_boxes(40, seed=9))
    assert giou.min() >= -1 and giou.max() <= 1


def test_box_iou_empty_and_mixed_dtypes():
    empty = torch.zeros(0, 4)
    assert ops.box_iou(empty, random_boxes(3)).shape == (0, 3)
    assert ops.box_iou(random_boxes(3), empty).shape == (3, 0)
    assert ops.generalized_box_iou(empty, empty).shape == (0, 0)
    assert ops.box_iou(random_boxes(3), random_boxes(2, dtype=torch.float64)).dtype == torch.float64


def test_box_iou_100k_boxes():
    a = random_boxes(100_000, seed=5)
    iou = ops.box_iou(a, a[:7])
    assert iou.shape == (100_000, 7)
    torch.testing.assert_close(iou[:: 997], B._box_iou_reference(a[:: 997], a[:7]), rtol=0, atol=0)


@settings(deadline=None)
@given(boxes_strategy(), boxes_strategy())
def test_box_iou_property_matches_reference(a, b):
    iou = ops.box_iou(a, b)
    assert torch.equal(iou, B._box_iou_reference(a, b))
    assert not torch.isnan(iou).any()
    assert (iou >= 0).all() and (iou <= 1).all()
    assert torch.equal(ops.generalized_box_iou(a, b), B._generalized_box_iou_reference(a, b))


# --- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [ops.box_iou, ops.generalized_box_iou])
def test_iou_rejects_hostile_input(fn):
    good = random_boxes(4)
    with pytest.raises(ValueError, match=r"boxes2\[2\] is not finite"):
        fn(good, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, float("nan"), 1], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match=r"boxes1\[0\] is not finite"):
        fn(torch.tensor([[0, 0, float("inf"), 1.0]]), good)
    with pytest.raises(ValueError, match=r"boxes1\[1\] has x2 < x1"):
        fn(torch.tensor([[0, 0, 1, 1], [5, 0, 1, 1.0]]), good)
    with pytest.raises(TypeError, match="boxes1 must be a float16, bfloat16, float32 or float64"):
        fn(torch.tensor([[0, 0, 1, 1]]), good)
    with pytest.raises(ValueError, match=r"boxes2 must have shape \[\.\.\., 4\]"):
        fn(good, torch.zeros(3, 5))
    with pytest.raises(TypeError, match="boxes1 must be a torch.Tensor"):
        fn([[0, 0, 1, 1]], good)


def test_reference_checks_match_compiled_checks():
    """The torch fallback of the argument checks names the same row."""
    from detkit.ops import _checks

    bad = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [3, 3, 2, 4.0], [0, 0, float("nan"), 1]])
    assert _checks._first_invalid_box(bad, corners=True) == (2, 2)
    bad.requires_grad_(True)  # forces the torch path
    assert _checks._first_invalid_box(bad, corners=True) == (2, 2)
