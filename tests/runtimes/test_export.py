"""detkit.runtimes.export.export_dynamic: one ONNX graph per SSD or
Faster/Mask R-CNN that takes an image of any size (uint8 [H, W, 3] or float
[3, H, W]) and returns what the PyTorch model returns for it: the same
labels, boxes within 1e-3 px and scores within 1e-4 (mask probabilities
within 1e-4), in ONNX Runtime; OpenVINO reads and runs the same file."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from detkit import models
from detkit.runtimes.export import export_dynamic
from detkit.runtimes.openvino import openvino_core

onnxruntime = pytest.importorskip("onnxruntime", reason="the dynamic export is checked in ONNX Runtime")
pytest.importorskip("onnx", reason="ONNX export needs onnx")

SIZES = ((128, 128), (200, 150), (97, 301))  # the network's own size, larger and taller, smaller and wide


def he_initialised(model: nn.Module, seed: int = 0) -> nn.Module:
    """SSDlite's N(0, 0.03) initialisation gives every anchor the same scores,
    whose ties leave the detection order arbitrary: He-initialised instead."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, generator=generator)
    return model.eval()


@pytest.fixture(scope="module")
def shapes_images(tmp_path_factory):
    """Three Shapes images as uint8 [H, W, 3] RGB arrays, resized to SIZES."""
    import os

    import cv2

    from detkit.data import read_image, shapes

    paths = shapes.generate(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=1, image_size=128, seed=0)
    files = sorted(os.listdir(paths.image_root))[:len(SIZES)]
    images = [read_image(os.path.join(paths.image_root, name)) for name in files]
    return [cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) for image, (h, w) in zip(images, SIZES)]


MODELS = {
    "ssd300_resnet18_small": lambda request: request.getfixturevalue("overfit_ssd")[0],
    "ssdlite320_mobilenet_v3_large": lambda request: he_initialised(models.build(
        "ssdlite320_mobilenet_v3_large", num_classes=4, width=0.25, size=128, score_thresh=0.3,
        detections_per_img=50)),
}


def as_float(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)


def assert_same_detections(got, expected):
    boxes, scores, labels = (torch.from_numpy(np.asarray(v)) for v in got)
    assert len(expected["scores"]) > 0, "setup: the model found nothing"
    assert torch.equal(labels, expected["labels"])
    torch.testing.assert_close(boxes, expected["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(scores, expected["scores"], atol=1e-4, rtol=0)


# The input conversion is the same code for every model: the float input is checked on the SSD only.
EXPORTED = [("ssd300_resnet18_small", "uint8"), ("ssd300_resnet18_small", "float"),
            ("ssdlite320_mobilenet_v3_large", "uint8")]


@pytest.fixture(scope="module", params=EXPORTED, ids=lambda p: "-".join(p))
def exported(request, tmp_path_factory):
    name, input_type = request.param
    model = MODELS[name](request)
    path = export_dynamic(model, tmp_path_factory.mktemp("onnx") / f"{name}.onnx", input_type)
    return model, input_type, path


def feed(image: np.ndarray, input_type: str) -> np.ndarray:
    return image if input_type == "uint8" else as_float(image).numpy()


def test_onnxruntime_gives_the_models_detections_at_any_size(exported, shapes_images):
    model, input_type, path = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == [f"tensor({'uint8' if input_type == 'uint8' else 'float'})"]
    for image in shapes_images:
        with torch.no_grad():
            expected = model([as_float(image)])[0]
        assert_same_detections(session.run(["boxes", "scores", "labels"], {"image": feed(image, input_type)}),
                               expected)


def test_openvino_reads_and_runs_the_same_file(exported, shapes_images):
    pytest.importorskip("openvino", reason="OpenVINO is the export's second reader")
    model, input_type, path = exported
    core = openvino_core()  # one Core per process: see its docstring
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for image in shapes_images:
        with torch.no_grad():
            expected = model([as_float(image)])[0]
        result = compiled({"image": feed(image, input_type)})
        got = [result[compiled.output(name)] for name in ("boxes", "scores", "labels")]
        # OpenVINO's own float kernels round differently from torch's: the same detections, looser numbers
        boxes, scores, labels = (torch.from_numpy(np.asarray(v)) for v in got)
        assert torch.equal(labels.long(), expected["labels"])
        torch.testing.assert_close(boxes, expected["boxes"], atol=1e-2, rtol=0)
        torch.testing.assert_close(scores, expected["scores"], atol=1e-3, rtol=0)


def test_the_graph_finds_objects_though_the_traced_image_had_none(overfit_ssd, shapes_images, tmp_path):
    """Traced on a blank image (no candidate above the threshold), the graph still finds the objects
    of other images, and finds nothing in a blank one: no branch on the example's count is frozen in."""
    import copy

    model = copy.deepcopy(overfit_ssd[0])
    model.score_thresh = 0.3
    blank = np.zeros((90, 110, 3), np.uint8)
    with torch.no_grad():
        assert len(model([as_float(blank)])[0]["scores"]) == 0, "setup: the blank image has detections"
        assert len(model([as_float(shapes_images[0])])[0]["scores"]) > 0, "setup: no objects found"
    path = export_dynamic(model, tmp_path / "blank.onnx", example=torch.from_numpy(blank))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for image in (*shapes_images, blank):
        with torch.no_grad():
            expected = model([as_float(image)])[0]
        got = session.run(["boxes", "scores", "labels"], {"image": image})
        assert len(got[0]) == len(expected["scores"])
        if len(got[0]):
            assert_same_detections(got, expected)


RCNN_SIZES = ((128, 128), (200, 150), (64, 90))  # the trained size, larger and taller, smaller and wide


@pytest.fixture(scope="module")
def exported_maskrcnn(overfit_maskrcnn, tmp_path_factory):
    """The trained Mask R-CNN (score threshold 0.3: no near-tied junk detections), its ONNX file and
    its 4 training images as uint8 [H, W, 3]."""
    import copy

    model, _, images, _ = overfit_maskrcnn
    model = copy.deepcopy(model)
    model.roi_heads.score_thresh = 0.3
    path = export_dynamic(model, tmp_path_factory.mktemp("onnx") / "maskrcnn.onnx")
    return model, path, [image.mul(255).round().byte().permute(1, 2, 0).numpy() for image in images]


def resized(images, sizes):
    import cv2

    return [cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) for image, (h, w) in zip(images, sizes)]


def assert_same_masks(got, expected):
    torch.testing.assert_close(torch.from_numpy(np.asarray(got)), expected["masks"], atol=1e-4, rtol=0)


def test_mask_rcnn_in_onnxruntime_gives_the_models_detections_and_masks_at_any_size(exported_maskrcnn):
    model, path, images = exported_maskrcnn
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "masks"]
    for image in resized(images, RCNN_SIZES):
        with torch.no_grad():
            expected = model([as_float(image)])[0]
        boxes, scores, labels, masks = session.run(None, {"image": image})
        assert_same_detections((boxes, scores, labels), expected)
        assert masks.shape == (len(labels), 1, *image.shape[:2])
        assert_same_masks(masks, expected)


