"""R-CNN and Fast R-CNN on external proposals: the warped-region features,
where proposals come from, the paper's sampling thresholds, and that both
overfit a few Shapes images."""
import pytest
import torch

from detkit import models
from detkit.data import CocoDetection, shapes
from detkit.data import transforms as T
from detkit.data.proposals import compute_proposals
from detkit.modeling.proposal_rcnn import WarpedRegionFeatures
from detkit.modeling.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from tests.helpers import fit
from tests.modeling.test_learns import recall_at_50

SMALL = {"width": 0.25, "min_size": 128, "max_size": 128}


class Probe(torch.nn.Module):
    """A 'CNN body' that returns its input, so the crops themselves can be inspected."""

    def forward(self, x):
        return {"c4": x}


def test_warp_keeps_the_papers_context_around_the_box():
    """A box warped to crop_size keeps `context` px of surroundings on every side:
    pixels inside the box read its colour, the rim reads the outside."""
    image = torch.zeros(1, 1, 100, 100)
    image[0, 0, 20:60, 30:50] = 1.0  # the box (x1, y1, x2, y2) = (30, 20, 50, 60)
    warp = WarpedRegionFeatures(Probe(), "c4", crop_size=32, context=4, pool_size=32)
    crop = warp({"image": image}, [torch.tensor([[30.0, 20.0, 50.0, 60.0]])], [(100, 100)])[0, 0]
    assert crop.shape == (32, 32)
    assert torch.all(crop[5:27, 5:27] > 0.99)  # the box fills the crop inside the 4 px rim
    assert torch.all(crop[:3, :] < 0.01) and torch.all(crop[:, -3:] < 0.01)  # the rim is context


def test_warp_reads_the_mean_outside_the_image_and_handles_no_boxes():
    image = torch.ones(1, 3, 40, 40)  # normalised inputs: 0 is the mean
    warp = WarpedRegionFeatures(Probe(), "c4", crop_size=32, context=0, pool_size=32)
    crop = warp({"image": image}, [torch.tensor([[20.0, 20.0, 60.0, 60.0]])], [(40, 40)])[0]
    assert torch.all(crop[:, :12, :12] > 0.99) and torch.all(crop[:, 20:, 20:] == 0)
    assert warp({"image": image}, [torch.zeros(0, 4)], [(40, 40)]).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="context must be in"):
        WarpedRegionFeatures(Probe(), "c4", crop_size=32, context=16)


def heads(**kwargs) -> RoIHeads:
    return RoIHeads(None, TwoMLPHead(4, 8), FastRCNNPredictor(8, 3), batch_size_per_image=100,
                    positive_fraction=1.0, **kwargs)


def test_fast_rcnn_background_starts_at_bg_iou_low():
    gt = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}
    proposals = torch.tensor([[0.0, 0.0, 10.0, 4.0],     # IoU 0.4: background
                              [0.0, 0.0, 10.0, 0.5],     # IoU 0.05: ignored from 0.1
                              [50.0, 50.0, 60.0, 60.0]])  # IoU 0: ignored from 0.1
    for low, expected in ((0.0, 3), (0.1, 1)):
        _, labels, _, _, _ = heads(bg_iou_low=low).sample_proposals([proposals], [gt])
        assert int((labels[0] == 0).sum()) == expected


def test_rcnn_regresses_only_from_reg_iou_thresh():
    gt = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}
    proposals = torch.tensor([[0.0, 0.0, 10.0, 5.5],   # IoU 0.55: foreground, not regressed from 0.6
                              [0.0, 0.0, 10.0, 8.0]])  # IoU 0.8: both
    boxes, labels, _, _, regress = heads(reg_iou_thresh=0.6).sample_proposals([proposals], [gt])
    by_height = {round(float(b[3] - b[1]), 1): (int(l), bool(r)) for b, l, r in zip(boxes[0], labels[0], regress[0])}
    assert by_height == {5.5: (2, False), 8.0: (2, True), 10.0: (2, True)}  # 10.0: the GT box itself


@pytest.mark.parametrize("name", ["fastrcnn_resnet18_c4", "rcnn_resnet18_c4"])
def test_proposals_come_from_the_argument_the_targets_or_selective_search(name, monkeypatch):
    torch.manual_seed(0)
    model = models.build(name, num_classes=3, score_thresh=0.0, **SMALL)
    calls = []
    real = model.proposer.forward
    monkeypatch.setattr(model.proposer, "forward", lambda images: calls.append(len(images)) or real(images))
    image = torch.rand(3, 96, 128)
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    model.train()
    assert set(model([image], [{**target, "proposals": torch.tensor([[8.0, 8.0, 40.0, 40.0]])}])) == {
        "loss_classifier", "loss_box_reg"}
    assert calls == []  # the dataset's proposals were used
    model([image], [target])
    assert calls == [1]  # none given: selective search
    model.eval()
    with torch.no_grad():
        given = model([image], proposals=[torch.tensor([[10.0, 10.0, 40.0, 50.0]])])[0]
        assert calls == [1] and len(given["boxes"]) <= 2  # one proposal: at most one box per class
        assert model([image], proposals=[torch.zeros(0, 4)])[0]["boxes"].shape == (0, 4)
        model([image])
    assert calls == [1, 1]
    with pytest.raises(ValueError, match="got 2 proposal sets for 1 images"):
        model([image], proposals=[torch.zeros(0, 4)] * 2)
    with pytest.raises(ValueError, match=r"proposals\[0\] must be a Tensor\[P, 4\]"):
        model([image], proposals=[torch.zeros(3)])


