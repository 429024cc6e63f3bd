"""The MobileNetV3-Large twins: the body equals torchvision's mobilenet_v3_large
features; ssdlite320_mobilenet_v3_large and the two Faster R-CNN MobileNetV3
FPNs load torchvision's state_dicts and give its detections bit for bit; COCO
and ImageNet weights load by name from a planted torch hub cache; fine-tuning
re-initialises only the class layers; "fused" and "onnxruntime" run them."""
import copy
import os

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, get_model_weights
from torchvision.models import detection as tv_detection
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.models.detection.ssdlite import _mobilenet_extractor as _ssdlite_extractor
from torchvision.ops import FrozenBatchNorm2d

from detkit import models, runtimes
from detkit.modeling.backbones import MobileNetV3Large
from detkit.models.weights import WeightsError, hub_file, load_backbone_weights

SSDLITE, FPN, FPN_320 = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn",
                         "fasterrcnn_mobilenet_v3_large_320_fpn")
NAMES = (SSDLITE, FPN, FPN_320)
NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def images() -> list[torch.Tensor]:
    """Two small images (every model resizes them: SSDlite to 320x320, the R-CNNs to 320 or 800 px)."""
    g = torch.Generator().manual_seed(3)
    return [torch.rand(3, 240, 320, generator=g), torch.rand(3, 200, 260, generator=g)]


def calibrate(model: nn.Module, seed: int = 0) -> None:
    """Norm statistics of the model's own activations on images() and random affine
    parameters: with torchvision's N(0, 0.03) SSDlite weights and identity norms the
    deep maps die out, and their constant predictions tie scores (ties order arbitrarily)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # the average over the calibration batch
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
        batch, _ = model.transform(images())
        features = model.train().backbone(batch.tensors)
        if hasattr(model, "head"):
            model.head(list(features.values()))
    model.eval()


def frozen(model: nn.Module) -> nn.Module:
    """`model` with each BatchNorm2d replaced by a FrozenBatchNorm2d of the same state, as
    torchvision builds its R-CNNs when weights load (and as its COCO files were trained)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                twin = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(twin, key).copy_(getattr(child, key).detach())
                setattr(parent, name, twin)
    return model


def torchvision_twin(name: str) -> nn.Module:
    """torchvision's model `name`, randomly initialised, laid out as its COCO file (R-CNN:
    FrozenBatchNorm) and with scores that neither tie nor all fall under the threshold."""
    torch.manual_seed(0)
    model = getattr(tv_detection, name)(weights=None, weights_backbone=None)
    calibrate(model)
    if name != SSDLITE:
        frozen(model)
        with torch.no_grad():
            # Random box heads score every class about 1/91, under score_thresh 0.05; and objectness
            # logits near 0 tie after the float32 sigmoid (ties rank proposals arbitrarily).
            model.roi_heads.box_predictor.cls_score.weight.mul_(10)
            model.rpn.head.cls_logits.weight.mul_(20)
    return model.eval()




@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, tuple[nn.Module, str]]:
    """name -> (torchvision's model, its state_dict's file)."""
    folder, found = tmp_path_factory.mktemp("twins"), {}
    for name in NAMES:
        model = torchvision_twin(name)
        torch.save(model.state_dict(), folder / f"{name}.pth")
        found[name] = model, str(folder / f"{name}.pth")
    return found


# --- the body -------------------------------------------------------------------------------------


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Every norm away from the identity, so that a wrong eps or a skipped norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NORMS):
                for key, low, high in (("weight", 0.5, 1.5), ("bias", -0.2, 0.2), ("running_mean", -0.2, 0.2),
                                       ("running_var", 0.5, 2.0)):
                    getattr(m, key).copy_(torch.rand(getattr(m, key).shape, generator=g) * (high - low) + low)


