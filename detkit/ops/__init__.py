"""detkit.ops: the box operations every detector leans on.

Each op has a pure-torch reference (used for CUDA tensors and autograd) and
one compiled CPU kernel (C++ in detkit._C, or numba); `backend()` says which
kernel each op uses here.
"""
from ._ext import backend
from .anchors import AnchorGenerator, DefaultBoxGenerator
from .boxes import box_area, box_convert, box_iou, clip_boxes_to_image, generalized_box_iou, remove_small_boxes
from .coder import BoxCoder
from .d2l import (assign_anchor_to_bbox, multibox_detection, multibox_prior, multibox_target, offset_boxes,
                  offset_inverse)
from .matcher import Matcher, SSDMatcher, ssd_assign
from .nms import batched_nms, nms, soft_nms
from .roi_align import roi_align
from .sampler import BalancedPositiveNegativeSampler
from .selective_search import felzenszwalb, selective_search

__all__ = [
    "AnchorGenerator",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "DefaultBoxGenerator",
    "Matcher",
    "SSDMatcher",
    "assign_anchor_to_bbox",
    "backend",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "felzenszwalb",
    "generalized_box_iou",
    "multibox_detection",
    "multibox_prior",
    "multibox_target",
    "nms",
    "offset_boxes",
    "offset_inverse",
    "remove_small_boxes",
    "roi_align",
    "selective_search",
    "soft_nms",
    "ssd_assign",
]
