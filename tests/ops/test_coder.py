import math

import pytest
import torch
from torchvision.models.detection import _utils as tv

from detkit import ops
from detkit.ops import coder as C
from detkit.data.synthetic import random_boxes

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]


def positive_boxes(n, seed, dtype=torch.float32):
    boxes = random_boxes(n, seed=seed, dtype=dtype)
    boxes[:, 2:] += 1  # no zero sizes: encoding divides by them
    return boxes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_matches_torchvision_and_reference(weights, dtype):
    gt, anchors = positive_boxes(8732, 1, dtype), positive_boxes(8732, 2, dtype)
    codes = ops.BoxCoder(weights).encode_single(gt, anchors)
    assert codes.shape == (8732, 4) and codes.dtype == dtype
    # log() may differ by one ulp between numba and torch's vectorised kernels.
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(codes, tv.BoxCoder(weights).encode_single(gt, anchors), **tol)
    torch.testing.assert_close(codes, C._encode_reference(gt, anchors, weights), **tol)
    per_image = ops.BoxCoder(weights).encode([gt[:10], gt[10:30]], [anchors[:10], anchors[10:30]])
    assert [len(t) for t in per_image] == [10, 20]
    torch.testing.assert_close(torch.cat(per_image), codes[:30])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("classes", [1, 3])
def test_decode_matches_torchvision_and_reference(weights, classes, dtype):
    anchors = positive_boxes(8732, 3, dtype)
    codes = torch.randn(8732, 4 * classes, generator=torch.Generator().manual_seed(4), dtype=dtype) * 3
    codes[0, 2] = 50.0  # beyond bbox_xform_clip
    coder, theirs = ops.BoxCoder(weights), tv.BoxCoder(weights)
    decoded = coder.decode(codes, [anchors[:100], anchors[100:]])
    assert decoded.shape == (8732, classes, 4) and decoded.dtype == dtype
    tol = dict(rtol=1e-6, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(decoded, theirs.decode(codes, [anchors[:100], anchors[100:]]), **tol)
    torch.testing.assert_close(coder.decode_single(codes, anchors),
                               C._decode_reference(codes, anchors, coder.weights, coder.bbox_xform_clip), **tol)
    assert torch.isfinite(decoded).all()


def test_decode_inverts_encode():
    gt, anchors = positive_boxes(1000, 5, torch.float64), positive_boxes(1000, 6, torch.float64)
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0), bbox_xform_clip=math.inf)
    torch.testing.assert_close(coder.decode_single(coder.encode_single(gt, anchors), anchors), gt)


def test_coder_empty_and_hostile_input():
    coder = ops.BoxCoder((1.0, 1.0, 1.0, 1.0))
    assert coder.encode_single(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode_single(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 12), [torch.zeros(0, 4)]).shape == (0, 3, 4)  # [N, K, 4] for N = 0 too
    anchors = positive_boxes(4, 7)
    codes = torch.zeros(4, 4)
    codes[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"rel_codes\[9\] is not finite"):
        coder.decode_single(codes, anchors)
    with pytest.raises(ValueError, match=r"rel_codes must have shape \[4, 4 \* K\]"):
        coder.decode_single(torch.zeros(4, 6), anchors)
    flat = anchors.clone()
    flat[3, 3] = flat[3, 1]
    with pytest.raises(ValueError, match=r"proposals\[3\] has zero width or height"):
        coder.encode_single(anchors, flat)
    with pytest.raises(ValueError, match="differ in shape"):
        coder.encode_single(anchors, anchors[:2])
    with pytest.raises(ValueError, match="weights must be 4 positive"):
        ops.BoxCoder((1.0, 1.0, 0.0, 1.0))
    with pytest.raises(TypeError, match="rel_codes must be a float16, bfloat16, float32 or float64"):
        coder.decode_single(torch.zeros(4, 4, dtype=torch.int32), anchors)
