import os
import re

import cv2
import numpy as np
import pytest
import torch

import detkit
from detkit import api
from detkit.data import read_image
from detkit.engine import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(trained):
    return os.path.join(trained[1], "last.pth")


@pytest.fixture(scope="module")
def images(trained):
    config, work_dir = trained
    from detkit.engine.build import prepare_shapes

    folder = prepare_shapes(config.data).image_root
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:3]]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[key], b[key]), key
    assert a["class_names"] == b["class_names"]


def test_load_model_is_self_describing(checkpoint):
    model = detkit.load_model(checkpoint, device="cpu")
    assert not model.training
    assert model.classes == ["circle", "square", "triangle", "hexagon", "star"]
    state = load_checkpoint(checkpoint)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key


def test_detect_accepts_every_input_kind_with_the_same_result(checkpoint, images):
    path = images[0]
    rgb = read_image(path)
    by_path = detkit.detect(path, checkpoint, score_threshold=0.0)
    assert isinstance(by_path, list) and len(by_path) == 1
    expected = by_path[0]
    assert len(expected["scores"]) > 0
    assert_same(detkit.detect([path], checkpoint, score_threshold=0.0)[0], expected)
    assert_same(detkit.detect(rgb, checkpoint, score_threshold=0.0)[0], expected)
    assert_same(detkit.detect(cv2.imread(path), checkpoint, score_threshold=0.0, bgr=True)[0], expected)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert_same(detkit.detect(tensor, checkpoint, score_threshold=0.0)[0], expected)
    from PIL import Image

    pil = Image.fromarray(rgb)
    assert_same(detkit.detect(pil, checkpoint, score_threshold=0.0)[0], expected)
    model = detkit.load_model(checkpoint, "cpu")
    assert_same(detkit.detect(path, model, score_threshold=0.0)[0], expected)


