"""YOLO datasets (detkit/data/yolo.py) on the hand-written Ultralytics-style
fixture in tests/fixtures/formats/yolo: expected boxes worked out by hand from
the label files' numbers, supervision as an independent reader, errors that
name file and line, and one tiny training epoch through the config."""
import os
import re
import shutil

import numpy as np
import pytest

from detkit.config import ConfigError, DataConfig, apply_overrides
from detkit.data.problems import AnnotationError
from detkit.data.yolo import YOLODetection, read_yolo, yolo_label_path, yolo_splits

from tests.helpers import REPO, tiny_ssd_config

FIXTURE = os.path.join(REPO, "tests", "fixtures", "formats", "yolo")

# By hand: W x H times the normalised numbers; a.jpg is 64x48, b.png 40x30, d.jpg 48x48.
#   a.txt 1: 0 .5 .5 .25 .5    -> cx 32, cy 24, w 16, h 24          -> [24, 12, 40, 36] cat
#   a.txt 2: 1 .125 .25 .25 .5 -> cx 8, cy 12, w 16, h 24           -> [0, 0, 16, 24] dog
#   a.txt 3: 2 .5 .25 .75 .25 .625 .75 -> (32, 12) (48, 12) (40, 36) -> [32, 12, 48, 36] bird, a polygon
#   b.txt 1: 1 .5 .5 1 1       -> [0, 0, 40, 30] dog
#   b.txt 2: 0 .05 .1 .2 .2    -> cx 2, cy 3, w 8, h 6 -> [-2, 0, 6, 6], clipped [0, 0, 6, 6] cat
#   c.jpg has no label file: no objects;   d.txt: 2 .5 .5 .5 .5 -> [12, 12, 36, 36] bird
EXPECTED = {
    "images/train/a.jpg": ((64, 48), [[24, 12, 40, 36], [0, 0, 16, 24], [32, 12, 48, 36]], [1, 2, 3]),
    "images/train/b.png": ((40, 30), [[0, 0, 40, 30], [0, 0, 6, 6]], [2, 1]),
    "images/train/c.jpg": ((32, 32), [], []),
    "images/val/d.jpg": ((48, 48), [[12, 12, 36, 36]], [3]),
}


@pytest.fixture
def yolo(tmp_path):
    """A writable copy of the fixture."""
    return shutil.copytree(FIXTURE, tmp_path / "yolo")


def test_the_fixture_gives_the_boxes_worked_out_by_hand():
    for split, count in (("train", 3), ("val", 1)):
        dataset = YOLODetection(FIXTURE, split)
        assert dataset.classes == ["cat", "dog", "bird"] and len(dataset) == count
        for index in range(len(dataset)):
            image, target = dataset[index]
            info = dataset.images[dataset.ids[index]]
            (width, height), boxes, labels = EXPECTED[info["file_name"]]
            assert image.shape == (height, width, 3) and (info["width"], info["height"]) == (width, height)
            np.testing.assert_allclose(target["boxes"], np.array(boxes, np.float32).reshape(-1, 4), atol=1e-5)
            assert target["labels"].tolist() == labels
    records = YOLODetection(FIXTURE).records
    assert records.image_root == FIXTURE  # path: . is data.yaml's folder
    # the records (the evaluation's ground truth) hold the clipped box too, and its area
    assert records.coco["annotations"][4]["bbox"] == pytest.approx([0, 0, 6, 6])
    assert records.coco["annotations"][4]["area"] == pytest.approx(36)


def test_a_polygon_line_gives_its_box_and_its_mask():
    dataset = YOLODetection(os.path.join(FIXTURE, "data.yaml"), with_masks=True)
    masks = dataset[0][1]["masks"]
    assert masks.shape == (3, 48, 64) and masks[:2].sum() == 0  # box lines carry no polygon
    triangle = masks[2]  # (32, 12) (48, 12) (40, 36): 16 wide at the top, a point at the bottom
    assert triangle[13, 33:47].all() and triangle[30, 39:41].all()
    assert not triangle[:11].any() and not triangle[:, :31].any() and not triangle[:, 49:].any()
    assert abs(int(triangle.sum()) - 16 * 24 / 2) <= 16 + 24  # the area, give or take the edge pixels


def test_label_paths_follow_ultralytics():
    assert yolo_label_path("/d/images/train/a.b.jpg") == "/d/labels/train/a.b.txt"
    assert yolo_label_path("/images/x/images/a.png") == "/images/x/labels/a.txt"  # the last images/ folder
    assert yolo_label_path("images/a.jpg") == "labels/a.txt"
    assert yolo_label_path("/d/pictures/a.jpg") == "/d/pictures/a.txt"  # no images/ folder: beside the image


