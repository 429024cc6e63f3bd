"""detkit.models.fit_anchors: best possible recall against torchvision's
anchors and IoU, and fits that raise it on boxes the defaults miss."""
import os

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
from torchvision.ops import box_iou

from detkit.config import apply_overrides, load_config
from detkit.data import load_records, shapes
from detkit.models import build, fit_anchors
from detkit.models.anchors import _grid, best_possible_recall, kmeans_iou
from tests.helpers import REPO

RCNN = dict(min_size=128, max_size=128, anchor_sizes=(16, 32, 64, 128, 256))
SSD = dict(width=0.25, size=128, scales=(0.12, 0.2, 0.32, 0.46, 0.6, 0.75, 0.9), iou_thresh=0.4)


@pytest.fixture(scope="module")
def thin(tmp_path_factory):
    paths = shapes.generate(tmp_path_factory.mktemp("thin"), 40, 0, image_size=128, seed=0, preset="thin")
    return load_records(paths.coco_train, image_root=paths.image_root)


def _reference_recall(records, sizes, ratios, threshold) -> float:
    """torchvision's AnchorGenerator on the same feature-map grid, torchvision's box_iou."""
    model = build("fasterrcnn_resnet18_fpn_small", num_classes=3, **RCNN)
    image_list, maps = _grid(model, (128, 128))
    anchors = TorchvisionAnchors(tuple((s,) for s in sizes), (tuple(ratios),) * len(sizes))(image_list, maps)[0]
    hits = total = 0
    for image in records.coco["images"]:
        xywh = torch.tensor([a["bbox"] for a in records.coco["annotations"] if a["image_id"] == image["id"]])
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        hits += int((box_iou(boxes, anchors).max(1).values >= threshold).sum())
        total += len(boxes)
    return hits / total


def test_best_possible_recall_equals_torchvision_anchors(thin):
    fit = fit_anchors(thin, "fasterrcnn_resnet18_fpn_small", **RCNN)
    assert fit.iou_threshold == 0.7  # the RPN's fg_iou_thresh
    assert fit.default_bpr == pytest.approx(_reference_recall(thin, RCNN["anchor_sizes"], (0.5, 1.0, 2.0), 0.7))
    fitted = fit.fitted
    assert fit.fitted_bpr == pytest.approx(_reference_recall(thin, fitted["anchor_sizes"], fitted["anchor_ratios"],
                                                             0.7))


def test_fitted_anchors_raise_the_recall_of_thin_boxes(thin):
    ssd = fit_anchors(thin, "ssd300_resnet18", **SSD)
    assert ssd.iou_threshold == 0.4 and ssd.default_bpr < 0.8 and ssd.fitted_bpr >= 0.98
    rcnn = fit_anchors(thin, "fasterrcnn_resnet18_fpn_small", **RCNN)
    assert rcnn.default_bpr < 0.05 and rcnn.fitted_bpr > 0.3
    ratios = sorted(rcnn.fitted["anchor_ratios"])
    assert ratios[0] < 0.3 and ratios[-1] > 3  # wires (h/w 1:5) and poles (5:1)


def test_the_printed_overrides_train_the_fitted_anchors(thin):
    fit = fit_anchors(thin, "ssd300_resnet18", **SSD)
    config = load_config(os.path.join(REPO, "configs", "ssd_shapes.py"))
    config = apply_overrides(config, fit.set_line().split())
    assert list(config.model.options["scales"]) == pytest.approx(fit.fitted["scales"])
    model = build(config.model.name, num_classes=3, **config.model.options)
    assert model.anchor_generator.scales == pytest.approx(fit.fitted["scales"])
    assert "aspect_ratios" in fit.fitted  # thin boxes: the fitted ratios reach past 3:1
    assert [list(r) for r in model.anchor_generator.aspect_ratios] == fit.fitted["aspect_ratios"]
    assert max(max(r) for r in fit.fitted["aspect_ratios"]) > 4
    assert fit.text().splitlines()[-1] == f"train with: --set {fit.set_line()}"


def test_nothing_better_keeps_the_defaults(thin):
    fit = fit_anchors(thin, "ssd300_resnet18", iou_threshold=0.01, **SSD)  # every box is matched already
    assert fit.default_bpr == fit.fitted_bpr == 1.0 and fit.fitted == fit.default


