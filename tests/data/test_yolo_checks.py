"""tools/data.py check on a YOLO set: each planted defect is reported once
with its label file and line (or image), and nothing else is."""
import os
import shutil

import pytest

from detkit.data import check_dataset, load_records, write_records


@pytest.fixture(params=["polygons", "boxes"])
def yolo(shapes_set, tmp_path, request):
    """The Shapes split as YOLO label files of polygon lines, or of box lines
    (checked one by one, or all at once with numpy)."""
    out = tmp_path / "yolo"
    records = load_records(shapes_set.coco_train, image_root=shapes_set.image_root)
    if request.param == "boxes":
        for ann in records.coco["annotations"]:
            ann["segmentation"] = []
    write_records(records, out, "yolo")
    return out


def _labels(yolo):
    return sorted((yolo / "labels" / "train").iterdir())


def _set_line(path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_a_converted_shapes_set_is_clean(yolo):
    report = check_dataset(yolo / "data.yaml")
    assert report.defects == [] and report.images == 24 and report.boxes > 24 and report.empty_images == 0


def test_every_planted_defect_is_named_with_its_file_and_line(yolo):
    labels = _labels(yolo)
    planted = {
        "coordinates": "0 64 70 20 18",  # pixels, not fractions
        "class_id": "5 0.5 0.5 0.1 0.1",  # 5 classes: ids 0..4
        "box_nan": "0 0.5 0.5 nan 0.1",
        "box_empty": "1 0.5 0.5 0 0.1",
        "box_outside": "2 0.95 0.5 0.2 0.1",
        "bad_record": "0 0.5 0.5",
    }
    expected = set()
    for path, (kind, line) in zip(labels, planted.items()):
        _set_line(path, 1, line)
        expected.add((kind, f"labels/train/{path.name}:1"))
    duplicate = labels[6]
    first = duplicate.read_text().splitlines()[0]
    duplicate.write_text(duplicate.read_text() + first + "\n")
    expected.add(("duplicate_box", f"labels/train/{duplicate.name}:{len(duplicate.read_text().splitlines())}"))
    labels[7].unlink()  # an image without its label file
    image_of = {p.stem: p for p in (yolo / "images" / "train").iterdir()}
    expected.add(("missing_labels", f"images/train/{image_of[labels[7].stem].name}"))
    labels[8].write_text("")  # an image without objects: no defect
    (yolo / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    expected.add(("missing_image", "labels/train/orphan.txt"))
    truncated = image_of[labels[9].stem]
    truncated.write_bytes(truncated.read_bytes()[:-200])
    expected.add(("truncated_image", f"images/train/{truncated.name}"))
    copy = yolo / "images" / "train" / f"copy{image_of[labels[10].stem].suffix}"
    shutil.copy(image_of[labels[10].stem], copy)
    shutil.copy(labels[10], yolo / "labels" / "train" / "copy.txt")
    expected.add(("duplicate_image", f"images/train/{copy.name}"))

    report = check_dataset(yolo / "data.yaml")
    assert {(d.kind, d.where) for d in report.defects} == expected
    assert len(report.defects) == len(expected)
    assert report.empty_images == 1 and report.images == 25
    assert {d.kind for d in report.warnings} == {"duplicate_box", "missing_labels", "duplicate_image", "box_outside"}
    assert "(pixels?)" in next(d.message for d in report.defects if d.kind == "coordinates")


def test_an_unreadable_image_is_named(yolo):
    image = sorted((yolo / "images" / "train").iterdir())[0]
    image.write_bytes(b"\0" * 100)
    report = check_dataset(yolo / "data.yaml")
    assert [(d.kind, d.where) for d in report.defects] == [("unreadable_image", f"images/train/{image.name}")]


def test_a_split_alone(yolo):
    assert check_dataset(os.fspath(yolo), split="train").images == 24


def test_converted_images_are_copies_not_links(yolo, shapes_set):
    """Editing the output in place (as the tests above do) must leave the source dataset alone."""
    out = sorted((yolo / "images" / "train").iterdir())[0]
    source = os.path.join(shapes_set.image_root, out.name)
    before = open(source, "rb").read()
    out.write_bytes(b"\0" * 10)
    assert open(source, "rb").read() == before
