"""CVAT for images 1.1 XML (detkit/data/cvat.py) on the hand-written export in
tests/fixtures/formats/cvat: boxes and masks worked out by hand from the XML's
numbers, labels in <meta>'s order, and errors that name the image and shape."""
import os
import re
import shutil

import pytest

from detkit.config import apply_overrides
from detkit.data.cvat import CVATDetection, read_cvat
from detkit.data.problems import AnnotationError
from detkit.data.formats import load_records

from tests.helpers import REPO, tiny_ssd_config

FIXTURE = os.path.join(REPO, "tests", "fixtures", "formats", "cvat")
XML = os.path.join(FIXTURE, "annotations.xml")
IMAGES = os.path.join(FIXTURE, "images")


@pytest.fixture
def export(tmp_path):
    """A writable copy of the fixture: (the XML file, the image folder)."""
    root = shutil.copytree(FIXTURE, tmp_path / "cvat")
    return root / "annotations.xml", root / "images"


def replace(xml, old: str, new: str) -> None:
    text = xml.read_text()
    assert old in text, old
    xml.write_text(text.replace(old, new, 1))


def test_the_fixture_gives_the_boxes_worked_out_by_hand():
    dataset = CVATDetection(XML, IMAGES)
    assert dataset.classes == ["cat", "dog", "bird"]  # <meta>'s order, not sorted
    image, target = dataset[0]
    assert image.shape == (48, 64, 3)
    # <box xtl=10.5 ytl=5 xbr=30 ybr=25.25>; <polygon 40,10;60,10;50,40> -> its box; <points> and <tag>: no objects
    assert target["boxes"].tolist() == [[10.5, 5, 30, 25.25], [40, 10, 60, 40]]
    assert target["labels"].tolist() == [1, 2]
    assert dataset[1][1]["boxes"].tolist() == [[0, 0, 40, 30]] and dataset[1][1]["labels"].tolist() == [3]
    records = dataset.records
    assert [a["occluded"] for a in records.coco["annotations"]] == [True, False, False]
    assert [(i["id"], i["cvat_id"], i["file_name"]) for i in records.coco["images"]] == [(1, 0, "a.jpg"),
                                                                                        (2, 1, "b.png")]


def test_a_polygon_gives_a_mask_and_a_box_none():
    masks = CVATDetection(XML, IMAGES, with_masks=True)[0][1]["masks"]
    assert masks.shape == (2, 48, 64) and masks[0].sum() == 0
    assert masks[1][12, 41:59].all() and masks[1][35, 49:51].all() and not masks[1][:9].any()
    assert abs(int(masks[1].sum()) - 20 * 30 / 2) <= 20 + 30


def test_load_records_finds_the_export_s_image_folder():
    records = load_records(XML)
    assert records.image_root == IMAGES and len(records.coco["annotations"]) == 3


@pytest.mark.parametrize("shape, message", [
    ('<box label="fish" xtl="1" ytl="1" xbr="5" ybr="5"/>', "<box> 4: label 'fish' is not among the <labels>"),
    ('<box xtl="1" ytl="1" xbr="5" ybr="5"/>', "<box> 4: needs a label"),
    ('<box label="cat" xtl="1" ytl="1" xbr="5"/>', "<box> 4: needs finite numbers xtl, ytl, xbr, ybr"),
    ('<box label="cat" xtl="nan" ytl="1" xbr="5" ybr="5"/>', "<box> 4: needs finite numbers"),
    ('<box label="cat" xtl="9" ytl="1" xbr="5" ybr="5"/>', "<box> 4: inverted box [9.0, 1.0, 5.0, 5.0]"),
    ('<box label="cat" xtl="100" ytl="1" xbr="150" ybr="5"/>', "<box> 4: box [100.0, 1.0, 150.0, 5.0] lies outside"),
    ('<box label="cat" occluded="yes" xtl="1" ytl="1" xbr="5" ybr="5"/>', "<box> 4: occluded must be 0 or 1"),
    ('<box label="cat" xtl="1" ytl="1" xbr="5" ybr="5" rotation="30.0"/>', "<box> 4: rotated boxes are not"),
    ('<polygon label="cat" points="1,1;5,5"/>', "<polygon> 4: points must be 3 or more finite 'x,y' pairs"),
    ('<polygon label="cat" points="1,1;5,5;x,2"/>', "<polygon> 4: points must be 3 or more"),
    ('<polygon label="cat" points="1,1;5;5,2"/>', "<polygon> 4: points must be 3 or more"),
    ('<polygon label="cat" points="1,1;5,1;1e9,2"/>', "<polygon> 4: polygon coordinates must be finite and within"),
    ('<mask label="cat" rle="1, 2" left="0" top="0" width="3" height="1"/>', "<mask> 4: masks are not supported"),
    ('<ellipse label="cat" cx="5" cy="5" rx="2" ry="2"/>', "<ellipse> 4: ellipses are not supported"),
])
def test_a_bad_shape_is_named_by_image_and_index_or_skipped(export, shape, message):
    xml, images = export
    replace(xml, "  </image>\n  <image", f"  {shape}\n  </image>\n  <image")
    with pytest.raises(AnnotationError, match=re.escape(f"{xml}: image 'a.jpg': {message}")):
        read_cvat(xml, images)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 invalid annotation"):
        dataset = CVATDetection(xml, images, skip_invalid=True)
    assert len(dataset.skipped) == 1 and len(dataset[0][1]["boxes"]) == 2