def test_kmeans_on_iou_finds_the_shape_clusters():
    rng = np.random.default_rng(0)
    wide = np.column_stack([rng.normal(50, 2, 200), rng.normal(10, 0.5, 200)])
    tall = np.column_stack([rng.normal(10, 0.5, 200), rng.normal(50, 2, 200)])
    small = np.column_stack([rng.normal(8, 0.5, 200), rng.normal(8, 0.5, 200)])
    centres = kmeans_iou(np.concatenate([wide, tall, small]), 3, np.random.default_rng(1))
    found = sorted(map(tuple, np.round(centres / 10) * 10))
    assert found == [(10.0, 10.0), (10.0, 50.0), (50.0, 10.0)]


def test_models_without_anchors_are_refused(thin):
    with pytest.raises(ValueError, match="tinyssd: fit_anchors knows Faster/Mask R-CNN and SSD"):
        fit_anchors(thin, "tinyssd")


def test_best_possible_recall_counts_boxes_at_the_threshold():
    model = build("fasterrcnn_resnet18_fpn_small", num_classes=3, **RCNN)
    grids = {(128, 128): _grid(model, (128, 128))}
    anchors = model.rpn.anchor_generator(*grids[(128, 128)])[0]
    boxes = anchors[[100, 2000]].numpy().astype(np.float64)  # two anchors exactly: IoU 1
    shifted = boxes + np.array([[0, 0, 0, 0], [1000, 1000, 1000, 1000]])  # the second far outside
    images = [((128, 128), shifted, shifted[:, 2:] - shifted[:, :2])]
    assert best_possible_recall(model.rpn.anchor_generator, grids, images, 0.7) == 0.5


def test_boxes_are_scaled_as_the_model_resizes_the_image(thin):
    """The same set at twice the size (and 3x wider for SSD's square resize) scores the same."""
    import copy

    def scaled(sx: float, sy: float):
        records = copy.deepcopy(thin)
        for image in records.coco["images"]:
            image["width"], image["height"] = round(image["width"] * sx), round(image["height"] * sy)
        for ann in records.coco["annotations"]:
            x, y, w, h = ann["bbox"]
            ann["bbox"] = [x * sx, y * sy, w * sx, h * sy]
        return records

    rcnn = fit_anchors(thin, "fasterrcnn_resnet18_fpn_small", **RCNN)
    assert fit_anchors(scaled(2, 2), "fasterrcnn_resnet18_fpn_small", **RCNN).default_bpr == rcnn.default_bpr
    ssd = fit_anchors(thin, "ssd300_resnet18", **SSD)
    assert fit_anchors(scaled(3, 1), "ssd300_resnet18", **SSD).default_bpr == pytest.approx(ssd.default_bpr)


def test_the_fit_is_a_local_optimum_of_recall(thin):
    """Coordinate ascent stops where no ±5% nudge (its finest) of one fitted
    size or ratio raises the best possible recall, as torchvision's anchors
    count it; it lifts the R-CNN fit past the first candidates' best (here
    0.60 -> 0.68; on 1,000 thin images 0.65 -> 0.95)."""
    fit = fit_anchors(thin, "fasterrcnn_resnet18_fpn_small", **RCNN)
    sizes, ratios = fit.fitted["anchor_sizes"], fit.fitted["anchor_ratios"]
    nudged = []
    for f in (0.95, 1.05):
        nudged += [(sizes[:i] + [max(2, round(s * f))] + sizes[i + 1:], ratios) for i, s in enumerate(sizes)]
        nudged += [(sizes, ratios[:i] + [r * f] + ratios[i + 1:]) for i, r in enumerate(ratios)]
    for candidate_sizes, candidate_ratios in nudged:
        if candidate_sizes == sorted(set(candidate_sizes)):
            assert _reference_recall(thin, candidate_sizes, candidate_ratios, 0.7) <= fit.fitted_bpr + 1e-9
    first_stage = max(recall for options, recall in fit.candidates[:46])
    assert fit.fitted_bpr >= first_stage + 0.05
