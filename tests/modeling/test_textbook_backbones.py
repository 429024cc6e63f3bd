"""The textbook CNNs (LeNet, AlexNet, NiN): the book's shapes and parameter
counts, and their bodies as stride-16 detection backbones aligned as anchors
and RoI pooling assume."""
import pytest
import torch
from torch import nn

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
    float64: oneDNN's float32 kernels may smear rounding across pixels."""
    torch.manual_seed(0)
    body = cls(width=0.125).detection_body().eval().double()
    with torch.no_grad():
        for p in body.parameters():
            p.abs_() if p.dim() > 1 else p.zero_()
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
def test_body_shares_and_freezes_the_classifier_body(cls, stages, tmp_path):
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
