"""The compiled kernels are optional: without them every op still works
(the torch reference path), with the same results, after one warning."""
import subprocess
import sys
import textwrap

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from detkit import ops
from detkit.ops import _ext
from detkit.data.synthetic import clustered_boxes, random_boxes


def run_every_op():
    boxes, scores = clustered_boxes(2000, centers=100, dtype=torch.float64)
    gt = random_boxes(8, size=250.0, seed=3, dtype=torch.float64)
    gt[:, 2:] += 2
    labels = torch.arange(1, 9)
    images = ImageList(torch.zeros(1, 3, 300, 300, dtype=torch.float64), [(300, 300)])
    feats = [torch.zeros(1, 1, g, g, dtype=torch.float64) for g in (38, 19, 10, 5, 3, 1)]
    anchors = ops.DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]])(images, feats)[0]
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch.manual_seed(0)  # the sampler's draws; generators above are fresh, so no anchor cache is shared
    return {
        "convert": ops.box_convert(boxes, "xyxy", "cxcywh"),
        "area": ops.box_area(boxes),
        "clip": ops.clip_boxes_to_image(boxes, (300, 400)),
        "small": ops.remove_small_boxes(boxes, 100.0),
        "iou": ops.box_iou(boxes[:300], boxes[:200]),
        "giou": ops.generalized_box_iou(boxes[:300], boxes[:200]),
        "nms": ops.nms(boxes, scores, 0.5),
        "batched": ops.batched_nms(boxes, scores, torch.arange(2000) % 7, 0.5),
        "soft": ops.soft_nms(boxes[:300], scores[:300]),
        "fpn": ops.AnchorGenerator()(images, [torch.zeros(1, 1, 19, 19, dtype=torch.float64)])[0],
        "ssd": anchors,
        "encode": coder.encode_single(anchors[:50], anchors[50:100]),
        "decode": coder.decode_single(torch.randn(500, 8, dtype=torch.float64), anchors[:500]),
        "match": ops.Matcher(0.7, 0.3, True)(ops.box_iou(gt, anchors)),
        "ssd_match": ops.SSDMatcher(0.5)(ops.box_iou(gt, anchors)),
        "assign": ops.ssd_assign(anchors, gt, labels),
        "sample": ops.BalancedPositiveNegativeSampler(64, 0.25)([torch.arange(500) % 4 - 1]),
    }


def assert_same(a, b, name):
    if isinstance(a, (tuple, list)):
        for x, y in zip(a, b):
            assert_same(x, y, name)
    else:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_backend_names_a_kernel_for_every_op():
    backend = ops.backend()
    assert set(backend) >= {"nms", "batched_nms", "soft_nms", "box_iou", "ssd_assign", "BoxCoder", "Matcher"}
    assert backend["nms"] == "cpp" and backend["box_iou"] == "cpp"
    assert backend["BoxCoder"] == "numba" and backend["ssd_assign"] == "cpp"


def test_reference_path_gives_the_same_results(monkeypatch):
    compiled = run_every_op()
    monkeypatch.setattr(_ext, "cpp", None)
    monkeypatch.setattr(_ext, "numba_kernels", None)
    assert set(ops.backend().values()) == {"torch"}
    reference = run_every_op()
    for name in compiled:
        assert_same(compiled[name], reference[name], name)


def test_missing_extension_warns_once_and_falls_back():
    script = textwrap.dedent(
        """
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "detkit._C":
                    raise ImportError("simulated: no compiler at install time")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch, detkit
            from detkit import ops
            boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.0]])
            keep = ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
            ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
        ours = [w for w in caught if "detkit" in str(w.message)]
        print(len(ours), ops.backend()["nms"], ops.backend()["BoxCoder"], keep.tolist())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "torch", "numba", "[0,", "2]"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device():
    boxes, scores = clustered_boxes(3000, centers=100)
    keep = ops.nms(boxes.cuda(), scores.cuda(), 0.5)
    assert keep.is_cuda and torch.equal(keep.cpu(), ops.nms(boxes, scores, 0.5))
    iou = ops.box_iou(boxes[:100].cuda(), boxes[:50].cuda())
    assert iou.is_cuda
    torch.testing.assert_close(iou.cpu(), ops.box_iou(boxes[:100], boxes[:50]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_op_accepts_empty_input(dtype):
    empty = torch.zeros(0, 4, dtype=dtype)
    none = torch.zeros(0, dtype=dtype)
    no_idx = torch.zeros(0, dtype=torch.int64)
    shapes = {
        "box_convert": ops.box_convert(empty, "xyxy", "cxcywh"),
        "box_area": ops.box_area(empty),
        "clip": ops.clip_boxes_to_image(empty, (10, 10)),
        "remove_small": ops.remove_small_boxes(empty, 1.0),
        "box_iou": ops.box_iou(empty, empty),
        "giou": ops.generalized_box_iou(empty, random_boxes(2, dtype=dtype)),
        "nms": ops.nms(empty, none, 0.5),
        "batched_nms": ops.batched_nms(empty, none, no_idx, 0.5),
        "soft_nms": ops.soft_nms(empty, none)[0],
        "soft_nms_scores": ops.soft_nms(empty, none)[1],
        "encode": ops.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(empty, empty),
        "decode": ops.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(empty, empty),
        "ssd_assign_targets": ops.ssd_assign(empty, empty, no_idx)[0],
        "ssd_assign_labels": ops.ssd_assign(empty, empty, no_idx)[1],
    }
    expected = {
        "box_convert": ((0, 4), dtype), "box_area": ((0,), dtype), "clip": ((0, 4), dtype),
        "remove_small": ((0,), torch.int64), "box_iou": ((0, 0), dtype), "giou": ((0, 2), dtype),
        "nms": ((0,), torch.int64), "batched_nms": ((0,), torch.int64), "soft_nms": ((0,), torch.int64),
        "soft_nms_scores": ((0,), dtype), "encode": ((0, 4), dtype), "decode": ((0, 4), dtype),
        "ssd_assign_targets": ((0, 4), dtype), "ssd_assign_labels": ((0,), torch.int64),
    }
    for name, out in shapes.items():
        assert (tuple(out.shape), out.dtype) == expected[name], name
