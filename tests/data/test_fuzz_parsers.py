"""Hypothesis fuzzing of the annotation parsers: CocoDetection, VOCDetection,
the COCO evaluator's ground-truth and results loading, and the YOLO (data.yaml
and label files), LabelMe JSON and CVAT XML readers.

A corrupt COCO JSON or VOC XML file (wrong types, missing keys and tags, huge
numbers, NaN, unicode, nested garbage, entity expansion, truncation) must
either load into well-formed targets or raise an AnnotationError (a
ValueError) that names the file and the record; an image that disagrees with
its record raises a ValueError naming the image file; the evaluator raises a
ValueError naming the file or the result record. Never a bare KeyError,
TypeError or IndexError, a crash inside pycocotools, or a large allocation
(each example runs under tracemalloc with a 64 MB ceiling).

Each test runs max(300, the profile's count) examples: a fixed set in CI
(derandomised profile), more with DETKIT_HYPOTHESIS_EXAMPLES=N.
"""
import base64
import copy
import json
import math
import os
import re
import tracemalloc
import warnings
from xml.sax.saxutils import escape
from xml.sax.saxutils import quoteattr

import yaml

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from detkit.data import CocoDetection, VOCDetection
from detkit.data.cvat import CVATDetection
from detkit.data.labelme import LabelMeDetection
from detkit.data.yolo import YOLODetection
from detkit.data.problems import AnnotationError
from detkit.evaluation import evaluate_coco

EXAMPLES = max(300, settings.default.max_examples)
FUZZ = settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MEMORY_CEILING = 64 * 2**20
HEIGHT, WIDTH = 40, 60

# Values that have broken parsers: huge and non-finite numbers, wrong types, unicode, a lone surrogate.
SPECIAL = st.sampled_from([
    0, -1, 1, 2, 10**400, -(10**400), 2**63, 1e300, -1e300, 1e-300, math.nan, math.inf, -math.inf, True, None,
    "", "1", "1e300", "nan", "猫", "dog\u0000", "\ud800", "../a.png", [], {}, [[]], [1, 2, 3, 4],
    [0, 0, 1e12, 0, 1e12, 1e12], {"size": [100000, 100000], "counts": "0"}, {"counts": [5, 2395]},
])
LEAF = st.one_of(SPECIAL, st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(),
                 st.text(max_size=12))
GARBAGE = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.one_of(st.sampled_from(["id", "image_id", "category_id", "bbox", "segmentation", "size",
                                               "counts", "width", "height", "file_name", "iscrowd", "name"]),
                              st.text(max_size=6)), inner, max_size=5)), max_leaves=12)


def run_bounded(load):
    """load() under tracemalloc; fails when it allocated more than the ceiling."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # skip_invalid's summary
            return load()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_CEILING, f"{peak / 2**20:.0f} MB allocated"


def garbage(draw):
    """A fresh copy: later edits must not change the strategies' own lists and dicts."""
    return copy.deepcopy(draw(GARBAGE))


def mutate(draw, node):
    """One random edit somewhere inside the JSON-like `node` (a dict or list):
    a value replaced by garbage, a key or item deleted, an item duplicated or
    garbage added. Walks down a random path first, so that edits reach bbox
    values and polygon coordinates as often as whole sections."""
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 4)) < 4:  # mostly deeper
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        child = node[draw(st.sampled_from(keys))]
        if not isinstance(child, (dict, list)) or not child:
            break
        node = child
    if isinstance(node, dict):
        key = draw(st.sampled_from(sorted(node) + ["id", "bbox", "segmentation", "width", "iscrowd"]))
        action = draw(st.sampled_from(["set", "set", "delete"]))
        if action == "delete":
            node.pop(key, None)
        else:
            node[key] = garbage(draw)
    elif isinstance(node, list):
        action = draw(st.sampled_from(["set", "delete", "duplicate", "append"] if node else ["append"]))
        index = draw(st.integers(0, max(len(node) - 1, 0)))
        if action == "set":
            node[index] = garbage(draw)
        elif action == "delete":
            del node[index]
        elif action == "duplicate":
            node.append(copy.deepcopy(node[index]))
        else:
            node.append(garbage(draw))