@pytest.mark.parametrize("name, steps", [("fastrcnn_resnet18_c4", 60), ("rcnn_resnet18_c4", 60)])
def test_overfits_a_few_shapes_images_on_selective_search_proposals(name, steps, tmp_path):
    """Trained on the dataset's cached selective search proposals (as a config
    trains), evaluated on the model's own: every object found."""
    torch.manual_seed(0)
    paths = shapes.generate(tmp_path, num_train=4, num_val=0, image_size=128, seed=0)
    plain = CocoDetection(paths.image_root, paths.coco_train)
    proposals = compute_proposals(plain, tmp_path / "proposals.npz", progress=False)
    dataset = CocoDetection(paths.image_root, paths.coco_train, transforms=T.ToTensor(), proposals=proposals)
    images, targets = zip(*(dataset[i] for i in range(len(dataset))))
    targets = [{k: t[k] for k in ("boxes", "labels", "proposals")} for t in targets]
    options = {"crop_size": 64} if name.startswith("rcnn") else {}
    model = models.build(name, num_classes=len(paths.classes) + 1, **SMALL, **options)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = fit(model, images, targets, optimizer, steps)
    assert sum(history[-10:]) < sum(history[:10]) / 2, history
    with torch.no_grad():
        detections = model.eval()(list(images))
    confident = [{k: v[d["scores"] > 0.5] for k, v in d.items()} for d in detections]
    assert recall_at_50(confident, targets) == 1.0


@pytest.mark.parametrize("name", ["rcnn_alexnet", "fastrcnn_alexnet", "rcnn_nin", "fastrcnn_nin", "fastrcnn_vgg16",
                                  "rcnn_vgg16"])
def test_textbook_and_vgg_bodies_train_and_detect(name):
    """AlexNet, NiN and VGG-16 as R-CNN / Fast R-CNN feature extractors: a loss
    that backpropagates into the body, then detections in image pixels."""
    torch.manual_seed(0)
    options = {"crop_size": 64} if name.startswith("rcnn") else {}
    model = models.build(name, num_classes=3, width=0.125, min_size=96, max_size=128, score_thresh=0.0, **options)
    image = torch.rand(3, 96, 128)
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2]),
              "proposals": torch.tensor([[12.0, 8.0, 58.0, 72.0], [0.0, 0.0, 40.0, 40.0]])}
    losses = model.train()([image], [target])
    sum(losses.values()).backward()
    body = model.roi_heads.box_roi_pool.body if name.startswith("rcnn") else model.backbone
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in body.parameters())
    with torch.no_grad():
        (detections,) = model.eval()([image], proposals=[target["proposals"]])
    assert len(detections["boxes"]) > 0
    assert (detections["boxes"][:, 2] <= 128).all() and (detections["boxes"][:, 3] <= 96).all()


# --- a resized input: every test above runs at scale 1 ------------------------------------------

# Proposals inside a 96 x 128 image, far enough apart that per-class NMS keeps them all.
SPREAD = torch.tensor([[4.0, 6.0, 30.0, 40.0], [50.0, 10.0, 90.0, 30.0], [96.0, 50.0, 124.0, 92.0],
                       [10.0, 60.0, 44.0, 90.0]])


@pytest.mark.parametrize("name", ["fastrcnn_resnet18_c4", "rcnn_resnet18_c4"])
def test_zero_box_deltas_give_back_the_proposals_in_original_pixels(name):
    """At scale 5/3 (96 px -> 160): with the regressor zeroed each detection is
    its proposal, so the boxes must come back exactly where they went in. A
    model that skips mapping the proposals into the resized image, or maps the
    detections back to the resized size, is off by tens of pixels."""
    torch.manual_seed(0)
    model = models.build(name, num_classes=2, width=0.25, min_size=160, max_size=1000, score_thresh=0.0,
                         **({"crop_size": 64} if name.startswith("rcnn") else {})).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.bbox_pred.weight.zero_()
        model.roi_heads.box_predictor.bbox_pred.bias.zero_()
        (detections,) = model([torch.rand(3, 96, 128)], proposals=[SPREAD])
    assert model.transform.resize(torch.zeros(3, 96, 128)).shape[-2:] == (160, 213)  # setup: really resized
    got = sorted(detections["boxes"].tolist())
    torch.testing.assert_close(torch.tensor(got), torch.tensor(sorted(SPREAD.tolist())), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", ["fastrcnn_resnet18_c4", "rcnn_resnet18_c4"])
def test_a_resized_input_detects_as_an_image_resized_by_hand(name):
    """The model's own 2x upscale of a 96 x 128 image, and the same weights fed a
    copy upscaled by hand (bilinear, as the transform) with doubled proposals at
    scale 1: the same features, so the same detections, halved. Unlike zero
    deltas this also covers where the features are read."""
    torch.manual_seed(0)
    model = models.build(name, num_classes=3, width=0.25, min_size=192, max_size=256, score_thresh=0.0,
                         **({"crop_size": 64} if name.startswith("rcnn") else {})).eval()
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(1))
    by_hand = torch.nn.functional.interpolate(image[None], scale_factor=2.0, mode="bilinear", align_corners=False)[0]
    with torch.no_grad():
        (ours,) = model([image], proposals=[SPREAD])
        (reference,) = model([by_hand], proposals=[SPREAD * 2])
    assert len(reference["boxes"]) >= 4, "setup: too few detections to compare"
    assert torch.equal(ours["labels"], reference["labels"])
    torch.testing.assert_close(ours["boxes"], reference["boxes"] / 2, atol=1e-3, rtol=0)
    torch.testing.assert_close(ours["scores"], reference["scores"], atol=1e-5, rtol=0)
