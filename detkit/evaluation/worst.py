"""The worst images of an analysis: ranked by their errors at the recommended
(F1-optimal) per-class score thresholds, and drawn with every false positive
and false negative labelled with its error type.

Ranking: the number of false positives (detections at or above their class's
threshold that COCO's matching at the foreground IoU leaves unmatched) plus
false negatives (positive GT not matched by such a detection); ties go to the
image whose false positives have the higher summed score. A class without
any true positive has no recommended threshold: none of its detections is
kept, so its GT count as false negatives.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np

from . import _analysis_kernels as ak

if TYPE_CHECKING:  # annotations only
    from ._matching import Matching

# TIDE's six types, in TIDE's order (also the kernels' codes 1..6).
ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")
# Where the worst images' pixels come from: a folder their file_names are relative to, or image_id -> RGB.
ImageSource = Union[str, os.PathLike, Callable[[int], Optional[np.ndarray]], None]
# RGB. Ground truth is dashed, detections solid; green/blue are right, orange/red wrong.
STYLE = {"gt": (40, 170, 60), "gt_error": (255, 140, 0), "gt_crowd": (150, 150, 150),
         "tp": (30, 110, 230), "fp": (220, 30, 30)}
DRAW_SIZE = 512  # the drawing's longer side, in pixels: Shapes' 128 px images grow, large photos shrink


@dataclass
class ImageErrors:
    """One of the worst images: its errors at the recommended thresholds.

    detections: {"bbox": [x, y, w, h], "category", "score", "outcome"}, outcome
    "TP" or the error type (ERROR_TYPES); ground_truth: {"bbox", "category",
    "outcome"}, outcome "TP", "miss", "cls" or "loc" (found, but with the
    wrong class or a loose box), "low score" (matched below the threshold),
    "crowd" or "ignored" (outside the area range). drawing: the image with
    both drawn (RGB uint8 [H', W', 3]), once drawn."""

    image_id: int
    file_name: str
    width: int
    height: int
    false_positives: int
    false_negatives: int
    detections: list[dict]
    ground_truth: list[dict]
    drawing: Optional[np.ndarray] = field(default=None, repr=False)
    image_found: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "drawing"}


def worst_images(m: "Matching", tf: int, err_t: np.ndarray, best_t: np.ndarray, class_thresholds: np.ndarray,
                 classes: Sequence[str], count: int) -> list[ImageErrors]:
    """The `count` images with the most errors (see the module doc), worst
    first; images without errors are left out. err_t, best_t: the error
    types [S] and claiming detections [G] at the foreground threshold tf;
    class_thresholds: [K], NaN where a class has none."""
    if count <= 0:
        return []
    thresholds = np.where(np.isnan(class_thresholds), np.inf, class_thresholds)
    sel_pair, scores, status = m.sel_pair, m.scores[m.sel], m.status[tf]
    det_img = sel_pair % m.n_img
    shown = scores >= thresholds[sel_pair // m.n_img]
    fp = shown & (status == ak.FP)
    found = np.zeros(len(best_t), dtype=bool)
    found[m.det_gt[tf][shown & (status == ak.TP)]] = True
    gt_img = m.gt_pair % m.n_img
    fn = m.gt_counted & ~found
    n_fp = np.bincount(det_img[fp], minlength=m.n_img)
    n_fn = np.bincount(gt_img[fn], minlength=m.n_img)
    fp_score = np.bincount(det_img[fp], weights=scores[fp], minlength=m.n_img)
    total = n_fp + n_fn
    ranked = np.lexsort((m.evaluator.gt.img_ids, -fp_score, -total))[:count]
    context = (m, tf, err_t, best_t, shown, found, classes)
    return [_image_errors(int(i), int(n_fp[i]), int(n_fn[i]), *context) for i in ranked if total[i] > 0]


def _image_errors(i: int, n_fp: int, n_fn: int, m: "Matching", tf: int, err_t, best_t, shown, found,
                  classes) -> ImageErrors:
    gt = m.evaluator.gt
    image = gt.images[int(gt.img_ids[i])]
    dets = []
    for s in np.flatnonzero((m.sel_pair % m.n_img == i) & shown & (m.status[tf] != ak.IGNORED)):
        outcome = "TP" if m.status[tf, s] == ak.TP else ERROR_TYPES[err_t[s] - 1]
        dets.append({"bbox": _box(m.boxes[m.sel[s]]), "category": classes[m.sel_pair[s] // m.n_img],
                     "score": float(m.scores[m.sel[s]]), "outcome": outcome})
    truth = []
    for g in np.flatnonzero(m.gt_pair % m.n_img == i):
        truth.append({"bbox": _box(gt.boxes[g]) if m.evaluator.iou_type == "bbox" else _mask_box(gt.rles[g]),
                      "category": classes[m.gt_pair[g] // m.n_img],
                      "outcome": _gt_outcome(g, m, tf, err_t, best_t, found)})
    return ImageErrors(int(gt.img_ids[i]), str(image.get("file_name", "")), _int(image.get("width")),
                       _int(image.get("height")), n_fp, n_fn, dets, truth)


def _gt_outcome(g: int, m: "Matching", tf: int, err_t, best_t, found) -> str:
    if m.evaluator.gt.crowd[g]:
        return "crowd"
    if found[g] or not m.gt_counted[g]:
        return "TP" if found[g] else "ignored"
    if m.gt_used[tf, g]:
        return "low score"  # matched, but by a detection below its class's threshold
    return ERROR_TYPES[err_t[best_t[g]] - 1] if best_t[g] >= 0 else "miss"


def _box(xywh) -> list[float]:
    return [round(float(v), 2) for v in xywh]


def _mask_box(rle) -> list[float]:
    from pycocotools import mask as mask_utils

    return _box(mask_utils.toBbox(rle))


def _int(value) -> int:
    return value if type(value) is int else 0


# --- drawing -----------------------------------------------------------------------------------------


def draw_worst(records: Sequence[ImageErrors], images: ImageSource) -> None:
    """Sets each record's drawing: its image (from `images`, else grey) with
    GT dashed and detections solid, errors labelled."""
    for record in records:
        pixels = load_image(images, record)
        record.image_found = pixels is not None
        record.drawing = draw_errors(pixels, record)


def load_image(images: ImageSource, record: ImageErrors) -> Optional[np.ndarray]:
    """The record's image as RGB uint8 [H, W, 3], or None if there is none to read."""
    import cv2  # OpenCV loads only when drawing
    if images is None:
        return None
    if callable(images):
        pixels = images(record.image_id)
        return None if pixels is None else np.ascontiguousarray(pixels, dtype=np.uint8)
    path = os.path.join(os.fspath(images), record.file_name)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR) if record.file_name and os.path.isfile(path) else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def draw_errors(pixels: Optional[np.ndarray], record: ImageErrors) -> np.ndarray:
    """The drawing of one record, its longer side DRAW_SIZE pixels: GT
    dashed (green found, orange not found, grey crowd) labelled below,
    detections solid (blue right, red wrong) labelled above; errors carry
    their type in brackets."""
    import cv2

    if pixels is None:
        height, width = (record.height, record.width) if record.height and record.width else (480, 640)
        pixels = np.full((height, width, 3), 110, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    scale = DRAW_SIZE / max(pixels.shape[:2])
    canvas = cv2.resize(pixels[:, :, :3], (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale)),
                        interpolation=cv2.INTER_LINEAR if scale < 1 else cv2.INTER_NEAREST)
    for item in record.ground_truth:
        outcome = item["outcome"]
        color = STYLE["gt"] if outcome in ("TP", "ignored") else STYLE["gt_crowd"] if outcome == "crowd" \
            else STYLE["gt_error"]
        text = f"GT {item['category']}" + ("" if outcome in ("TP", "ignored") else f" [{outcome}]")
        _dashed_box(canvas, item["bbox"], scale, color)
        _label(canvas, text, item["bbox"], scale, color, below=True)
    for item in record.detections:
        wrong = item["outcome"] != "TP"
        color = STYLE["fp" if wrong else "tp"]
        text = f"{item['category']} {item['score']:.2f}" + (f" [{item['outcome']}]" if wrong else "")
        x1, y1, x2, y2 = _corners(item["bbox"], scale)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, 2)
        _label(canvas, text, item["bbox"], scale, color, below=False)
    return canvas