@pytest.mark.parametrize("width, reduced_tail", [(1.0, False), (0.5, True)])
def test_body_is_torchvision_mobilenet_v3_large(width, reduced_tail):
    theirs = torchvision.models.mobilenet_v3_large(width_mult=width, reduced_tail=reduced_tail).eval()
    randomise_norms(theirs)
    body = MobileNetV3Large(width, reduced_tail=reduced_tail, eps=1e-3).eval()  # the classifier's eps
    body.load_imagenet(theirs.state_dict())
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = body(x), []
        for layer in theirs.features:
            x = layer(x)
            expected.append(x)
    assert list(got) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    for (name, value), index in zip(got.items(), [0, 2, 4, 7, 13, 16]):  # torchvision's stage indices
        assert torch.equal(value, expected[index]), name
        assert value.shape[1] == body.out_channels[name] and 64 // value.shape[2] == body.strides[name]


@pytest.mark.parametrize("trainable", [0, 2, 6])
def test_trainable_layers_freeze_as_torchvision(trainable):
    body = torchvision.models.mobilenet_v3_large()
    fpn = _mobilenet_extractor(body, True, trainable)
    expected = {k.removeprefix("body."): p.requires_grad for k, p in fpn.named_parameters() if k.startswith("body.")}
    got = MobileNetV3Large(trainable_layers=trainable)
    assert {k: p.requires_grad for k, p in got.named_parameters()} == expected
    ssdlite = _ssdlite_extractor(torchvision.models.mobilenet_v3_large(reduced_tail=True), trainable, nn.BatchNorm2d)
    model = models.build(SSDLITE, trainable_backbone_layers=trainable)
    assert {k: p.requires_grad for k, p in model.backbone.named_parameters()} == \
        {k: p.requires_grad for k, p in ssdlite.named_parameters()}
    with pytest.raises(ValueError, match=r"trainable_layers must be in 0..6, got 7"):
        MobileNetV3Large(trainable_layers=7)


# --- torchvision's checkpoints ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_torchvision_checkpoints_give_identical_detections(twins, name):
    theirs, path = twins[name]
    model = models.load_weights(models.build(name), path).eval()
    with torch.no_grad():
        expected, got = theirs(images()), model(images())
    for a, b in zip(got, expected):
        assert len(b["scores"]) >= 50 and len(b["scores"].unique()) == len(b["scores"]), "setup: few or tied scores"
        assert set(a) == set(b) == {"boxes", "scores", "labels"}
        for key in b:
            assert torch.equal(a[key], b[key]), key


TARGETS = [{"boxes": torch.tensor([[10.0, 20, 100, 150], [150, 60, 300, 200]]), "labels": torch.tensor([3, 17])},
           {"boxes": torch.tensor([[30.0, 40, 90, 120]]), "labels": torch.tensor([1])}]


@pytest.mark.parametrize("name", [SSDLITE, FPN_320])
def test_training_losses_equal_torchvision(twins, name):
    theirs = copy.deepcopy(twins[name][0]).train()  # training updates SSDlite's running statistics
    model = models.load_weights(models.build(name), twins[name][1]).train()
    torch.manual_seed(5)  # the R-CNNs sample anchors and proposals
    expected = theirs(images(), [dict(t) for t in TARGETS])
    torch.manual_seed(5)
    got = model(images(), TARGETS)
    assert set(got) == set(expected)
    for key in expected:  # the same ops on the same samples: bit for bit
        assert torch.equal(got[key], expected[key]), key
    sum(got.values()).backward()


def settings(model: nn.Module) -> dict:
    """The post-processing, matching and input settings of a torchvision or detkit detector."""
    t = model.transform
    found = {"mean": list(t.image_mean), "std": list(t.image_std), "min": tuple(t.min_size), "max": t.max_size,
             "fixed": getattr(t, "fixed_size", None)}
    if hasattr(model, "rpn"):
        r, h = model.rpn, model.roi_heads
        pre = getattr(r, "_pre", None) or (r._pre_nms_top_n["training"], r._pre_nms_top_n["testing"])
        post = getattr(r, "_post", None) or (r._post_nms_top_n["training"], r._post_nms_top_n["testing"])
        for part, prefix in ((r, "rpn_"), (h, "")):
            matcher = getattr(part, "matcher", None) or part.proposal_matcher
            sampler = getattr(part, "sampler", None) or part.fg_bg_sampler
            found.update({prefix + "iou": (matcher.high_threshold, matcher.low_threshold),
                          prefix + "samples": (sampler.batch_size_per_image, sampler.positive_fraction),
                          prefix + "nms": part.nms_thresh, prefix + "score": part.score_thresh})
        found.update(pre=pre, post=post, weights=tuple(h.box_coder.weights), detections=h.detections_per_img)
    else:
        found.update({key: getattr(model, key) for key in ("score_thresh", "nms_thresh", "detections_per_img",
                                                           "topk_candidates", "neg_to_pos_ratio")})
        found["iou"] = getattr(model, "iou_thresh", None) or model.proposal_matcher.high_threshold
    return found