@pytest.mark.parametrize("old, new, message", [
    ('name="b.png"', 'name="../b.png"', r"image 1 \('\.\./b\.png'\): file name '\.\./b\.png' leads outside"),
    ('name="b.png"', 'name="/etc/passwd"', r"image 1 \('/etc/passwd'\): file name '/etc/passwd' is absolute"),
    ('name="b.png"', 'name=""', r"image 1 \(''\): needs a name"),
    ('width="40"', 'width="-40"', r"image 1 \('b\.png'\): width and height must be positive integers"),
    ('width="40"', 'width="4e1"', r"image 1 \('b\.png'\): width and height must be positive integers"),
    ('<image id="1"', '<image id="one"', r"image 1 \('b\.png'\): id must be an integer, got 'one'"),
])
def test_a_bad_image_record_is_named_or_skipped(export, old, new, message):
    xml, images = export
    replace(xml, old, new)
    with pytest.raises(AnnotationError, match=re.escape(f"{xml}: ") + message):
        read_cvat(xml, images)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 invalid"):
        records = read_cvat(xml, images, skip_invalid=True)
    assert [i["file_name"] for i in records.coco["images"]] == ["a.jpg"]


@pytest.mark.parametrize("old, new, message", [
    ("<annotations>", "<annotations><oops>", r"malformed XML"),
    ("<annotations>", '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotations>&x;', r"refused unsafe XML"),
    ('<image id="1"', '<image id="0"', r"image id 0 appears twice"),
    ("<name>dog</name>", "<name>cat</name>", r"<meta>: label 'cat' appears twice"),
    ("<name>dog</name>", "<name> </name>", r"<meta>: label 2 has no <name>"),
])
def test_broken_files_raise_even_when_skipping(export, old, new, message):
    xml, images = export
    replace(xml, old, new)
    with pytest.raises(AnnotationError, match=re.escape(f"{xml}: ") + message):
        read_cvat(xml, images, skip_invalid=True)


def test_a_voc_file_is_not_a_cvat_file(export):
    xml, images = export
    xml.write_text("<annotation><filename>a.jpg</filename></annotation>")
    with pytest.raises(AnnotationError, match=r"the root element must be <annotations> \(CVAT for images 1\.1\), "
                                              r"got <'annotation'>"):
        read_cvat(xml, images)
    with pytest.raises(FileNotFoundError, match=r"CVAT annotation file not found: .*nowhere\.xml"):
        read_cvat(xml.parent / "nowhere.xml", images)


def test_without_meta_labels_the_labels_used_are_sorted(export):
    xml, images = export
    text = xml.read_text()
    xml.write_text(text[:text.index("  <meta>")] + text[text.index("</meta>") + len("</meta>\n"):])
    assert read_cvat(xml, images).classes == ["bird", "cat", "dog"]


def test_a_config_selects_cvat_and_refuses_a_val_file_with_other_labels(export, shapes_root):
    from detkit.engine.build import build_datasets

    xml, images = export
    shutil.copy(xml, xml.parent / "val.xml")
    overrides = ["data.format=cvat", f"data.root={xml.parent}", "data.train_ann=annotations.xml",
                 "data.val_ann=val.xml", "data.train_images=images", "data.val_images=images"]
    splits = build_datasets(apply_overrides(tiny_ssd_config(shapes_root), overrides))
    assert isinstance(splits.train, CVATDetection) and splits.classes == ["cat", "dog", "bird"]
    assert len(splits.val_ann["annotations"]) == 3
    replace(xml.parent / "val.xml", "<name>dog</name>", "<name>fox</name>")
    replace(xml.parent / "val.xml", 'label="dog"', 'label="fox"')
    with pytest.raises(ValueError, match=r"data\.val_ann .*val\.xml: its labels \['cat', 'fox', 'bird'\] are not"):
        build_datasets(apply_overrides(tiny_ssd_config(shapes_root), overrides))
