"""Per-anchor predictions laid out like the anchors."""
import torch
from torch import Tensor


def flatten_anchor_maps(maps: list[Tensor], columns: int) -> Tensor:
    """Per-level [N, A * columns, H, W] maps -> [N, sum(H * W * A), columns],
    in (level, y, x, anchor) order, the order of the anchor generators."""
    flat = []
    for x in maps:
        n, _, h, w = x.shape
        flat.append(x.view(n, -1, columns, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, columns))
    return torch.cat(flat, dim=1)
