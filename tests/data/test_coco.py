import json
import os
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detkit.data import CocoDetection, read_image
from detkit.data.problems import AnnotationError


def write_set(root, annotations, images=None, categories=None):
    """A tiny COCO set: two 40x60 images and the given annotations."""
    os.makedirs(root, exist_ok=True)
    images = images if images is not None else [
        {"id": 7, "file_name": "a.png", "width": 60, "height": 40},
        {"id": 3, "file_name": "b.png", "width": 60, "height": 40},
    ]
    for img in images:
        if not os.path.exists(os.path.join(root, img["file_name"])):
            cv2.imwrite(os.path.join(root, img["file_name"]), np.full((img["height"], img["width"], 3), 90, np.uint8))
    categories = categories if categories is not None else [{"id": 18, "name": "dog"}, {"id": 2, "name": "bike"}]
    path = os.path.join(root, "ann.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


def ann(id, image_id, bbox, category_id=18, **extra):
    return {"id": id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 1.0, "iscrowd": 0,
            **extra}


def test_targets_labels_crowd_and_order(tmp_path):
    path = write_set(tmp_path, [ann(1, 7, [10, 5, 20, 10]), ann(2, 7, [0, 0, 5, 5], 2, iscrowd=1),
                                ann(3, 3, [1.5, 2.5, 3, 4], 2)])
    ds = CocoDetection(tmp_path, path)
    assert ds.cat_ids == [2, 18] and ds.classes == ["bike", "dog"]  # contiguous labels in id order
    assert ds.ids == [3, 7] and len(ds) == 2
    image, target = ds[1]
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    assert target["image_id"] == 7
    assert target["boxes"].tolist() == [[10, 5, 30, 15], [0, 0, 5, 5]]  # xywh -> xyxy
    assert target["labels"].tolist() == [2, 1] and target["iscrowd"].tolist() == [False, True]
    assert ds[0][1]["boxes"].tolist() == [[1.5, 2.5, 4.5, 6.5]]


def test_masks_from_polygons_and_rle(tmp_path):
    polygon = [[10, 10, 30, 10, 30, 30, 10, 30]]
    full = np.zeros((40, 60), np.uint8, order="F")
    full[5:20, 40:55] = 1
    rle = mask_utils.encode(full)
    compressed = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    path = write_set(tmp_path, [ann(1, 7, [10, 10, 20, 20], segmentation=polygon),
                                ann(2, 7, [40, 5, 15, 15], segmentation=compressed)])
    target = CocoDetection(tmp_path, path, with_masks=True)[1][1]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 40, 60)))
    assert target["masks"].shape == (2, 40, 60) and target["masks"].dtype == np.uint8
    assert np.array_equal(target["masks"][0], expected) and np.array_equal(target["masks"][1], full)


def test_clipping_empty_boxes_and_images_without_boxes(tmp_path):
    path = write_set(tmp_path, [ann(1, 7, [50, 30, 20, 20]), ann(2, 7, [5, 5, 0, 10])])
    ds = CocoDetection(tmp_path, path)
    assert ds[1][1]["boxes"].tolist() == [[50, 30, 60, 40]]  # partly outside: clipped
    assert ds.dropped_empty == 1  # zero width: dropped and counted
    assert ds[0][1]["boxes"].shape == (0, 4) and ds[0][1]["labels"].shape == (0,)