def test_names_as_a_list_path_elsewhere_and_split_lists(yolo, tmp_path):
    (yolo / "val.txt").write_text("./images/val/d.jpg\nimages/train/a.jpg\n\n")
    (tmp_path / "data.yaml").write_text(f"path: {yolo}\ntrain: [images/train, images/val]\nval: val.txt\n"
                                        "names: [cat, dog, bird]\n")
    train = read_yolo(tmp_path, "train")
    assert train.image_root == str(yolo) and train.classes == ["cat", "dog", "bird"]
    assert [i["file_name"] for i in train.coco["images"]] == list(EXPECTED)
    assert [i["file_name"] for i in read_yolo(tmp_path, "val").coco["images"]] == ["images/val/d.jpg",
                                                                                    "images/train/a.jpg"]
    assert yolo_splits(tmp_path) == ["train", "val"]


def test_an_export_s_parent_relative_split_is_found_as_ultralytics_finds_it(yolo):
    (yolo / "data.yaml").write_text("train: ../images/train\nnames: {2: bird, '0': cat, 1: dog}\n")
    records = read_yolo(yolo)
    assert len(records.coco["annotations"]) == 5 and records.classes == ["cat", "dog", "bird"]  # by id, any order


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "expected 5 values (class cx cy w h) or a class and 3 or more x y pairs, got 4"),
    ("0 0.5 0.5 0.2 0.2 0.9", "got 6 value(s)"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", "got 8 value(s)"),
    ("3 0.5 0.5 0.2 0.2", "class id 3 is outside names (0..2)"),
    ("-1 0.5 0.5 0.2 0.2", "class id -1 is outside names"),
    ("0.5 0.5 0.5 0.2 0.2", "class id 0.5 is outside names"),
    ("0 320 240 64 48", "coordinates must be normalised to [0, 1], got 320 (pixels?)"),
    ("0 0.5 -0.1 0.2 0.2", "got -0.1"),
    ("0 0.5 0.5 nan 0.2", "'nan' is not a number"),
    ("0 0.5 0.5 inf 0.2", "'inf' is not a number"),
    ("0 0.5 0.5 1e999 0.2", "too large"),
    ("cat 0.5 0.5 0.2 0.2", "'cat' is not a number"),
    ("0 0,5 0.5 0.2 0.2", "'0,5' is not a number"),
])
def test_a_bad_line_is_named_by_file_and_line_or_skipped(yolo, line, message):
    label = yolo / "labels" / "train" / "b.txt"
    label.write_text(f"1 0.5 0.5 1 1\n\n{line}\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{label}:3: ") + ".*" + re.escape(message)):
        read_yolo(yolo)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 invalid annotation"):
        dataset = YOLODetection(yolo, skip_invalid=True)
    assert len(dataset.skipped) == 1 and dataset.skipped[0].startswith(f"{label}:3: ")
    assert dataset[1][1]["boxes"].tolist() == [[0, 0, 40, 30]]  # the good line stays


@pytest.mark.parametrize("yaml_text, message", [
    ("train: images/train\nnames: [cat\n", r":3: malformed YAML \(while parsing a flow sequence"),
    ("train: images/train\n", r": 'names' must be a non-empty list of class names or a map"),
    ("train: images/train\nnames: []\n", r": 'names' must be a non-empty list"),
    ("train: images/train\nnames: {0: cat, 2: dog}\n", r": 'names' maps class ids, which must be 0\.\.1"),
    ("train: images/train\nnames: [cat, no]\n", r": names: class 1 must be a name \(quote it in YAML\), got False"),
    ("train: images/train\nnames: [cat, cat]\n", r": names: 'cat' appears twice"),
    ("train: images/train\nnc: 3\nnames: [cat, dog]\n", r": nc is 3 but names has 2 classes"),
    ("val: images/val\nnames: [cat, dog, bird]\n", r": no 'train' split; the file has val"),
    ("train: 7\nnames: [cat, dog, bird]\n", r": train: expected a folder or a \.txt list of images, got 7"),
    ("train: images/empty\nnames: [cat, dog, bird]\n", r": the 'train' split holds no images"),
    ("- a\n- b\n", r": expected a YAML mapping"),
    ("train: images/train\nnames: &n [cat, *n]\n", r": names: class 1 must be a name"),  # itself, by an alias
])
def test_a_bad_data_yaml_is_named(yolo, yaml_text, message):
    (yolo / "images" / "empty").mkdir()
    (yolo / "data.yaml").write_text(yaml_text)
    with pytest.raises(AnnotationError, match=re.escape(str(yolo / "data.yaml")) + message):
        read_yolo(yolo / "data.yaml", skip_invalid=True)  # a broken file raises even when skipping


