"""COCO detection and segmentation metrics, identical to pycocotools' COCOeval.

    evaluator = COCOEvaluator("instances_val.json", iou_type="bbox")
    evaluator.update(predictions)        # {image_id: {"boxes", "scores", "labels"}} or COCO result records
    metrics = evaluator.compute()        # metrics.stats["AP"], metrics.per_category, metrics.precision ...

COCOEvaluator and VOCEvaluator are fed and read the same way: update(predictions,
targets), compute(), write_results(path); their metrics both have stats,
per_class, curves and headline().

Ground truth is parsed once into flat arrays grouped by (category, image);
matching and accumulation run as numba kernels (detkit.evaluation._kernels)
that follow pycocotools step for step, so every statistic and the precision
array are equal to pycocotools', not merely close.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Optional, Sequence, Union

import numpy as np
from torch import Tensor

from ..io.jsonio import load_json, short_repr, write_json_atomic
from ..io.rle import encode_masks, rle_to_json, segmentation_problem
from . import _kernels

IOU_TYPES = ("bbox", "segm")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# pycocotools' Params, computed the same way so that the floats are the same.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")


@dataclass
class COCOMetrics:
    """The result of a COCO evaluation.

    stats: the 12 standard numbers by name (AP, AP50, ..., ARl); -1 where undefined.
    per_category: category name -> AP (IoU .50:.95, all areas, 100 detections).
    precision: [T=10, R=101, K, A=4, M=3], recall: [T, K, A, M], scores: like
        precision; pycocotools' eval["precision"], ["recall"], ["scores"].
    """

    stats: dict[str, float]
    per_category: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    category_ids: list[int] = field(default_factory=list)

    per_class_metric = "AP"  # what per_class holds, for table headers

    @property
    def per_class(self) -> dict[str, float]:
        """per_category, under the name that VOCMetrics uses."""
        return self.per_category

    @property
    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Category name -> (recall, precision) at IoU 0.5, all areas, 100
        detections; categories without GT are left out."""
        return pr_curves(self.precision, list(self.per_category), iou=0.5)

    def headline(self) -> str:
        return "  ".join(f"{name} {value:.4f}" for name, value in self.stats.items())

    def to_dict(self) -> dict[str, Any]:
        """Every number as JSON-ready Python values."""
        return {
            "stats": dict(self.stats),
            "per_category": dict(self.per_category),
            "category_ids": list(self.category_ids),
            "precision": self.precision.tolist(),
            "recall": self.recall.tolist(),
        }


# --- ground truth ----------------------------------------------------------------------------------


def _load_gt_dataset(gt) -> dict:
    """The GT dataset dict from a path, a dict or a pycocotools COCO."""
    if isinstance(gt, (str, os.PathLike)):
        dataset = load_json(gt, "ground-truth file")
        if not isinstance(dataset, Mapping):
            raise ValueError(f"{os.fspath(gt)}: expected a COCO JSON object")
        return dict(dataset)
    if isinstance(gt, Mapping):
        return dict(gt)
    if hasattr(gt, "dataset") and isinstance(gt.dataset, Mapping):
        return gt.dataset
    raise TypeError(f"gt must be a COCO JSON path, a dict or a pycocotools COCO, got {type(gt).__name__}")


def _only_images(dataset: dict, image_ids: Optional[Collection], source: str) -> dict:
    """The dataset restricted to `image_ids` (all images when None)."""
    if image_ids is None:
        return dataset
    images = dataset.get("images")
    if not isinstance(images, list):
        raise ValueError(f"{source}: 'images' must be a list")
    image_ids = set(image_ids)
    # Records that are not objects or have an unhashable id are kept, for _GroundTruth to report.
    kept = [img for img in images if not isinstance(img, Mapping) or not _hashable(img.get("id"))
            or img.get("id") in image_ids]
    if len(kept) == len(images):
        return dataset
    annotations = dataset.get("annotations", [])
    if isinstance(annotations, list):
        annotations = [a for a in annotations if not isinstance(a, Mapping) or _member(a.get("image_id"), image_ids)]
    return {**dataset, "images": kept, "annotations": annotations}


def _hashable(value) -> bool:
    return not isinstance(value, (list, dict))  # all that JSON holds besides scalars


def _member(value, keys) -> bool:
    """value in keys; an unhashable value (a list, an object) names nothing."""
    return _hashable(value) and value in keys


def _records_by_id(records: list, section: str, source: str) -> dict:
    """{id: record} of the images or categories; later duplicates win, as in pycocotools."""
    by_id = {}
    for n, record in enumerate(records):
        if not isinstance(record, Mapping) or not _is_id(record.get("id")):
            raise ValueError(f"{source}: {section}[{n}] must be an object with an integer 'id', "
                             f"got {short_repr(record)}")
        by_id[record["id"]] = record
    return by_id