def corrupt_text(draw, text: bytes) -> bytes:
    """Sometimes cut the file short or splice random bytes into it."""
    how = draw(st.sampled_from(["keep"] * 6 + ["truncate", "splice"]))
    if how == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    if how == "splice":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    return text


# --- COCO JSON -----------------------------------------------------------------------------------


def coco_base() -> dict:
    """A valid two-image file with boxes, polygons, RLEs (compressed and not) and crowd."""
    full = np.zeros((HEIGHT, WIDTH), np.uint8, order="F")
    full[5:20, 30:50] = 1
    compressed = mask_utils.encode(full)
    flat = full.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()  # starts with a run of zeros
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT},
                   {"id": 2, "file_name": "b.png", "width": WIDTH, "height": HEIGHT, "license": 3}],
        "categories": [{"id": 1, "name": "circle"}, {"id": 3, "name": "猫"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 15], "area": 300.0, "iscrowd": 0,
             "segmentation": [[10, 10, 30, 10, 30, 25, 10, 25]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [30.5, 5, 20, 15], "area": 300.0, "iscrowd": 0,
             "segmentation": {"size": [HEIGHT, WIDTH], "counts": compressed["counts"].decode("ascii")}},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [30, 5, 20, 15], "area": 300.0, "iscrowd": 1,
             "segmentation": {"size": [HEIGHT, WIDTH], "counts": runs}},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 8, 8], "area": 64.0, "iscrowd": 0,
             "segmentation": [[0, 0, 8, 0, 8, 8], [1, 1, 2, 1, 2, 2]]},
        ],
    }


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_fuzz")
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(root / name), np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    return root


@pytest.fixture(scope="module")
def coco_images(tmp_path_factory):
    """The COCO tests' images, in a folder of their own: an image error must name
    it, and the annotation file (in coco_root) does not lie inside it."""
    folder = tmp_path_factory.mktemp("coco_images")
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    (folder / "sub").mkdir()
    return folder


# Image records that point at a missing file, a folder, or give another size: random edits
# almost never make a record valid yet wrong, so without these the image-error branch never ran.
IMAGE_FAULTS = [None] * 8 + [{"file_name": "missing.png"}, {"file_name": "sub"}, {"width": WIDTH + 1},
                             {"height": HEIGHT - 1}]


def test_the_coco_base_file_loads(coco_root, coco_images):
    path = coco_root / "base.json"
    path.write_text(json.dumps(coco_base()))
    ds = CocoDetection(coco_images, path, with_masks=True)
    assert ds.skipped == [] and ds.classes == ["circle", "猫"]
    full = np.zeros((HEIGHT, WIDTH), np.uint8)
    full[5:20, 30:50] = 1
    first, second = ds[0][1]["masks"], ds[1][1]["masks"]
    assert first.shape == second.shape == (2, HEIGHT, WIDTH)
    assert np.array_equal(first[1], full) and np.array_equal(second[0], full)  # compressed and plain RLE


COCO_FAULT = re.compile(r": (not valid JSON|expected a JSON object|'\w+' must be a list|the image list is empty|"
                        r"no valid image record|(categories|category|images|image|annotations|annotation)\b)")


