"""BalancedPositiveNegativeSampler: fixed-size fg/bg minibatches of anchors or
proposals, as torchvision's, with the fg/bg split done by a numba kernel.

The random draws are torch.randperm calls in torchvision's order, so under the
same torch seed the sampled indices are torchvision's exactly.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import _ext
from ._checks import as_numpy, check_fraction, upcast

_ext.register("BalancedPositiveNegativeSampler", "numba")


class BalancedPositiveNegativeSampler:
    """Samples up to batch_size_per_image elements per image, at most
    positive_fraction of them positive (label >= 1), the rest negative (0);
    -1 (ignored) and -2 are never sampled. Labels may be integer matches or
    float labels (the RPN's 1.0 / 0.0 / -1.0), as in torchvision.

    Returns, per image, uint8 masks (Tensor[N]) of the sampled positives and
    negatives.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if int(batch_size_per_image) != batch_size_per_image or batch_size_per_image < 0:
            raise ValueError(f"batch_size_per_image must be a non-negative integer, got {batch_size_per_image}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = check_fraction(positive_fraction, "positive_fraction")

    def __call__(self, matched_idxs: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        pos_masks, neg_masks = [], []
        for i, matched in enumerate(matched_idxs):
            if matched.dtype == torch.bool or matched.dim() != 1:
                raise TypeError(
                    f"matched_idxs[{i}] must be a 1-D integer or float tensor, got {matched.dtype} "
                    f"{tuple(matched.shape)}"
                )
            pos_mask, neg_mask = self._sample(matched)
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks

    def _sample(self, matched: Tensor) -> tuple[Tensor, Tensor]:
        compiled = _ext.compiled("numba", matched)
        if compiled:
            labels = as_numpy(upcast(matched))  # numba takes no float16/bfloat16; labels are exact in float32
            pos, neg = (torch.from_numpy(t) for t in _ext.numba_kernels.split_matches(labels))
        else:
            pos, neg = torch.where(matched >= 1)[0], torch.where(matched == 0)[0]
        num_pos = min(pos.numel(), int(self.batch_size_per_image * self.positive_fraction))
        num_neg = min(neg.numel(), self.batch_size_per_image - num_pos)
        pos = pos[torch.randperm(pos.numel(), device=pos.device)[:num_pos]]
        neg = neg[torch.randperm(neg.numel(), device=neg.device)[:num_neg]]
        if compiled:
            masks = _ext.numba_kernels.index_masks(matched.shape[0], pos.numpy(), neg.numpy())
            return torch.from_numpy(masks[0]), torch.from_numpy(masks[1])
        pos_mask = torch.zeros_like(matched, dtype=torch.uint8)
        neg_mask = torch.zeros_like(matched, dtype=torch.uint8)
        pos_mask[pos] = 1
        neg_mask[neg] = 1
        return pos_mask, neg_mask