def _is_id(value) -> bool:
    """An integer that fits the int64 id arrays (not a bool)."""
    return type(value) is int and -(2**63) <= value < 2**63


def _is_number(value) -> bool:
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def _gt_annotation_problem(ann: Mapping, image: Mapping, iou_type: str) -> Optional[str]:
    """Why a GT annotation of an evaluated image and category cannot be scored, or None."""
    if not _is_id(ann.get("id")):
        return f"'id' must be an integer; {_got(ann, 'id')}"
    if not _is_number(ann.get("area")):
        return f"'area' must be a finite number; {_got(ann, 'area')}"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"'iscrowd' must be 0 or 1; {_got(ann, 'iscrowd')}"
    if iou_type == "bbox":
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            return f"'bbox' must be 4 finite numbers; {_got(ann, 'bbox')}"
        return None
    if "segmentation" not in ann:
        return "'segmentation' is missing"
    return segmentation_problem(ann["segmentation"], image.get("height"), image.get("width"))


def _got(record: Mapping, key: str) -> str:
    return f"got {short_repr(record[key])}" if key in record else "it is missing"


class _GroundTruth:
    """GT annotations as arrays sorted by (category index, image index), in
    dataset order within a pair (pycocotools' order), with CSR offsets."""

    def __init__(self, dataset: dict, iou_type: str, source: str):
        for key in ("images", "annotations", "categories"):
            if not isinstance(dataset.get(key), list):
                raise ValueError(f"{source}: {key!r} must be a list")
        self.images = _records_by_id(dataset["images"], "images", source)
        self.img_ids = np.array(sorted(self.images), dtype=np.int64)
        self.categories = _records_by_id(dataset["categories"], "categories", source)
        self.cat_ids = np.array(sorted(self.categories), dtype=np.int64)
        self.img_index = {int(i): n for n, i in enumerate(self.img_ids)}
        self.cat_index = {int(c): n for n, c in enumerate(self.cat_ids)}
        anns = []
        for n, a in enumerate(dataset["annotations"]):
            if not isinstance(a, Mapping):
                raise ValueError(f"{source}: annotations[{n}] must be an object, got {short_repr(a)}")
            # Annotations of other images or categories are not scored (pycocotools ignores them too).
            if _member(a.get("image_id"), self.img_index) and _member(a.get("category_id"), self.cat_index):
                problem = _gt_annotation_problem(a, self.images[a["image_id"]], iou_type)
                if problem is not None:
                    raise ValueError(f"{source}: annotation {short_repr(a.get('id'))}: {problem}")
                anns.append(a)
        pair = np.array([self.cat_index[a["category_id"]] * len(self.img_ids) + self.img_index[a["image_id"]]
                         for a in anns], dtype=np.int64)
        order = np.argsort(pair, kind="stable")
        self.anns = [anns[i] for i in order]
        self.offsets = _offsets(pair[order], len(self.cat_ids) * len(self.img_ids))
        self.ids = np.array([a["id"] for a in self.anns], dtype=np.int64)
        self.area = np.array([float(a["area"]) for a in self.anns])
        self.crowd = np.array([int(a.get("iscrowd", 0)) for a in self.anns], dtype=np.uint8)
        if iou_type == "bbox":
            self.boxes = np.array([a["bbox"] for a in self.anns], dtype=np.float64).reshape(-1, 4)
        else:
            self.rles = [_to_rle(a["segmentation"], self.images[a["image_id"]]) for a in self.anns]