@FUZZ
@given(data=st.data(), with_masks=st.booleans(), skip_invalid=st.booleans())
def test_corrupt_coco_json_gets_a_named_error(coco_root, coco_images, data, with_masks, skip_invalid):
    dataset = coco_base()
    dataset["images"][data.draw(st.integers(0, 1))].update(data.draw(st.sampled_from(IMAGE_FAULTS)) or {})
    for _ in range(data.draw(st.integers(1, 4))):
        mutate(data.draw, dataset)
    path = coco_root / "ann.json"
    path.write_bytes(corrupt_text(data.draw, json.dumps(dataset).encode()))

    def load():
        ds = CocoDetection(coco_images, path, with_masks=with_masks, skip_invalid=skip_invalid)
        return ds, [ds[i] for i in range(len(ds))]

    try:
        ds, items = run_bounded(load)
    except AnnotationError as exc:
        assert str(exc).startswith(f"{path}: ") and COCO_FAULT.search(str(exc)), exc
        event(f"AnnotationError: {COCO_FAULT.search(str(exc)).group(1)}")
        return
    except (ValueError, OSError) as exc:  # the image file of a record: missing, a folder, another size
        assert str(coco_images) in str(exc), exc  # the image's path; the annotation file is elsewhere
        assert not isinstance(exc, (UnicodeError, json.JSONDecodeError)), exc
        event(f"image error: {type(exc).__name__}")
        return
    assert skip_invalid or not ds.skipped
    event("loaded, some records skipped" if ds.skipped else "loaded")
    for image, target in items:
        check_target(image, target, len(ds.classes), with_masks)
        assert target["iscrowd"].dtype == bool and target["iscrowd"].shape == target["labels"].shape


def check_target(image, target, num_classes, with_masks):
    """A loaded target is well formed: finite boxes inside the image, labels in 1..K, masks of its size."""
    height, width = image.shape[:2]
    boxes = target["boxes"]
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and np.isfinite(boxes).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 0] <= boxes[:, 2]).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    assert target["labels"].dtype == np.int64 and target["labels"].shape == (len(boxes),)
    assert ((target["labels"] >= 1) & (target["labels"] <= num_classes)).all()
    if with_masks:
        assert target["masks"].shape == (len(boxes), height, width) and target["masks"].dtype == np.uint8


EVALUATOR_FAULT = re.compile(r"(gt\.json: |results\.json: |result record \d+)")


def results_base() -> list:
    rle = coco_base()["annotations"][1]["segmentation"]
    return [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 15], "score": 0.9, "segmentation": rle},
            {"image_id": 2, "category_id": 3, "bbox": [30, 5, 20, 15], "score": 0.5, "segmentation": dict(rle)}]


@FUZZ
@given(data=st.data(), corrupt=st.sampled_from(["gt", "results"]), iou_type=st.sampled_from(["bbox", "segm"]))
def test_corrupt_coco_json_gets_a_named_error_from_the_evaluator(tmp_path_factory, data, corrupt, iou_type):
    """The evaluator reads the same files (ground truth and results) with pycocotools' rules."""
    files = {"gt": coco_base(), "results": results_base()}
    for _ in range(data.draw(st.integers(1, 4))):
        mutate(data.draw, files[corrupt])
    folder = tmp_path_factory.getbasetemp()
    paths = {name: folder / f"{name}.json" for name in files}
    for name, content in files.items():
        text = json.dumps(content).encode()
        paths[name].write_bytes(corrupt_text(data.draw, text) if name == corrupt else text)
    try:
        metrics = run_bounded(lambda: evaluate_coco(paths["gt"], paths["results"], iou_type))
    except ValueError as exc:
        assert EVALUATOR_FAULT.search(str(exc)) and not isinstance(exc, UnicodeError), exc
        event(f"ValueError: {EVALUATOR_FAULT.search(str(exc)).group(1)}")
        return
    event("scored")
    assert all(value == -1 or 0 <= value <= 1 for value in metrics.stats.values())


# --- VOC XML -------------------------------------------------------------------------------------

VOC_TEXT = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "nan", "inf", "-inf", "1e300", "1e-300", "10" * 40, "1_0", " 5 ", "0x10",
                     "5.5", "abc", "猫", "dog", "&amp;", "&#0;", "<", "&", "]]>", "\ud800"]),
    st.text(max_size=12),
)
ENTITY_BOMB = ('<!DOCTYPE annotation [<!ENTITY l0 "ha">'
               + "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10)) + "]>")
PROLOGUES = ["", "", "", '<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-8"?>',
             '<?xml version="1.0" encoding="latin-1"?>', '<?xml version="1.0" encoding="nonsense"?>',
             ENTITY_BOMB, '<!DOCTYPE annotation [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
             '<!DOCTYPE annotation SYSTEM "http://example.invalid/voc.dtd">']


