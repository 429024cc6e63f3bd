"""A small SSD trained from scratch must overfit a handful of Shapes images:
the loss falls and every object is found (IoU >= 0.5, right label)."""
import torch

from detkit import models, ops
from detkit.data import CocoDetection, shapes
from detkit.data import transforms as T


def recall_at_50(detections, targets) -> float:
    found = total = 0
    for det, target in zip(detections, targets):
        for box, label in zip(target["boxes"], target["labels"]):
            total += 1
            same = det["labels"] == label
            found += bool(same.any() and ops.box_iou(box[None], det["boxes"][same]).max() >= 0.5)
    return found / total


def test_small_ssd_overfits_a_few_shapes_images(tmp_path):
    torch.manual_seed(0)
    paths = shapes.generate(tmp_path, num_train=4, num_val=0, image_size=128, seed=0)
    dataset = CocoDetection(paths.image_root, paths.coco_train, transforms=T.ToTensor())
    images, targets = zip(*(dataset[i] for i in range(len(dataset))))
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    model = models.build("ssd300_resnet18_small", num_classes=len(paths.classes) + 1, size=128, score_thresh=0.3)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    history = []
    for _ in range(80):
        loss = sum(model(list(images), targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    assert sum(history[-10:]) < sum(history[:10]) / 5, history
    with torch.no_grad():
        detections = model.eval()(list(images))
    assert recall_at_50(detections, targets) == 1.0
