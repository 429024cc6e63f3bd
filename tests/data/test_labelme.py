"""LabelMe folders (detkit/data/labelme.py) on the hand-written LabelMe 5
fixture in tests/fixtures/formats/labelme: boxes and masks worked out by hand
from the JSON's points, the embedded image, grouped shapes, and errors that
name the file and the shape."""
import base64
import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest

from detkit.config import apply_overrides
from detkit.data.labelme import IMAGE_DATA, LabelMeDetection, read_labelme
from detkit.data.problems import AnnotationError

from tests.helpers import REPO, tiny_ssd_config

FIXTURE = os.path.join(REPO, "tests", "fixtures", "formats", "labelme")


@pytest.fixture
def folder(tmp_path):
    """A writable copy of the fixture."""
    return shutil.copytree(FIXTURE, tmp_path / "labelme")


def edit(path, change):
    """Rewrites a LabelMe JSON file after change(content)."""
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_the_fixture_gives_the_boxes_worked_out_by_hand():
    dataset = LabelMeDetection(FIXTURE)
    assert dataset.classes == ["cat", "dog"]  # sorted labels; "nose" is a point, no object
    image, target = dataset[0]
    assert image.shape == (48, 64, 3)
    # a rectangle drawn from (30, 25) to (10, 5); a triangle (40, 10) (60, 10) (50, 40); two triangles of
    # group 1, (2, 30) (8, 30) (5, 40) and (12, 30) (18, 30) (15, 40), one object enclosing both
    assert target["boxes"].tolist() == [[10, 5, 30, 25], [40, 10, 60, 40], [2, 30, 18, 40]]
    assert target["labels"].tolist() == [1, 2, 2]


def test_masks_come_from_polygons_and_a_group_is_their_union():
    masks = LabelMeDetection(FIXTURE, with_masks=True)[0][1]["masks"]
    assert masks.shape == (3, 48, 64) and masks[0].sum() == 0  # a rectangle is a box, no polygon
    assert masks[1][12, 41:59].all() and masks[1][35, 49:51].all() and not masks[1][:9].any()
    group = masks[2]
    assert group[31, 3:7].all() and group[31, 13:17].all()  # both triangles
    assert not group[:, 9:12].any()  # and nothing between them
    assert abs(int(masks[1].sum()) - 20 * 30 / 2) <= 20 + 30 and abs(int(group.sum()) - 2 * 6 * 10 / 2) <= 32


def test_the_embedded_image_is_used_when_the_file_is_missing(folder):
    assert not os.path.exists(os.path.join(FIXTURE, "b.png"))
    dataset = LabelMeDetection(FIXTURE)
    image, target = dataset[1]
    data = base64.b64decode(json.loads((folder / "b.json").read_text())["imageData"])
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(image, expected) and target["boxes"].tolist() == [[0, 0, 20, 15]]
    cv2.imwrite(str(folder / "b.png"), np.full((30, 40, 3), 7, np.uint8))  # the file, once there, wins
    records = read_labelme(folder)
    assert IMAGE_DATA not in records.coco["images"][1] and LabelMeDetection(folder)[1][0].max() == 7
    assert not any(os.path.exists(os.path.join(FIXTURE, name)) for name in ("b.png", "b.jpg"))  # nothing written


def test_subfolders_classes_and_backslashes(folder):
    (folder / "sub").mkdir()
    shutil.move(folder / "a.json", folder / "sub" / "a.json")
    edit(folder / "sub" / "a.json", lambda c: c.update(imagePath="..\\a.jpg"))
    with pytest.raises(AnnotationError, match=r"sub/a\.json: imagePath: file name '\.\./a\.jpg' leads outside"):
        read_labelme(folder)
    shutil.move(folder / "a.jpg", folder / "sub" / "a.jpg")
    edit(folder / "sub" / "a.json", lambda c: c.update(imagePath="a.jpg"))
    records = read_labelme(folder, classes=["dog", "cat", "bird"])
    assert [i["file_name"] for i in records.coco["images"]] == ["b.png", "sub/a.jpg"]
    assert records.classes == ["dog", "cat", "bird"]
    assert [a["category_id"] for a in records.coco["annotations"]] == [2, 2, 1, 1]
    edit(folder / "b.json", lambda c: c["shapes"][0].update(label="zebra"))  # seen first, sorted last
    assert read_labelme(folder).classes == ["cat", "dog", "zebra"]


SHAPE = {"label": "cat", "points": [[1, 1], [5, 5]], "group_id": None, "description": "", "shape_type": "rectangle",
         "flags": {}}