def voc_base() -> list:
    """An annotation as nested [tag, text or children] lists, easy to edit."""
    def obj(name, difficult, box):
        return ["object", [["name", name], ["pose", "Left"], ["difficult", difficult],
                           ["bndbox", [[k, str(v)] for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box)]]]]

    return ["annotation", [["folder", "VOC2007"], ["filename", "000042.jpg"],
                           ["size", [["width", "100"], ["height", "80"], ["depth", "3"]]],
                           obj("dog", "0", (1, 1, 50, 40)), obj("person", "1", (60, 10, 100, 80)),
                           obj("cat", "0", (20.5, 30, 70, 79))]]


def to_xml(element, entity: bool = False) -> str:
    tag, body = element
    if isinstance(body, list):
        inner = "".join(to_xml(child, entity) for child in body)
    else:
        inner = escape(body)
    return f"<{tag}>{'&l9;' if entity and tag == 'annotation' else ''}{inner}</{tag}>"


def mutate_xml(draw, element):
    """One random edit inside the element tree: a text replaced, a tag
    removed, renamed, duplicated, or a garbage element added."""
    while isinstance(element[1], list) and element[1] and draw(st.integers(0, 3)) < 3:  # mostly deeper
        element = draw(st.sampled_from(element[1]))
    tag, body = element
    action = draw(st.sampled_from(["text", "text", "remove", "rename", "duplicate", "add"]))
    if action == "text" or not isinstance(body, list) or not body:
        element[1] = draw(VOC_TEXT)
    elif action == "remove":
        body.pop(draw(st.integers(0, len(body) - 1)))
    elif action == "rename":
        body[draw(st.integers(0, len(body) - 1))][0] = draw(st.sampled_from(["object", "name", "size", "bndbox",
                                                                            "part", "x", "xmin"]))
    elif action == "duplicate":
        body.append(copy.deepcopy(draw(st.sampled_from(body))))
    else:
        body.append([draw(st.sampled_from(["object", "size", "bndbox", "name", "junk"])),
                     copy.deepcopy(draw(st.one_of(VOC_TEXT, st.just([["name", "dog"]]))))])


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_fuzz")
    voc = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        (voc / sub).mkdir(parents=True)
    cv2.imwrite(str(voc / "JPEGImages" / "000042.jpg"), np.zeros((80, 100, 3), np.uint8))
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000042\n")
    return root


def test_the_voc_base_file_loads(voc_root):
    (voc_root / "VOC2007" / "Annotations" / "000042.xml").write_text(to_xml(voc_base()), encoding="utf-8")
    target = VOCDetection(voc_root, keep_difficult=True)[0][1]
    assert target["boxes"].tolist() == [[0, 0, 50, 40], [59, 9, 100, 80], [19.5, 29, 70, 79]]


VOC_FAULT = re.compile(r"\.xml: (malformed XML|refused unsafe XML|the root element|<size>|object \d+)")


@FUZZ
@given(data=st.data(), keep_difficult=st.booleans(), skip_invalid=st.booleans())
def test_corrupt_voc_xml_gets_a_named_error(voc_root, data, keep_difficult, skip_invalid):
    annotation = voc_base()
    for _ in range(data.draw(st.integers(1, 4))):
        mutate_xml(data.draw, annotation)
    prologue = data.draw(st.sampled_from(PROLOGUES))
    text = prologue + to_xml(annotation, entity=prologue == ENTITY_BOMB)
    xml_path = voc_root / "VOC2007" / "Annotations" / "000042.xml"
    xml_path.write_bytes(corrupt_text(data.draw, text.encode("utf-8", errors="surrogatepass")))

    def load():
        ds = VOCDetection(voc_root, keep_difficult=keep_difficult, skip_invalid=skip_invalid)
        return ds, ds[0], ds.target("000042")

    try:
        ds, (image, target), (raw_target, _, _) = run_bounded(load)
    except AnnotationError as exc:
        assert str(exc).startswith(f"{xml_path}: ") and VOC_FAULT.search(str(exc)), exc
        event(f"AnnotationError: {VOC_FAULT.search(str(exc)).group(1)}")
        return
    except (ValueError, OSError) as exc:  # the image: a <filename> that is missing, a folder, another size
        assert os.path.join(str(voc_root), "VOC2007", "JPEGImages") in str(exc), exc
        assert not isinstance(exc, UnicodeError), exc
        event(f"image error: {type(exc).__name__}")
        return
    assert skip_invalid or not ds.skipped
    event("loaded, some objects skipped" if ds.skipped else "loaded")
    check_target(image, target, 20, with_masks=False)
    assert target["difficult"].dtype == bool and (keep_difficult or not target["difficult"].any())
    assert np.isfinite(raw_target["boxes"]).all()


