"""CUDA paths: ops on the GPU against the CPU kernels, models on the GPU
against the CPU, and training with AMP, resume and detect() on the GPU.
Skipped without a CUDA device (CI has none); run on a GPU machine with
`python -m pytest tests/cuda -q`."""
import os

import pytest
import torch

import detkit
from detkit import models, ops
from detkit.config import apply_overrides
from detkit.engine import load_checkpoint, train
from detkit.data.synthetic import clustered_boxes
from tests.helpers import tiny_ssd_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_box_ops_on_cuda_match_the_cpu_kernels():
    torch.manual_seed(0)
    boxes, scores = clustered_boxes(3000, seed=1)
    labels = torch.randint(0, 20, (3000,))
    gpu = boxes.cuda(), scores.cuda(), labels.cuda()
    assert torch.equal(ops.nms(*gpu[:2], 0.5).cpu(), ops.nms(boxes, scores, 0.5))
    assert torch.equal(ops.batched_nms(*gpu, 0.5).cpu(), ops.batched_nms(boxes, scores, labels, 0.5))
    assert torch.allclose(ops.box_iou(gpu[0][:500], gpu[0][:300]).cpu(), ops.box_iou(boxes[:500], boxes[:300]),
                          atol=1e-6)
    assert torch.allclose(ops.generalized_box_iou(gpu[0][:200], gpu[0][:100]).cpu(),
                          ops.generalized_box_iou(boxes[:200], boxes[:100]), atol=1e-6)
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = torch.randn(3000, 4) * 0.5
    assert torch.allclose(coder.decode_single(deltas.cuda(), gpu[0]).cpu(), coder.decode_single(deltas, boxes),
                          atol=1e-3)
    matcher = ops.Matcher(0.7, 0.3, allow_low_quality_matches=True)
    quality = ops.box_iou(boxes[:20], boxes)
    assert torch.equal(matcher(quality.cuda()).cpu(), matcher(quality))


@pytest.mark.parametrize("name, size", [("ssd300_vgg16", (300, 400)), ("fasterrcnn_resnet18_fpn_small", (256, 256)),
                                        ("maskrcnn_resnet18_fpn_small", (256, 256))])
def test_models_on_cuda_match_the_cpu(name, size):
    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False  # full float32 convolutions, comparable with the CPU
    model = models.build(name, num_classes=6).eval()
    image = torch.rand(3, *size)
    with torch.no_grad():
        cpu = model([image])[0]
        gpu = {k: v.cpu() for k, v in model.cuda()([image.cuda()])[0].items()}
    assert_twins(gpu, cpu)


def assert_twins(gpu, cpu, top=10):
    """Each of the GPU's `top` best detections has a CPU twin (label, score,
    box). A random model's scores nearly tie, so order may differ by noise."""
    assert len(gpu["scores"]) > 0 and abs(len(gpu["scores"]) - len(cpu["scores"])) <= 2
    for box, score, label in zip(gpu["boxes"][:top], gpu["scores"][:top], gpu["labels"][:top]):
        twin = (cpu["labels"] == label) & ((cpu["scores"] - score).abs() < 1e-3) & \
               ((cpu["boxes"] - box).abs().max(1).values < 0.5)
        assert bool(twin.any()), (box, score, label)


def test_training_with_amp_resume_and_detect_on_cuda(tmp_path):
    torch.backends.cudnn.allow_tf32 = False
    config = apply_overrides(tiny_ssd_config(str(tmp_path / "shapes")), ["solver.amp=True", "data.num_workers=0"])
    state = train(config, str(tmp_path / "run"), device="cuda", progress=False)
    assert state.epoch == 2
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pth")  # mapped to the CPU
    assert all(not v.is_cuda for v in checkpoint["model"].values())
    os.replace(tmp_path / "run" / "epoch_0001.pth", tmp_path / "run" / "last.pth")
    resumed = train(config, str(tmp_path / "run"), resume=True, device="cuda", progress=False)
    assert resumed.epoch == 2 and resumed.iteration == state.iteration
    image = torch.rand(3, 96, 96)
    on_gpu = detkit.detect(image, str(tmp_path / "run" / "last.pth"), score_threshold=0.0, device="cuda")[0]
    assert on_gpu["boxes"].is_cuda
    on_cpu = detkit.detect(image, str(tmp_path / "run" / "last.pth"), score_threshold=0.0, device="cpu")[0]
    assert_twins({k: v.cpu() for k, v in on_gpu.items() if k != "class_names"}, on_cpu, top=5)


@pytest.mark.parametrize("name", ["fasterrcnn_resnet18_fpn_small", "maskrcnn_resnet18_fpn_small", "ssd300_vgg16_small"])
def test_a_mixed_precision_training_step(name):
    torch.manual_seed(0)
    model = models.build(name, num_classes=3).cuda().train()
    images = [torch.rand(3, 256, 256, device="cuda") for _ in range(2)]
    masks = torch.zeros(2, 256, 256, dtype=torch.uint8, device="cuda")
    masks[0, 20:120, 30:90] = 1
    masks[1, 100:200, 150:250] = 1
    targets = [{"boxes": torch.tensor([[30.0, 20, 90, 120], [150, 100, 250, 200]], device="cuda"),
                "labels": torch.tensor([1, 2], device="cuda"), "masks": masks} for _ in images]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(3):  # the scaler may skip a step that overflows, then lowers its scale
        with torch.autocast("cuda"):
            losses = model(images, targets)
        loss = sum(losses.values())
        assert torch.isfinite(loss), losses
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cuda"):
        detections = model(images)
    assert detections[0]["boxes"].dtype == torch.float32
