"""Writers and conversion (detkit.data.writers, detkit.data.convert): a
Shapes split written in each of the five formats and read back by that
format's reader gives the same names, boxes, masks and COCO statistics;
writes are atomic; names from annotation files never lead outside."""
from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import os
import shutil

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.data import writers
from detkit.data.convert import convert, mask_polygon, source_splits, write_records
from detkit.data.formats import load_records
from detkit.data.problems import AnnotationError
from detkit.data.records import FORMATS, Records

POLYGON_FORMATS = ("coco", "yolo", "labelme", "cvat")


@pytest.fixture(scope="module")
def source(shapes_set) -> Records:
    """The Shapes train split (24 images, RLE masks) as Records."""
    return load_records(shapes_set.coco_train, image_root=shapes_set.image_root)


def boxes_only(records: Records) -> Records:
    """`records` without segmentations: the formats then write box lines, rectangles, <box>es."""
    coco = copy.deepcopy(records.coco)
    for ann in coco["annotations"]:
        ann["segmentation"] = []
    return Records(coco, records.image_root, records.source)


def read_back(format: str, out: str, split: str, classes: list[str]) -> Records:
    """The split `write_records` wrote at `out`, through the format's own reader."""
    if format == "coco":
        return load_records(os.path.join(out, "annotations", f"instances_{split}.json"),
                            image_root=os.path.join(out, "images", split))
    if format == "voc":
        return load_records(out, "voc", split=split, classes=classes)
    if format == "yolo":
        return load_records(os.path.join(out, "data.yaml"), split=split)
    if format == "labelme":
        return load_records(os.path.join(out, split), "labelme", classes=classes)
    return load_records(os.path.join(out, split, "annotations.xml"))


def by_image(records: Records) -> dict[str, dict]:
    """{image base name: {"names": [N], "boxes": float [N, 4] xyxy, "masks": uint8 [N, H, W]}}."""
    dataset = records.dataset(with_masks=True)
    out = {}
    for image_id in dataset.ids:
        target = dataset.target(image_id)
        name = os.path.basename(dataset.images[image_id]["file_name"])
        out[name] = {"names": [dataset.classes[label - 1] for label in target["labels"]],
                     "boxes": target["boxes"].astype(np.float64), "masks": target["masks"]}
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two HxW binary masks."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.mark.parametrize("masks", [True, False], ids=["masks", "boxes"])
@pytest.mark.parametrize("format", FORMATS)
def test_round_trip_keeps_names_boxes_and_masks(source, tmp_path, format, masks):
    records = source if masks else boxes_only(source)
    counts = write_records(records, tmp_path / "out", format, split="val")
    back = read_back(format, str(tmp_path / "out"), "val", records.classes)
    assert back.classes == records.classes
    assert counts == {"val/images": 24, "val/annotations": len(records.coco["annotations"])}
    want, got = by_image(records), by_image(back)
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name]["names"] == expected["names"], name
        np.testing.assert_allclose(got[name]["boxes"], expected["boxes"], atol=0.5, err_msg=name)
        if masks and format in POLYGON_FORMATS:  # RLEs became polygons: each mask at IoU >= 0.98
            for n, (a, b) in enumerate(zip(got[name]["masks"], expected["masks"])):
                assert iou(a, b) >= 0.98, (name, n, iou(a, b))