# --- YOLO, LabelMe, CVAT -------------------------------------------------------------------------
# The readers of the other formats, under the same rules: a well-formed dataset, or an
# AnnotationError / ValueError / OSError that names a file of the dataset.


def load_and_check(load, root, fault: re.Pattern, num_classes=None, with_masks=False):
    """Runs load() -> dataset under the memory ceiling, reads every item and
    checks it; an error must name a file under root and, if an
    AnnotationError, match `fault` at a file name's end. The dataset, or None after an error."""
    def items():
        ds = load()
        return ds, [ds[i] for i in range(len(ds))]

    try:
        ds, loaded = run_bounded(items)
    except AnnotationError as exc:
        assert str(exc).startswith(str(root)) and fault.search(str(exc)), exc
        event(f"AnnotationError: {fault.search(str(exc)).group(1)}")
        return None
    except (ValueError, OSError) as exc:  # an image file: missing, a folder, another size, undecodable
        assert str(root) in str(exc) and not isinstance(exc, UnicodeError), exc
        event(f"image error: {type(exc).__name__}")
        return None
    event("loaded, some records skipped" if ds.skipped else "loaded")
    for image, target in loaded:
        check_target(image, target, len(ds.classes), with_masks)
    return ds


YOLO_FAULT = re.compile(r"(\.yaml|\.txt)(:\d+)?: ")
YOLO_TOKENS = st.sampled_from(["", "0", "1", "2", "-1", "0.5", "1.5", "320", "nan", "inf", "1e999", "1e-300", "0x1",
                               "1_0", ".5", "5.", "猫", "\ud800", "\x00", "0 0.5", "\t"])
# Anchors and aliases: 9^5 strings if expanded, in a file of 300 bytes (a reader that str()s
# what it does not check would make class names larger than the file; deeper, gigabytes).
YAML_BOMB = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n"
                                                            for n in range(1, 5))


def yolo_lines(draw) -> str:
    """Label lines (boxes and a polygon), some tokens replaced, dropped or added."""
    lines = [["0", "0.5", "0.5", "0.25", "0.5"], ["1", "0.1", "0.1", "0.4", "0.1", "0.25", "0.4"],
             ["1", "1", "1", "1", "1"]]
    for _ in range(draw(st.integers(0, 3))):
        line = draw(st.sampled_from(lines))
        at = draw(st.integers(0, len(line)))
        how = draw(st.sampled_from(["set", "drop", "add", "copy"]))
        if how == "copy":
            lines.append(list(line))
        elif how == "add" or not line:
            line.insert(at, draw(YOLO_TOKENS))
        elif how == "drop":
            line.pop(min(at, len(line) - 1))
        else:
            line[min(at, len(line) - 1)] = draw(YOLO_TOKENS)
    return "\n".join(" ".join(line) for line in lines) + "\n"


def inside(root, value, fallback):
    """value, unless it is a path leading outside root (a split of "/" would walk the whole disk)."""
    if isinstance(value, list):
        return [inside(root, v, fallback) for v in value]
    if isinstance(value, str) and "\0" not in value:
        path = os.path.normpath(os.path.join(str(root), value))
        return value if path.startswith(str(root) + os.sep) else fallback
    return value


@pytest.fixture(scope="module")
def yolo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo_fuzz")
    for name in ("a.png", "b.jpg"):
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / "train" / name), np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    (root / "labels" / "train").mkdir(parents=True)
    return root