def anchors(model: nn.Module) -> list[torch.Tensor]:
    """The model's anchors on images()[0] (its own transform and feature maps)."""
    with torch.no_grad():
        batch, _ = model.transform(images()[:1])
        features = list(model.backbone(batch.tensors).values())
        return (model.rpn.anchor_generator if hasattr(model, "rpn") else model.anchor_generator)(batch, features)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_norms_match_torchvision(name):
    torch.manual_seed(0)
    theirs = getattr(tv_detection, name)(weights=None, weights_backbone=None).eval()  # nn.BatchNorm2d R-CNNs
    model = models.build(name, **({} if name == SSDLITE else {"frozen_bn": False})).eval()
    assert settings(model) == settings(theirs)
    assert all(torch.equal(a, b) for a, b in zip(anchors(model), anchors(theirs)))
    own, their_state = model.state_dict(), theirs.state_dict()
    assert list(own) == list(their_state) and all(own[k].shape == v.shape for k, v in their_state.items())
    norms = lambda m: {k: (v.eps, v.momentum) for k, v in m.named_modules() if isinstance(v, NORMS)}  # noqa: E731
    assert norms(model) == norms(theirs)
    if name != SSDLITE:  # by default as the COCO files were trained: frozen, torchvision's eps
        frozen_norms = [m for m in models.build(name, width=0.25).modules() if isinstance(m, NORMS)]
        assert all(type(m) is FrozenBatchNorm2d and m.eps == 1e-5 for m in frozen_norms)


# --- weights by name and fine-tuning -------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory, twins):
    """A torch hub cache holding the twins' state_dicts as torchvision's COCO files
    and a random mobilenet_v3_large as its ImageNet V1 file: weights enum -> path."""
    home = tmp_path_factory.mktemp("torch_home")
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    torch.manual_seed(1)
    imagenet = torchvision.models.mobilenet_v3_large()
    randomise_norms(imagenet)
    planted = [(get_model_weights(name).COCO_V1, twins[name][0].state_dict()) for name in NAMES]
    files = {}
    for weights, state in planted + [(MobileNet_V3_Large_Weights.IMAGENET1K_V1, imagenet.state_dict())]:
        files[weights] = hub_file(weights)
        os.makedirs(os.path.dirname(files[weights]), exist_ok=True)
        torch.save(state, files[weights])
    yield files
    if previous is None:
        os.environ.pop("TORCH_HOME")
    else:
        os.environ["TORCH_HOME"] = previous


@pytest.mark.parametrize("name", NAMES)
def test_coco_weights_load_by_name(hub, offline, name):
    enum = get_model_weights(name)
    source = torch.load(hub[enum.COCO_V1], weights_only=True)
    for spec in ("DEFAULT", f"{enum.__name__}.COCO_V1"):
        state = models.build(name, weights=spec).state_dict()
        assert set(state) == set(source) and all(torch.equal(state[k], v) for k, v in source.items()), spec
    assert name in models.pretrained_models()
    assert models.build(name, weights="COCO_V1").classes == enum.COCO_V1.meta["categories"][1:]


