"""A detector's whole inference on one image of any size, written so that
tracing it gives one ONNX graph that stays right at every size (see
export.export_dynamic).

Every size the eager model computes in Python (the resize, the padding, the
anchor grids, the RoI pooling scales) is computed here from the input's
shape as graph values; anything left as a Python number would be frozen
into the graph at the traced example's value. The steps are the eager
model's, in its order and its arithmetic, so the graph returns what the
model returns: tests/runtimes/test_export.py compares them.

Inputs: a uint8 Tensor[H, W, 3] (RGB, as decoded) or a float Tensor[3, H, W]
in [0, 1]. Outputs: boxes Tensor[N, 4] (x1, y1, x2, y2) in the input's
pixels, scores Tensor[N], labels Tensor[N] (1..K), and for Mask R-CNN masks
Tensor[N, 1, H, W] (probabilities at the input's size).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import paste_masks_in_image

from .. import ops
from ..modeling.rcnn import FasterRCNN
from ..modeling.rpn import RegionProposalNetwork
from ..modeling.ssd import SSD
from ..modeling.transform import ImageList, resize_boxes
from ..ops.anchors import _grid_anchors_reference
from ..ops.boxes import _remove_small_boxes_reference
from ..ops.coder import _decode_reference

INPUT_TYPES = ("uint8", "float")


def _shape(x: Tensor) -> Tensor:
    """x's shape as an int64 graph value (x.shape[i] would be a constant of the traced example)."""
    return torch._shape_as_tensor(x)


def _floor_div(a: Tensor, b: Tensor) -> Tensor:
    return torch.div(a, b, rounding_mode="floor")


