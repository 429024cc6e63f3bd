"""The zoo: every option of every model is accepted and stored in the built
model, and an option a model does not take is refused with the list of those
it does. Options whose use no other test sees (selective search's mode and
count, channels-last) are checked here in a forward pass."""
import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from detkit import models
from detkit.modeling import proposal_rcnn
from detkit.models import ModelOptionError, RCNNOptions, SSDOptions

# A value other than every model's default, per option. "width" and the sizes stay small
# so that building ~300 models is quick.
OTHER_VALUE = {
    "width": 0.125, "size": 160, "trainable_backbone_layers": 2, "frozen_bn": "flip",
    "roi_pool": lambda default: "align" if default == "pool" else "pool",
    "score_thresh": 0.3, "nms_thresh": 0.33, "detections_per_img": 7, "topk_candidates": 9, "iou_thresh": 0.6,
    "positive_fraction": 0.4, "channels_last": True, "min_size": 224, "max_size": 288,
    "rpn_pre_nms_top_n": (77, 66), "rpn_post_nms_top_n": (55, 44), "rpn_nms_thresh": 0.6,
    "rpn_fg_iou_thresh": 0.65, "rpn_bg_iou_thresh": 0.2, "rpn_batch_size_per_image": 99,
    "rpn_positive_fraction": 0.3, "rpn_score_thresh": 0.01, "fg_iou_thresh": 0.55, "bg_iou_thresh": 0.4,
    "batch_size_per_image": 33, "anchor_sizes": "halve", "anchor_ratios": (0.25, 1.0, 4.0),
    "bbox_reg_weights": (1.0, 2.0, 3.0, 4.0),
    "scales": lambda default: [s * 0.9 for s in default] if default is not None  # None: ssdlite's linear spread
    else [0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95],
    "crop_size": 96, "context": 5.0, "max_proposals": 300, "proposal_mode": "quality", "bg_iou_low": 0.05,
    "reg_iou_thresh": 0.7, "aspect_ratios": "one per map",
}
BASE = {"width": 0.25}  # every model is built this small, except when width itself is the option


def fingerprint(model: nn.Module) -> dict:
    """Everything an option can change: parameter shapes and trainability, module
    types, and every plain setting held by a module or by an object it holds
    (matchers, samplers, coders)."""
    seen = {}
    for name, param in model.named_parameters():
        seen[f"param {name}"] = (tuple(param.shape), param.requires_grad)
    for name, module in model.named_modules():
        seen[f"type {name}"] = type(module).__name__
        for key, value in vars(module).items():
            for attr, plain in _settings(value, f"{name}.{key}"):
                seen[attr] = plain
    return seen


def _settings(value, path, depth=0):
    if isinstance(value, (bool, int, float, str, tuple, list)) and not isinstance(value, nn.Module):
        yield path, repr(value)
    elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, torch.Tensor)) and depth < 2:
        for key, inner in vars(value).items():
            yield from _settings(inner, f"{path}.{key}", depth + 1)


def other_value(option, default, name=None):
    value = OTHER_VALUE[option]
    if value == "flip":
        return not default
    if value == "halve":  # anchor sizes: half the model's own, as many as it has maps
        sizes = models.build(name, num_classes=3, **BASE).rpn.anchor_generator.sizes
        return tuple(s // 2 for per_map in sizes for s in per_map)
    if value == "one per map":  # SSD default boxes: a single 4:1 ratio on each of the model's maps
        return [[4]] * len(models.build(name, num_classes=3, **BASE).anchor_generator.aspect_ratios)
    return value(default) if callable(value) else value


ZOO_OPTIONS = [(name, option) for name in models.list_models() for option in models.model_options(name)
               if option != "backbone_weights"]  # needs a file; tested in tests/modeling


def test_every_option_has_another_value_to_try():
    missing = {option for _, option in ZOO_OPTIONS} - set(OTHER_VALUE)
    assert not missing


@pytest.mark.parametrize("name, option", ZOO_OPTIONS, ids=[f"{n}-{o}" for n, o in ZOO_OPTIONS])
def test_every_zoo_option_is_stored_in_the_built_model(name, option):
    """Stored, not used: a forward that ignores the setting passes this (hence the tests below)."""
    defaults = models.model_options(name)
    base = {k: v for k, v in BASE.items() if k in defaults}
    value = other_value(option, defaults[option], name)
    as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    assert as_list(value) != as_list(defaults[option])
    torch.manual_seed(0)
    plain = fingerprint(models.build(name, num_classes=3, **base))
    changed = fingerprint(models.build(name, num_classes=3, **{**base, option: value}))
    assert plain != changed, f"{name}: option {option}={value!r} changed nothing"


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "fasterrcnn_vgg16", "ssd300_vgg16",
                                  "fastrcnn_resnet18_c4", "rcnn_resnet18_c4"])
def test_channels_last_reaches_the_detector(name):
    """The two bugs the explicit builders fixed: the flag was dropped (FPN R-CNN)
    or raised a TypeError deep inside RoIHeads (VGG-16 R-CNN)."""
    model = models.build(name, num_classes=3, width=0.125, channels_last=True)
    assert model.channels_last is True


def test_an_option_the_model_does_not_take_lists_its_options():
    with pytest.raises(ModelOptionError, match=r"model 'fasterrcnn_resnet50_fpn' takes no option 'roi_pool'; "
                                               r"its options: width, backbone_weights, .*score_thresh"):
        models.build("fasterrcnn_resnet50_fpn", roi_pool="pool")
    with pytest.raises(ModelOptionError, match=r"'ssd300_vgg16' takes no option 'min_size', 'detector'"):
        models.build("ssd300_vgg16", min_size=3, detector=SSDOptions())
    with pytest.raises(ValueError, match="unknown model 'ssd999'; available: .*ssd300_vgg16"):
        models.build("ssd999")