def _offsets(sorted_keys: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(sorted_keys, minlength=n) if len(sorted_keys) else np.zeros(n, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _to_rle(segmentation, image: Mapping):
    """pycocotools' annToRLE: polygons and uncompressed RLE to compressed RLE;
    no polygon at all is an empty mask (pycocotools fails on it). The
    segmentation has passed segmentation_problem for this image."""
    from pycocotools import mask as mask_utils

    h, w = image["height"], image["width"]
    if isinstance(segmentation, list):
        if not segmentation:
            return mask_utils.encode(np.zeros((h, w), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, h, w)
    return segmentation


# --- detections ------------------------------------------------------------------------------------


class _Detections:
    """Results accumulated by update(), in the order given (pycocotools' ids
    are positions + 1), kept as columns."""

    def __init__(self):
        self.image_ids: list[np.ndarray] = []
        self.category_ids: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []  # xywh
        self.segmentations: list = []
        self.count = 0

    def add(self, image_ids, category_ids, scores, boxes, segmentations) -> None:
        self.image_ids.append(np.asarray(image_ids, dtype=np.int64))
        self.category_ids.append(np.asarray(category_ids, dtype=np.int64))
        self.scores.append(np.asarray(scores, dtype=np.float64))
        self.boxes.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        self.segmentations.extend(segmentations if segmentations is not None else [None] * len(scores))
        self.count += len(scores)

    def columns(self):
        if not self.scores:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))
        return (np.concatenate(self.image_ids), np.concatenate(self.category_ids), np.concatenate(self.scores),
                np.concatenate(self.boxes))


def _records_to_columns(records: Sequence[Mapping], iou_type: str, images: Mapping[int, Mapping]):
    """COCO result records -> columns, with loadRes' rules: bbox results get
    area w * h (also when evaluating segm, as loadRes does when the first
    record has a bbox); segm results get the mask area. `images`: the GT
    images by id, whose sizes segmentations must have."""
    from pycocotools import mask as mask_utils

    n = len(records)
    image_ids = np.empty(n, dtype=np.int64)
    category_ids = np.empty(n, dtype=np.int64)
    scores = np.empty(n, dtype=np.float64)
    boxes = np.zeros((n, 4), dtype=np.float64)
    segms = [None] * n
    for i, r in enumerate(records):
        try:
            image_ids[i] = r["image_id"]
            category_ids[i] = r["category_id"]
            scores[i] = r["score"]
            if "bbox" in r and len(r["bbox"]):
                boxes[i] = r["bbox"]
            if iou_type == "segm":
                segms[i] = r["segmentation"]
        except KeyError as exc:
            raise ValueError(f"result record {i} has no {exc.args[0]!r} field: {short_repr(r, 200)}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"result record {i} is malformed ({exc}): {short_repr(r, 200)}") from None
        if iou_type == "segm":  # checked before pycocotools reads it, for its box here or its IoUs later
            problem = _result_segmentation_problem(segms[i], int(image_ids[i]), images)
            if problem is not None:
                raise ValueError(f"result record {i}: {problem}")
    if iou_type == "segm" and n and not ("bbox" in records[0] and len(records[0]["bbox"])):
        for i, s in enumerate(segms):
            boxes[i] = mask_utils.toBbox(_to_rle(s, images[int(image_ids[i])]))
    return image_ids, category_ids, scores, boxes, segms


def _result_segmentation_problem(segmentation, image_id: int, images: Mapping[int, Mapping]) -> Optional[str]:
    if image_id not in images:
        return f"image_id {image_id} is not in the ground truth"
    return segmentation_problem(segmentation, images[image_id].get("height"), images[image_id].get("width"))


# --- the evaluator ---------------------------------------------------------------------------------


class COCOEvaluator:
    """Accumulates detections for a COCO ground truth and computes its metrics.

    Args:
        gt: path to a COCO annotation JSON, its dict, or a pycocotools COCO.
        iou_type: "bbox" or "segm".
        label_to_category: maps model labels to COCO category ids for
            prediction dicts; default: label l -> the l-th smallest category id
            (labels 1..K, 0 = background, as detkit's datasets number them).
        image_ids: evaluate these images of `gt` only (default: all), so that
            a partial evaluation does not count the others' objects as misses.
    """

    def __init__(self, gt, iou_type: str = "bbox", label_to_category: Optional[Mapping[int, int]] = None,
                 image_ids: Optional[Collection] = None):
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        self.iou_type = iou_type
        source = os.fspath(gt) if isinstance(gt, (str, os.PathLike)) else "gt"
        self.gt = _GroundTruth(_only_images(_load_gt_dataset(gt), image_ids, source), iou_type, source)
        if label_to_category is None:
            label_to_category = {n + 1: int(c) for n, c in enumerate(self.gt.cat_ids)}
        self.label_to_category = dict(label_to_category)
        self._dets = _Detections()
        self._bbox_area_from_box: Optional[bool] = None  # loadRes' rule, fixed by the first result

    @property
    def category_names(self) -> list[str]:
        return [str(self.gt.categories[int(c)].get("name", c)) for c in self.gt.cat_ids]

    def reset(self) -> None:
        self._dets = _Detections()
        self._bbox_area_from_box = None

    def update(self, predictions: Union[Mapping[int, Mapping[str, Tensor]], Sequence[Mapping]],
               targets: Optional[Mapping] = None) -> None:
        """Adds detections: {image_id: {"boxes": Tensor[N, 4] xyxy, "scores":
        Tensor[N], "labels": Tensor[N], "masks"?: Tensor[N, (1,) H, W]}} or a list
        of COCO result records ({"image_id", "category_id", "bbox" xywh,
        "score", "segmentation"?}).

        targets: not read; the ground truth is the annotation file given to
        the constructor. Taken so that every detkit evaluator is fed alike
        (VOCEvaluator reads its ground truth from them)."""
        if isinstance(predictions, Mapping):
            records = self._prediction_columns(predictions)
            start = self._dets.count
            self._check(records[0], records[1], records[2], records[3], start, "prediction for image")
            self._dets.add(*records)
            if self._bbox_area_from_box is None and len(records[2]):
                # Our result records carry a bbox, so loadRes would take the box area, segm too.
                self._bbox_area_from_box = True
            return
        records = list(predictions)
        columns = _records_to_columns(records, self.iou_type, self.gt.images)
        self._check(*columns[:4], self._dets.count, "result record")
        if self._bbox_area_from_box is None and records:
            self._bbox_area_from_box = "bbox" in records[0] and len(records[0]["bbox"]) > 0
        self._dets.add(*columns)

    def _prediction_columns(self, predictions: Mapping[int, Mapping[str, Tensor]]):
        image_ids, category_ids, scores, boxes, segms = [], [], [], [], []
        for image_id, pred in predictions.items():
            n = len(pred["scores"])
            xyxy = pred["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
            labels = pred["labels"].detach().cpu().tolist()
            unknown = [l for l in labels if l not in self.label_to_category]
            if unknown:
                raise ValueError(f"prediction for image {image_id}: label {unknown[0]} has no category id "
                                 f"(known labels: {sorted(self.label_to_category)})")
            image_ids.append(np.full(n, int(image_id)))
            category_ids.append(np.array([self.label_to_category[l] for l in labels], dtype=np.int64))
            scores.append(pred["scores"].detach().cpu().double().numpy())
            boxes.append(np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], 1))
            if self.iou_type == "segm":
                segms.extend(_encode_masks(pred, image_id))
        if not scores:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)), []
        return (np.concatenate(image_ids), np.concatenate(category_ids), np.concatenate(scores),
                np.concatenate(boxes), segms if self.iou_type == "segm" else None)

    def _check(self, image_ids, category_ids, scores, boxes, start: int, what: str) -> None:
        """Results naming images or categories the GT lacks, NaN scores or
        negative sizes would be silently wrong: name the first bad one."""
        checks = [
            (~np.isin(image_ids, self.gt.img_ids), "image_id {} is not in the ground truth", image_ids),
            (~np.isin(category_ids, self.gt.cat_ids), "category_id {} is not in the ground truth", category_ids),
            (~np.isfinite(scores), "score {} is not finite", scores),
            (~np.isfinite(boxes).all(1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0),
             "bbox {} is not finite or has a negative size (xywh)", boxes),
        ]
        for bad, message, values in checks:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                label = f"{what} {i + start}" if what == "result record" else f"{what} {int(image_ids[i])}"
                raise ValueError(f"{label}: " + message.format(values[i].tolist()))

    def compute(self) -> COCOMetrics:
        """Evaluates, accumulates and summarises all detections so far."""
        gt = self.gt
        n_img, n_cat = len(gt.img_ids), len(gt.cat_ids)
        image_ids, category_ids, scores, boxes = self._dets.columns()
        # Group detections by (category, image) keeping their input order, as loadRes + _prepare do.
        img_pos = np.searchsorted(gt.img_ids, image_ids)
        cat_pos = np.searchsorted(gt.cat_ids, category_ids)
        pair = cat_pos * n_img + img_pos
        order = np.argsort(pair, kind="stable")
        dt_off = _offsets(pair[order], n_cat * n_img)
        scores, boxes = scores[order], boxes[order]
        dt_ids = order.astype(np.int64) + 1
        sel, sel_off = _kernels.select_detections(dt_off, scores, MAX_DETS[-1])
        iou_off = _kernels.iou_offsets(sel_off, gt.offsets)
        if self.iou_type == "bbox":
            ious = _kernels.bbox_ious(boxes, sel, sel_off, gt.boxes, gt.crowd, gt.offsets, iou_off)
            dt_area = boxes[:, 2] * boxes[:, 3]
        else:
            segms = [self._dets.segmentations[i] for i in order]
            ious, dt_area = self._segm_ious(segms, boxes, image_ids[order], sel, sel_off, iou_off)
        matched, ignored, n_pos = _kernels.evaluate_pairs(
            ious, iou_off, sel, sel_off, dt_area, dt_ids, gt.area, gt.crowd, gt.ids, gt.offsets,
            np.array(AREA_RANGES, dtype=np.float64), IOU_THRESHOLDS,
        )
        precision, recall, score_table = _kernels.accumulate(
            matched, ignored, n_pos, sel, sel_off, gt.offsets, scores, n_cat, n_img,
            np.array(MAX_DETS, dtype=np.int64), RECALL_THRESHOLDS,
        )
        stats = summarize(precision, recall)
        per_category = {name: _mean_defined(precision[:, :, k, 0, -1]) for k, name in enumerate(self.category_names)}
        return COCOMetrics(stats, per_category, precision, recall, score_table, [int(c) for c in gt.cat_ids])

    def _segm_ious(self, segms, boxes, image_ids, sel, sel_off, iou_off):
        """Mask IoUs per pair with pycocotools' RLE kernel; detection areas as loadRes sets them."""
        from pycocotools import mask as mask_utils

        rles = [_to_rle(s, self.gt.images[int(i)]) for s, i in zip(segms, image_ids)]
        dt_area = boxes[:, 2] * boxes[:, 3] if self._bbox_area_from_box else \
            np.array([float(mask_utils.area(r)) for r in rles])
        ious = np.zeros(iou_off[-1])
        gt = self.gt
        for p in np.flatnonzero((np.diff(sel_off) > 0) & (np.diff(gt.offsets) > 0)):
            d = [rles[j] for j in sel[sel_off[p]:sel_off[p + 1]]]
            g = gt.rles[gt.offsets[p]:gt.offsets[p + 1]]
            block = mask_utils.iou(d, g, [int(c) for c in gt.crowd[gt.offsets[p]:gt.offsets[p + 1]]])
            ious[iou_off[p]:iou_off[p + 1]] = np.asarray(block, dtype=np.float64).reshape(-1)
        return ious, dt_area

    def results(self) -> list[dict]:
        """The accumulated detections as COCO result records (loadRes accepts them)."""
        image_ids, category_ids, scores, boxes = self._dets.columns()
        records = []
        for i in range(len(scores)):
            record = {"image_id": int(image_ids[i]), "category_id": int(category_ids[i]),
                      "bbox": [float(v) for v in boxes[i]], "score": float(scores[i])}
            segm = self._dets.segmentations[i]
            if segm is not None:
                record["segmentation"] = rle_to_json(segm)
            records.append(record)
        return records

    def write_results(self, path: Union[str, os.PathLike]) -> None:
        """Writes results() as JSON atomically (temp file + rename)."""
        write_json_atomic(path, self.results())


