import os

import numpy as np
import pytest
import cv2

from detkit.data import VOC_CLASSES, VOCDetection
from detkit.data.problems import AnnotationError

XML = """<annotation>
  <filename>000042.jpg</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>60</xmin><ymin>10</ymin><xmax>100</xmax><ymax>80</ymax></bndbox></object>
  {extra}
</annotation>"""


def write_voc(root, extra="", image_set="trainval", xml=None):
    voc = os.path.join(root, "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    with open(os.path.join(voc, "Annotations", "000042.xml"), "w", encoding="utf-8") as f:
        f.write(xml if xml is not None else XML.format(extra=extra))
    cv2.imwrite(os.path.join(voc, "JPEGImages", "000042.jpg"), np.zeros((80, 100, 3), np.uint8))
    with open(os.path.join(voc, "ImageSets", "Main", f"{image_set}.txt"), "w") as f:
        f.write("000042\n")


def test_hand_written_xml_one_based_corners_and_difficult(tmp_path):
    write_voc(tmp_path)
    image, target = VOCDetection(tmp_path)[0]
    assert image.shape == (80, 100, 3)
    # (xmin, xmax) = (1, 50) covers pixels 1..50 (1-based): continuous [0, 50].
    assert target["boxes"].tolist() == [[0, 0, 50, 40]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1] and target["image_id"] == "000042"
    kept = VOCDetection(tmp_path, keep_difficult=True)[0][1]
    assert kept["boxes"].tolist() == [[0, 0, 50, 40], [59, 9, 100, 80]]
    assert kept["difficult"].tolist() == [False, True]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("<object><name>dragon</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
         "</object>", r"000042\.xml: object 2: unknown class 'dragon'"),
        ("<object><name>cat</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
         "</object>", r"object 2 \(cat\): inverted box"),
        ("<object><name>cat</name><bndbox><xmin>200</xmin><ymin>1</ymin><xmax>250</xmax><ymax>5</ymax></bndbox>"
         "</object>", r"object 2 \(cat\): box .* is outside the 100x80 image"),
        ("<object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object>", r"object 2 \(cat\): <bndbox> needs"),
        # non-numeric and non-finite values
        ("<object><name>cat</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
         "</object>", r"object 2 \(cat\): <bndbox> needs finite numeric"),
        ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>inf</xmax><ymax>5</ymax></bndbox>"
         "</object>", r"object 2 \(cat\): <bndbox> needs finite numeric"),
        ("<object><name>cat</name></object>", r"object 2 \(cat\): <bndbox> needs"),
        ("<object><name>cat</name><difficult>yes</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
         "<ymax>5</ymax></bndbox></object>", r"object 2 \(cat\): <difficult> must be 0 or 1, got 'yes'"),
        ("<object><name>猫</name></object>", r"object 2: unknown class '猫'"),
    ],
)
def test_bad_objects_are_named_or_skipped(tmp_path, extra, message):
    write_voc(tmp_path, extra)
    with pytest.raises(AnnotationError, match=message):
        VOCDetection(tmp_path)[0]
    ds = VOCDetection(tmp_path, skip_invalid=True)
    with pytest.warns(RuntimeWarning, match="skipped 1 invalid annotation"):
        target = ds[0][1]
    assert target["boxes"].shape == (1, 4) and len(ds.skipped) == 1


def test_bad_files(tmp_path):
    write_voc(tmp_path, xml="<annotation><object>")
    with pytest.raises(ValueError, match=r"000042\.xml: malformed XML"):
        VOCDetection(tmp_path)[0]
    with pytest.raises(FileNotFoundError, match="VOC image set not found"):
        VOCDetection(tmp_path, image_set="test")
    write_voc(tmp_path / "empty")
    open(os.path.join(tmp_path, "empty", "VOC2007", "ImageSets", "Main", "trainval.txt"), "w").close()
    with pytest.raises(ValueError, match="the image list is empty"):
        VOCDetection(tmp_path / "empty")


def test_entity_expansion_is_refused(tmp_path):
    bomb = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><annotation>&x;</annotation>'
    write_voc(tmp_path, xml=bomb)
    with pytest.raises(ValueError, match=r"000042\.xml: refused unsafe XML .*(?i:entit)"):
        VOCDetection(tmp_path)[0]


@pytest.mark.parametrize(
    "size, message",
    [
        ("<size><width>0</width><height>80</height></size>", r"<size> needs positive integer"),
        ("<size><width>100000</width><height>100000</height></size>", r"<size> needs .*at most 1073741824 pixels"),
        ("<size><width>1e300</width><height>80</height></size>", r"<size> needs .*got '1e300' x '80'"),
        ("<size><height>80</height></size>", r"<size> needs .*got None x '80'"),
    ],
)
def test_a_bad_size_breaks_the_file(tmp_path, size, message):
    xml = XML.format(extra="").replace("<size><width>100</width><height>80</height><depth>3</depth></size>", size)
    write_voc(tmp_path, xml=xml)
    with pytest.raises(AnnotationError, match=r"000042\.xml: " + message):
        VOCDetection(tmp_path, skip_invalid=True)[0]


def test_without_a_size_boxes_are_checked_against_the_image(tmp_path):
    xml = XML.format(extra="<object><name>cat</name><bndbox><xmin>90</xmin><ymin>-3</ymin><xmax>1e300</xmax>"
                           "<ymax>40</ymax></bndbox></object>")
    write_voc(tmp_path, xml=xml.replace("<size><width>100</width><height>80</height><depth>3</depth></size>", ""))
    target = VOCDetection(tmp_path)[0][1]
    assert target["boxes"].tolist() == [[0, 0, 50, 40], [89, 0, 100, 40]]  # clipped to the 100x80 JPEG
    assert VOCDetection(tmp_path).target("000042")[0]["boxes"][1].tolist() == [89, 0, 2**30, 40]
    outside = xml.replace("<xmin>90</xmin>", "<xmin>101</xmin>")
    write_voc(tmp_path, xml=outside.replace("<size><width>100</width><height>80</height><depth>3</depth></size>", ""))
    with pytest.raises(AnnotationError, match=r"object 2 \(cat\): box .* is outside the 100x80 image"):
        VOCDetection(tmp_path)[0]


def test_root_must_be_annotation_and_objects_its_children(tmp_path):
    write_voc(tmp_path, xml="<html><object><name>dog</name></object></html>")
    with pytest.raises(AnnotationError, match=r"000042\.xml: the root element must be <annotation>, got <'html'>"):
        VOCDetection(tmp_path)[0]
    nested = XML.format(extra="<part><object><name>dragon</name></object></part>")  # not an object of the image
    write_voc(tmp_path, xml=nested)
    assert VOCDetection(tmp_path)[0][1]["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]


def test_billion_laughs_and_external_entities_are_refused(tmp_path):
    laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY l0 "ha">{laughs}]><annotation>&l9;</annotation>'
    write_voc(tmp_path, xml=bomb)
    with pytest.raises(AnnotationError, match=r"000042\.xml: refused unsafe XML"):
        VOCDetection(tmp_path)[0]
    external = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>'
    write_voc(tmp_path, xml=external)
    with pytest.raises(AnnotationError, match=r"000042\.xml: refused unsafe XML"):
        VOCDetection(tmp_path)[0]