def test_options_from_a_config_may_be_lists():
    model = models.build("fasterrcnn_resnet18_fpn_small", num_classes=3, rpn_pre_nms_top_n=[40, 30],
                         min_size=[192, 224])
    assert model.rpn._pre == (40, 30)
    assert tuple(model.transform.min_size) == (192, 224)


def test_builders_take_options_objects_directly():
    settings = dataclasses.replace(models.SMALL_RCNN, score_thresh=0.5)
    model = models.fasterrcnn_resnet18_fpn_small(3, detector=settings)
    assert model.roi_heads.score_thresh == 0.5 and model.transform.min_size[0] == 256


def test_option_defaults_are_torchvisions():
    ours = models.build("fasterrcnn_resnet50_fpn", width=0.125)
    theirs = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    assert ours.rpn._pre == (theirs.rpn._pre_nms_top_n["training"], theirs.rpn._pre_nms_top_n["testing"])
    assert ours.rpn._post == (theirs.rpn._post_nms_top_n["training"], theirs.rpn._post_nms_top_n["testing"])
    assert ours.rpn.nms_thresh == theirs.rpn.nms_thresh
    assert ours.roi_heads.score_thresh == theirs.roi_heads.score_thresh
    assert ours.roi_heads.nms_thresh == theirs.roi_heads.nms_thresh
    assert ours.roi_heads.detections_per_img == theirs.roi_heads.detections_per_img
    assert ours.transform.min_size == theirs.transform.min_size
    assert ours.transform.max_size == theirs.transform.max_size
    ssd = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None)
    for field in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates"):
        assert getattr(SSDOptions(), field) == getattr(ssd, field), field
    assert RCNNOptions().bbox_reg_weights == theirs.roi_heads.box_coder.weights


def test_anchor_sizes_place_one_size_per_fpn_map():
    model = models.build("fasterrcnn_resnet18_fpn_small", num_classes=3, anchor_sizes=[16, 32, 64, 128, 256])
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    vgg = models.build("fasterrcnn_vgg16", num_classes=3, width=0.125, anchor_sizes=[32, 64])
    assert vgg.rpn.anchor_generator.sizes == ((32, 64),)
    with pytest.raises(ValueError, match=r"anchor_sizes needs one size per FPN map \(4\), got \[16, 32\]"):
        models.build("fasterrcnn_googlenet_fpn", num_classes=3, width=0.125, anchor_sizes=[16, 32])


# --- options used, not just stored -------------------------------------------------------------------

RANKED = torch.tensor([[i, i, i + 30.0, i + 20.0] for i in range(40)])  # 40 distinct boxes, best first


@pytest.mark.parametrize("name, proposal_mode, count", [("fastrcnn_resnet18_c4", "quality", 7),
                                               ("rcnn_resnet18_c4", "fast", 25)])
def test_selective_search_runs_in_proposal_mode_and_keeps_max_proposals(name, proposal_mode, count, monkeypatch):
    """The image goes to selective search in `proposal_mode`; its `max_proposals`
    best-ranked boxes, in order, reach the RoI heads (scale 1, so unchanged)."""
    calls = []

    def spy(rgb, mode="fast", **kwargs):  # the proposer passes mode= by name
        calls.append((rgb.shape, rgb.dtype, mode))
        return RANKED.clone()

    monkeypatch.setattr(proposal_rcnn, "selective_search", spy)
    model = models.build(name, num_classes=3, width=0.125, min_size=96, max_size=128, proposal_mode=proposal_mode,
                         max_proposals=count, **({"crop_size": 64} if name.startswith("rcnn") else {})).eval()
    reached = []
    model.roi_heads.register_forward_pre_hook(lambda module, args: reached.append(args[1][0]))
    with torch.no_grad():
        model([torch.rand(3, 96, 128)])
    assert calls == [((96, 128, 3), np.uint8, proposal_mode)]
    assert torch.equal(reached[0], RANKED[:count])


SMALL_INPUT = {"min_size": 96, "max_size": 128}
CHANNELS_LAST = {  # one model per detector class and builder, built small
    "ssd300_resnet18": {"size": 96}, "fasterrcnn_resnet18_fpn_small": SMALL_INPUT,
    "maskrcnn_resnet18_fpn_small": {**SMALL_INPUT, "score_thresh": 0.0},  # detections, so the mask head runs
    "fasterrcnn_vgg16": SMALL_INPUT, "fastrcnn_resnet18_c4": SMALL_INPUT,
    "rcnn_resnet18_c4": {**SMALL_INPUT, "crop_size": 64}}


@pytest.mark.parametrize("name", list(CHANNELS_LAST))
def test_channels_last_runs_every_convolution_channels_last(name):
    """With channels_last=True every convolution that runs gives a channels-last
    output, i.e. torch ran it channels-last (its input or weight was; on the CPU
    torch then computes in that layout). Storing the flag alone gives NCHW."""
    torch.manual_seed(0)
    model = models.build(name, num_classes=3, width=0.125, channels_last=True, **CHANNELS_LAST[name]).eval()
    layouts = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda module, args, out, path=path: layouts.setdefault(path, []).append(
                out.is_contiguous(memory_format=torch.channels_last)))
    proposals = {"proposals": [torch.tensor([[4.0, 6.0, 30.0, 40.0], [50.0, 10.0, 90.0, 30.0]])]}
    with torch.no_grad():
        model([torch.rand(3, 96, 128)], **(proposals if name.startswith(("rcnn_", "fastrcnn_")) else {}))
    convs = [path for path, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    assert sorted(layouts) == sorted(convs), "setup: a convolution did not run (e.g. no detection for the mask head)"
    assert [path for path, seen in layouts.items() if not all(seen)] == []
