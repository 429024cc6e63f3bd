"""BatchNorm folding and the "fused" runtime.

A norm is folded only where the conv's output feeds nothing but the norm:
adjacent in an nn.Sequential, or (any other module) as torch.fx traces the
parent's forward with its children as leaves, e.g. ResNet's
`self.bn1(self.conv1(x))`. A norm that cannot be shown to sit so stays, with
a warning.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.fx
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


def fused(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with its norms folded and, where the model
    has the option, channels-last convolutions."""
    twin = copy.deepcopy(model).eval()
    fold_batchnorms(twin)
    left = [name for name, m in twin.named_modules() if isinstance(m, NORMS)]
    if left:
        warnings.warn(f"runtime 'fused': {len(left)} norm layer(s) not directly after a Conv2d stay unfolded: "
                      f"{', '.join(left[:5])}{', ...' if len(left) > 5 else ''}", stacklevel=3)
    if hasattr(twin, "channels_last"):
        twin.channels_last = True
        if hasattr(twin, "convert_weights_layout"):
            twin.convert_weights_layout()
    return twin


def fold_batchnorms(model: nn.Module) -> list[str]:
    """Folds, in place, every eval-mode (or frozen) norm that directly follows a Conv2d
    into it and replaces the norm by nn.Identity; returns the folded norms' names."""
    pairs = [(name, module, conv, norm) for name, module in model.named_modules()
             for conv, norm in _conv_norm_pairs(module)]  # all found before any is replaced
    for _, parent, conv, norm in pairs:
        fold_into_conv(getattr(parent, conv), getattr(parent, norm))
        setattr(parent, norm, nn.Identity())
    return [f"{name}.{norm}" if name else norm for name, _, _, norm in pairs]


@torch.no_grad()
def fold_into_conv(conv: nn.Conv2d, norm: nn.Module) -> None:
    """conv's weight and bias become those of norm(conv(x)):
    w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    # empty_like keeps the weight's memory format (channels-last stays channels-last)
    conv.weight = nn.Parameter(torch.empty_like(conv.weight).copy_(weight), conv.weight.requires_grad)
    requires_grad = conv.bias.requires_grad if conv.bias is not None else conv.weight.requires_grad
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(conv.weight.dtype), requires_grad)


def _conv_norm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, norm) names of `module`'s children where the norm takes the
    conv's output and nothing else does."""
    children = dict(module.named_children())
    if not any(isinstance(m, NORMS) for m in children.values()):
        return []
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:]) if _foldable(children[a], children[b])]
    try:
        graph = _ChildrenAsLeaves().trace(module)
    except Exception:  # noqa: BLE001 - a forward fx cannot trace: leave its norms
        return []
    calls = [node for node in graph.nodes if node.op == "call_module"]
    counts = {target: sum(n.target == target for n in calls) for target in {n.target for n in calls}}
    pairs = []
    for node in calls:
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        conv, norm = source.target, node.target
        if counts[conv] == counts[norm] == 1 and conv in children and norm in children \
                and _foldable(children[conv], children[norm]):
            pairs.append((conv, norm))
    return pairs


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """A Conv2d then a norm that uses running statistics, over as many channels."""
    frozen = isinstance(norm, FrozenBatchNorm2d) or not norm.training
    return (isinstance(conv, nn.Conv2d) and isinstance(norm, NORMS) and frozen
            and getattr(norm, "running_mean", None) is not None and norm.running_mean.numel() == conv.out_channels)


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own forward: every submodule call stays one node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True