def detections(records: Records, seed: int = 0) -> list[dict]:
    """One fixed detection set, keyed by image base name and class name:
    every object found with a jittered box (some with the wrong class), plus
    false positives, with random scores."""
    rng = np.random.default_rng(seed)
    names = {c["id"]: c["name"] for c in records.coco["categories"]}
    files = {i["id"]: os.path.basename(i["file_name"]) for i in records.coco["images"]}
    out = []
    for ann in records.coco["annotations"]:
        x, y, w, h = ann["bbox"]
        label = names[ann["category_id"]] if rng.random() > 0.2 else str(rng.choice(records.classes))
        box = [x + rng.normal(0, 0.05 * w), y + rng.normal(0, 0.05 * h), w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
        out.append({"file": files[ann["image_id"]], "name": label, "bbox": box, "score": float(rng.random())})
    for file in files.values():
        box = [*rng.uniform(0, 80, 2).tolist(), *rng.uniform(5, 40, 2).tolist()]
        out.append({"file": file, "name": str(rng.choice(records.classes)), "bbox": box, "score": float(rng.random())})
    return out


def coco_stats(ann_file: str, found: list[dict]) -> np.ndarray:
    """pycocotools' 12 bbox statistics of `found` against a COCO file.

    Areas are set to box areas first: only COCO stores an area (Shapes' is
    the mask's); the other formats' readers give the box's, and the area
    decides APs/APm/APl. Rounded: a 32 x 32 box read back as 1023.9999999
    px² would move from medium to small only."""
    with open(ann_file) as f:
        dataset = json.load(f)
    for ann in dataset["annotations"]:
        ann["area"] = round(ann["bbox"][2] * ann["bbox"][3], 6)
    ids = {os.path.basename(i["file_name"]): i["id"] for i in dataset["images"]}
    categories = {c["name"]: c["id"] for c in dataset["categories"]}
    results = [{"image_id": ids[d["file"]], "category_id": categories[d["name"]], "bbox": d["bbox"],
                "score": d["score"]} for d in found]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("format", FORMATS)
def test_round_trip_keeps_coco_statistics(source, shapes_set, tmp_path, format):
    write_records(source, tmp_path / "out", format, split="val")
    back = read_back(format, str(tmp_path / "out"), "val", source.classes)
    write_records(back, tmp_path / "again", "coco", split="val")  # the round-tripped set as COCO again
    found = detections(source)
    want = coco_stats(shapes_set.coco_train, found)
    # A fair test: hits and misses, small and medium objects (128 px images hold no large ones: -1).
    assert 0.2 < want[0] < 0.9 and (want[[3, 4, 9, 10]] > 0).all()
    got = coco_stats(str(tmp_path / "again" / "annotations" / "instances_val.json"), found)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_mask_polygon_is_exact_with_holes_and_parts():
    """pycocotools rasterises the one polygon back to exactly the mask,
    holes, islands in holes and parts touching only at a corner included."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :50]
    ring = ((yy - 20) ** 2 + (xx - 20) ** 2 < 15 ** 2) & ((yy - 20) ** 2 + (xx - 20) ** 2 >= 7 ** 2)
    island = (abs(yy - 20) < 2) & (abs(xx - 20) < 2)
    masks = [(ring | island | (xx > 44)).astype(np.uint8), np.eye(12, dtype=np.uint8)]
    masks += [(rng.random((int(h), int(w))) < 0.5).astype(np.uint8) for h, w in rng.integers(3, 30, (30, 2))]
    for n, mask in enumerate(masks):
        polygon = mask_polygon(mask)
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], *mask.shape)))
        assert (decoded == mask).all(), n
    assert mask_polygon(np.zeros((4, 4), np.uint8)) is None


def test_convert_writes_every_split_and_reads_back(shapes_set, tmp_path):
    """VOC (train and val image sets) -> YOLO -> COCO -> LabelMe, each split kept."""
    with pytest.warns(RuntimeWarning, match="difficult flags"):  # VOC's, which YOLO cannot hold
        counts = convert(shapes_set.voc_root, tmp_path / "yolo", "yolo", classes=list(shapes_set.classes))
    assert [counts[f"{s}/images"] for s in ("train", "val")] == [24, 6]
    with open(tmp_path / "yolo" / "data.yaml") as f:
        data = yaml.safe_load(f)
    assert data["train"] == "images/train" and data["val"] == "images/val"
    assert data["names"] == dict(enumerate(shapes_set.classes))
    assert convert(tmp_path / "yolo", tmp_path / "coco", "coco") == counts
    assert sorted(os.listdir(tmp_path / "coco" / "annotations")) == ["instances_train.json", "instances_val.json"]
    assert convert(tmp_path / "coco", tmp_path / "labelme", "labelme") == counts
    assert source_splits(tmp_path / "labelme" / "val")[0] == "labelme"
    val = load_records(tmp_path / "labelme" / "val", "labelme", classes=list(shapes_set.classes))
    want = load_records(shapes_set.voc_root, "voc", split="val", classes=list(shapes_set.classes))
    assert len(val.coco["annotations"]) == len(want.coco["annotations"]) == counts["val/annotations"]


def test_convert_names_a_coco_file_split_after_it(shapes_set, tmp_path):
    counts = convert(shapes_set.coco_val, tmp_path / "out", "cvat", image_root=shapes_set.image_root)
    assert list(counts) == ["val/images", "val/annotations"]
    assert os.path.isfile(tmp_path / "out" / "val" / "annotations.xml")
    with pytest.raises(ValueError, match="no split 'test'"):
        convert(shapes_set.coco_val, tmp_path / "x", "yolo", splits=["test"], image_root=shapes_set.image_root)


def test_failed_conversion_leaves_no_dataset_and_no_temp_folder(source, tmp_path, monkeypatch):
    """A writer dying midway (here at the 5th image) leaves dst absent, or
    when overwriting, the old dataset as it was; no temp folder remains."""
    place, calls = writers._place, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk on fire")
        return place(*args, **kwargs)

    monkeypatch.setattr(writers, "_place", failing)
    with pytest.raises(OSError, match="disk on fire"):
        write_records(source, tmp_path / "out", "yolo")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(writers, "_place", place)
    write_records(boxes_only(source), tmp_path / "out", "yolo")
    before = sorted(os.listdir(tmp_path / "out" / "labels" / "train"))
    calls.clear()
    monkeypatch.setattr(writers, "_place", failing)
    with pytest.raises(OSError, match="disk on fire"):
        write_records(source, tmp_path / "out", "coco", overwrite=True)
    assert os.listdir(tmp_path) == ["out"]
    assert sorted(os.listdir(tmp_path / "out" / "labels" / "train")) == before
    assert len(load_records(tmp_path / "out" / "data.yaml").coco["images"]) == 24


def test_existing_output_is_replaced_only_with_overwrite(source, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_records(source, tmp_path / "out", "voc")
    assert os.listdir(tmp_path / "out") == ["old.txt"]
    write_records(source, tmp_path / "out", "voc", overwrite=True)
    assert sorted(os.listdir(tmp_path / "out")) == ["VOC2007"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_output_may_not_hold_the_source(shapes_set, tmp_path):
    shutil.copytree(shapes_set.voc_root, tmp_path / "data" / "voc")
    with pytest.raises(ValueError, match="holds the source"):
        convert(tmp_path / "data" / "voc", tmp_path / "data", "coco", overwrite=True, classes=list(shapes_set.classes))
    assert os.path.isdir(tmp_path / "data" / "voc" / "VOC2007")


@pytest.mark.parametrize("name", ["../outside.jpg", "sub/../../outside.jpg", "/tmp/outside.jpg"])
@pytest.mark.parametrize("skip_invalid", [False, True])
def test_names_leading_outside_are_errors(source, tmp_path, name, skip_invalid):
    """Even under skip_invalid (which skips bad records), a name leading
    outside is an error naming the record, and nothing is written."""
    coco = copy.deepcopy(source.coco)
    coco["images"][3]["file_name"] = name
    image_id = coco["images"][3]["id"]
    records = Records(coco, source.image_root, "evil.json")
    with pytest.raises(AnnotationError, match=rf"evil.json: image {image_id} \(images\[3\]\): file name"):
        write_records(records, tmp_path / "out", "labelme", skip_invalid=skip_invalid)
    assert os.listdir(tmp_path) == []


def test_crowd_annotations_are_skipped_with_a_count_outside_coco(source, tmp_path):
    coco = copy.deepcopy(source.coco)
    for ann in coco["annotations"][:2]:
        ann["iscrowd"] = 1
    records = Records(coco, source.image_root, "crowd.json")
    total = len(coco["annotations"])
    with pytest.warns(RuntimeWarning, match="lost 2 crowd"):
        assert write_records(records, tmp_path / "yolo", "yolo")["train/annotations"] == total - 2
    assert write_records(records, tmp_path / "coco", "coco")["train/annotations"] == total
    back = read_back("coco", str(tmp_path / "coco"), "train", records.classes)
    assert sum(a["iscrowd"] for a in back.coco["annotations"]) == 2


def test_same_base_names_get_unique_output_names(source, tmp_path):
    """Two images named x.jpg in different folders (and X.JPG: case-insensitive
    file systems) stay three images, with their own label files."""
    for sub in ("a", "b", "c"):
        os.makedirs(tmp_path / "src" / sub)
    coco = copy.deepcopy(source.coco)
    for image, sub, name in zip(coco["images"], "abc", ["x.jpg", "x.jpg", "X.JPG"]):
        shutil.copy(os.path.join(source.image_root, image["file_name"]), tmp_path / "src" / sub / name)
        image["file_name"] = f"{sub}/{name}"
    coco["images"] = coco["images"][:3]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in {i["id"] for i in coco["images"]}]
    write_records(Records(coco, str(tmp_path / "src"), "dup.json"), tmp_path / "out", "yolo")
    assert len(os.listdir(tmp_path / "out" / "labels" / "train")) == 3
    back = load_records(tmp_path / "out" / "data.yaml")
    assert len(back.coco["images"]) == 3 and len(back.coco["annotations"]) == len(coco["annotations"])


def test_labelme_embedded_image_is_written_as_a_file(source, tmp_path):
    """A LabelMe file whose image is missing but embedded (imageData) gives
    the image file in the output."""
    write_records(source, tmp_path / "labelme", "labelme")
    folder = tmp_path / "labelme" / "train"
    image = folder / "000001.jpg"
    data = image.read_bytes()
    content = json.loads((folder / "000001.json").read_text())
    content["imageData"] = base64.b64encode(data).decode("ascii")
    (folder / "000001.json").write_text(json.dumps(content))
    image.unlink()
    convert(folder, tmp_path / "coco", "coco", classes=source.classes)
    assert (tmp_path / "coco" / "images" / "train" / "000001.jpg").read_bytes() == data
    with pytest.raises(ValueError, match="plain file name"):
        write_records(source, tmp_path / "x", "labelme", split="..")
