import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from detkit.io.rle import encode_masks, rle_to_json


def _masks(seed=0, n=3, h=17, w=23):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, generator=g)


def _decode(rles):
    return np.stack([mask_utils.decode({**r, "counts": r["counts"].encode("ascii")}) for r in rles])


@pytest.mark.parametrize("kind", ["float", "float4d", "uint8", "bool_numpy", "float_numpy"])
def test_encode_masks_round_trips_through_pycocotools(kind):
    probabilities = _masks()
    expected = (probabilities > 0.5).numpy().astype(np.uint8)
    masks = {
        "float": probabilities,
        "float4d": probabilities[:, None],
        "uint8": torch.from_numpy(expected * 255),  # any non-zero value is foreground
        "bool_numpy": expected.astype(bool),
        "float_numpy": probabilities.numpy(),
    }[kind]
    rles = encode_masks(masks)
    assert [r["size"] for r in rles] == [[17, 23]] * 3
    assert all(isinstance(r["counts"], str) for r in rles)
    np.testing.assert_array_equal(_decode(rles), expected)
    reference = mask_utils.encode(np.asfortranarray(expected.transpose(1, 2, 0)))
    assert [r["counts"] for r in rles] == [r["counts"].decode("ascii") for r in reference]


def test_encode_masks_takes_no_other_shapes_and_no_masks():
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        encode_masks(torch.zeros(4, 4))
    assert encode_masks(torch.zeros(0, 4, 4)) == []


def test_rle_to_json_decodes_bytes_only():
    assert rle_to_json({"size": [2, 2], "counts": b"04"}) == {"size": [2, 2], "counts": "04"}
    polygons = [[0.0, 0.0, 1.0, 0.0, 1.0, 1.0]]
    assert rle_to_json(polygons) is polygons
