"""Pretrained weights by torchvision name, fine-tuning to another class count,
and COCO names through detect(). No network, ever: the torch hub cache is a
temporary folder holding randomly initialised torchvision weights under the
file names torchvision's enums expect, and every socket or URL call raises."""
import math
import os

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import ResNet18_Weights
from torchvision.models.detection import SSD300_VGG16_Weights

import detkit
from detkit import models
from detkit.data import shapes
from detkit.config import ConfigError, ModelConfig
from detkit.engine import train
from detkit.engine.build import build_model
from detkit.engine.report import label_map, relabel
from detkit.models.weights import WeightsError, hub_file
from tests.helpers import tiny_ssd_config

COCO_NAMES = SSD300_VGG16_Weights.COCO_V1.meta["categories"]




@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A torch hub cache holding seeded random torchvision SSD300 COCO and ResNet-18 weights."""
    home = tmp_path_factory.mktemp("torch_home")
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    torch.manual_seed(0)
    files = {}
    for weights, model in ((SSD300_VGG16_Weights.COCO_V1,
                            torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None)),
                           (ResNet18_Weights.IMAGENET1K_V1, torchvision.models.resnet18(weights=None))):
        path = hub_file(weights)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(model.state_dict(), path)
        files[weights] = path
    yield files
    if previous is None:
        os.environ.pop("TORCH_HOME")
    else:
        os.environ["TORCH_HOME"] = previous


def test_the_planted_file_is_where_torchvision_looks(hub):
    path = hub[SSD300_VGG16_Weights.COCO_V1]
    assert path.startswith(os.environ["TORCH_HOME"])
    assert os.path.basename(path) == os.path.basename(SSD300_VGG16_Weights.COCO_V1.url)


@pytest.mark.parametrize("name", ["COCO_V1", "DEFAULT", "SSD300_VGG16_Weights.COCO_V1"])
def test_named_weights_load_every_tensor_from_the_cache(hub, offline, name):
    model = models.build("ssd300_vgg16", weights=name)
    source = torch.load(hub[SSD300_VGG16_Weights.COCO_V1], weights_only=True)
    assert set(model.state_dict()) == set(source)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())
    assert model.num_classes == 91 and model.classes == COCO_NAMES[1:] and "N/A" in model.classes


def test_backbone_weights_by_name(hub, offline):
    model = models.build("ssd300_resnet18", num_classes=3, backbone_weights="IMAGENET1K_V1")
    source = torch.load(hub[ResNet18_Weights.IMAGENET1K_V1], weights_only=True)
    assert torch.equal(model.backbone.body.conv1.weight, source["conv1.weight"])
    assert torch.equal(model.backbone.body.layer4[1].bn2.running_var, source["layer4.1.bn2.running_var"])


def test_detect_and_load_model_with_a_zoo_name_give_coco_names(hub, offline):
    detkit.clear_model_cache()
    image = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    result = detkit.detect(image, "ssd300_vgg16", score_threshold=0.0, device="cpu")[0]
    assert len(result["labels"]) > 0  # random weights still score every class about 1/91 > 0.01
    assert result["class_names"] == [COCO_NAMES[label] for label in result["labels"].tolist()]
    model = detkit.load_model("ssd300_vgg16", device="cpu")
    assert model.classes == COCO_NAMES[1:] and model.config.model.weights == "DEFAULT"
    detkit.clear_model_cache()


def test_fine_tuning_to_three_classes(hub, offline, capsys):
    source = torch.load(hub[SSD300_VGG16_Weights.COCO_V1], weights_only=True)
    torch.manual_seed(7)
    constructed = models.build("ssd300_vgg16", num_classes=3)
    torch.manual_seed(7)
    model = models.build("ssd300_vgg16", num_classes=3, weights="COCO_V1", trainable_backbone_layers=2)
    printed = capsys.readouterr().err
    head = "head.classification_head."
    fresh = [k for k in model.state_dict() if k.startswith(head)]
    assert printed.count("\n") == 1 and "re-initialised " + ", ".join(fresh) in printed
    for key, value in model.state_dict().items():
        if key.startswith(head):
            assert value.shape[0] // 3 == source[key].shape[0] // 91  # anchors x classes outputs
        else:
            assert torch.equal(value, source[key]), key
    for conv in model.head.classification_head.module_list:
        # the constructor's xavier-uniform weights and zero biases, drawn anew (not the constructor's draw)
        fan_in, fan_out = conv.weight.shape[1] * 9, conv.weight.shape[0] * 9
        assert conv.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) and torch.all(conv.bias == 0)
    assert not all(torch.equal(a, b) for a, b in zip(model.head.classification_head.parameters(),
                                                     constructed.head.classification_head.parameters()))
    assert not hasattr(model, "classes")  # the new classes are the data's, not COCO's
    # freezing composes: the frozen VGG stages stay frozen, the new head trains
    assert not model.backbone.features[0].weight.requires_grad
    assert all(p.requires_grad for p in model.head.parameters())
    losses = model.train()([torch.rand(3, 300, 300)], [{"boxes": torch.tensor([[20.0, 30, 200, 220]]),
                                                        "labels": torch.tensor([2])}])
    sum(losses.values()).backward()
    assert model.head.classification_head.module_list[0].weight.grad is not None
    assert model.backbone.features[0].weight.grad is None


def test_rcnn_fine_tuning_reinitialises_box_and_mask_class_layers(tmp_path, capsys):
    source_model = models.build("maskrcnn_resnet18_fpn_small", num_classes=6)
    path = tmp_path / "mask6.pth"
    torch.save(source_model.state_dict(), path)
    model = models.build("maskrcnn_resnet18_fpn_small", num_classes=3, weights=str(path))
    fresh = ["roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
             "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias",
             "roi_heads.mask_predictor.mask_fcn_logits.weight", "roi_heads.mask_predictor.mask_fcn_logits.bias"]
    assert sorted(fresh) == sorted(capsys.readouterr().err.split("re-initialised ")[1].strip().split(", "))
    source = source_model.state_dict()
    for key, value in model.state_dict().items():
        assert (key in fresh) == (value.shape != source[key].shape), key
        if key not in fresh:
            assert torch.equal(value, source[key]), key
    cls = model.roi_heads.box_predictor.cls_score
    assert cls.weight.abs().max() <= 1 / math.sqrt(cls.in_features)  # nn.Linear's own initialisation
    logits = model.roi_heads.mask_predictor.mask_fcn_logits.weight  # Kaiming normal, fan_out = 3 classes x 1x1
    assert 0.6 < logits.std().item() / math.sqrt(2 / 3) < 1.4


def test_the_engine_fine_tunes_and_saves_the_new_class_names(tmp_path, shapes_root):
    config = tiny_ssd_config(shapes_root, epochs=1)
    pretrained = models.build(config.model.name, num_classes=91, **config.model.options)
    weights = tmp_path / "coco91.pth"
    torch.save(pretrained.state_dict(), weights)
    config.model.weights = str(weights)
    train(config, str(tmp_path / "run"), progress=False)
    model = detkit.load_model(str(tmp_path / "run" / "last.pth"), device="cpu")
    names = list(shapes.PRESETS["basic"].classes)
    assert model.classes == names and model.num_classes == len(names) + 1 != 91
    backbone_key = "backbone.body.conv1.weight"
    assert model.state_dict()[backbone_key].shape == pretrained.state_dict()[backbone_key].shape
    os.remove(weights)  # resuming needs only last.pth, not the starting weights
    config.schedule.epochs = 2
    assert train(config, str(tmp_path / "run"), resume=True, progress=False).epoch == 2


def test_unknown_weight_names_are_refused_with_the_valid_ones(hub, offline):
    with pytest.raises(WeightsError, match=r"unknown weights 'COCO_V9' for model 'ssd300_vgg16'; choose one of: "
                                           r"DEFAULT, COCO_V1"):
        models.build("ssd300_vgg16", weights="COCO_V9")
    with pytest.raises(WeightsError, match=r"'ResNet18_Weights.IMAGENET1K_V1' are weights of another model"):
        models.build("ssd300_vgg16", weights="ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(WeightsError, match=r"unknown weights 'COCO_V1' for ResNet; choose one of: .*IMAGENET1K_V1"):
        models.build("ssd300_resnet18", backbone_weights="COCO_V1")


def test_a_model_without_pretrained_weights_lists_those_with(offline):
    with pytest.raises(WeightsError, match=r"'fasterrcnn_googlenet_fpn' has no pretrained weights .*models with "
                                           r"named weights: fasterrcnn_mobilenet_v3_large_320_fpn, "
                                           r"fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn, "
                                           r"maskrcnn_resnet50_fpn, ssd300_vgg16, ssdlite320_mobilenet_v3_large"):
        models.build("fasterrcnn_googlenet_fpn", weights="DEFAULT")
    with pytest.raises(ValueError, match=r"fasterrcnn_googlenet_fpn has no pretrained weights to load by name"):
        detkit.load_model("fasterrcnn_googlenet_fpn")


def test_offline_without_the_cached_file_names_the_file_and_folder(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as error:
        models.build("fasterrcnn_resnet50_fpn", weights="DEFAULT")
    message = str(error.value)
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth is not in the torch hub cache" in message
    assert os.path.join(str(tmp_path), "hub", "checkpoints") in message and "NetworkUsed" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no urllib traceback chained


def test_a_cached_file_of_another_architecture_is_named(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = hub_file(SSD300_VGG16_Weights.COCO_V1)
    os.makedirs(os.path.dirname(path))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=r"SSD300_VGG16_Weights.COCO_V1 does not fit SSD .*missing"):
        models.build("ssd300_vgg16", weights="COCO_V1")


def test_coco_91_slot_labels_map_onto_a_coco_files_labels():
    data_classes = ["person", "car", "dog"]  # a COCO file's categories 1, 3, 18 -> labels 1..3
    mapping = label_map(COCO_NAMES[1:], data_classes, "ann.json")
    assert mapping == {1: 1, 3: 2, 18: 3}
    prediction = {"boxes": torch.rand(4, 4), "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
                  "labels": torch.tensor([3, 2, 18, 1])}  # 2 = bicycle: not in the file
    moved = relabel({7: prediction}, mapping)[7]
    assert moved["labels"].tolist() == [2, 3, 1] and moved["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert torch.equal(moved["boxes"], prediction["boxes"][[0, 2, 3]])
    with pytest.raises(ValueError, match=r"ann.json: its classes \['circle'\] are not among the model's classes"):
        label_map(COCO_NAMES[1:], ["person", "circle"], "ann.json")


def coco_format_set(folder):
    """Two photos-to-be with a COCO file whose categories are COCO's own (ids 1 and 3)."""
    import cv2
    import json
    os.makedirs(folder / "images")
    rng = np.random.default_rng(1)
    images, annotations = [], []
    for n in range(2):
        cv2.imwrite(str(folder / "images" / f"{n}.jpg"), (rng.random((200, 260, 3)) * 255).astype(np.uint8))
        images.append({"id": n + 1, "file_name": f"{n}.jpg", "width": 260, "height": 200})
        annotations.append({"id": n + 1, "image_id": n + 1, "category_id": 1 + 2 * n, "bbox": [20, 30, 80, 90],
                            "area": 7200, "iscrowd": 0})
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    with open(folder / "ann.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return folder / "images", folder / "ann.json"


def test_eval_and_infer_tools_take_a_zoo_name(hub, offline, tmp_path, capsys):
    from tests.tools.test_tools import tool
    images, ann = coco_format_set(tmp_path / "set")
    out = tmp_path / "eval"
    assert tool("eval").main(["ssd300_vgg16", "--data", "coco", "--images", str(images), "--ann", str(ann),
                              "--out", str(out), "--device", "cpu"]) == 0
    assert "person" in capsys.readouterr().out
    with open(out / "results.json") as f:
        records = __import__("json").load(f)
    assert records and {r["category_id"] for r in records} <= {1, 3}  # COCO ids, from the 91-slot labels
    assert tool("infer").main(["ssd300_vgg16", str(images), "--out", str(tmp_path / "infer"),
                               "--score-threshold", "0.0", "--device", "cpu"]) == 0
    with open(tmp_path / "infer" / "detections.json") as f:
        detections = __import__("json").load(f)
    found = [d for image in detections for d in image["detections"]]
    assert found and all(d["class_name"] == COCO_NAMES[d["label"]] for d in found)


def legacy_names(state):
    """A state_dict under torchvision's pre-2020 R-CNN names, as its published COCO files hold them."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for i in range(4):
            key = key.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        renamed[key] = value
    return renamed


def test_published_rcnn_files_with_the_old_names_load(tmp_path):
    source = models.build("maskrcnn_resnet18_fpn_small", num_classes=4)
    old = legacy_names(source.state_dict())
    assert "rpn.head.conv.weight" in old and "roi_heads.mask_head.mask_fcn4.bias" in old
    path = tmp_path / "legacy.pth"
    torch.save(old, path)
    for loaded in (models.build("maskrcnn_resnet18_fpn_small", num_classes=4, weights=str(path)),
                   models.load_weights(models.build("maskrcnn_resnet18_fpn_small", num_classes=4), path)):
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_without_num_classes_a_plain_file_must_fit(tmp_path):
    path = tmp_path / "ssd21.pth"
    torch.save(models.build("ssd300_vgg16_small", num_classes=21, size=96).state_dict(), path)
    with pytest.raises(WeightsError, match=r"ssd21\.pth does not fit SSD .*other shapes"):
        models.build("ssd300_vgg16_small", size=96, weights=str(path))  # 91 by default: no silent fine-tune
    assert models.build("ssd300_vgg16_small", num_classes=21, size=96, weights=str(path)).num_classes == 21


def test_options_that_are_builds_own_arguments_are_refused():
    with pytest.raises(models.ModelOptionError, match=r"takes no option 'detector'"):
        models.build("ssd300_vgg16_small", 3, detector=models.SSDOptions())
    for key in ("num_classes", "weights"):
        with pytest.raises(ConfigError, match=rf"model.options.{key} is not a model option"):
            build_model(ModelConfig(name="ssd300_vgg16_small", options={key: 3}), 4)


def test_default_backbone_weights_fit_the_backbones_inputs():
    from detkit.models.weights import backbone_member
    ssd = models.build("ssd300_vgg16_small", num_classes=3)
    assert backbone_member(ssd.backbone, "DEFAULT").name == "IMAGENET1K_FEATURES"  # what SSD was trained from
    with pytest.raises(WeightsError, match=r"VGG16_Weights.IMAGENET1K_V1 expects other inputs than SSDVGG16"):
        backbone_member(ssd.backbone, "IMAGENET1K_V1")
    frcnn = models.build("fasterrcnn_vgg16", num_classes=3, width=0.125)
    assert backbone_member(frcnn.backbone, "DEFAULT").name == "IMAGENET1K_V1"
    googlenet = models.build("ssd300_googlenet", num_classes=3, width=0.25)
    assert googlenet.transform.image_mean == [0.5, 0.5, 0.5]  # torchvision's weights take pixels in [-1, 1]
    assert list(ssd.transform.image_std) == pytest.approx([1 / 255] * 3)  # Caffe's 0-255 inputs