def test_missing_files_and_lists_leading_outside_are_named(yolo):
    (yolo / "list.txt").write_text("images/train/a.jpg\n../elsewhere/a.jpg\n")
    (yolo / "data.yaml").write_text("train: list.txt\nval: images/nowhere\nnames: [cat, dog, bird]\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{yolo / 'list.txt'}:2: file name '../elsewhere/a.jpg' "
                                                        "leads outside")):
        read_yolo(yolo)
    with pytest.raises(FileNotFoundError, match=r"data\.yaml: val: not found: .*images/nowhere"):
        read_yolo(yolo, "val")
    with pytest.raises(FileNotFoundError, match=r"no data\.yaml in the folder"):
        read_yolo(yolo / "images")
    (yolo / "data.yaml").write_text("train: images/train\nnames: [cat, dog, bird]\n")
    (yolo / "labels" / "train" / "a.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\n\xff\xfe\n")
    with pytest.raises(AnnotationError, match=r"a\.txt: not a UTF-8 text file"):
        read_yolo(yolo, skip_invalid=True)  # a broken file, not a bad line


def test_supervision_reads_the_same_boxes():
    """supervision (an independent reader) on the same files: the same boxes and classes per image."""
    sv = pytest.importorskip("supervision")
    theirs = sv.DetectionDataset.from_yolo(os.path.join(FIXTURE, "images", "train"),
                                           os.path.join(FIXTURE, "labels", "train"),
                                           os.path.join(FIXTURE, "data.yaml"))
    ours = YOLODetection(FIXTURE)
    assert theirs.classes == ours.classes
    for index in range(len(ours)):
        path = os.path.join(FIXTURE, ours.images[ours.ids[index]]["file_name"])
        detections = theirs.annotations[path]
        target = ours.target(ours.ids[index])
        # supervision does not clip: b.txt's second box reaches x = -2
        expected = np.clip(detections.xyxy, 0, [[ours.images[ours.ids[index]]["width"],
                                                 ours.images[ours.ids[index]]["height"]] * 2])
        np.testing.assert_allclose(target["boxes"], expected.reshape(-1, 4), atol=1e-4)
        assert target["labels"].tolist() == (detections.class_id + 1).tolist()


def test_supervision_reads_the_same_coco_and_voc_boxes(shapes_set):
    """The same cross-check for the COCO and VOC readers, on a generated Shapes set (both layouts)."""
    sv = pytest.importorskip("supervision")
    from detkit.data import CocoDetection, VOCDetection

    coco = CocoDetection(shapes_set.image_root, shapes_set.coco_val)
    theirs = sv.DetectionDataset.from_coco(shapes_set.image_root, shapes_set.coco_val)
    for image_id in coco.ids:
        detections = theirs.annotations[os.path.join(shapes_set.image_root, coco.images[image_id]["file_name"])]
        np.testing.assert_allclose(coco.target(image_id)["boxes"], detections.xyxy.reshape(-1, 4), atol=1e-4)
    voc = VOCDetection(shapes_set.voc_root, "2007", "val", classes=shapes_set.classes, keep_difficult=True)
    theirs = sv.DetectionDataset.from_pascal_voc(os.path.join(voc.root, "JPEGImages"),
                                                 os.path.join(voc.root, "Annotations"))
    for image_id in voc.ids:
        target, file_name, _ = voc.target(image_id)
        detections = theirs.annotations[os.path.join(voc.root, "JPEGImages", file_name)]
        np.testing.assert_allclose(target["boxes"], detections.xyxy.reshape(-1, 4), atol=1e-4)
        assert [voc.classes[label - 1] for label in target["labels"]] == [theirs.classes[c]
                                                                          for c in detections.class_id]


def yolo_config(root: str, shapes_root: str, **data):
    config = tiny_ssd_config(shapes_root, epochs=1)
    config.data = DataConfig(**{**vars(config.data), "format": "yolo", "root": root, "train_split": "train",
                                "val_split": "val", "batch_size": 2, "num_workers": 0, **data})
    return config.validate()


def test_a_config_selects_yolo_and_names_a_split_data_yaml_lacks(shapes_root):
    from detkit.engine.build import build_datasets

    config = apply_overrides(tiny_ssd_config(shapes_root), ["data.format=yolo", f"data.root={FIXTURE}",
                                                            "data.train_split=train", "data.val_split=val"])
    splits = build_datasets(config)
    assert isinstance(splits.train, YOLODetection) and splits.classes == ["cat", "dog", "bird"]
    assert [i["file_name"] for i in splits.val_ann["images"]] == ["images/val/d.jpg"]
    with pytest.raises(ConfigError, match=r"data\.val_split='test' is not a split of .*; it has \['train', 'val'\]"):
        build_datasets(yolo_config(FIXTURE, shapes_root, val_split="test"))


def test_one_tiny_epoch_trains_and_scores_on_a_yolo_set(tmp_path, shapes_root):
    from detkit.engine import train

    state = train(yolo_config(FIXTURE, shapes_root), str(tmp_path), progress=False)
    assert state.epoch == 1 and "AP50" in state.last_metrics and 0 <= state.best <= 1
    assert os.path.isfile(tmp_path / "last.pth") and os.path.isfile(tmp_path / "metrics.json")
    assert sorted(os.listdir(FIXTURE)) == ["data.yaml", "images", "labels"]  # nothing written beside the data
