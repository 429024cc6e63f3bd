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
from detkit.data import VOCDetection
from detkit.engine import load_checkpoint
from detkit.engine.build import prepare_shapes
from detkit.evaluation import VOCEvaluator
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


def test_eval_on_the_voc_copy_of_the_set(trained, checkpoint, tmp_path, capsys, monkeypatch):
    voc_root = os.path.join(prepare_shapes(trained[0].data).root, "VOCdevkit")
    # Two epochs leave the tiny SSD at mAP 0: add hits, so that the mAPs compared below are not 0 == 0.
    from detkit.engine import report

    monkeypatch.setattr(report, "predict", with_ground_truth_hits(report.predict))
    out = tmp_path / "voc"
    assert tool("eval").main([checkpoint, "--data", "voc", "--voc-root", voc_root, "--split", "val",
                              "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out / "metrics.json") as f:
        reported = json.load(f)
    with open(out / "results.json") as f:
        records = json.load(f)
    # The tool's detections, scored here by VOCEvaluator against targets read here.
    classes = detkit.load_model(checkpoint, "cpu").classes
    dataset = VOCDetection(voc_root, image_set="val", keep_difficult=True, classes=classes)
    targets = {image_id: dataset.target(image_id)[0] for image_id in dataset.ids}
    predictions = predictions_from_records(records, dataset.ids)
    evaluator = VOCEvaluator(classes)
    evaluator.update(predictions, targets)
    expected = evaluator.compute()
    assert 0.1 < expected.mAP < 0.9
    assert reported["mAP"] == pytest.approx(expected.mAP, abs=1e-9)
    assert reported["per_class"] == pytest.approx(expected.per_class, abs=1e-9)
    assert expected.headline() in printed
    # An image without added hits: its records are the model's own detections (scores halved).
    second = sorted(dataset.ids)[1]
    detected = detkit.detect(os.path.join(voc_root, "VOC2007", "JPEGImages", f"{second}.jpg"), checkpoint,
                             score_threshold=0.0)[0]
    torch.testing.assert_close(predictions[second]["scores"], detected["scores"].double() / 2, rtol=0, atol=1e-5)
    torch.testing.assert_close(predictions[second]["boxes"], detected["boxes"].double(), rtol=0, atol=1e-3)


def with_ground_truth_hits(predict):
    """predict() with the model's scores halved and, in every second image (in
    id order), its ground truth boxes shifted by 1 px and scored 0.9 down to
    0.5, the first with the wrong class: ranked first, these true and false
    positives give an mAP far from 0 (the model's own) and from 1."""
    def predict_with_hits(*args, **kwargs):
        predictions, targets = predict(*args, **kwargs)
        for prediction in predictions.values():
            prediction["scores"] = prediction["scores"] / 2
        for image_id in sorted(predictions)[::2]:
            gt = targets[image_id]
            labels = gt["labels"].clone()
            labels[:1] = labels[:1] % 5 + 1  # five Shapes classes
            hits = {"boxes": gt["boxes"] + 1.0, "scores": torch.linspace(0.9, 0.5, len(labels)), "labels": labels}
            predictions[image_id] = {key: torch.cat([hits[key], value.to(hits[key].dtype)])
                                     for key, value in predictions[image_id].items()}
        return predictions, targets

    return predict_with_hits


def predictions_from_records(records, image_ids):
    """{image_id: {"boxes" xyxy, "scores", "labels"}} from result records
    (bbox xywh; VOC's category_id is the label), in record order."""
    rows = {image_id: [] for image_id in image_ids}
    for record in records:
        rows[record["image_id"]].append(record)
    predictions = {}
    for image_id, mine in rows.items():
        xywh = torch.tensor([r["bbox"] for r in mine], dtype=torch.float64).reshape(-1, 4)
        predictions[image_id] = {
            "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
            "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
            "labels": torch.tensor([r["category_id"] for r in mine], dtype=torch.int64),
        }
    return predictions


def write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()


def copied_images(folder, names, out):
    """A new folder `out` holding the named images of `folder`, re-encoded by OpenCV."""
    out.mkdir()
    for name in names:
        cv2.imwrite(str(out / name), cv2.imread(os.path.join(folder, name)))
    return out


def test_infer_on_an_image_a_folder_and_a_video(checkpoint, val_images, tmp_path):
    folder, names = val_images
    inputs = copied_images(folder, names[:2], tmp_path / "inputs")
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


def match_one_to_one(exported, reference, min_score=0.05):
    """Pairs every exported detection above min_score with its own PyTorch
    twin: the same label, a score within 1e-4 and a box within 0.01 px.
    Greedy in exported score order, each twin used once, the closest box
    first (the order may differ between near-equal scores). Both sides must
    have the same count above min_score. Returns [(exported index, reference
    index)]."""
    boxes, scores, labels = (torch.as_tensor(np.asarray(v)) for v in exported[:3])
    ref_boxes, ref_scores, ref_labels = (reference[k] for k in ("boxes", "scores", "labels"))
    mine = [int(i) for i in torch.argsort(scores, descending=True) if scores[i] > min_score]
    assert len(mine) == int((ref_scores > min_score).sum()) > 0
    free = ref_scores > min_score
    pairs = []
    for i in mine:
        box_error = (ref_boxes - boxes[i]).abs().max(1).values
        twin = free & (ref_labels == labels[i]) & ((ref_scores - scores[i]).abs() < 1e-4) & (box_error < 1e-2)
        assert bool(twin.any()), (boxes[i], scores[i], labels[i])
        j = int(torch.where(twin, box_error, torch.inf).argmin())
        free[j] = False
        pairs.append((i, j))
    return pairs


def assert_same_masks(exported_masks, reference_masks, pairs):
    """Soft masks [N, 1, H, W] of each pair agree to 1e-3; the binary masks
    (> 0.5) overlap with IoU >= 0.95."""
    exported_masks = torch.as_tensor(np.asarray(exported_masks))
    for i, j in pairs:
        mine, theirs = exported_masks[i], reference_masks[j]
        assert mine.shape == theirs.shape
        assert float((mine - theirs).abs().max()) < 1e-3
        union = ((mine > 0.5) | (theirs > 0.5)).sum()
        if union:
            assert float(((mine > 0.5) & (theirs > 0.5)).sum() / union) >= 0.95


def run_exported(path, fmt, image):
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # the pasted masks' loop warns about its own shape hints
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        return [t.numpy() for t in torch.jit.load(str(path))(image)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("model_kind", ["ssd", "maskrcnn"])
def test_export_round_trip(request, model_kind, fmt, tmp_path):
    checkpoint = request.getfixturevalue("checkpoint" if model_kind == "ssd" else "mask_checkpoint")
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    assert tool("export").main([checkpoint, "--format", fmt, "--out", str(out)]) == 0
    model = detkit.load_model(checkpoint, "cpu")
    with open(tmp_path / "model.classes.json") as f:
        assert json.load(f) == model.classes == ["circle", "square", "triangle", "hexagon", "star"]
    folder = prepare_shapes(model.config.data).image_root
    for name in sorted(os.listdir(folder))[:2]:
        image = detkit.api.to_tensor(os.path.join(folder, name))
        with torch.no_grad():
            reference = model([image])[0]
        exported = run_exported(out, fmt, image)
        assert len(exported) == (4 if model_kind == "maskrcnn" else 3)
        pairs = match_one_to_one(exported, reference)
        if model_kind == "maskrcnn":
            assert_same_masks(exported[3], reference["masks"], pairs)


@pytest.mark.parametrize("model_kind", ["ssd", "maskrcnn"])
def test_export_dynamic_takes_any_image_size(request, model_kind, tmp_path):
    """--dynamic: one uint8 graph; two sizes of one image give the checkpoint's own detections (and masks)."""
    import cv2
    import onnxruntime as ort

    checkpoint = request.getfixturevalue("checkpoint" if model_kind == "ssd" else "mask_checkpoint")
    out = tmp_path / "any.onnx"
    assert tool("export").main([checkpoint, "--dynamic", "--out", str(out)]) == 0
    model = detkit.load_model(checkpoint, "cpu")
    folder = prepare_shapes(model.config.data).image_root
    image = detkit.data.read_image(os.path.join(folder, sorted(os.listdir(folder))[0]))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for height, width in ((160, 224), (90, 70)):
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        with torch.no_grad():
            reference = model([torch.from_numpy(resized).permute(2, 0, 1).float().div(255)])[0]
        boxes, scores, labels, *masks = session.run(None, {"image": resized})
        assert labels.tolist() == reference["labels"].tolist() and len(labels) > 0
        assert np.abs(boxes - reference["boxes"].numpy()).max() < 1e-3
        assert np.abs(scores - reference["scores"].numpy()).max() < 1e-4
        if model_kind == "maskrcnn":
            assert np.abs(masks[0] - reference["masks"].numpy()).max() < 1e-4


@pytest.mark.parametrize("args, message", [
    (["--dynamic", "--format", "torchscript"], "--dynamic writes ONNX for any image size"),
    (["--dynamic", "--size", "64", "64"], "--dynamic writes ONNX for any image size"),
    (["--input", "float"], "--input is --dynamic's"),
])
def test_export_refuses_options_that_do_not_go_together(checkpoint, args, message, capsys):
    with pytest.raises(SystemExit):
        tool("export").main([checkpoint, *args])
    assert message in capsys.readouterr().err


def test_errors_are_one_line_not_a_traceback(checkpoint, tmp_path, capsys):
    result = run_tool("eval.py", str(tmp_path / "missing.pth"))  # one real command line, end to end
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'missing.pth'}"

    def run_in_process(name: str, *argv) -> tuple[int, str]:
        """What `python tools/<name>.py argv` exits with and prints on stderr, without starting a process."""
        module = tool(name)
        code = module.fail_cleanly(lambda: module.main(list(argv)))
        return code, capsys.readouterr().err

    code, err = run_in_process("train", "--set", "solver.lrr=1", "--work-dir", str(tmp_path / "w"))
    assert code == 1 and "Traceback" not in err and "unknown config key 'solver.lrr'" in err
    code, err = run_in_process("infer", checkpoint, str(tmp_path / "nothing.jpg"), "--out", str(tmp_path / "o"))
    assert code == 1 and err.startswith("error: ") and "input not found" in err
    bad_config = tmp_path / "bad.py"
    bad_config.write_text("config = undefined_name\n")
    code, err = run_in_process("train", str(bad_config))
    assert code == 1 and err.startswith("error: ") and "bad.py, line 1: NameError" in err


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


@pytest.mark.parametrize("name", ["rcnn_shapes", "fastrcnn_shapes", "fasterrcnn_c4_shapes", "tinyssd_shapes"])
def test_lineage_configs_train_evaluate_infer_and_detect(name, shapes_root, tmp_path, capsys):
    """R-CNN, Fast R-CNN (proposals from the data in training, their own selective
    search after), single-map Faster R-CNN and TinySSD through every entry point."""
    from detkit.config import load_config
    from detkit.engine import train

    config = load_config(os.path.join(REPO, "configs", f"{name}.py"), [
        f"data.root={shapes_root}", "data.shapes.num_train=8", "data.shapes.num_val=2", "data.batch_size=4",
        "schedule.epochs=1", "schedule.warmup_iters=1", "processes=1"])
    train(config, str(tmp_path / "run"), progress=False)
    checkpoint = str(tmp_path / "run" / "last.pth")
    image = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
    (result,) = detkit.detect(image, checkpoint, score_threshold=0.0)
    assert set(result) >= {"boxes", "scores", "labels"} and result["boxes"].shape[-1] == 4
    assert tool("eval").main([checkpoint, "--out", str(tmp_path / "eval")]) == 0
    assert "AP50" in capsys.readouterr().out
    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert tool("infer").main([checkpoint, str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 0
    assert os.path.exists(tmp_path / "out" / "detections.json")


def infer_records(checkpoint, inputs, out, *options):
    assert tool("infer").main([checkpoint, *inputs, "--out", str(out), "--device", "cpu", "--no-progress",
                               "--score-threshold", "0.05", *options]) == 0
    with open(out / "detections.json") as f:
        return json.load(f)


def assert_same_records(got, expected, threshold=0.05):
    """The same files and frames with the same detections, up to rounding and in
    any order (rounding may swap near-equal scores): one-to-one, the same label
    and class name, boxes within 0.01 px, scores within 1e-4; only detections
    within 1e-4 of the score threshold may be missing on one side."""
    assert [(r["file"], r.get("frame")) for r in got] == [(r["file"], r.get("frame")) for r in expected]
    assert sum(len(r["detections"]) for r in expected) > 0
    for a, b in zip(got, expected):
        for one, other in ((a["detections"], b["detections"]), (b["detections"], a["detections"])):
            free = list(other)
            for d in one:
                same = [o for o in free if (o["label"], o["class_name"]) == (d["label"], d["class_name"])
                        and np.abs(np.subtract(o["box"], d["box"])).max() <= 0.01 + 1e-9
                        and abs(o["score"] - d["score"]) <= 1e-4]
                if same:
                    free.remove(same[0])
                else:
                    assert abs(d["score"] - threshold) <= 1e-4, (a["file"], d)


def test_infer_with_the_fused_runtime_writes_the_detections_of_eager(checkpoint, val_images, tmp_path):
    folder, names = val_images
    eager = infer_records(checkpoint, [folder], tmp_path / "eager")
    fused = infer_records(checkpoint, [folder], tmp_path / "fused", "--runtime", "fused")
    assert len(eager) == len(names)
    assert_same_records(fused, eager)


@pytest.mark.parametrize("runtime", ["bf16", "onnxruntime", "int8"])
def test_infer_with_another_runtime_writes_what_detect_gives_with_it(checkpoint, val_images, tmp_path, runtime,
                                                                      monkeypatch):
    """tools/infer.py --runtime (and --calibration) reaches the runtime: its records are detect()'s with the
    same runtime and calibration images (quantisation is deterministic); agreement with eager is
    tests/runtimes/test_runtimes.py's, on trained models."""
    from detkit.inference import detections_json
    from detkit.runtimes import bf16

    monkeypatch.setattr(bf16, "has_bfloat16_hardware", lambda: True)  # emulated where the CPU lacks it
    if runtime != "bf16":
        pytest.importorskip("onnxruntime")
    if runtime == "int8":  # the same engine on both sides, whichever times faster on this machine
        from detkit.runtimes import int8

        monkeypatch.setattr(int8, "_milliseconds", lambda models, image: {name: len(name) for name in models})
    folder, names = val_images
    calibration = ["--calibration", folder] if runtime == "int8" else []
    # one batch of every image on both sides: reduced-precision rounding may depend on the batch
    records = infer_records(checkpoint, [folder], tmp_path / runtime, "--runtime", runtime, *calibration,
                            "--batch-size", str(len(names)))
    paths = [os.path.join(folder, name) for name in names]
    expected = detkit.detect(paths, checkpoint, score_threshold=0.05, device="cpu", runtime=runtime,
                             calibration=folder if runtime == "int8" else None)
    assert [os.path.basename(r["file"]) for r in records] == names
    assert_same_records(records, [{"file": record["file"], **detections_json(result)}
                                  for record, result in zip(records, expected)])


def test_infer_batched_and_in_background_threads_equals_one_at_a_time(checkpoint, val_images, tmp_path):
    folder, names = val_images
    write_video(tmp_path / "clip.mp4", [cv2.imread(os.path.join(folder, n)) for n in names[:3]])
    inputs = [os.path.join(folder, names[0]), folder, str(tmp_path / "clip.mp4"), os.path.join(folder, names[1])]
    alone = infer_records(checkpoint, inputs, tmp_path / "alone", "--batch-size", "1", "--workers", "0")
    batched = infer_records(checkpoint, inputs, tmp_path / "batched", "--batch-size", "4", "--workers", "2")
    assert len(alone) == len(names) + 5
    assert_same_records(batched, alone)
    # every input drawn, the repeated files under their own names, as one at a time
    assert sorted(os.listdir(tmp_path / "batched")) == sorted(os.listdir(tmp_path / "alone"))
    stem = os.path.splitext(names[0])[0]
    assert {f"{stem}.jpg", f"{stem}_2.jpg", "clip.mp4"} <= set(os.listdir(tmp_path / "batched"))
    for name in os.listdir(tmp_path / "batched"):
        assert os.path.getsize(tmp_path / "batched" / name) > 0


class _Recorder(torch.nn.Module):
    """Stands in for a detector: records each call's image sizes; one detection per image."""

    def __init__(self, fixed_size=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.classes, self.calls = ["thing"], []
        if fixed_size is not None:
            self.transform = type("Transform", (), {"fixed_size": fixed_size})()

    def forward(self, images):
        self.calls.append([tuple(image.shape[-2:]) for image in images])
        return [{"boxes": torch.tensor([[0.0, 0.0, float(image.shape[-1]), float(image.shape[-2])]]),
                 "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64)} for image in images]


def test_folder_batches_take_one_size_unless_the_model_resizes_to_one(tmp_path):
    from detkit.inference import detect_files, expand_inputs

    sizes = [(8, 8), (8, 8), (8, 8), (12, 8), (8, 8)]
    for n, (h, w) in enumerate(sizes):
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.full((h, w, 3), 40 * n, np.uint8))
    files = expand_inputs([str(tmp_path)])
    for workers in (0, 2):
        model = _Recorder()
        results = list(detect_files(model, files, batch_size=2, workers=workers))
        assert [frame.path for frame, _ in results] == files
        assert [r["boxes"][0, 2:].tolist() for _, r in results] == [[w, h] for h, w in sizes]
        assert model.calls == [[(8, 8)] * 2, [(8, 8)], [(12, 8)], [(8, 8)]]
        fixed = _Recorder(fixed_size=(8, 8))
        assert len(list(detect_files(fixed, files, workers=workers))) == 5
        assert [len(call) for call in fixed.calls] == [5]  # batch of 8 by default
        fixed.calls.clear()
        list(detect_files(fixed, files, batch_size=2, workers=workers))
        assert [len(call) for call in fixed.calls] == [2, 2, 1]


def test_infer_names_a_broken_image_and_an_unknown_runtime_in_one_line(checkpoint, val_images, tmp_path):
    folder, names = val_images
    inputs = copied_images(folder, names[:3], tmp_path / "inputs")
    (inputs / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run_tool("infer.py", checkpoint, str(inputs), "--out", str(tmp_path / "o"), "--workers", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "zz_broken.jpg" in result.stderr
    result = run_tool("infer.py", checkpoint, str(inputs), "--out", str(tmp_path / "o"), "--runtime", "turbo")
    from detkit.runtimes import RUNTIMES

    assert result.returncode == 1
    assert result.stderr.strip() == f"error: unknown runtime 'turbo'; available: {', '.join(RUNTIMES)}"


def test_train_tool_runs_the_training_options_and_says_what_they_did(trained, tmp_path):
    """tools/train.py with EMA, solver.amp=auto, TensorBoard and a patience
    that a learning rate too small to learn runs out: the precision line,
    the early stop in the log and the last line, the average in the
    checkpoint, the event files in the work dir."""
    from detkit.engine.precision import training_precision

    config, _ = trained
    config_file = tmp_path / "tiny.py"
    config_file.write_text(f"from detkit.config import Config\nconfig = Config.from_dict({config.to_dict()!r})\n")
    work_dir = tmp_path / "run"
    result = run_tool("train.py", str(config_file), "--work-dir", str(work_dir), "--no-progress", "--set",
                      "schedule.epochs=4", "solver.lr=1e-12", "eval.patience=1", "solver.ema_decay=0.9",
                      "solver.amp=auto", "log.tensorboard=True")
    assert result.returncode == 0, result.stderr[-2000:]
    assert training_precision("auto", torch.device("cpu")).reason in result.stdout
    assert "early stop after epoch 2: AP50 has not improved on 0.0000 for 1 evaluations (eval.patience=1)" \
        in result.stdout
    assert "after 2 epochs of 4, stopped early (eval.patience)" in result.stdout
    last = load_checkpoint(str(work_dir / "last.pth"))
    assert last["epoch"] == 2 and last["ema_updates"] == last["iteration"] and "train_weights" in last
    assert any(name.startswith("events.out.tfevents.") for name in os.listdir(work_dir))
