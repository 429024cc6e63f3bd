import pytest
import torch
from torchvision.models.detection import anchor_utils as tv
from torchvision.models.detection.image_list import ImageList

from detkit import ops
from detkit.ops import anchors as A

SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_GRIDS = [38, 19, 10, 5, 3, 1]


def image_list(batch, height, width, dtype=torch.float32):
    return ImageList(torch.zeros(batch, 3, height, width, dtype=dtype), [(height, width)] * batch)


def feature_maps(grids, dtype=torch.float32):
    return [torch.zeros(1, 8, gh, gw, dtype=dtype) for gh, gw in grids]


FPN = dict(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("image", [(800, 1216), (480, 640), (37, 50)])
def test_anchor_generator_matches_torchvision_fpn(image, dtype):
    h, w = image
    grids = [(max(1, h // s), max(1, w // s)) for s in (4, 8, 16, 32, 64)]
    images, feats = image_list(2, h, w, dtype), feature_maps(grids, dtype)
    ours = ops.AnchorGenerator(**FPN)(images, feats)
    theirs = tv.AnchorGenerator(**FPN)(images, feats)
    assert len(ours) == 2
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    reference = torch.cat(
        [A._grid_anchors_reference(base.to(dtype), gh, gw, h // gh, w // gw)
         for (gh, gw), base in zip(grids, ops.AnchorGenerator(**FPN).cell_anchors)]
    )
    torch.testing.assert_close(ours[0], reference, rtol=0, atol=0)


def test_anchor_generator_single_level_defaults_and_counts():
    gen = ops.AnchorGenerator()
    images, feats = image_list(1, 600, 800), feature_maps([(38, 50)])
    torch.testing.assert_close(gen(images, feats)[0], tv.AnchorGenerator()(images, feats)[0], rtol=0, atol=0)
    assert gen.num_anchors_per_location() == tv.AnchorGenerator().num_anchors_per_location() == [9]
    assert gen(images, feats)[0].shape == (38 * 50 * 9, 4)


def test_anchor_generator_caches_per_size(monkeypatch):
    gen = ops.AnchorGenerator(**FPN)
    grids = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    first = gen(image_list(1, 800, 1216), feature_maps(grids))[0]
    computed = []
    original = gen._anchors
    monkeypatch.setattr(gen, "_anchors", lambda *args: computed.append(args) or original(*args))
    assert torch.equal(gen(image_list(1, 800, 1216), feature_maps(grids))[0], first)
    assert computed == []  # served from the cache
    other = gen(image_list(1, 800, 1216), feature_maps(grids, torch.float64))[0]
    assert len(computed) == 1 and other.dtype == torch.float64


@pytest.mark.parametrize("generator", ["fpn", "ssd"])
def test_editing_returned_anchors_in_place_leaves_later_calls_alone(generator):
    if generator == "fpn":
        gen, grids, size = ops.AnchorGenerator(**FPN), [(20, 30), (10, 15), (5, 8), (3, 4), (2, 2)], (160, 240)
    else:
        gen, grids, size = ops.DefaultBoxGenerator(SSD300_RATIOS), [(g, g) for g in SSD300_GRIDS], (300, 300)
    images, feats = image_list(2, *size), feature_maps(grids)
    first = gen(images, feats)
    expected = first[1].clone()
    first[0].add_(7.0)  # e.g. a caller shifting boxes to an image crop
    first[1].mul_(2.0)
    second = gen(images, feats)
    assert all(torch.equal(anchors, expected) for anchors in second)
    assert second[0].data_ptr() != second[1].data_ptr()  # one tensor per image, as in torchvision


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_anchors_stay_float32_for_half_precision_features(half):
    """Under autocast the feature maps are half precision; pixel coordinates
    in half precision would be off by up to 0.5 px at 1216, so anchors stay float32."""
    grids = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    anchors = ops.AnchorGenerator(**FPN)(image_list(1, 800, 1216), feature_maps(grids, half))[0]
    reference = ops.AnchorGenerator(**FPN)(image_list(1, 800, 1216), feature_maps(grids))[0]
    assert anchors.dtype == torch.float32 and torch.equal(anchors, reference)
    boxes = ops.DefaultBoxGenerator(SSD300_RATIOS)(image_list(1, 300, 300), feature_maps(
        [(g, g) for g in SSD300_GRIDS], half))[0]
    assert boxes.dtype == torch.float32


def test_anchor_generator_rejects_level_mismatch_and_empty_grid():
    gen = ops.AnchorGenerator(**FPN)
    with pytest.raises(ValueError, match="got 2 feature maps but the generator has 5 levels"):
        gen(image_list(1, 64, 64), feature_maps([(16, 16), (8, 8)]))
    with pytest.raises(ValueError, match=r"feature_maps\[0\] has an empty grid"):
        ops.AnchorGenerator()(image_list(1, 64, 64), feature_maps([(0, 16)]))
    with pytest.raises(ValueError, match="sizes has 2 levels but aspect_ratios has 1"):
        ops.AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((0.5, 1.0),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "config",
    [
        dict(aspect_ratios=SSD300_RATIOS, scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
             steps=[8, 16, 32, 64, 100, 300]),  # torchvision's ssd300_vgg16
        dict(aspect_ratios=SSD300_RATIOS, min_ratio=0.2, max_ratio=0.95),
        dict(aspect_ratios=[[2, 3]], clip=False),
    ],
)
def test_default_box_generator_matches_torchvision(config, dtype):
    grids = [(g, g) for g in SSD300_GRIDS][: len(config["aspect_ratios"])]
    images, feats = image_list(3, 300, 300, dtype), feature_maps(grids, dtype)
    ours = ops.DefaultBoxGenerator(**config)(images, feats)
    theirs = tv.DefaultBoxGenerator(**config)(images, feats)
    assert len(ours) == 3 and ours[0].dtype == dtype
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0)
    gen = ops.DefaultBoxGenerator(**config)
    reference = A._default_boxes_reference(gen, grids, (300, 300), dtype)
    torch.testing.assert_close(ours[0], reference, rtol=0, atol=0)
    assert ops.DefaultBoxGenerator(**config).num_anchors_per_location() == \
        tv.DefaultBoxGenerator(**config).num_anchors_per_location()


def test_ssd300_has_8732_default_boxes_and_non_square_images_work():
    gen = ops.DefaultBoxGenerator(SSD300_RATIOS, steps=[8, 16, 32, 64, 100, 300])
    boxes = gen(image_list(1, 300, 300), feature_maps([(g, g) for g in SSD300_GRIDS]))[0]
    assert boxes.shape == (8732, 4)
    config = dict(aspect_ratios=SSD300_RATIOS)
    grids = [(30, 40), (15, 20), (8, 10), (4, 5), (2, 3), (1, 1)]
    images, feats = image_list(1, 240, 320), feature_maps(grids)
    torch.testing.assert_close(ops.DefaultBoxGenerator(**config)(images, feats)[0],
                               tv.DefaultBoxGenerator(**config)(images, feats)[0], rtol=0, atol=0)


def test_default_box_generator_rejects_bad_config():
    with pytest.raises(ValueError, match="aspect_ratios has 2 levels but steps has 1"):
        ops.DefaultBoxGenerator([[2], [2]], steps=[8])
    with pytest.raises(ValueError, match="scales needs 3 values"):
        ops.DefaultBoxGenerator([[2], [2]], scales=[0.1, 0.2])
