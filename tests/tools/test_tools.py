"""tools/*.py end to end on the run the `trained` fixture leaves."""
import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import detkit
from detkit.engine import load_checkpoint
from detkit.engine.build import prepare_shapes
from tests.helpers import REPO

TOOLS = os.path.join(REPO, "tools")


def tool(name):
    """tools/<name>.py as a module, so main(argv) runs in this process."""
    sys.path.insert(0, TOOLS)
    try:
        spec = importlib.util.spec_from_file_location(f"detkit_tool_{name}", os.path.join(TOOLS, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(TOOLS)


def run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(TOOLS, args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def checkpoint(trained):
    return os.path.join(trained[1], "last.pth")


@pytest.fixture(scope="module")
def val_images(trained):
    folder = prepare_shapes(trained[0].data).image_root
    return folder, sorted(os.listdir(folder))


def test_eval_reproduces_the_training_evaluation(trained, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert tool("eval").main([checkpoint, "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and "circle" in printed
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["stats"]["AP50"] == load_checkpoint(checkpoint)["metrics"]["AP50"]
    with open(out / "results.json") as f:
        results = json.load(f)
    assert results and {"image_id", "category_id", "bbox", "score"} <= results[0].keys()
    assert cv2.imread(str(out / "pr_curves.png")) is not None


def test_eval_on_the_voc_copy_of_the_set(trained, checkpoint, tmp_path, capsys):
    voc_root = os.path.join(prepare_shapes(trained[0].data).root, "VOCdevkit")
    out = tmp_path / "voc"
    assert tool("eval").main([checkpoint, "--data", "voc", "--voc-root", voc_root, "--split", "val",
                              "--out", str(out)]) == 0
    assert "VOC mAP@0.5" in capsys.readouterr().out
    with open(out / "metrics.json") as f:
        assert 0.0 <= json.load(f)["mAP"] <= 1.0


def write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_infer_on_an_image_a_folder_and_a_video(checkpoint, val_images, tmp_path):
    folder, names = val_images
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in names[:2]:
        cv2.imwrite(str(inputs / name), cv2.imread(os.path.join(folder, name)))
    write_video(tmp_path / "clip.mp4", [cv2.imread(os.path.join(folder, n)) for n in names[:3]])
    out = tmp_path / "out"
    single = os.path.join(folder, names[5])
    assert tool("infer").main([checkpoint, single, str(inputs), str(tmp_path / "clip.mp4"), "--out", str(out),
                               "--score-threshold", "0.01"]) == 0
    with open(out / "detections.json") as f:
        records = json.load(f)
    assert [os.path.basename(r["file"]) for r in records] == [names[5], *names[:2], "clip.mp4", "clip.mp4",
                                                               "clip.mp4"]
    assert [r.get("frame") for r in records[3:]] == [0, 1, 2]
    expected = detkit.detect(single, checkpoint, score_threshold=0.01)[0]
    got = records[0]["detections"]
    assert len(got) == len(expected["scores"])
    assert [d["class_name"] for d in got] == expected["class_names"]
    assert np.allclose([d["box"] for d in got], expected["boxes"].numpy().reshape(-1, 4), atol=0.01)
    for name in (os.path.splitext(names[5])[0] + ".jpg", "clip.mp4"):
        assert os.path.getsize(out / name) > 0
    drawn = cv2.imread(str(out / (os.path.splitext(names[5])[0] + ".jpg")))
    assert drawn.shape == cv2.imread(single).shape


def same_detections(ours, theirs, min_score=0.05):
    """Exported and PyTorch detections agree: same count above min_score, and
    each exported box has a PyTorch twin with its label, score and box
    (order may differ only between equal scores)."""
    boxes, scores, labels = (torch.as_tensor(np.asarray(v)) for v in ours[:3])
    keep = scores > min_score
    ref_keep = theirs["scores"] > min_score
    assert int(keep.sum()) == int(ref_keep.sum()) > 0
    ref_boxes, ref_scores, ref_labels = (theirs[k][ref_keep] for k in ("boxes", "scores", "labels"))
    for box, score, label in zip(boxes[keep], scores[keep], labels[keep]):
        twin = (ref_labels == label) & ((ref_scores - score).abs() < 1e-4) & \
               ((ref_boxes - box).abs().max(1).values < 1e-2)
        assert bool(twin.any()), (box, score, label)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip(checkpoint, val_images, tmp_path, fmt):
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    assert tool("export").main([checkpoint, "--format", fmt, "--out", str(out)]) == 0
    with open(tmp_path / "model.classes.json") as f:
        assert json.load(f) == ["circle", "square", "triangle", "hexagon", "star"]
    folder, names = val_images
    model = detkit.load_model(checkpoint, "cpu")
    for name in names[:2]:
        image = detkit.api.to_tensor(os.path.join(folder, name))
        with torch.no_grad():
            reference = model([image])[0]
        if fmt == "onnx":
            import onnxruntime as ort
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            exported = session.run(None, {"image": image.numpy()})
        else:
            with torch.no_grad():
                exported = [t.numpy() for t in torch.jit.load(str(out))(image)]
        same_detections(exported, reference)


def test_errors_are_one_line_not_a_traceback(checkpoint, tmp_path):
    result = run_tool("eval.py", str(tmp_path / "missing.pth"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'missing.pth'}"
    result = run_tool("train.py", "--set", "solver.lrr=1", "--work-dir", str(tmp_path / "w"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "unknown config key 'solver.lrr'" in result.stderr
    result = run_tool("infer.py", checkpoint, str(tmp_path / "nothing.jpg"), "--out", str(tmp_path / "o"))
    assert result.returncode == 1 and "input not found" in result.stderr and "Traceback" not in result.stderr
    bad_config = tmp_path / "bad.py"
    bad_config.write_text("config = undefined_name\n")
    result = run_tool("train.py", str(bad_config))
    assert result.returncode == 1 and "bad.py, line 1: NameError" in result.stderr


@pytest.fixture(scope="module")
def mask_checkpoint(tmp_path_factory, shapes_root):
    """One short epoch of a tiny Mask R-CNN: enough for outputs of every kind."""
    from detkit.config import load_config
    from detkit.engine import train

    config = load_config(os.path.join(REPO, "configs", "maskrcnn_shapes.py"), [
        f"data.root={shapes_root}", "data.shapes.num_train=8", "data.shapes.num_val=2", "data.shapes.image_size=96",
        "data.min_size=[96]", "data.max_size=96", "model.options.min_size=96", "model.options.max_size=96",
        "data.batch_size=4", "data.num_workers=0", "schedule.epochs=1", "eval.vis_images=1",
        "model.options.score_thresh=0.0"])
    work_dir = str(tmp_path_factory.mktemp("maskrcnn"))
    train(config, work_dir, progress=False)
    return os.path.join(work_dir, "last.pth")


def test_mask_rcnn_checkpoint_through_detect_eval_and_infer(mask_checkpoint, tmp_path, capsys):
    image = torch.rand(3, 96, 96)
    (result,) = detkit.detect(image, mask_checkpoint, score_threshold=0.0)
    assert len(result["scores"]) > 0
    assert result["masks"].shape == (len(result["scores"]), 1, 96, 96)
    assert tool("eval").main([mask_checkpoint, "--out", str(tmp_path / "eval")]) == 0
    assert "segm" in capsys.readouterr().out
    with open(tmp_path / "eval" / "results.json") as f:
        assert "segmentation" in json.load(f)[0]
    cv2.imwrite(str(tmp_path / "a.png"), (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert tool("infer").main([mask_checkpoint, str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                               "--score-threshold", "0.0"]) == 0
    with open(tmp_path / "out" / "detections.json") as f:
        detection = json.load(f)[0]["detections"][0]
    assert detection["mask"]["size"] == [96, 96] and isinstance(detection["mask"]["counts"], str)
