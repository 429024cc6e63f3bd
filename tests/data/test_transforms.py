import numpy as np
import pytest
import torch

from detkit.data import CocoDetection, collate, collate_stacked
from detkit.data import transforms as T


def sample(h=60, w=80):
    """An image with three objects whose masks are exactly their boxes."""
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 25, 30], [40, 10, 75, 50], [0, 40, 10, 60]], dtype=np.float32)
    masks = np.zeros((3, h, w), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
        m[y1:y2, x1:x2] = 1
    target = {"boxes": boxes, "labels": np.array([1, 2, 3]), "iscrowd": np.zeros(3, bool), "masks": masks,
              "image_id": 5}
    return image, target


def mask_boxes(masks):
    out = []
    for m in masks:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        out.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1] if len(rows) else [0, 0, 0, 0])
    return np.array(out, dtype=np.float32).reshape(-1, 4)


def flip_round_trip(flip):
    """Flips once (boxes must follow the masks) and back (everything must be
    as it was); returns the original and the once-flipped pair."""
    image, target = sample()
    once_image, once = flip(image, target)
    assert np.array_equal(once["boxes"], mask_boxes(once["masks"]))
    twice_image, twice = flip(once_image, once)
    assert np.array_equal(twice_image, image)
    for key in ("boxes", "labels", "masks"):
        assert np.array_equal(twice[key], target[key])
    return image, target, once_image, once


def test_flip_twice_is_identity_and_flip_moves_boxes_with_masks():
    image, target, once_image, once = flip_round_trip(T.RandomHorizontalFlip(p=1.0))
    assert np.array_equal(once_image, image[:, ::-1])
    # x -> 80 - x on the 80 px wide sample, corners swapped; y unchanged.
    assert once["boxes"].tolist() == [[55, 5, 75, 30], [5, 10, 40, 50], [70, 40, 80, 60]]
    assert np.array_equal(once["masks"], target["masks"][:, :, ::-1])


def test_vertical_flip_moves_boxes_with_masks_and_undoes_itself():
    image, target, once_image, once = flip_round_trip(T.RandomVerticalFlip(p=1.0))
    assert np.array_equal(once_image, image[::-1])
    # y -> 60 - y on the 60 px high sample, corners swapped; x unchanged.
    assert once["boxes"].tolist() == [[5, 30, 25, 55], [40, 10, 75, 50], [0, 0, 10, 20]]
    assert np.array_equal(once["masks"], target["masks"][:, ::-1, :])
    assert once["labels"].tolist() == [1, 2, 3]


def test_crop_keeps_only_objects_whose_centre_is_inside():
    image, target = sample()
    crop = np.array([0, 0, 40, 45])
    centres = (target["boxes"][:, :2] + target["boxes"][:, 2:]) / 2
    inside = (centres[:, 0] > 0) & (centres[:, 0] < 40) & (centres[:, 1] > 0) & (centres[:, 1] < 45)
    out_image, out = T.MinIoURandomCrop._crop(image, target, crop, inside)
    assert out_image.shape == (45, 40, 3)
    assert out["labels"].tolist() == [1]  # box 2's centre (57.5, 30) and box 3's (5, 50) are outside
    assert out["masks"].shape == (1, 45, 40) and np.array_equal(out["boxes"], mask_boxes(out["masks"]))


@pytest.mark.parametrize("seed", range(8))
def test_ssd_pipeline_keeps_boxes_labels_and_masks_in_step(seed):
    image, target = sample()
    pipeline = T.Compose([T.PhotometricDistort(), T.Expand(), T.MinIoURandomCrop(), T.RandomHorizontalFlip(),
                          T.Resize(300)])
    torch.manual_seed(seed)
    out_image, out = pipeline(image, target)
    assert out_image.shape == (300, 300, 3) and out_image.dtype == np.uint8
    n = len(out["boxes"])
    assert len(out["labels"]) == len(out["masks"]) == len(out["iscrowd"]) == n >= 1
    assert set(out["labels"].tolist()) <= {1, 2, 3} and out["image_id"] == 5
    assert (out["boxes"][:, 2:] > out["boxes"][:, :2]).all()
    assert (out["boxes"] >= 0).all() and (out["boxes"] <= 300).all()
    # Every step before the resize keeps box and mask edges on the same integer
    # pixel edges; nearest-neighbour resizing then moves a mask edge by less
    # than one output pixel (300 seeds: at most 1.0 with float32 rounding).
    assert np.abs(out["boxes"] - mask_boxes(out["masks"])).max() <= 1.001


