"""The textbook CNNs (LeNet, AlexNet, NiN): the book's shapes and parameter
counts, their bodies as stride-16 detection backbones aligned as anchors and
RoI pooling assume, and each one learns to tell Shapes crops apart."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detkit.data import shapes
from detkit.data.images import read_image
from detkit.modeling.backbones import AlexNet, LeNet, NiN


def conv(cin: int, cout: int, k: int) -> int:
    return cout * cin * k * k + cout


def fc(n_in: int, n_out: int) -> int:
    return n_out * n_in + n_out


def nin_block(cin: int, cout: int, k: int) -> int:
    return conv(cin, cout, k) + 2 * conv(cout, cout, 1)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the book's architectures ---------------------------------------------------------------------


@pytest.mark.parametrize("in_channels, classes", [(1, 10), (3, 1000)])
def test_parameter_counts_are_the_books(in_channels, classes):
    # The layer lists of d2l.ai's LeNet, AlexNet and NiN, counted by hand. AlexNet's
    # fc input is 256 x 5 x 5: a 224 image is 54 after conv1 (11x11 s4 pad 1), then 26, 12, 5.
    lenet = conv(in_channels, 6, 5) + conv(6, 16, 5) + fc(16 * 5 * 5, 120) + fc(120, 84) + fc(84, classes)
    alexnet = (conv(in_channels, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3)
               + conv(384, 256, 3) + fc(256 * 5 * 5, 4096) + fc(4096, 4096) + fc(4096, classes))
    nin = (nin_block(in_channels, 96, 11) + nin_block(96, 256, 5) + nin_block(256, 384, 3)
           + nin_block(384, classes, 3))
    with torch.device("meta"):  # AlexNet has ~50M parameters: count them without allocating
        assert count(LeNet(classes, in_channels)) == lenet
        assert count(AlexNet(classes, in_channels)) == alexnet
        assert count(NiN(classes, in_channels)) == nin
    if (in_channels, classes) == (1, 10):
        assert lenet == 61_706  # the book's LeNet-5 on Fashion-MNIST


def test_lenet_shapes():
    assert LeNet()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert LeNet(5, in_channels=3, activation="relu")(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="activation"):
        LeNet(activation="tanh")


@pytest.mark.parametrize("cls", [AlexNet, NiN])
def test_classifier_shapes(cls):
    model = cls(num_classes=7, width=0.125).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 224, 224)).shape == (2, 7)
        assert model(torch.rand(2, 3, 67, 67)).shape == (2, 7)  # the small crops trained on below
        assert model.features(torch.rand(1, 3, 224, 224)).shape == (1, model.out_channels["c5"], 12, 12)
    assert cls(width=0.125).out_channels["c5"] < cls(width=0.5).out_channels["c5"]


# --- the detection bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [AlexNet, NiN])
@pytest.mark.parametrize("size", [64, 128, 224, 320])
def test_body_map_is_image_over_stride(cls, size):
    # The anchor generator takes the stride as image size // map size: it must come out 16.
    body = cls(width=0.125).detection_body().eval()
    with torch.no_grad():
        maps = body(torch.rand(2, 3, size, size + 32))
    assert list(maps) == ["c5"]
    assert maps["c5"].shape == (2, body.out_channels["c5"], size // 16, size // 16 + 2)
    assert body.strides == {"c5": 16}
    assert size // maps["c5"].shape[-2] == body.strides["c5"]


def receptive_field(layers: list[tuple[int, int]]) -> int:
    size, jump = 1, 1
    for kernel, stride in layers:
        size, jump = size + (kernel - 1) * jump, jump * stride
    return size


# (kernel, stride) of each layer up to c5, from the book.
ALEXNET_C5 = [(11, 4), (3, 2), (5, 1), (3, 2), (3, 1), (3, 1), (3, 1)]
NIN_C5 = [(11, 4), (3, 2), (5, 1), (3, 2), (3, 1)]


@pytest.mark.parametrize("cls, layers", [(AlexNet, ALEXNET_C5), (NiN, NIN_C5)])
@pytest.mark.parametrize("cell", [7, 8])
def test_body_cell_k_is_centred_on_pixel_16k(cls, layers, cell):
    """RoI pooling at spatial_scale 1/16 and anchors at 16k assume cell k looks
    at pixels centred on 16k. With positive weights and inputs every ReLU
    passes, and a huge value at one pixel wins every max pool it reaches, so
    c5 changes exactly where the pixel is in the cell's receptive field. In
    float64, which runs im2col convolutions: a float32 Winograd kernel could
    leak the rounding of 1e6 into the other outputs of its tile."""
    torch.manual_seed(0)
    body = cls(width=0.125).detection_body().eval().double()
    with torch.no_grad():
        for p in body.parameters():
            if p.dim() > 1:
                p.abs_()
            else:
                p.zero_()  # biases
    half = receptive_field(layers) // 2
    centre = 16 * cell
    columns = [centre - half - 1, centre - half, centre + half, centre + half + 1]  # just out, in, in, out
    images = (torch.rand(1, 3, 256, 256, dtype=torch.float64) + 0.5).repeat(1 + len(columns), 1, 1, 1)
    for i, x in enumerate(columns, 1):
        images[i, :, centre, x] = 1e6
    with torch.no_grad():
        c5 = body(images)["c5"][:, :, cell, cell]
    changed = [bool((c5[i] != c5[0]).any()) for i in range(1, len(images))]
    assert changed == [False, True, True, False], (columns, changed)


@pytest.mark.parametrize("cls, stages", [(AlexNet, 5), (NiN, 3)])
def test_body_shares_and_freezes_the_classifier_body(cls, stages):
    net = cls(num_classes=5, width=0.125)
    body = net.detection_body(trainable_layers=2)
    assert body.features is net.features  # one set of weights: a trained classifier's body
    frozen = [all(not p.requires_grad for p in m.parameters())
              for m in net.features if any(True for _ in m.parameters())]
    assert frozen == [True] * (stages - 2) + [False, False]
    assert all(p.requires_grad for p in net.classifier.parameters())
    with pytest.raises(ValueError, match="trainable_layers"):
        cls(width=0.125).detection_body(trainable_layers=stages + 1)
    # A saved classifier's body loads into a fresh detection body; its classifier is dropped.
    other = cls(num_classes=5, width=0.125).detection_body()
    other.load_imagenet(net.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.parameters(), net.features.parameters()))
    with pytest.raises(RuntimeError):
        cls(num_classes=5, width=0.25).detection_body().load_imagenet(net.state_dict())


# --- they learn: Shapes crops ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Every object of a small Shapes set cropped to its box and resized to
    67x67, uint8 [N, 67, 67, 3] with labels 0-4 [N]: (train, held-out), about
    1000 and 240 crops. More crops cost nothing per step and narrow the gap
    between training and held-out accuracy."""
    paths = shapes.generate(tmp_path_factory.mktemp("shapes"), num_train=400, num_val=100, image_size=128, seed=3)
    return tuple(_crops(paths.image_root, file) for file in (paths.coco_train, paths.coco_val))