def _clip(boxes: Tensor, size: Tensor) -> Tensor:
    """ops.clip_boxes_to_image with a graph-valued size (h, w); boxes: Tensor[..., 4]."""
    height, width = size.to(boxes.dtype).unbind(0)
    x = boxes[..., 0::2].clamp(min=0).minimum(width)
    y = boxes[..., 1::2].clamp(min=0).minimum(height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


class SelfContained(nn.Module):
    """The input conversion both detectors share; `model` is copied, in eval mode and NCHW
    (ONNX has no memory layout: the runtime picks its own)."""

    has_masks = False

    def __init__(self, model: nn.Module, input_type: str = "uint8"):
        super().__init__()
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
        self.model = copy.deepcopy(model).eval()
        self.model.channels_last = False
        self.input_type = input_type

    def as_float(self, image: Tensor) -> Tensor:
        """The input as float Tensor[3, H, W] in [0, 1]."""
        return image.permute(2, 0, 1).float().div(255) if self.input_type == "uint8" else image


class SelfContainedSSD(SelfContained):
    """An SSD: the model's normalisation, bilinear resize to its square input,
    network, box decoding, per-class top-k and NMS, boxes scaled back. Its
    default boxes are constants: every image is resized to the same size."""

    def __init__(self, model: SSD, input_type: str = "uint8"):
        super().__init__(model, input_type)
        width, height = self.model.transform.fixed_size
        self.network_size = (int(height), int(width))
        self.register_buffer("anchors", self._default_boxes(), persistent=False)

    @torch.no_grad()
    def _default_boxes(self) -> Tensor:
        example = torch.zeros(1, 3, *self.network_size, device=next(self.model.parameters()).device)
        features = list(self.model.backbone(example).values())
        return self.model.anchor_generator(ImageList(example, [self.network_size]), features)[0]

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        image = self.as_float(image)
        resized = self.model.transform.resize(self.model.transform.normalize(image))[None]
        head_outputs = self.model.head(list(self.model.backbone(resized).values()))
        detections = self.model.postprocess_detections(head_outputs, [self.anchors], [self.network_size])[0]
        boxes = resize_boxes(detections["boxes"], self.network_size, _shape(image)[1:])
        return boxes, detections["scores"], detections["labels"]


class SelfContainedRCNN(SelfContained):
    """A Faster or Mask R-CNN with a region proposal network: resize so the
    shorter side is min_size (the longer at most max_size), pad to the size
    divisor, anchors of the feature maps' grids, RPN proposals, RoI heads,
    boxes scaled back and masks pasted at the input's size."""

    def __init__(self, model: FasterRCNN, input_type: str = "uint8"):
        super().__init__(model, input_type)
        self.has_masks = self.model.roi_heads.mask_head is not None

    def resize(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The normalised image resized and padded: (Tensor[1, 3, H', W'],
        the resized size (h, w) before padding)."""
        transform = self.model.transform
        size = _shape(image)[1:].to(torch.float64)
        # DetectionTransform's scale and floor(side * scale) in float64, as Python computes them. The limits are
        # one float64 tensor: a 0-d constant would be exported as float32 and floor 97 * (160 / 97) to 159.
        limits = torch.tensor([float(transform.min_size[-1]), float(transform.max_size)], dtype=torch.float64)
        scale = (limits / torch.stack((size.min(), size.max()))).min()
        resized_size = torch.floor(size * scale).to(torch.int64)
        resized = F.interpolate(image[None], size=(resized_size[0], resized_size[1]), mode="bilinear",
                                align_corners=False)
        divisor = transform.size_divisible
        pad = _floor_div(resized_size + divisor - 1, divisor) * divisor - resized_size
        return F.pad(resized, (0, pad[1], 0, pad[0])), resized_size

    def anchors(self, batch: Tensor, features: list[Tensor]) -> list[Tensor]:
        """Per level Tensor[H * W * A, 4], in the generator's (y, x, anchor) order."""
        generator = self.model.rpn.anchor_generator
        if len(features) != len(generator.cell_anchors):
            raise ValueError(f"got {len(features)} feature maps but the anchor generator has "
                             f"{len(generator.cell_anchors)} levels")
        image_size = _shape(batch)[2:]
        levels = []
        for feature, cell in zip(features, generator.cell_anchors):
            grid = _shape(feature)[2:]
            stride = _floor_div(image_size, grid)
            anchors = _grid_anchors_reference(cell.to(batch.device), grid[0], grid[1], stride[0], stride[1])
            levels.append(anchors.to(torch.float32))
        return levels

    def proposals(self, batch: Tensor, features: list[Tensor], size: Tensor) -> Tensor:
        """RegionProposalNetwork at inference: Tensor[P, 4] in the resized image."""
        rpn = self.model.rpn
        logits, deltas = rpn.head(features)
        boxes, scores, levels = [], [], []
        for level, (logit, delta, anchors) in enumerate(zip(logits, deltas, self.anchors(batch, features))):
            objectness = logit.permute(0, 2, 3, 1).reshape(-1).float()
            height, width = delta.shape[-2:]
            codes = delta.view(1, -1, 4, height, width).permute(0, 3, 4, 1, 2).reshape(-1, 4).float()
            count = torch.minimum(torch.tensor(rpn._pre[1]), _shape(objectness)[0])  # min(pre_nms_top_n, anchors)
            top = objectness.topk(count)[1]
            coder = rpn.box_coder
            boxes.append(_decode_reference(codes[top], anchors[top], coder.weights, coder.bbox_xform_clip))
            scores.append(objectness[top])
            levels.append(torch.full_like(top, level))
        boxes, scores, levels = _clip(torch.cat(boxes), size), torch.sigmoid(torch.cat(scores)), torch.cat(levels)
        keep = _remove_small_boxes_reference(boxes, rpn.min_size)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        return boxes[ops.batched_nms(boxes, scores, levels, rpn.nms_thresh)[: rpn._post[1]]]

    def pool(self, pooler: nn.Module, features: dict[str, Tensor], boxes: Tensor, size: Tensor) -> Tensor:
        """RoI features of boxes: Tensor[K, 4] -> Tensor[K, C, PH, PW]."""
        if not isinstance(pooler, torchvision.ops.MultiScaleRoIAlign):
            return pooler(features, [boxes], [size])  # one map at a fixed stride: nothing size-dependent
        maps = [features[name] for name in pooler.featmap_names]
        # torchvision's scale rule, which detkit keeps: 2 ** round(log2(map height / resized image height)).
        # It depends on the image's size (a wide image's padding gives 1/2 where the stride is 1/4), so it is
        # computed here, and applied to the boxes (exactly: a power of two) because ONNX RoiAlign takes its
        # spatial_scale as a constant.
        scales = [torch.pow(2.0, torch.log2((_shape(m)[2].to(torch.float64) / size[0].to(torch.float64))
                                            .to(torch.float32)).round()) for m in maps]
        rois = torch.cat((torch.zeros_like(boxes[:, :1]), boxes), dim=1)

        def align(feature: Tensor, rois: Tensor, scale: Tensor) -> Tensor:
            scaled = torch.cat((rois[:, :1], rois[:, 1:] * scale), dim=1)
            return torchvision.ops.roi_align(feature, scaled, pooler.output_size, 1.0, pooler.sampling_ratio)

        if len(maps) == 1:
            return align(maps[0], rois, scales[0])
        lowest, highest = -torch.log2(scales[0]), -torch.log2(scales[-1])
        side = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        level = torch.floor(pooler.canonical_level + torch.log2(side / pooler.canonical_scale)
                            + torch.tensor(1e-6, dtype=side.dtype))
        level = torch.maximum(torch.minimum(level, highest), lowest) - lowest
        pooled, order = [], []
        for index, (feature, scale) in enumerate(zip(maps, scales)):
            members = torch.where(level == index)[0]
            pooled.append(align(feature, rois[members], scale))
            order.append(members)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]  # back in the boxes' order

    def detect(self, features: dict[str, Tensor], proposals: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """RoIHeads.postprocess: per class boxes above score_thresh, NMS per class, the best detections_per_img."""
        heads = self.model.roi_heads
        logits, regression = heads.box_predictor(heads.box_head(self.pool(heads.box_roi_pool, features, proposals,
                                                                          size)))
        coder = heads.box_coder
        boxes = _decode_reference(regression.float(), proposals, coder.weights, coder.bbox_xform_clip)
        num_classes = logits.shape[-1]
        boxes = _clip(boxes.reshape(-1, num_classes, 4), size)[:, 1:].reshape(-1, 4)
        scores = F.softmax(logits.float(), -1)
        labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)[:, 1:].reshape(-1)
        scores = scores[:, 1:].reshape(-1)
        keep = torch.where(scores > heads.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = _remove_small_boxes_reference(boxes, 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = ops.batched_nms(boxes, scores, labels, heads.nms_thresh)[: heads.detections_per_img]
        return boxes[keep], scores[keep], labels[keep]

    def masks(self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor, size: Tensor) -> Tensor:
        """Each detection's 28x28 mask probabilities of its class: Tensor[N, 1, 28, 28]."""
        heads = self.model.roi_heads
        logits = heads.mask_predictor(heads.mask_head(self.pool(heads.mask_roi_pool, features, boxes, size)))
        return logits.sigmoid()[torch.arange(_shape(labels)[0], device=labels.device), labels][:, None]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        image = self.as_float(image)
        original_size = _shape(image)[1:]
        batch, size = self.resize(self.model.transform.normalize(image))
        features = self.model.backbone(batch)
        proposals = self.proposals(batch, list(features.values()), size)
        boxes, scores, labels = self.detect(features, proposals, size)
        original_boxes = resize_boxes(boxes, size, original_size)
        if not self.has_masks:
            return original_boxes, scores, labels
        masks = paste_masks_in_image(self.masks(features, boxes, labels, size), original_boxes,
                                     (original_size[0], original_size[1]))
        return original_boxes, scores, labels, masks


def self_contained(model: nn.Module, input_type: str = "uint8") -> SelfContained:
    """The self-contained module for `model`, or a ValueError naming what it takes."""
    if isinstance(model, SSD):
        return SelfContainedSSD(model, input_type)
    if isinstance(model, FasterRCNN) and isinstance(model.rpn, RegionProposalNetwork):
        return SelfContainedRCNN(model, input_type)
    raise ValueError(f"export_dynamic (--dynamic) takes SSD models (ssd300_*, ssd512_vgg16, ssdlite320_*) and "
                     f"Faster/Mask R-CNNs with a region proposal network; a {type(model).__name__} needs a fixed size: "
                     "export_model (tools/export.py without --dynamic)")