def test_transforms_are_reproducible_under_a_torch_seed():
    image, target = sample()
    pipeline = T.ssd_train(128)
    torch.manual_seed(3)
    a = pipeline(image, target)
    torch.manual_seed(3)
    b = pipeline(image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_photometric_distort_changes_pixels_reproducibly_under_a_seed():
    image, target = sample()
    original = image.copy()
    distort = T.PhotometricDistort(p=1.0)

    def distorted(seed):
        torch.manual_seed(seed)
        out_image, out = distort(image, target)
        assert out is target  # photometric: the objects stay as they are
        return out_image

    first = distorted(0)
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(image, original)  # the input is not changed in place
    assert np.mean(first != image) > 0.5  # with p=1 every step runs: most pixels change
    assert np.array_equal(distorted(0), first)
    assert np.mean(distorted(1) != first) > 0.5


def test_degenerate_boxes_are_dropped_with_their_labels_and_masks():
    image, target = sample()
    target["boxes"][1] = [40, 10, 40, 50]  # zero width
    out = T._drop_degenerate(target)
    assert out["labels"].tolist() == [1, 3] and out["masks"].shape[0] == 2


def test_expand_and_resizes():
    image, target = sample()
    torch.manual_seed(0)
    big, out = T.Expand(max_ratio=3.0, p=1.0)(image, target)
    assert big.shape[0] >= 60 and big.shape[1] >= 80
    assert np.array_equal(out["boxes"], mask_boxes(out["masks"]))
    small, out = T.ResizeShortestEdge(30, 1000)(image, target)
    assert small.shape[:2] == (30, 40) and np.allclose(out["boxes"], target["boxes"] / 2)
    capped, _ = T.ResizeShortestEdge(800, 100)(image, target)
    assert capped.shape[:2] == (75, 100)  # the long side capped at max_size


def test_normalize_to_tensor_and_presets():
    image, target = sample()
    norm, _ = T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image, target)
    assert norm.dtype == np.float32 and np.allclose(norm, (image / 255 - 0.5) / 0.5, atol=1e-5)
    tensor, out = T.ToTensor()(image, target)
    assert tensor.shape == (3, 60, 80) and tensor.max() <= 1 and out["boxes"].dtype == torch.float32
    assert out["image_id"] == 5 and out["masks"].dtype == torch.uint8
    assert T.ssd_eval(300)(image, target)[0].shape == (3, 300, 300)
    assert T.rcnn_eval(30, 1000)(image, target)[0].shape == (3, 30, 40)
    with pytest.raises(ValueError, match="OpenCV has no conversion"):
        T.ConvertColor("RGB", "XYZW")
    assert T.ConvertColor("RGB", "BGR")(image, target)[0][0, 0].tolist() == image[0, 0, ::-1].tolist()


def test_image_without_objects_passes_every_transform():
    image, target = sample()
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "image_id": 1}
    torch.manual_seed(0)
    out_image, out = T.ssd_train(64)(image, empty)
    assert out_image.shape == (3, 64, 64) and out["boxes"].shape == (0, 4)


def test_collate(shapes_set):
    ds = CocoDetection(shapes_set.image_root, shapes_set.coco_train, transforms=T.ssd_eval(96))
    images, targets = collate_stacked([ds[0], ds[1]])
    assert images.shape == (2, 3, 96, 96) and len(targets) == 2
    listed, _ = collate([ds[0], (torch.zeros(3, 50, 60), {})])
    assert [tuple(i.shape) for i in listed] == [(3, 96, 96), (3, 50, 60)]
    with pytest.raises(ValueError, match="collate_stacked needs images of one size"):
        collate_stacked([ds[0], (torch.zeros(3, 50, 60), {})])


@pytest.mark.parametrize("seed", range(12))
def test_fused_geometry_equals_the_four_transforms(seed):
    image, target = sample()
    sequential = T.Compose([T.Expand(p=0.7), T.MinIoURandomCrop(), T.RandomHorizontalFlip(), T.Resize((90, 120))])
    fused = T.ExpandCropFlipResize((90, 120), expand=T.Expand(p=0.7))
    torch.manual_seed(seed)
    seq_image, seq = sequential(image, target)
    torch.manual_seed(seed)
    fused_image, out = fused(image, target)
    assert np.allclose(out["boxes"], seq["boxes"], atol=1e-4)
    assert out["labels"].tolist() == seq["labels"].tolist()
    # Same pixels up to interpolation rounding at the borders of the original image.
    assert np.mean(np.abs(fused_image.astype(int) - seq_image.astype(int)) > 8) < 0.03
    assert out["masks"].shape == seq["masks"].shape
    assert np.mean(out["masks"] != seq["masks"]) < 0.01


def with_proposals():
    """The sample with proposals: its own boxes and two more."""
    image, target = sample()
    extra = np.array([[0, 0, 80, 60], [30, 30, 35, 36]], dtype=np.float32)
    return image, {**target, "proposals": np.concatenate([target["boxes"], extra])}


def assert_boxes_among_proposals(out):
    """Every object's box is still one of the proposals (they moved together)."""
    proposals = np.asarray(out["proposals"])
    for box in np.asarray(out["boxes"]):
        assert np.abs(proposals - box).max(1).min() < 1e-4, (box, proposals)


@pytest.mark.parametrize("transform", [
    T.Resize(100), T.ResizeShortestEdge(90, 200), T.RandomHorizontalFlip(p=1.0), T.RandomVerticalFlip(p=1.0),
    T.Expand(p=1.0), T.MinIoURandomCrop(), T.ExpandCropFlipResize(128), T.rcnn_train(96, 200)],
    ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("seed", range(3))
def test_proposals_move_with_the_image_as_boxes_do(transform, seed):
    image, target = with_proposals()
    torch.manual_seed(seed)
    out_image, out = transform(image, target)
    assert_boxes_among_proposals(out)
    proposals = np.asarray(out["proposals"])
    h, w = out_image.shape[-2:] if isinstance(out_image, torch.Tensor) else out_image.shape[:2]
    assert (proposals[:, 2:] > proposals[:, :2]).all()
    assert (proposals >= 0).all() and (proposals[:, 0::2] <= w).all() and (proposals[:, 1::2] <= h).all()
    assert np.array_equal(target["proposals"], with_proposals()[1]["proposals"])  # the input is left alone


def test_a_crop_drops_the_proposals_it_cuts_away():
    image, target = with_proposals()
    _, out = T.MinIoURandomCrop._crop(image, target, np.array([0, 0, 40, 45]), np.array([True, False, False]))
    # Box 1's proposal is inside; box 2's (x 40..75) has no width left and goes; box 3's is cut to
    # y 40..45 and the whole-image one to the crop (proposals stay even where their objects go).
    assert out["proposals"].tolist() == [[5, 5, 25, 30], [0, 40, 10, 45], [0, 0, 40, 45], [30, 30, 35, 36]]
    assert out["labels"].tolist() == [1]