@pytest.mark.parametrize(
    "bad, message",
    [
        (ann(5, 7, [10, 10, -3, 4]), r"annotation 5: bbox \[10, 10, -3, 4\] has a negative width"),
        (ann(5, 7, [100, 10, 3, 4]), r"annotation 5: bbox .* lies outside its 60x40 image 7"),
        (ann(5, 7, [1, 1, 3, 4], category_id=99), r"annotation 5: unknown category_id 99"),
        (ann(5, 42, [1, 1, 3, 4]), r"annotation 5: image_id 42 is not in 'images'"),
        (ann(5, 7, [1, 1, float("nan"), 4]), r"annotation 5: bbox must be 4 finite numbers"),
        # records of the wrong type: invalid, never a crash
        (ann(5, 7, ["1", "2", "3", "4"]), r"annotation 5: bbox must be 4 finite numbers"),
        (ann(5, 7, [1, 2, 3]), r"annotation 5: bbox must be 4 finite numbers"),
        (ann(5, 7, [1, 2, 10**400, 4]), r"annotation 5: bbox must be 4 finite numbers"),
        (ann(5, 7, [1, 1, 3, 4], iscrowd=2), r"annotation 5: iscrowd must be 0 or 1, got 2"),
        (ann(5, [7], [1, 1, 3, 4]), r"annotation 5: image_id \[7\] is not in 'images'"),  # unhashable
        (ann(5, 7, [1, 1, 3, 4], category_id={"id": 18}), r"annotation 5: unknown category_id \{'id': 18\}"),
        ({k: v for k, v in ann(5, 7, [1, 1, 3, 4]).items() if k != "id"} | {"bbox": [99, 1, 3, 4]},
         r"annotations\[1\] \(no id\): bbox .* lies outside"),
    ],
)
def test_bad_annotations_name_file_and_id(tmp_path, bad, message):
    path = write_set(tmp_path, [ann(1, 7, [1, 1, 5, 5]), bad])
    with pytest.raises(AnnotationError, match=f"ann.json: {message}"):
        CocoDetection(tmp_path, path)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 invalid annotation"):
        ds = CocoDetection(tmp_path, path, skip_invalid=True)
    assert len(ds.skipped) == 1 and ds.target(7)["boxes"].tolist() == [[1, 1, 6, 6]]


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="the image list is empty"):
        CocoDetection(tmp_path, write_set(tmp_path, [], images=[]))
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        CocoDetection(tmp_path, broken)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        CocoDetection(tmp_path, tmp_path / "missing.json")
    path = write_set(tmp_path / "set", [])
    os.remove(tmp_path / "set" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*a\.png"):
        CocoDetection(tmp_path / "set", path)[1]


def test_truncated_unreadable_and_odd_images(tmp_path):
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.jpg: truncated image file"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=r"junk\.jpg: not a readable image"):
        read_image(tmp_path / "junk.jpg")
    (tmp_path / "empty.png").write_bytes(b"")  # OpenCV itself asserts on an empty buffer
    with pytest.raises(ValueError, match=r"empty\.png: empty image file \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "huge.png").write_bytes(png_header(100_000, 100_000))  # OpenCV refuses its pixel count
    with pytest.raises(ValueError, match=r"huge\.png: not a readable image \(OpenCV check failed"):
        read_image(tmp_path / "huge.png")
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 9), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.full((8, 9, 4), (10, 20, 30, 255), np.uint8))
    assert read_image(tmp_path / "gray.png").shape == (8, 9, 3)
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [30, 20, 10]  # BGRA on disk -> RGB
    path = write_set(tmp_path / "sizes", [], images=[{"id": 1, "file_name": "x.png", "width": 61, "height": 40}])
    cv2.imwrite(str(tmp_path / "sizes" / "x.png"), np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(ValueError, match=r"x\.png: image is 60x40 but .* says 61x40"):
        CocoDetection(tmp_path / "sizes", path)[0]
    (tmp_path / "sizes" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"sizes/x\.png: empty image file"):
        CocoDetection(tmp_path / "sizes", path)[0]


def png_header(width, height):
    """A PNG whose IHDR claims width x height RGB pixels, with one tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "image, message",
    [
        ({"id": 9, "file_name": "c.png", "width": 1e300, "height": 40}, r"image 9 \(images\[2\]\): width and height"),
        ({"id": 9, "file_name": "c.png", "width": 10**12, "height": 10**12}, r"image 9 .*at most 1073741824 pixels"),
        ({"id": 9, "file_name": "c.png", "width": 0, "height": 40}, r"image 9 .*width and height must be positive"),
        ({"id": "9", "file_name": "c.png", "width": 6, "height": 4}, r"image '9' .*'id' must be an integer"),
        ({"id": 2**63, "file_name": "c.png", "width": 6, "height": 4}, r"image 9223372036854775808 .*'id' must be"),
        ({"id": 9, "file_name": ["c.png"], "width": 6, "height": 4}, r"image 9 .*'file_name' must be a non-empty"),
        ({"id": 9, "width": 6}, r"image 9 .*: needs id, file_name, width and height; file_name, height missing"),
    ],
)
def test_invalid_image_records_are_named_or_skipped(tmp_path, image, message):
    images = [{"id": 7, "file_name": "a.png", "width": 60, "height": 40},
              {"id": 3, "file_name": "b.png", "width": 60, "height": 40}]
    path = write_set(tmp_path, [ann(1, 7, [1, 1, 5, 5]), ann(2, 9, [1, 1, 2, 2])], images=images)
    with open(path) as f:
        dataset = json.load(f)
    dataset["images"].append(image)
    with open(path, "w") as f:
        json.dump(dataset, f)
    with pytest.raises(AnnotationError, match=f"ann.json: {message}"):
        CocoDetection(tmp_path, path)
    with pytest.warns(RuntimeWarning, match=r"skipped 2 invalid annotation"):  # the image and its annotation
        ds = CocoDetection(tmp_path, path, skip_invalid=True)
    assert ds.ids == [3, 7] and "annotation 2: image_id 9 is not in 'images'" in ds.skipped[1]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["annotations"].append("oops"), r"annotations\[1\] must be an object, got 'oops'"),
        (lambda d: d["images"].append(None), r"images\[2\] must be an object, got None"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"image id 7 appears twice"),
        (lambda d: d["categories"].append({"id": 18, "name": "cat"}), r"category id 18 appears twice"),
        (lambda d: d["categories"].append({"name": "cat"}), r"categories\[2\] must be an object with an integer"),
        (lambda d: d["categories"][0].update(name=["dog"]), r"category 18: 'name' must be a string"),
        (lambda d: d.update(annotations={"1": {}}), r"'annotations' must be a list, got \{'1': \{\}\}"),
        (lambda d: d["images"].__setitem__(slice(None), [{"id": 1}]), r"no valid image record"),
    ],
)
def test_broken_files_raise_even_when_skipping(tmp_path, change, message):
    path = write_set(tmp_path, [ann(1, 7, [1, 1, 5, 5])])
    with open(path) as f:
        dataset = json.load(f)
    change(dataset)
    with open(path, "w") as f:
        json.dump(dataset, f)
    with pytest.raises(AnnotationError, match=f"ann.json: {message}"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        CocoDetection(tmp_path, path, skip_invalid=True)


@pytest.mark.parametrize(
    "text, message",
    [
        (b"[1, 2]", r"expected a JSON object"),
        (b'{"images": \xff}', r"not valid JSON \(UnicodeDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, r"not valid JSON \(RecursionError"),
        (b'{"images": [{"id": 1' + b"0" * 5000 + b"}]}", r"not valid JSON \(ValueError: Exceeds the limit"),
    ],
)
def test_files_that_are_not_coco_json(tmp_path, text, message):
    (tmp_path / "ann.json").write_bytes(text)
    with pytest.raises(AnnotationError, match=f"ann.json: {message}"):
        CocoDetection(tmp_path, tmp_path / "ann.json")


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ([[0, 0, 1e12, 0, 1e12, 1e12]], r"polygon coordinates must be finite and within 60 px"),  # crashes pycocotools
        ([[0, 0, 10, 0, float("nan"), 10]], r"polygon coordinates must be finite"),
        ([[0, 0, 10**400, 0.0, 5, 5]], r"polygon coordinates must be finite"),  # sum() overflows
        ([[0, 0, 10, 0, "10", 10]], r"polygon coordinates must be numbers"),
        ([[0, 0, 10, 0, 10]], r"a polygon must be a list of x, y coordinates"),
        ([0, 0, 10, 0, 10, 10], r"a polygon must be a list of x, y coordinates"),
        ([[0, 0, 10, 10], [0, 0, 10, 0, 10, 10]], r"polygons mix 4-value boxes"),
        ({"size": [100000, 100000], "counts": "0"}, r"RLE size must be the image's \[height, width\] \[40, 60\]"),
        ({"size": [40, 60], "counts": [0, 2400, 1]}, r"RLE counts must be non-negative integers adding up to 2400"),
        ({"size": [40, 60], "counts": [-1, 2401]}, r"RLE counts must be non-negative"),
        ({"size": [40, 60], "counts": 12}, r"RLE counts must be a list or a string"),
        ("polygon", r"segmentation must be polygons or an RLE, got 'polygon'"),
    ],
)
def test_segmentations_pycocotools_cannot_take_are_caught_first(tmp_path, segmentation, message):
    path = write_set(tmp_path, [ann(1, 7, [1, 1, 5, 5], segmentation=[[1, 1, 6, 1, 6, 6]]),
                                ann(5, 7, [1, 1, 5, 5], segmentation=segmentation)])
    CocoDetection(tmp_path, path)  # masks not asked for: not read
    with pytest.raises(AnnotationError, match=f"ann.json: annotation 5: {message}"):
        CocoDetection(tmp_path, path, with_masks=True)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 invalid annotation"):
        ds = CocoDetection(tmp_path, path, with_masks=True, skip_invalid=True)
    assert ds.target(7)["masks"].shape == (1, 40, 60)


def test_compressed_rle_with_runs_past_the_mask_is_named_when_read(tmp_path):
    path = write_set(tmp_path, [ann(5, 7, [1, 1, 5, 5], segmentation={"size": [40, 60], "counts": "0ooooo7"})])
    ds = CocoDetection(tmp_path, path, with_masks=True)
    with pytest.raises(AnnotationError, match=r"ann.json: annotation 5: pycocotools cannot decode its segmentation"):
        ds[1]
