import pytest
import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16

from detkit import models


@pytest.fixture(scope="module")
def torchvision_ssd(tmp_path_factory):
    """A randomly initialised torchvision ssd300_vgg16 and its checkpoint file."""
    torch.manual_seed(0)
    model = tv_ssd300_vgg16(weights=None, weights_backbone=None).eval()
    path = tmp_path_factory.mktemp("ckpt") / "ssd300_vgg16.pth"
    torch.save(model.state_dict(), path)
    return model, path


def images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 480, 640, generator=g), torch.rand(3, 300, 400, generator=g)]


def test_torchvision_checkpoint_gives_identical_detections(torchvision_ssd):
    theirs, path = torchvision_ssd
    ours = models.load_weights(models.build("ssd300_vgg16"), path).eval()
    with torch.no_grad():
        expected, got = theirs(images()), ours(images())
    for a, b in zip(got, expected):
        assert len(b["boxes"]) > 0
        assert torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_channels_last_agrees_within_rounding(torchvision_ssd):
    theirs, path = torchvision_ssd
    ours = models.load_weights(models.build("ssd300_vgg16", channels_last=True), path).eval()
    with torch.no_grad():
        a, b = ours(images()[:1])[0], theirs(images()[:1])[0]
    assert torch.equal(a["labels"], b["labels"])
    assert (a["boxes"] - b["boxes"]).abs().max() < 1e-2 and (a["scores"] - b["scores"]).abs().max() < 1e-4


def test_training_losses_equal_torchvision(torchvision_ssd):
    theirs, path = torchvision_ssd
    ours = models.load_weights(models.build("ssd300_vgg16"), path).train()
    theirs.train()
    targets = [{"boxes": torch.tensor([[10.0, 20, 200, 300], [300, 100, 500, 400]]), "labels": torch.tensor([3, 17])},
               {"boxes": torch.tensor([[50.0, 60, 120, 200]]), "labels": torch.tensor([1])}]
    try:
        expected = theirs(images(), [dict(t) for t in targets])
        got = ours(images(), targets)
    finally:
        theirs.eval()
    for key in ("bbox_regression", "classification"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    sum(got.values()).backward()
    assert ours.head.classification_head.module_list[0].weight.grad is not None


def test_defaults_match_torchvision(torchvision_ssd):
    theirs, _ = torchvision_ssd
    ours = models.build("ssd300_vgg16")
    for name in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates", "neg_to_pos_ratio"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.transform.image_mean == theirs.transform.image_mean
    assert ours.transform.image_std == theirs.transform.image_std
    assert ours.transform.fixed_size == theirs.transform.fixed_size == (300, 300)
    assert set(ours.state_dict()) == set(theirs.state_dict())


def test_checkpoint_errors_name_the_file(tmp_path, torchvision_ssd):
    _, path = torchvision_ssd
    with pytest.raises(ValueError, match=r"ssd300_vgg16\.pth does not fit SSD .*other shapes .*head\.classification_head"):
        models.load_weights(models.build("ssd300_vgg16", num_classes=21), path)
    state = torch.load(path, weights_only=True)
    del state["backbone.scale_weight"]
    state["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"1 model weights are missing, e.g. backbone.scale_weight; 1 unexpected weights, e.g. extra.weight"):
        models.load_weights(models.build("ssd300_vgg16"), broken)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated\.pth: not a readable weights file"):
        models.load_weights(models.build("ssd300_vgg16"), truncated)
    with pytest.raises(ValueError, match="weights file not found: .*nope.pth"):
        models.load_weights(models.build("ssd300_vgg16"), tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="unknown model 'ssd999'"):
        models.build("ssd999")


def test_imagenet_backbone_checkpoints_load(tmp_path):
    cases = {
        "ssd300_vgg16": torchvision.models.vgg16(weights=None),
        "ssd300_resnet18": torchvision.models.resnet18(weights=None),
        "ssd300_googlenet": torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True),
    }
    for name, classifier in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(classifier.state_dict(), path)
        model = models.build(name, num_classes=5, backbone_weights=path)
        first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        source = next(m for m in classifier.modules() if isinstance(m, torch.nn.Conv2d))
        assert torch.equal(first_conv.weight, source.weight), name
    with pytest.raises(ValueError, match=r"resnet\.pth does not fit GoogLeNet"):
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
        models.build("ssd300_googlenet", backbone_weights=tmp_path / "resnet.pth")


def test_resnet_backbone_equals_torchvision_resnet():
    from detkit.modeling.backbones import ResNet

    reference = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d).eval()
    ours = ResNet(50, frozen_bn=True)
    ours.load_imagenet(reference.state_dict())
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        r = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(r))))
        assert torch.equal(ours.eval()(x)["c5"], expected)
    assert not any(p.requires_grad for p in ResNet(18, trainable_layers=0).parameters())
    trainable = {n.split(".")[0] for n, p in ResNet(18, trainable_layers=2).named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}


