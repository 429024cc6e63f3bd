"""Faster R-CNN (Ren et al., 2015) and Mask R-CNN (He et al., 2017):
backbone (+FPN) -> RPN -> RoI heads (+ masks), with torchvision's contract
and module names."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .roi_heads import paste_masks
from .transform import ChannelsLast, DetectionTransform, check_images, check_targets

from .targets import TensorTarget


class FasterRCNN(ChannelsLast, nn.Module):
    """model(images, targets) -> loss dict (train) or detections in original
    image coordinates (eval).

    Args:
        backbone: returns an OrderedDict of feature maps (`out_channels` each).
        rpn: a RegionProposalNetwork. roi_heads: RoIHeads.
        num_classes: including the background.
        min_size, max_size, image_mean, image_std: the input transform.
        channels_last: run the backbone, RPN and mask convolutions channels-last on the CPU.
    """

    def __init__(self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module, num_classes: int,
                 min_size: int = 800, max_size: int = 1333, image_mean=(0.485, 0.456, 0.406),
                 image_std=(0.229, 0.224, 0.225), channels_last: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        self.transform = DetectionTransform(min_size, max_size, image_mean, image_std, size_divisible=32)
        self.backbone, self.rpn, self.roi_heads = backbone, rpn, roi_heads
        self.num_classes = num_classes
        self.channels_last = channels_last

    def _conv_modules(self) -> list[nn.Module]:
        heads = [self.roi_heads.mask_head, self.roi_heads.mask_predictor]
        return [self.backbone, self.rpn.head] + [h for h in heads if h is not None]

    def forward(self, images: list[Tensor], targets: Optional[list[TensorTarget]] = None):
        check_images(images)
        if self.training:
            check_targets(targets, len(images), self.num_classes, masks=self.roi_heads.mask_head is not None,
                          images=images)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(list(images), targets if self.training else None)
        features = self.backbone(self._layout(image_list.tensors))
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**head_losses, **rpn_losses}
        detections = self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        paste_masks(detections, original_sizes)
        return detections
