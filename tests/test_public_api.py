"""The names users import stay where they are (README, docs, torchvision-style
code), whatever moves inside the package; and checkpoints written by the
release before the layout changed still load and give the same detections."""
from __future__ import annotations

import importlib
import json
import os

import pytest
import torch

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "legacy")

PUBLIC = {
    "detkit": ["detect", "load_model", "clear_model_cache", "ops", "__version__"],
    "detkit.models": ["build", "list_models", "model_options", "pretrained_models", "load_weights", "optimize",
                      "RUNTIMES", "SSDOptions", "RCNNOptions", "ProposalOptions", "TinySSDOptions",
                      "ModelOptionError", "ssd300_vgg16", "fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn",
                      "tinyssd", "fasterrcnn_vgg16"],
    "detkit.runtimes": ["optimize", "RUNTIMES", "check_runtime", "fold_batchnorms", "BFloat16Part",
                        "has_bfloat16_hardware"],
    "detkit.ops": ["box_iou", "nms", "batched_nms", "roi_align", "AnchorGenerator", "DefaultBoxGenerator"],
    "detkit.data": ["CocoDetection", "VOCDetection", "VOC_CLASSES", "read_image", "image_files", "collate",
                    "shapes", "transforms", "proposals", "AnnotationError"],
    "detkit.evaluation": ["COCOEvaluator", "VOCEvaluator", "evaluate_coco", "voc_ap", "ap_table", "save_metrics"],
    "detkit.inference": ["run_inference", "detect_files", "expand_inputs", "image_files"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import(module):
    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(imported, name)]
    assert missing == []
    declared = getattr(imported, "__all__", None)
    if declared is not None:  # every name a module declares exists
        assert [name for name in declared if not hasattr(imported, name)] == []


def test_every_zoo_name_builds_through_build_and_its_builder_function():
    from detkit import models

    # torchvision-style: the builder functions are attributes of detkit.models, and build() finds the same ones
    names = models.list_models()
    assert {"ssd300_vgg16", "fasterrcnn_resnet50_fpn", "rcnn_alexnet", "fastrcnn_vgg16", "tinyssd"} <= set(names)
    for name in ("ssd300_vgg16", "fasterrcnn_resnet50_fpn", "tinyssd"):
        assert getattr(models, name).__name__ == name


def test_optimize_is_one_function_everywhere():
    import detkit.models
    import detkit.runtimes

    assert detkit.models.optimize is detkit.runtimes.optimize


@pytest.mark.parametrize("name", ["ssd", "maskrcnn"])
def test_checkpoints_of_the_old_layout_load_and_detect_the_same(name):
    """The fixtures were written by tools/train.py of the commit before the
    package layout changed (a872b71), with detect()'s output on a fixed image
    recorded by that code (tests/fixtures/legacy/README.md says how)."""
    import detkit

    checkpoint = os.path.join(FIXTURES, f"{name}.pth")
    with open(os.path.join(FIXTURES, f"{name}_detections.json")) as f:
        recorded = json.load(f)
    image = torch.load(os.path.join(FIXTURES, "image.pt"), weights_only=True)
    detkit.clear_model_cache()
    (result,) = detkit.detect([image], checkpoint, score_threshold=0.0)
    assert result["class_names"] == recorded["class_names"]
    for key in ("boxes", "scores", "labels"):
        assert torch.allclose(torch.as_tensor(result[key]).float(), torch.tensor(recorded[key]).float(),
                              atol=1e-4, rtol=1e-4), key
    if "masks" in recorded:
        masks = torch.as_tensor(result["masks"]).float()
        assert torch.allclose(masks.flatten(1).sum(1), torch.tensor(recorded["masks"]).float(), atol=1e-2)
    model = detkit.load_model(checkpoint, runtime="fused")  # the runtimes take it too
    assert model.classes == recorded["classes"]
