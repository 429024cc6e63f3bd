"""detkit.data.checks on datasets read into COCO's form: each planted defect
is reported once, with its kind and record, and nothing else is."""
import json
import math
import os
import shutil

import cv2
import numpy as np
import pytest

from detkit.data import check_dataset, load_records
from detkit.data.checks import KINDS, check_records


def _image(path, seed: int, size=(40, 60)) -> None:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _coco(tmp_path, annotations, images=None) -> str:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    images = images or [{"id": n, "file_name": f"{n}.png", "width": 60, "height": 40} for n in (1, 2, 3)]
    for image in images:
        if not (folder / image["file_name"]).exists() and "/" not in image["file_name"]:
            _image(folder / image["file_name"], image["id"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return str(path)


def _ann(n, image_id, bbox, category=1):
    return {"id": n, "image_id": image_id, "category_id": category, "bbox": bbox, "area": 1.0, "iscrowd": 0}


def test_a_clean_set_has_no_defects(shapes_set):
    report = check_records(load_records(shapes_set.coco_train, image_root=shapes_set.image_root))
    assert report.defects == [] and report.images == 24 and report.boxes > 24


@pytest.mark.parametrize("bbox, kind, severity", [
    ([1, 1, math.nan, 3], "box_nan", "error"), ([1, 1, 0, 3], "box_empty", "error"),
    ([1, 1, -2, 3], "box_empty", "error"), ([60, 30, 20, 5], "box_outside", "error"),
    ([-8, 1, 8, 5], "box_outside", "error"), ([50, 30, 20, 5], "box_outside", "warning"),
    ([-3, 1, 5, 5], "box_outside", "warning")])
def test_bad_boxes_are_named(tmp_path, bbox, kind, severity):
    """Wholly outside the 60x40 image is an error; reaching past it a warning (training clips it)."""
    report = check_dataset(_coco(tmp_path, [_ann(1, 1, [2, 2, 5, 5]), _ann(7, 2, bbox)]),
                           image_root=str(tmp_path / "images"))
    assert [(d.kind, d.where, d.severity) for d in report.defects] == [
        (kind, "annotation 7 of image 2 (2.png)", severity)]
    assert "annotation 7" in report.text()


def test_a_box_within_half_a_pixel_of_the_edge_is_not_outside(tmp_path):
    report = check_dataset(_coco(tmp_path, [_ann(1, 1, [-0.4, 0, 60.3, 40.4])]), image_root=str(tmp_path / "images"))
    assert report.defects == []


def test_references_duplicates_and_files(tmp_path):
    images = [{"id": n, "file_name": f"{n}.png", "width": 60, "height": 40} for n in (1, 2, 3, 4, 5)]
    images.append({"id": 6, "file_name": "../outside.png", "width": 60, "height": 40})
    annotations = [_ann(1, 1, [2, 2, 5, 5]), _ann(2, 1, [2, 2, 5, 5]),  # a duplicate
                   _ann(3, 1, [2, 2, 5, 5], category=2),  # the same box, another class: fine
                   _ann(4, 9, [2, 2, 5, 5]),  # no such image
                   _ann(5, 2, [2, 2, 5, 5], category=7)]  # no such category
    path = _coco(tmp_path, annotations, images)
    folder = tmp_path / "images"
    (folder / "3.png").unlink()  # missing
    shutil.copy(folder / "1.png", folder / "4.png")  # the same content under another name
    data = (folder / "5.png").read_bytes()
    (folder / "5.png").write_bytes(data[: len(data) // 2])  # truncated
    report = check_dataset(path, image_root=str(folder))
    found = sorted((d.kind, d.where) for d in report.defects)
    assert found == sorted([("duplicate_box", "annotation 2 of image 1 (1.png)"),
                            ("bad_record", "annotation 4"), ("class_id", "annotation 5 of image 2 (2.png)"),
                            ("missing_image", "image 3 (3.png)"), ("duplicate_image", "image 4 (4.png)"),
                            ("truncated_image", "image 5 (5.png)"), ("unsafe_path", "image 6 (../outside.png)")])
    assert {d.kind for d in report.warnings} == {"duplicate_box", "duplicate_image"}
    assert all(d.kind in KINDS for d in report.defects)
    assert report.summary().endswith("(bad_record 1, class_id 1, duplicate_box 1, duplicate_image 1, "
                                     "missing_image 1, truncated_image 1, unsafe_path 1)")


def test_an_unreadable_header_is_named(tmp_path):
    path = _coco(tmp_path, [])
    (tmp_path / "images" / "2.png").write_bytes(b"not an image at all" * 10)
    report = check_dataset(path, image_root=str(tmp_path / "images"))
    assert [(d.kind, d.where) for d in report.defects] == [("unreadable_image", "image 2 (2.png)")]


def test_voc_objects_the_reader_skips_are_reported_with_their_file(shapes_set, tmp_path):
    root = tmp_path / "VOCdevkit"
    shutil.copytree(os.path.join(shapes_set.root, "VOCdevkit"), root)
    xml = root / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<name>", "<name>unknown_", 1))
    report = check_dataset(str(root), "voc", split="train", classes=list(shapes_set.classes))
    assert [d.kind for d in report.defects] == ["bad_record"]
    assert "000001.xml" in report.defects[0].line() and "unknown class" in report.defects[0].message


def test_a_truncated_jpeg_is_named_and_a_padded_one_is_not(tmp_path):
    images = [{"id": n, "file_name": f"{n}.jpg", "width": 60, "height": 40} for n in (1, 2)]
    folder = tmp_path / "images"
    folder.mkdir()
    for n in (1, 2):
        _image(folder / f"{n}.jpg", n)
    (folder / "1.jpg").write_bytes((folder / "1.jpg").read_bytes()[:-300])  # cut before the end marker
    (folder / "2.jpg").write_bytes((folder / "2.jpg").read_bytes() + b"\0" * 100)  # padding after it is allowed
    report = check_dataset(_coco(tmp_path, [], images), image_root=str(folder))
    assert [(d.kind, d.where) for d in report.defects] == [("truncated_image", "image 1 (1.jpg)")]