def test_imagenet_backbone_weights_by_name(hub, offline):
    source = torch.load(hub[MobileNet_V3_Large_Weights.IMAGENET1K_V1], weights_only=True)
    layers = {k.removeprefix("features."): v for k, v in source.items()
              if k.startswith("features.") and not k.endswith("num_batches_tracked")}
    fpn = models.build(FPN_320, num_classes=3, backbone_weights="IMAGENET1K_V1").backbone.body.state_dict()
    assert set(fpn) == set(layers) and all(torch.equal(fpn[k], v) for k, v in layers.items())
    ssd = models.build(SSDLITE, num_classes=3, backbone_weights="DEFAULT")  # V1, as torchvision's detectors
    assert ssd.backbone.out_channels[:2] == [672, 960]  # the full tail, which the ImageNet weights have
    assert torch.equal(ssd.backbone.features[0][0][0].weight, source["features.0.0.weight"])
    assert torch.equal(ssd.backbone.features[0][13][1].running_var, source["features.13.block.0.1.running_var"])
    assert torch.equal(ssd.backbone.features[1][0][0][0].weight, source["features.13.block.1.0.weight"])
    assert torch.equal(ssd.backbone.features[1][-1][1].running_mean, source["features.16.1.running_mean"])
    with pytest.raises(WeightsError, match=r"mobilenet_v3_large-8738ca79.pth does not fit MobileNetV3Large"):
        load_backbone_weights(MobileNetV3Large(reduced_tail=True), hub[MobileNet_V3_Large_Weights.IMAGENET1K_V1])


def test_ssdlite_fine_tuning_reinitialises_only_the_class_convs(hub, offline, capsys):
    source = torch.load(hub[get_model_weights(SSDLITE).COCO_V1], weights_only=True)
    model = models.build(SSDLITE, num_classes=3, weights="COCO_V1")
    fresh = [f"head.classification_head.module_list.{i}.1.{kind}" for i in range(6) for kind in ("weight", "bias")]
    assert "re-initialised " + ", ".join(fresh) + "\n" in capsys.readouterr().err
    for key, value in model.state_dict().items():
        if key in fresh:
            assert value.shape[0] == 6 * 3 and source[key].shape[0] == 6 * 91  # 6 boxes a cell x classes
        else:  # the class head's depthwise convs and norms keep their COCO weights
            assert torch.equal(value, source[key]), key
    for block in model.head.classification_head.module_list:  # torchvision's N(0, 0.03), zero biases
        assert 0.025 < block[1].weight.std() < 0.035 and not block[1].bias.any()
    assert not hasattr(model, "classes")
    target = {"boxes": torch.tensor([[20.0, 30, 200, 220]]), "labels": torch.tensor([2])}
    # two images: the 1x1 maps of the last extra blocks need more than one value per channel to normalise
    sum(model.train()([torch.rand(3, 320, 320)] * 2, [target] * 2).values()).backward()
    assert model.head.classification_head.module_list[0][1].weight.grad is not None


def test_fpn_fine_tuning_reinitialises_the_box_predictor(hub, offline, capsys):
    source = torch.load(hub[get_model_weights(FPN_320).COCO_V1], weights_only=True)
    model = models.build(FPN_320, num_classes=3, weights="DEFAULT")
    fresh = [k for k in model.state_dict() if k.startswith("roi_heads.box_predictor.")]
    assert len(fresh) == 4 and "re-initialised " + ", ".join(fresh) in capsys.readouterr().err
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items() if k not in fresh)


# --- runtimes -------------------------------------------------------------------------------------


def assert_same_detections(got: dict, expected: dict, margin: float = 1e-4) -> None:
    """As many detections, and each expected one scoring above the lowest by `margin` found in
    `got` with its label, its box to 1e-2 px and its score to 1e-4: other rounding (folded
    weights, channels-last, ONNX Runtime kernels) reorders near-tied scores and may swap the last."""
    assert len(got["scores"]) == len(expected["scores"])
    keep = expected["scores"] > expected["scores"].min() + margin
    assert keep.sum() >= 50, "setup: too few detections to compare"
    same = ((expected["boxes"][keep][:, None] - got["boxes"][None]).abs().amax(-1) <= 1e-2) \
        & (expected["labels"][keep][:, None] == got["labels"][None]) \
        & ((expected["scores"][keep][:, None] - got["scores"][None]).abs() <= 1e-4)
    assert same.any(1).all(), f"{int((~same.any(1)).sum())} of {int(keep.sum())} detections not found"


def loaded(name: str, twins: dict) -> nn.Module:
    return models.load_weights(models.build(name), twins[name][1]).eval()