@pytest.mark.parametrize("change, message", [
    ({"label": ""}, "label must be a non-empty string, got ''"),
    ({"label": 3}, "label must be a non-empty string, got 3"),
    ({"group_id": "1"}, "group_id must be an integer or null, got '1'"),
    ({"shape_type": "circle"}, "shape_type 'circle' is not supported"),
    ({"points": [[1, 1]]}, "a rectangle needs 2 corners (or 4), got 1"),
    ({"shape_type": "polygon"}, "a polygon needs 3 or more points, got 2"),
    ({"points": [[1, 1], [5, None]]}, "points must be a list of finite [x, y] pairs"),
    ({"points": [[1, 1], [5, float("nan")]]}, "points must be a list of finite [x, y] pairs"),
    ({"points": [[1, 1], [5, 5, 5]]}, "points must be a list of finite [x, y] pairs"),
    ({"points": "1,1 5,5"}, "points must be a list of finite [x, y] pairs"),
    ({"points": [[100, 100], [120, 120]]}, "box [100.0, 100.0, 120.0, 120.0] lies outside the 40x30 image"),
    ({"points": [[1, 1], [5, 1], [1e9, 5]], "shape_type": "polygon"}, "polygon coordinates must be finite and within"),
    ({"label": "bird"}, "label 'bird' is not among the classes ['cat', 'dog']"),
])
def test_a_bad_shape_is_named_by_file_and_index_or_skipped(folder, change, message):
    edit(folder / "b.json", lambda c: c["shapes"].append({**SHAPE, **change}))
    where = re.escape(f"{folder / 'b.json'}: shapes[1]")
    with pytest.raises(AnnotationError, match=where + ".*: " + re.escape(message)):
        read_labelme(folder, classes=["cat", "dog"])
    with pytest.warns(RuntimeWarning, match=r"skipped 1 invalid annotation"):
        dataset = LabelMeDetection(folder, classes=["cat", "dog"], skip_invalid=True)
    assert len(dataset.skipped) == 1 and dataset[1][1]["boxes"].tolist() == [[0, 0, 20, 15]]


@pytest.mark.parametrize("change, message", [
    ({"imagePath": "/etc/passwd"}, "imagePath: file name '/etc/passwd' is absolute"),
    ({"imagePath": "../b.png"}, "imagePath: file name '../b.png' leads outside"),
    ({"imagePath": None}, "imagePath must be a non-empty string, got None"),
    ({"imageHeight": "30"}, "imageWidth and imageHeight must be positive integers"),
    ({"imageWidth": 0}, "imageWidth and imageHeight must be positive integers"),
    ({"imageData": "not base64!"}, "imageData is not valid base64"),
    ({"imageData": "猫"}, "imageData is not valid base64"),
    ({"imageData": 5}, "imageData must be base64 text or null, got 5"),
])
def test_a_bad_image_record_is_named_or_skipped(folder, change, message):
    edit(folder / "b.json", lambda c: c.update(change))
    with pytest.raises(AnnotationError, match=re.escape(f"{folder / 'b.json'}: {message}")):
        read_labelme(folder)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 invalid"):
        records = read_labelme(folder, skip_invalid=True)
    assert [i["file_name"] for i in records.coco["images"]] == ["a.jpg"]


def test_broken_files_raise_even_when_skipping(folder):
    (folder / "c.json").write_text('{"shapes": [')
    with pytest.raises(AnnotationError, match=r"c\.json: not valid JSON"):
        read_labelme(folder, skip_invalid=True)
    (folder / "c.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(AnnotationError, match=r"c\.json: not a LabelMe file \(a JSON object with a 'shapes' list\)"):
        read_labelme(folder, skip_invalid=True)
    (folder / "c.json").write_bytes(b'{"shapes": [], "imagePath": "\xff"}')
    with pytest.raises(AnnotationError, match=r"c\.json: not valid JSON \(UnicodeDecodeError"):
        read_labelme(folder)
    with pytest.raises(FileNotFoundError, match=r"LabelMe folder not found"):
        read_labelme(folder / "nowhere")


def test_a_missing_image_without_image_data_is_named_when_read(folder):
    os.remove(folder / "a.jpg")
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*labelme/a\.jpg"):
        LabelMeDetection(folder)[0]
    edit(folder / "b.json", lambda c: c.update(imageWidth=41))
    with pytest.raises(ValueError, match=r"b\.png \(imageData\): image is 40x30 but .*labelme says 41x30"):
        LabelMeDetection(folder)[1]


def test_a_config_selects_labelme_and_val_shares_the_training_classes(tmp_path, shapes_root):
    from detkit.engine.build import build_datasets

    root = tmp_path / "data"
    shutil.copytree(FIXTURE, root / "train")
    (root / "val").mkdir()
    shutil.copy(os.path.join(FIXTURE, "b.json"), root / "val" / "b.json")
    edit(root / "val" / "b.json", lambda c: c["shapes"][0].update(label="dog"))
    config = apply_overrides(tiny_ssd_config(shapes_root), ["data.format=labelme", f"data.root={root}",
                                                            "data.train_images=train", "data.val_images=val"])
    splits = build_datasets(config)
    assert isinstance(splits.val, LabelMeDetection) and splits.val.classes == splits.classes == ["cat", "dog"]
    assert splits.val_ann["annotations"][0]["category_id"] == 2 and splits.val[0][1]["labels"].tolist() == [2]