def test_openvino_runs_the_mask_rcnn_file_and_finds_nothing_in_a_blank_image(exported_maskrcnn):
    pytest.importorskip("openvino", reason="OpenVINO is the export's second reader")
    model, path, images = exported_maskrcnn
    core = openvino_core()  # one Core per process: see its docstring
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    blank = np.zeros((120, 160, 3), np.uint8)
    for image in (*resized(images, RCNN_SIZES[1:]), blank):
        with torch.no_grad():
            expected = model([as_float(image)])[0]
        result = compiled({"image": image})
        boxes, scores, labels, masks = (torch.from_numpy(np.asarray(result[compiled.output(name)]))
                                        for name in ("boxes", "scores", "labels", "masks"))
        assert torch.equal(labels.long(), expected["labels"])  # none for the blank image
        torch.testing.assert_close(boxes, expected["boxes"], atol=1e-2, rtol=0)
        torch.testing.assert_close(scores, expected["scores"], atol=1e-3, rtol=0)
        torch.testing.assert_close(masks, expected["masks"], atol=1e-3, rtol=0)


def random_rcnn(name: str, seed: int = 0, **options) -> nn.Module:
    """A Faster/Mask R-CNN of random weights that still detects: He-initialised convolutions, and
    near-zero class and box predictions, so that every proposal scores about 1 / num_classes."""
    generator = torch.Generator().manual_seed(seed)
    model = he_initialised(models.build(name, num_classes=4, **options), seed)
    for layer in (model.roi_heads.box_predictor.cls_score, model.roi_heads.box_predictor.bbox_pred):
        nn.init.normal_(layer.weight, std=1e-3, generator=generator)
    model.roi_heads.score_thresh = 0.01
    return model.eval()


@pytest.mark.parametrize("name, options", [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", dict(width=0.25)),
    ("maskrcnn_resnet18_fpn_small", dict(min_size=128, max_size=128)),
], ids=["fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet18_fpn_small"])
def test_the_traced_rcnn_freezes_no_size(name, options):
    """Traced once at 97x131, the graph equals the model at other sizes: every size the model takes
    from the image (resize, padding, anchor grids, RoI pooling scales) is a graph value. 97x301 resizes to
    a strip whose padding makes torchvision's pooling-scale rule give 1/2 for the stride-4 map: the graph
    must follow it there too. torch.jit.trace runs torch's own kernels, so this holds exactly."""
    from detkit.runtimes.self_contained import SelfContainedRCNN

    model = random_rcnn(name, **options)
    generator = torch.Generator().manual_seed(1)
    example = torch.randint(0, 256, (97, 131, 3), dtype=torch.uint8, generator=generator)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the constants it keeps, which are meant
        traced = torch.jit.trace(SelfContainedRCNN(model), (example,), check_trace=False)
    found = 0
    for height, width in ((128, 128), (200, 150), (97, 301), (480, 640)):
        image = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
        with torch.no_grad():
            expected = model([image.permute(2, 0, 1).float() / 255])[0]
            got = traced(image)
        assert len(got) == len(expected)
        for value, key in zip(got, expected):
            assert value.shape == expected[key].shape, (height, width, key)
            torch.testing.assert_close(value, expected[key].to(value.dtype), atol=1e-4, rtol=0)
        found += len(got[0])
    assert found >= 6, "setup: the random model found too little to compare"


def test_a_detector_without_a_graph_for_any_size_is_refused(tmp_path):
    model = models.build("fastrcnn_alexnet", num_classes=3)
    with pytest.raises(ValueError, match=r"export_dynamic \(--dynamic\) takes SSD models .* a ProposalRCNN needs"):
        export_dynamic(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_an_unknown_input_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"input_type must be one of \('uint8', 'float'\), got 'int16'"):
        export_dynamic(models.build("ssd300_resnet18_small", num_classes=3, size=64), tmp_path / "x.onnx", "int16")
    assert not (tmp_path / "x.onnx").exists()
