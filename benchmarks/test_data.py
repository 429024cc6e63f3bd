"""detkit's data path against its peers, one stream, 1 thread.

    pytest benchmarks/test_data.py --benchmark-only [-k augmentation]

1. SSD training augmentation (photometric distort, zoom out, min-IoU crop,
   flip, resize to 300x300, to float) on 200 480x640 Shapes images, one
   stream: detkit.data.transforms.ssd_train against the same pipeline in
   torchvision.transforms.v2 (RandomPhotometricDistort, RandomZoomOut,
   RandomIoUCrop, SanitizeBoundingBoxes, RandomHorizontalFlip, Resize,
   ToDtype). Images are decoded beforehand; one timed call augments all 200.
   Both are random, so the check is on invariants: every output is 3x300x300
   and keeps boxes inside the image with their labels.
2. Loading a 5,000-image COCO annotation JSON: detkit's CocoDetection against
   pycocotools' COCO(); the check is on the number of images and annotations.
"""
from __future__ import annotations

import contextlib
import io
import json

import cv2
import pytest
import torch

from benchmarks.peers import Case
from detkit.data import CocoDetection, shapes
from detkit.data import transforms as T
from detkit.data.synthetic import synthetic_coco

THREADS = 1
MEAN_FILL = (124, 116, 104)
AUGMENTED_IMAGES = 200


def torchvision_ssd_pipeline():
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=list(MEAN_FILL)),
        v2.RandomIoUCrop(),
        v2.SanitizeBoundingBoxes(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((300, 300)),
        v2.ToDtype(torch.float32, scale=True),
    ])


def as_torchvision_sample(image, target):
    from torchvision import tv_tensors

    h, w = image.shape[:2]
    return (tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
            {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(target["boxes"]), format="XYXY", canvas_size=(h, w)),
             "labels": torch.from_numpy(target["labels"])})


def valid(image, boxes, labels) -> bool:
    """Output invariants; boxes may overshoot the border by float32 rounding (torchvision's do)."""
    return (tuple(image.shape) == (3, 300, 300) and image.dtype == torch.float32 and len(boxes) == len(labels)
            and bool((boxes >= -1e-3).all() and (boxes <= 300 + 1e-3).all()))


def all_valid(*outputs: list) -> bool:
    return all(valid(image, target["boxes"], target["labels"]) for samples in outputs for image, target in samples)


@pytest.fixture(autouse=True, scope="module")
def threads():
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(THREADS)
    cv2.setNumThreads(THREADS)
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


@pytest.fixture(scope="module")
def augmentation(tmp_path_factory) -> Case:
    paths = shapes.generate(tmp_path_factory.mktemp("shapes"), num_train=AUGMENTED_IMAGES, num_val=0,
                            image_size=(480, 640), seed=0)
    dataset = CocoDetection(paths.image_root, paths.coco_train)
    raw = [dataset[i] for i in range(len(dataset))]
    tv_samples = [as_torchvision_sample(image, target) for image, target in raw]
    ours, theirs = T.ssd_train(300, fill=MEAN_FILL), torchvision_ssd_pipeline()
    torch.manual_seed(0)
    return Case(f"SSD augmentation, {AUGMENTED_IMAGES} images 480x640 -> 300x300",
                lambda: [ours(*sample) for sample in raw],
                {"torchvision.transforms.v2": lambda: [theirs(*sample) for sample in tv_samples]},
                all_valid)


@pytest.fixture(scope="module")
def annotation_loading(tmp_path_factory) -> Case:
    from pycocotools.coco import COCO

    num_images = 5000
    gt, _ = synthetic_coco(num_images=num_images, num_categories=80, dets_per_image=0, seed=0)
    root = tmp_path_factory.mktemp("coco")
    path = root / "instances.json"
    path.write_text(json.dumps(gt))

    def load_pycocotools():
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))

    def same_counts(dataset, coco) -> bool:
        return (len(dataset) == len(coco.imgs)
                and sum(len(v) for v in dataset._annotations.values()) == len(coco.anns))

    return Case(f"load a {num_images:,}-image COCO JSON", lambda: CocoDetection(root, path),
                {"pycocotools": load_pycocotools}, same_counts)


@pytest.mark.parametrize("side", ["detkit", "torchvision.transforms.v2"])
def test_ssd_augmentation(peer_benchmark, augmentation: Case, side: str):
    peer_benchmark(augmentation, side)


@pytest.mark.parametrize("side", ["detkit", "pycocotools"])
def test_annotation_loading(peer_benchmark, annotation_loading: Case, side: str):
    peer_benchmark(annotation_loading, side)
