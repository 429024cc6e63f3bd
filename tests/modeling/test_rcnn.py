import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

from detkit import models


# Both models resize to this instead of the default 800 px: the same code paths at a sixth of the time.
SIZE = {"min_size": 320, "max_size": 533}


def torchvision_model(kind, tmp_path):
    """A randomly initialised torchvision R50-FPN model with FrozenBatchNorm,
    laid out as the published weights are, and its checkpoint file."""
    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    model = (TVMaskRCNN if kind == "mask" else TVFasterRCNN)(_resnet_fpn_extractor(body, 5), num_classes=91,
                                                               **SIZE).eval()
    path = tmp_path / f"{kind}.pth"
    torch.save(model.state_dict(), path)
    return model, path


def sample():
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 240, 320, generator=g), torch.rand(3, 200, 260, generator=g)]
    masks = torch.zeros(2, 240, 320, dtype=torch.uint8)
    masks[0, 20:150, 10:100] = 1
    masks[1, 60:200, 150:300] = 1
    targets = [{"boxes": torch.tensor([[10.0, 20, 100, 150], [150, 60, 300, 200]]), "labels": torch.tensor([3, 17]),
                "masks": masks},
               {"boxes": torch.tensor([[30.0, 40, 90, 120]]), "labels": torch.tensor([1]),
                "masks": torch.zeros(1, 200, 260, dtype=torch.uint8).index_fill_(1, torch.arange(40, 120), 1)}]
    return images, targets


@pytest.mark.parametrize("kind, name", [("box", "fasterrcnn_resnet50_fpn"), ("mask", "maskrcnn_resnet50_fpn")])
def test_torchvision_checkpoints_give_identical_detections(tmp_path, kind, name):
    theirs, path = torchvision_model(kind, tmp_path)
    ours = models.load_weights(models.build(name, **SIZE), path).eval()
    images, targets = sample()
    with torch.no_grad():
        expected, got = theirs(images), ours(images)
    for a, b in zip(got, expected):
        assert len(b["boxes"]) > 0 and set(a) == set(b)
        for key in b:
            assert torch.equal(a[key], b[key]), key
    # Seeded training: the same samples, the same losses.
    theirs.train(), ours.train()
    torch.manual_seed(5)
    expected = theirs(images, [dict(t) for t in targets])
    torch.manual_seed(5)
    got = ours(images, targets)
    assert set(got) == set(expected)
    for key in ("loss_box_reg", "loss_objectness", "loss_rpn_box_reg") + (("loss_mask",) if kind == "mask" else ()):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-7)  # same samples, same targets
    # The random-weight network has logits in the hundreds; FC-layer GEMM rounding (which depends on buffer
    # alignment) then moves the cross-entropy in the 4th digit.
    torch.testing.assert_close(got["loss_classifier"], expected["loss_classifier"], rtol=1e-3, atol=1e-6)


def test_rcnn_bad_input_and_edge_cases():
    model = models.build("maskrcnn_resnet18_fpn", num_classes=4, width=0.25, min_size=128, max_size=200)
    images, targets = sample()
    targets = [{**t, "labels": torch.clamp(t["labels"], max=3)} for t in targets]
    with pytest.raises(ValueError, match=r"targets\[1\]\['masks'\] must be a Tensor\[1, 200, 260\]"):
        model.train()(images, [targets[0], {**targets[1], "masks": torch.zeros(1, 10, 10, dtype=torch.uint8)}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]\[1\] = .* has no width"):
        bad = targets[0]["boxes"].clone()
        bad[1, 2] = bad[1, 0]
        model.train()(images, [{**targets[0], "boxes": bad}, targets[1]])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 200, 260, dtype=torch.uint8)}
    losses = model.train()(images, [targets[0], empty])  # an image with no objects trains
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # No proposal survives: empty detections of the right shape, not a crash.
    model.rpn.score_thresh = 1.1
    with torch.no_grad():
        detections = model.eval()(images)
    assert [tuple(d["boxes"].shape) for d in detections] == [(0, 4), (0, 4)]
    assert tuple(detections[0]["masks"].shape) == (0, 1, 240, 320)


@pytest.mark.parametrize("name, options", [
    ("fasterrcnn_resnet18_fpn_small", {}),
    ("maskrcnn_resnet18_fpn_small", {}),
    ("fasterrcnn_googlenet_fpn", {"width": 0.25}),
    ("fasterrcnn_vgg16", {"width": 0.125}),
    ("fasterrcnn_vgg16", {"width": 0.125, "roi_pool": "pool"}),  # the Fast R-CNN RoIPool layer
])
def test_every_rcnn_trains_and_detects(name, options):
    model = models.build(name, num_classes=4, min_size=160, max_size=200, **options)
    images = [torch.rand(3, 150, 200), torch.rand(3, 120, 100)]
    masks = torch.zeros(1, 150, 200, dtype=torch.uint8)
    masks[0, 10:90, 10:80] = 1
    targets = [{"boxes": torch.tensor([[10.0, 10, 80, 90]]), "labels": torch.tensor([2]), "masks": masks},
               {"boxes": torch.tensor([[5.0, 5, 60, 70]]), "labels": torch.tensor([3]),
                "masks": torch.ones(1, 120, 100, dtype=torch.uint8)}]
    losses = model.train()(images, targets)
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected | ({"loss_mask"} if name.startswith("mask") else set())
    sum(losses.values()).backward()
    with torch.no_grad():
        detections = model.eval()(images)
    for det, image in zip(detections, images):
        assert det["boxes"].shape[1] == 4 and len(det["scores"]) == len(det["labels"]) == len(det["boxes"])
        if len(det["boxes"]):
            assert det["boxes"][:, 2].max() <= image.shape[2] + 1e-3 and det["labels"].min() >= 1
        if name.startswith("mask"):
            assert tuple(det["masks"].shape[1:]) == (1, *image.shape[1:])


def test_rcnn_zoo_names_and_options():
    for required in ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet18_fpn", "fasterrcnn_googlenet_fpn",
                     "fasterrcnn_vgg16", "maskrcnn_resnet50_fpn", "maskrcnn_resnet18_fpn"):
        assert required in models.list_models()
    with pytest.raises(ValueError, match="roi_pool must be 'align' or 'pool'"):
        models.build("fasterrcnn_vgg16", roi_pool="max")