@pytest.mark.parametrize("name", NAMES)
def test_fused_folds_every_norm_and_keeps_the_detections(twins, name):
    model = loaded(name, twins)
    norms = sum(isinstance(m, NORMS) for m in model.modules())
    identities = sum(isinstance(m, nn.Identity) for m in model.modules())
    fused = runtimes.optimize(model, "fused")
    assert not any(isinstance(m, NORMS) for m in fused.modules())  # Hardswish and SE blocks do not hide a pair
    assert sum(isinstance(m, nn.Identity) for m in fused.modules()) == identities + norms
    with torch.no_grad():
        assert_same_detections(fused(images()[:1])[0], model(images()[:1])[0])


@pytest.mark.parametrize("name, parts", [(SSDLITE, ["backbone", "head"]), (FPN_320, ["backbone", "rpn.head"])])
def test_onnxruntime_runs_the_dense_parts(twins, name, parts):
    pytest.importorskip("onnxruntime", reason="the onnxruntime runtime needs onnxruntime")
    from detkit.runtimes.ort import OrtModule

    model = loaded(name, twins)
    optimized = runtimes.optimize(model, "onnxruntime")
    assert [path for path, m in optimized.named_modules() if isinstance(m, OrtModule)] == parts
    with torch.no_grad():
        batch, _ = model.transform(images())
        expected, got = model.backbone(batch.tensors), optimized.backbone(batch.tensors)
        for key in expected:  # rounding grows through the extra blocks: 2e-4 of the values at SSDlite's last
            torch.testing.assert_close(got[key], expected[key], atol=2e-3, rtol=1e-3, msg=key)
        assert_same_detections(optimized(images()[:1])[0], model(images()[:1])[0])


@pytest.mark.parametrize("name", NAMES)
def test_any_width_trains_and_detects(name):
    options = {"size": 128} if name == SSDLITE else {"min_size": 128, "max_size": 160}
    model = models.build(name, num_classes=4, width=0.25, **options)
    if name == SSDLITE:  # the C4 expansion (672 / 4), the reduced tail's last conv (6 x 24), the extras
        assert model.backbone.out_channels == [168, 144, 128, 64, 64, 32]
    else:  # the FPN and the box head too
        assert model.backbone.out_channels == 64 and model.roi_heads.box_head.fc6.out_features == 256
    target = {"boxes": torch.tensor([[10.0, 20, 90, 100]]), "labels": torch.tensor([3])}
    losses = model.train()([torch.rand(3, 120, 150)] * 2, [target] * 2)  # SSDlite's 1x1 maps: batch norm needs 2
    sum(losses.values()).backward()
    with torch.no_grad():
        detections = model.eval()([torch.rand(3, 120, 150)])[0]
    assert detections["boxes"].shape[1] == 4 and len(detections["labels"]) == len(detections["scores"])


def test_ssdlite_scales_set_each_maps_default_box_size():
    """`scales`: the square box of map k is scales[k] of the input a side (SSD's s_k), in place of
    torchvision's linear 0.2-0.95 spread; the extra square box is sqrt(s_k * s_{k+1})."""
    scales = [0.12, 0.2, 0.32, 0.46, 0.6, 0.75, 0.9]
    model = models.build(SSDLITE, num_classes=4, width=0.25, size=128, scales=scales).eval()
    features = list(model.backbone(torch.zeros(1, 3, 128, 128)).values())
    from torchvision.models.detection.image_list import ImageList

    boxes = model.anchor_generator(ImageList(torch.zeros(1, 3, 128, 128), [(128, 128)]), features)[0]
    sides = boxes[:, 2:] - boxes[:, :2]
    start = 0
    for k, (feature, count) in enumerate(zip(features, model.anchor_generator.num_anchors_per_location())):
        first = sides[start:start + count] / 128  # the boxes of the map's first location, before any clipping
        start += feature.shape[-2] * feature.shape[-1] * count
        assert torch.allclose(first[0], torch.tensor([scales[k]] * 2), atol=1e-5)
        assert torch.allclose(first[1], torch.tensor([(scales[k] * scales[k + 1]) ** 0.5] * 2), atol=1e-5)