@FUZZ
@given(data=st.data(), with_masks=st.booleans(), skip_invalid=st.booleans(), names_map=st.booleans())
def test_corrupt_yolo_files_get_a_named_error(yolo_root, data, with_masks, skip_invalid, names_map):
    config = {"train": "images/train", "val": "images/train", "names": ["circle", "猫"], "nc": 2}
    for _ in range(data.draw(st.sampled_from([0, 0, 1, 2]))):  # most examples fuzz the label files
        mutate(data.draw, config)
    config["train"] = inside(yolo_root, config.get("train"), "images/train")
    if names_map and isinstance(config.get("names"), list):
        config["names"] = dict(enumerate(config["names"]))
    text = yaml.safe_dump(config, allow_unicode=True) + data.draw(st.sampled_from(
        ["", "", "", YAML_BOMB + "names: *l4\n", YAML_BOMB + "train: *l4\n", YAML_BOMB + "names: [a, *l4]\n"]))
    text = text.encode("utf-8", "surrogatepass")
    text = corrupt_text(data.draw, text) if data.draw(st.booleans()) else text
    (yolo_root / "data.yaml").write_bytes(text)
    for name in ("a", "b"):
        lines = yolo_lines(data.draw).encode("utf-8", "surrogatepass")
        (yolo_root / "labels" / "train" / f"{name}.txt").write_bytes(corrupt_text(data.draw, lines))
    ds = load_and_check(lambda: YOLODetection(yolo_root, with_masks=with_masks, skip_invalid=skip_invalid),
                        yolo_root, YOLO_FAULT, with_masks=with_masks)
    if ds is not None:  # class names are text of data.yaml, never an expansion of its aliases
        assert sum(len(name) for name in ds.classes) <= len(text), ds.classes


LABELME_FAULT = re.compile(r"(\.json: (not valid JSON|not a LabelMe file|image|shapes\[\d+\])|: no usable LabelMe)")


def labelme_base(embedded: bool) -> dict:
    """A LabelMe 5 file: a rectangle, a polygon, a group of two polygons and
    a point; with `embedded`, of a missing image given as imageData."""
    def shape(kind, points, label="circle", group_id=None):
        return {"label": label, "points": points, "group_id": group_id, "description": "", "shape_type": kind,
                "flags": {}}

    image = base64.b64encode(cv2.imencode(".png", np.full((HEIGHT, WIDTH, 3), 90, np.uint8))[1].tobytes()).decode()
    shapes = [shape("rectangle", [[30.0, 25.0], [10.0, 5.0]]),
              shape("polygon", [[40, 10], [59.5, 10], [50, 39]], "猫"),
              shape("polygon", [[2, 30], [8, 30], [5, 39]], "猫", 1),
              shape("polygon", [[12, 30], [18, 30], [15, 39]], "猫", 1), shape("point", [[20, 15]], "nose")]
    return {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": "b.png" if embedded else "a.png",
            "imageData": image if embedded else None, "imageHeight": HEIGHT, "imageWidth": WIDTH}