def test_resnet_c4_is_torchvision_resnet_up_to_layer3():
    from detkit.modeling.backbones import ResNetC4

    reference = torchvision.models.resnet18(weights=None).eval()
    ours = ResNetC4(18)
    ours.load_imagenet(reference.state_dict())  # layer4 and fc are left out, strictly
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        r = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        expected = reference.layer3(reference.layer2(reference.layer1(r)))
        assert torch.equal(ours.eval()(x)["c4"], expected)
    assert expected.shape[-2:] == (6, 8) and ours.strides == {"c4": 16} and not hasattr(ours, "layer4")
    trainable = {n.split(".")[0] for n, p in ResNetC4(18, trainable_layers=2).named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3"}
    with pytest.raises(ValueError, match=r"trainable_layers must be in 0..4, got 5"):
        ResNetC4(18, trainable_layers=5)


@pytest.mark.parametrize("name", ["ssd300_vgg16_small", "ssd300_resnet18_small", "ssd512_vgg16", "ssd300_googlenet",
                                  "ssd300_resnet50"])
def test_every_ssd_trains_and_detects(name):
    width = {} if name.endswith("small") else {"width": 0.125}
    model = models.build(name, num_classes=4, **width)
    batch = [torch.rand(3, 120, 160), torch.rand(3, 90, 90)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 80]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # an image with no boxes
    losses = model.train()(batch, targets)
    assert set(losses) == {"bbox_regression", "classification"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad():
        detections = model.eval()(batch)
    assert len(detections) == 2
    for det, image in zip(detections, batch):
        assert det["boxes"].shape[1] == 4 and len(det["boxes"]) == len(det["scores"]) == len(det["labels"])
        if len(det["boxes"]):
            assert det["boxes"][:, 2].max() <= image.shape[2] + 1e-3 and det["boxes"][:, 3].max() <= image.shape[1] + 1e-3
            assert det["labels"].min() >= 1 and det["labels"].max() <= 3


def test_list_models_has_the_zoo():
    names = models.list_models()
    for required in ("ssd300_vgg16", "ssd512_vgg16", "ssd300_resnet50", "ssd300_googlenet", "ssd300_vgg16_small"):
        assert required in names


def test_bad_input_is_refused_clearly():
    model = models.build("ssd300_vgg16_small", num_classes=3)
    target = [{"boxes": torch.tensor([[1.0, 1, 20, 20]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match=r"images\[0\] has 1 channels"):
        model.eval()([torch.rand(1, 50, 50)])
    with pytest.raises(ValueError, match=r"images\[1\] has 4 channels"):
        model.eval()([torch.rand(3, 50, 50), torch.rand(4, 50, 50)])
    nan = torch.rand(3, 50, 50)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"images\[0\] contains NaN"):
        model.eval()([nan])
    with pytest.raises(TypeError, match=r"images\[0\] must be float"):
        model.eval()([torch.zeros(3, 50, 50, dtype=torch.uint8)])
    with pytest.raises(ValueError, match=r"labels'\] must be in 1\.\.2"):
        model.train()([torch.rand(3, 50, 50)], [{"boxes": target[0]["boxes"], "labels": torch.tensor([3])}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]\[0\] = .* has no width"):
        model.train()([torch.rand(3, 50, 50)], [{"boxes": torch.tensor([[5.0, 5, 5, 9]]), "labels": torch.tensor([1])}])
    with pytest.raises(ValueError, match="training needs one target per image"):
        model.train()([torch.rand(3, 50, 50)])
    with pytest.raises(ValueError, match="num_classes counts the background"):
        models.build("ssd300_vgg16_small", num_classes=1)


def test_too_small_input_size_is_a_clear_error():
    model = models.build("ssd300_vgg16_small", num_classes=3, size=96).eval()
    with pytest.raises(ValueError, match=r"inputs resized to \(96, 96\) are too small for SSDVGG16"):
        model([torch.rand(3, 96, 96)])


def test_googlenet_trainable_stages():
    from detkit.modeling.backbones import GoogLeNet

    assert all(p.requires_grad for p in GoogLeNet(width=0.25).parameters())  # from scratch: everything trains
    stages = {n.split(".")[0][:10] for n, p in GoogLeNet(width=0.25, trainable_layers=2).named_parameters()
              if p.requires_grad}
    assert stages == {"inception5", "inception4"}
    with pytest.raises(ValueError, match="trainable_layers must be in 0..4"):
        GoogLeNet(trainable_layers=5)
