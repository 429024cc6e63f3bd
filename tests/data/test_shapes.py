import filecmp
import json
import os

import numpy as np
import pytest

from detkit.data import CocoDetection, VOCDetection, shapes


def test_generation_is_deterministic_for_a_seed(tmp_path, shapes_set):
    again = shapes.generate(tmp_path / "again", num_train=24, num_val=6, image_size=128, seed=1)
    for a, b in ((shapes_set.coco_train, again.coco_train), (shapes_set.coco_val, again.coco_val)):
        assert json.loads(open(a).read()) == json.loads(open(b).read())
    names = sorted(os.listdir(shapes_set.image_root))
    assert names == sorted(os.listdir(again.image_root)) and len(names) == 30
    assert all(filecmp.cmp(os.path.join(shapes_set.image_root, n), os.path.join(again.image_root, n), shallow=False)
               for n in names)
    other = shapes.generate(tmp_path / "other", num_train=24, num_val=6, image_size=128, seed=2)
    assert json.loads(open(other.coco_train).read()) != json.loads(open(shapes_set.coco_train).read())


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_and_voc_layouts_give_the_same_boxes(shapes_set, split):
    coco = CocoDetection(shapes_set.image_root, getattr(shapes_set, f"coco_{split}"), with_masks=True)
    voc = VOCDetection(shapes_set.voc_root, image_set=split, classes=shapes_set.classes, keep_difficult=True)
    assert len(coco) == len(voc) > 0
    assert coco.classes == list(shapes_set.classes) == voc.classes
    total = 0
    for i in range(len(coco)):
        (image_c, tc), (image_v, tv) = coco[i], voc[i]
        assert np.array_equal(image_c, image_v)
        assert np.array_equal(tc["boxes"], tv["boxes"]) and np.array_equal(tc["labels"], tv["labels"])
        for box, mask in zip(tc["boxes"], tc["masks"]):  # each box is its mask's tight box
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        total += len(tc["boxes"])
    assert total >= len(coco)


def test_hard_preset_has_more_classes_small_objects_and_occlusion(hard_set):
    data = json.loads(open(hard_set.coco_train).read())
    assert len(data["categories"]) == len(shapes.HARD_CLASSES) > len(shapes.BASIC_CLASSES)
    areas = np.array([a["area"] for a in data["annotations"]])
    assert (areas < 32 ** 2).mean() > 0.3  # COCO "small"
    assert len(data["annotations"]) / len(data["images"]) > 4
    voc = VOCDetection(hard_set.voc_root, image_set="train", classes=hard_set.classes, keep_difficult=True)
    assert sum(int(voc[i][1]["difficult"].sum()) for i in range(len(voc))) > 0  # heavily occluded objects


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="preset must be one of"):
        shapes.generate(tmp_path, 1, 0, preset="impossible")
    with pytest.raises(ValueError, match="num_train >= 1"):
        shapes.generate(tmp_path, 0, 0)