def test_detect_on_a_batch_matches_one_by_one(checkpoint, images):
    batch = detkit.detect(images, checkpoint, score_threshold=0.0)
    assert len(batch) == len(images)
    for path, result in zip(images, batch):
        single = detkit.detect(path, checkpoint, score_threshold=0.0)[0]
        assert len(single["scores"]) > 0 and result["boxes"].shape == single["boxes"].shape
        # Batched convolutions may round differently: equal up to float noise, in the same order.
        torch.testing.assert_close(result["boxes"], single["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(result["scores"], single["scores"], rtol=0, atol=1e-5)
        assert torch.equal(result["labels"], single["labels"])
        assert result["class_names"] == single["class_names"]


def test_score_threshold_and_class_names(checkpoint, images):
    everything = detkit.detect(images[0], checkpoint, score_threshold=0.0)[0]
    threshold = float(everything["scores"].median())
    kept = detkit.detect(images[0], checkpoint, score_threshold=threshold)[0]
    assert 0 < len(kept["scores"]) < len(everything["scores"])
    assert bool((kept["scores"] >= threshold).all())
    classes = detkit.load_model(checkpoint, "cpu").classes
    assert kept["class_names"] == [classes[label - 1] for label in kept["labels"].tolist()]
    assert kept["boxes"].shape == (len(kept["scores"]), 4)


def test_bad_images_are_named(checkpoint, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        detkit.detect(str(broken), checkpoint)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        detkit.detect(str(tmp_path / "missing.jpg"), checkpoint)
    with pytest.raises(ValueError, match=r"images\[1\]: a tensor image must be \[3, H, W\]"):
        detkit.detect([torch.rand(3, 8, 8), torch.rand(1, 8, 8)], checkpoint)
    with pytest.raises(ValueError, match="must be float"):
        detkit.detect(torch.zeros(3, 8, 8, dtype=torch.uint8), checkpoint)
    with pytest.raises(ValueError, match="expected a uint8 array"):
        detkit.detect(np.zeros((8, 8, 3), np.float32), checkpoint)
    with pytest.raises(TypeError, match="got int"):
        detkit.detect(3, checkpoint)
    with pytest.raises(ValueError, match="score_threshold"):
        detkit.detect(torch.rand(3, 8, 8), checkpoint, score_threshold=2)


def test_bad_checkpoints_are_named(checkpoint, tmp_path):
    truncated = tmp_path / "cut.pth"
    with open(checkpoint, "rb") as f:
        truncated.write_bytes(f.read()[:1000])
    with pytest.raises(CheckpointError, match="cut.pth: cannot be read"):
        detkit.load_model(truncated)
    state = load_checkpoint(checkpoint)
    state["config"]["model"]["options"]["width"] = 0.5  # claims another model than its weights
    other = tmp_path / "other.pth"
    save_checkpoint(other, {k: v for k, v in state.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match="other.pth does not fit SSD"):
        detkit.load_model(other)
    state["config"]["solver"]["nope"] = 1
    invalid = tmp_path / "invalid.pth"
    save_checkpoint(invalid, {k: v for k, v in state.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match="invalid.pth: its config is invalid.*solver.nope"):
        detkit.load_model(invalid)


def assert_close_detections(a, b, threshold=0.05):
    """The same detections up to the float rounding of another runtime or batch,
    in any order (rounding may swap near-equal scores): each of b's has one of
    a's with the same label and class name, box within 0.01 px and score within
    1e-4, and back; only detections within 1e-4 of `threshold` may be missing."""
    for one, other in ((a, b), (b, a)):
        free = torch.ones(len(other["scores"]), dtype=torch.bool)
        for box, label, score in zip(one["boxes"], one["labels"], one["scores"]):
            same = (free & (other["labels"] == label) & ((other["boxes"] - box).abs().amax(1) <= 1e-2)
                    & ((other["scores"] - score).abs() <= 1e-4))
            if not same.any():
                assert abs(float(score) - threshold) <= 1e-4, (box, label, score)
                continue
            free[torch.where(same)[0][0]] = False
        names = {int(l): n for l, n in zip(one["labels"], one["class_names"])}
        assert all(names[int(l)] == n for l, n in zip(other["labels"], other["class_names"]) if int(l) in names)


def has_batchnorm(model):
    return any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_load_model_and_detect_run_the_fused_runtime_like_eager(checkpoint, images):
    eager = detkit.load_model(checkpoint, "cpu")
    fused = detkit.load_model(checkpoint, "cpu", runtime="fused")
    assert fused is not eager and not fused.training
    assert has_batchnorm(eager) and not has_batchnorm(fused)
    assert fused.classes == eager.classes and fused.config == eager.config
    expected = detkit.detect(images, eager, score_threshold=0.05)
    assert sum(len(r["scores"]) for r in expected) > 0
    runs = {
        "load_model(runtime='fused')": detkit.detect(images, fused, score_threshold=0.05),
        "detect(path, runtime='fused')": detkit.detect(images, checkpoint, score_threshold=0.05, device="cpu",
                                                      runtime="fused"),
        # a model object with another runtime: optimized (a copy) for the call; the caller's model untouched
        "detect(model, runtime='fused')": detkit.detect(images, eager, score_threshold=0.05, runtime="fused"),
    }
    assert has_batchnorm(eager)
    for name, results in runs.items():
        assert len(results) == len(expected), name
        for got, want in zip(results, expected):
            assert_close_detections(got, want)


def test_unknown_runtimes_are_named(checkpoint, images):
    from detkit.runtimes import RUNTIMES

    message = re.escape(f"unknown runtime 'turbo'; available: {', '.join(RUNTIMES)}")
    with pytest.raises(ValueError, match=message):
        detkit.load_model(checkpoint, "cpu", runtime="turbo")
    with pytest.raises(ValueError, match=message):
        detkit.detect(images[0], checkpoint, runtime="turbo")
    model = detkit.load_model(checkpoint, "cpu")
    with pytest.raises(ValueError, match=message):
        detkit.detect(images[0], model, runtime="turbo")


def test_detect_keeps_one_model_per_runtime(checkpoint, images):
    api.clear_model_cache()
    try:
        eager = detkit.detect(images[0], checkpoint, score_threshold=0.05, device="cpu")[0]
        (eager_model,) = api._MODEL_CACHE.values()
        fused = detkit.detect(images[0], checkpoint, score_threshold=0.05, device="cpu", runtime="fused")[0]
        (fused_model,) = api._MODEL_CACHE.values()  # one model: the runtime is part of the key
        assert fused_model is not eager_model and has_batchnorm(eager_model) and not has_batchnorm(fused_model)
        detkit.detect(images[0], checkpoint, score_threshold=0.05, device="cpu", runtime="fused")
        assert next(iter(api._MODEL_CACHE.values())) is fused_model  # not reloaded
        assert_close_detections(fused, eager)
    finally:
        api.clear_model_cache()


def test_calibration_images_reach_the_runtime_as_a_list_of_paths(checkpoint, images, tmp_path, monkeypatch):
    import shutil

    from detkit import runtimes

    folder = tmp_path / "calibration"
    folder.mkdir()
    for path in images:
        shutil.copy(path, folder)
    (folder / "notes.txt").write_text("not an image")
    seen = []

    def optimize(model, runtime="eager", calibration=None, int8_engine="auto"):
        seen.append(calibration)
        return model.eval()

    monkeypatch.setattr(runtimes, "optimize", optimize)
    expected = sorted(str(folder / os.path.basename(p)) for p in images)
    detkit.load_model(checkpoint, "cpu", calibration=str(folder))
    detkit.load_model(checkpoint, "cpu", calibration=str(folder / "*.jpg"))
    detkit.load_model(checkpoint, "cpu", calibration=expected[:1])
    assert seen == [expected, expected, expected[:1]]
    with pytest.raises(FileNotFoundError, match="missing"):
        detkit.load_model(checkpoint, "cpu", calibration=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="matches no images"):
        detkit.load_model(checkpoint, "cpu", calibration=str(folder / "*.png"))
