"""The detector settings of each family: frozen dataclasses whose fields are
the flat options `build()` takes (see detkit.models.registry), and the presets
the builders default to."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class SSDOptions:
    """Detector settings of every SSD (see detkit.modeling.ssd.SSD): post-processing,
    the matching IoU, the hard-negative fraction and the memory layout."""

    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    detections_per_img: int = 200
    topk_candidates: int = 400
    iou_thresh: float = 0.5
    positive_fraction: float = 0.25
    channels_last: bool = False
    # Default-box aspect ratios per map (each r adds an r:1 and a 1:r box); None keeps the model's own
    # (SSD300's [[2], [2, 3], [2, 3], [2, 3], [2], [2]]). detkit.models.fit_anchors fits them to thin boxes.
    aspect_ratios: Optional[tuple] = None


@dataclass(frozen=True)
class RCNNOptions:
    """Detector settings of every Faster/Mask R-CNN, torchvision's names and
    defaults: the input transform, the RPN (`rpn_*`; top-n values are
    (train, test) pairs) and the RoI heads (the unprefixed sampling and
    post-processing settings)."""

    min_size: Union[int, tuple[int, ...]] = 800  # a tuple: one drawn per training image
    max_size: int = 1333
    channels_last: bool = False
    # Anchor sides in pixels: one per FPN map (finest first), or all of them on fasterrcnn_vgg16's one
    # map; None keeps the model's own (FPN: 32-512, VGG-16: 128-512). Small images want small anchors.
    anchor_sizes: Optional[tuple[int, ...]] = None
    # Anchor aspect ratios (height / width, torchvision's convention), the same on every map; None: (0.5, 1, 2).
    # detkit.models.fit_anchors fits both to a dataset.
    anchor_ratios: Optional[tuple[float, ...]] = None
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000)
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000)
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100


@dataclass(frozen=True)
class ProposalOptions:
    """Detector settings of R-CNN and Fast R-CNN (detectors on external
    proposals; see detkit.modeling.proposal_rcnn): the input transform, the
    selective search that proposes when no proposals are given, the RoI
    sampling (foreground IoU >= fg_iou_thresh, background in [bg_iou_low,
    bg_iou_thresh), boxes regressed from reg_iou_thresh) and the per-class
    post-processing. Defaults: the Fast R-CNN paper's (600 px, 64 RoIs per
    image, 25% foreground, background from 0.1, NMS 0.3)."""

    min_size: Union[int, tuple[int, ...]] = 600
    max_size: int = 1000
    channels_last: bool = False
    proposal_mode: str = "fast"  # selective search strategy: "fast" or "quality"
    max_proposals: int = 2000
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    bg_iou_low: float = 0.1
    reg_iou_thresh: float = 0.5
    batch_size_per_image: int = 64
    positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    detections_per_img: int = 100


# R-CNN's training windows (Girshick et al., 2014): every proposal under 0.5 IoU is background, and
# the box regressor learns from proposals of at least 0.6 IoU.
RCNN_PAPER = ProposalOptions(bg_iou_low=0.0, reg_iou_thresh=0.6)


@dataclass(frozen=True)
class TinySSDOptions:
    """Detector settings of TinySSD (the book's defaults): its pos_threshold,
    NMS IoU, detections kept per image and anchor labelling IoU."""

    score_thresh: float = 0.009999999
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    iou_thresh: float = 0.5


# Small R-CNNs for training from scratch on a CPU: small inputs, fewer proposals and samples.
SMALL_RCNN = RCNNOptions(min_size=256, max_size=256, rpn_pre_nms_top_n=(300, 300), rpn_post_nms_top_n=(150, 100),
                         batch_size_per_image=128)
# The Faster R-CNN paper's single-scale VGG-16 model: 600 px inputs, 12000/6000 -> 2000/300 proposals.
VGG16_PAPER = RCNNOptions(min_size=600, max_size=1000, rpn_pre_nms_top_n=(12000, 6000),
                          rpn_post_nms_top_n=(2000, 300))