def _corners(xywh, scale: float) -> tuple[int, int, int, int]:
    x, y, w, h = (v * scale for v in xywh)
    return round(x), round(y), round(x + w), round(y + h)


def _dashed_box(canvas: np.ndarray, xywh, scale: float, color, dash: int = 7) -> None:
    import cv2

    x1, y1, x2, y2 = _corners(xywh, scale)
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p = (a[0] + (b[0] - a[0]) * start // max(length, 1), a[1] + (b[1] - a[1]) * start // max(length, 1))
            q = (a[0] + (b[0] - a[0]) * end // max(length, 1), a[1] + (b[1] - a[1]) * end // max(length, 1))
            cv2.line(canvas, p, q, color, 2)


def _label(canvas: np.ndarray, text: str, xywh, scale: float, color, below: bool) -> None:
    """A filled tag with white text at the box's top-left (above it) or bottom-left (below it)."""
    import cv2

    text = text.encode("ascii", "replace").decode("ascii")  # OpenCV's fonts draw ASCII only
    x1, y1, _, y2 = _corners(xywh, scale)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    top = min(max(0, y2), canvas.shape[0] - h - base - 2) if below else max(0, y1 - h - base - 2)
    x1 = min(max(0, x1), max(0, canvas.shape[1] - w - 2))
    cv2.rectangle(canvas, (x1, top), (x1 + w + 2, top + h + base + 2), color, -1)
    cv2.putText(canvas, text, (x1 + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