@pytest.fixture(scope="module")
def labelme_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelme_fuzz")
    cv2.imwrite(str(root / "a.png"), np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    return root


@FUZZ
@given(data=st.data(), with_masks=st.booleans(), skip_invalid=st.booleans())
def test_corrupt_labelme_json_gets_a_named_error(labelme_root, data, with_masks, skip_invalid):
    root = labelme_root
    for name, content in (("a.json", labelme_base(False)), ("b.json", labelme_base(True))):
        for _ in range(data.draw(st.integers(0, 3))):
            shapes = content.get("shapes") if isinstance(content, dict) else None
            at_shape = isinstance(shapes, list) and shapes and data.draw(st.booleans())  # reach points more often
            mutate(data.draw, data.draw(st.sampled_from(shapes)) if at_shape else content)
        (root / name).write_bytes(corrupt_text(data.draw, json.dumps(content).encode("utf-8", "surrogatepass")))
    load_and_check(lambda: LabelMeDetection(root, with_masks=with_masks, skip_invalid=skip_invalid), root,
                   LABELME_FAULT, with_masks=with_masks)


CVAT_FAULT = re.compile(r"\.xml: (malformed XML|refused unsafe XML|the root element|<meta>|image|no usable)")


def cvat_base() -> list:
    """CVAT for images 1.1 as [tag, attributes, children or text] lists."""
    labels = [["label", {}, [["name", {}, name], ["color", {}, "#fa3253"]]] for name in ("circle", "猫")]
    box = {"label": "circle", "occluded": "1", "xtl": "10.5", "ytl": "5", "xbr": "30", "ybr": "25.25", "z_order": "0"}
    polygon = {"label": "猫", "occluded": "0", "points": "40.00,10.00;59.50,10.00;50.00,39.00", "z_order": "0"}
    image = {"id": "0", "name": "a.png", "width": str(WIDTH), "height": str(HEIGHT)}
    shapes = [["box", box, []], ["polygon", polygon, []], ["tag", {"label": "猫"}, []]]
    return ["annotations", {}, [["version", {}, "1.1"], ["meta", {}, [["task", {}, [["labels", {}, labels]]]]],
                                ["image", image, shapes], ["image", {**image, "id": "1"}, [["box", {**box, "label": "猫"}, []]]]]]


def cvat_xml(element, entity: bool = False) -> str:
    tag, attributes, body = element
    inner = "".join(cvat_xml(child, entity) for child in body) if isinstance(body, list) else escape(body)
    attrs = "".join(f" {key}={quoteattr(value)}" for key, value in attributes.items())
    return f"<{tag}{attrs}>{'&l9;' if entity and tag == 'annotations' else ''}{inner}</{tag}>"


def mutate_cvat(draw, element):
    """One edit inside the tree: an attribute set or removed, a text
    replaced, a child removed, duplicated, renamed or added."""
    while isinstance(element[2], list) and element[2] and draw(st.integers(0, 3)) < 3:  # mostly deeper
        element = draw(st.sampled_from(element[2]))
    tag, attributes, body = element
    action = draw(st.sampled_from(["attribute", "attribute", "remove", "rename", "duplicate", "add", "text"]))
    if action == "attribute" or (action != "text" and not (isinstance(body, list) and body)):
        key = draw(st.sampled_from(sorted(attributes) + ["label", "points", "rotation", "name", "width"]))
        if draw(st.booleans()):
            attributes[key] = draw(VOC_TEXT)
        else:
            attributes.pop(key, None)
    elif action == "text":
        element[2] = draw(VOC_TEXT)
    elif action == "remove":
        body.pop(draw(st.integers(0, len(body) - 1)))
    elif action == "rename":
        body[draw(st.integers(0, len(body) - 1))][0] = draw(st.sampled_from(["box", "polygon", "mask", "image", "x"]))
    elif action == "duplicate":
        body.append(copy.deepcopy(draw(st.sampled_from(body))))
    else:
        body.append([draw(st.sampled_from(["box", "polygon", "image", "label", "ellipse"])), {"label": "circle"}, []])


@FUZZ
@given(data=st.data(), with_masks=st.booleans(), skip_invalid=st.booleans())
def test_corrupt_cvat_xml_gets_a_named_error(coco_root, data, with_masks, skip_invalid):
    annotations = cvat_base()
    for _ in range(data.draw(st.integers(1, 4))):
        mutate_cvat(data.draw, annotations)
    prologue = data.draw(st.sampled_from(PROLOGUES)).replace("DOCTYPE annotation ", "DOCTYPE annotations ")
    text = prologue + cvat_xml(annotations, entity="ENTITY l9" in prologue)
    xml_path = coco_root / "cvat.xml"
    xml_path.write_bytes(corrupt_text(data.draw, text.encode("utf-8", errors="surrogatepass")))
    load_and_check(lambda: CVATDetection(xml_path, coco_root, with_masks=with_masks, skip_invalid=skip_invalid),
                   coco_root, CVAT_FAULT, with_masks=with_masks)