def _crops(image_root: str, annotations: str, side: int = 67) -> tuple[np.ndarray, np.ndarray]:
    with open(annotations) as f:
        coco = json.load(f)
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    images, out, labels = {}, [], []
    for ann in coco["annotations"]:
        image_id = ann["image_id"]
        if image_id not in images:
            images[image_id] = read_image(os.path.join(image_root, files[image_id]))
        x, y, w, h = ann["bbox"]
        out.append(cv2.resize(images[image_id][y:y + h, x:x + w], (side, side), interpolation=cv2.INTER_AREA))
        labels.append(ann["category_id"] - 1)
    return np.stack(out), np.array(labels)


def _tensors(crops: np.ndarray, side: int, gray: bool, mean, std) -> torch.Tensor:
    if side != crops.shape[1]:
        crops = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    if gray:  # the book's LeNet reads one channel, as Fashion-MNIST has
        x = x.mean(1, keepdim=True)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@pytest.fixture
def one_thread():
    """On two shared cores a second intra-op thread mostly waits for a busy
    core (10x slower steps measured under load); one thread is steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# model, crop side, grayscale, (mean, std), steps, batch, learning rate, bound on held-out accuracy (chance: 0.2),
# torch seeds (each one must pass). Held-out accuracy measured over torch seeds: LeNet 0.79-0.82 (seeds 0-3), AlexNet
# 0.75-0.80 (0-2). NiN over seeds 0-12, min / median / max. With zero biases in its class block (5 wide, ending in
# a ReLU): 0.152 / 0.599 / 0.785 at 900 steps. Seed 5 sat at chance: all 5 units of the block's middle ReLU were dead
# by step 200, so every gradient was 0. Seed 8 reached 0.350: two class logits were 0 on every crop throughout. At
# 600 steps, seed 5 gave 0.152 again and seed 8 0.397. With the biases at 0.1 (NiN.CLASS_BLOCK_BIAS), at 600 steps:
# 0.460 / 0.654 / 0.793, and 0.477 / 0.586 / 0.759 over fresh seeds 13-25 (mean 0.63, sd 0.10 over the 26). At 900
# steps: 0.473 / 0.730 / 0.857. The bound sits 0.11 below the lowest of the 26 (2.8 sd under their mean) and 0.1
# above always guessing the largest class (0.253). Seeds 5 and 8 are the two that failed 0.4 under zero biases here;
# at 600 steps only seed 5 (0.152) falls below this bound, so it is the seed run.
CASES = {
    "lenet": (lambda: LeNet(num_classes=5), 28, True, ((0.5,), (0.25,)), 800, 64, 5e-3, 0.6, (0,)),
    "alexnet": (lambda: AlexNet(num_classes=5, width=0.125), 67, False, (AlexNet.image_mean, AlexNet.image_std),
                400, 32, 5e-4, 0.6, (0,)),
    "nin": (lambda: NiN(num_classes=5, width=0.125), 67, False, (NiN.image_mean, NiN.image_std), 600, 64, 1e-3, 0.35,
            (5,)),
}


@pytest.mark.parametrize("name, seed", [(name, seed) for name, case in CASES.items() for seed in case[-1]])
def test_learns_to_classify_shapes_crops(name, seed, crops, one_thread):
    make, side, gray, (mean, std), steps, batch_size, lr, bound, _ = CASES[name]
    (train_x, train_y), (val_x, val_y) = crops
    train_x, val_x = (_tensors(c, side, gray, mean, std) for c in (train_x, val_x))
    train_y, val_y = torch.from_numpy(train_y), torch.from_numpy(val_y)
    torch.manual_seed(seed)
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(train_x), (batch_size,))
        x = train_x[batch]
        x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x, x.flip(-1))  # every class is mirror-symmetric
        loss = nn.functional.cross_entropy(model(x), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = float((model.eval()(val_x).argmax(1) == val_y).float().mean())
    print(f"{name} (seed {seed}): held-out accuracy {accuracy:.3f} on {len(val_y)} crops ({len(train_y)} trained on)")
    assert accuracy > bound, accuracy