def _encode_masks(pred: Mapping[str, Tensor], image_id) -> list:
    if "masks" not in pred:
        raise ValueError(f"prediction for image {image_id} has no 'masks', needed for iou_type='segm'")
    return encode_masks(pred["masks"])


def pr_curves(precision: np.ndarray, names: Sequence[str], iou: float = 0.5) -> dict[str, tuple]:
    """Per-category (recall, precision) at IoU `iou`, all areas, 100 detections,
    from a precision array [T, R, K, A, M]; categories without GT are left out."""
    t = int(np.argmin(np.abs(IOU_THRESHOLDS - iou)))
    curves = {}
    for k, name in enumerate(names):
        values = precision[t, :, k, 0, -1]
        if (values > -1).any():
            curves[name] = (RECALL_THRESHOLDS, values)
    return curves


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """pycocotools' summarize(): the 12 standard statistics by name."""

    def pick(ap: bool, iou: Optional[float] = None, area: str = "all", max_dets: int = 100) -> float:
        a = AREA_LABELS.index(area)
        m = MAX_DETS.index(max_dets)
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        return _mean_defined(s)

    values = [
        pick(True), pick(True, iou=0.5), pick(True, iou=0.75),
        pick(True, area="small"), pick(True, area="medium"), pick(True, area="large"),
        pick(False, max_dets=1), pick(False, max_dets=10), pick(False),
        pick(False, area="small"), pick(False, area="medium"), pick(False, area="large"),
    ]
    return dict(zip(STAT_NAMES, values))


def evaluate_coco(gt_json: Union[str, os.PathLike], results_json: Union[str, os.PathLike],
                  iou_type: str = "bbox") -> COCOMetrics:
    """Metrics of a COCO results JSON against a COCO annotation JSON."""
    records = load_json(results_json, "results file")
    if not isinstance(records, list):
        raise ValueError(f"{os.fspath(results_json)}: results must be a JSON list of records")
    evaluator = COCOEvaluator(gt_json, iou_type)
    evaluator.update(records)
    return evaluator.compute()
