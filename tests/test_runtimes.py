"""detkit.runtimes: "fused" folds every BatchNorm into the convolution before
it and gives the eager model's detections, on a copy (the caller's model is
left as it was); "eager" is the model itself; other names are refused."""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit import models, runtimes
from detkit.modeling.tinyssd import TinySSD

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
SSD = dict(num_classes=5, width=0.25, size=128, score_thresh=0.05, detections_per_img=100)


def googlenet_ssd():
    """GoogLeNet's std-0.01 initialisation gives near-constant scores, whose ties
    make the detection order arbitrary: He-initialised instead."""
    model = models.build("ssd300_googlenet", **SSD)
    generator = torch.Generator().manual_seed(0)
    for module in model.backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, generator=generator)
    return model


# Each composes conv and norm its own way: ResNet blocks call self.bn1(self.conv1(x)) and hold
# Sequential(conv, norm) downsamples; GoogLeNet's BasicConv2d has conv/bn (eps 1e-3); TinySSD
# has Sequential(Conv2d with bias, BatchNorm2d, ReLU); R-CNN's FPN and heads have no norms.
MODELS = {
    "ssd300_resnet18": lambda: models.build("ssd300_resnet18", **SSD),
    "ssd300_resnet18_frozen_bn": lambda: models.build("ssd300_resnet18", frozen_bn=True, **SSD),
    "ssd300_googlenet": googlenet_ssd,
    "fasterrcnn_resnet18_fpn_small": lambda: models.build("fasterrcnn_resnet18_fpn_small", num_classes=5,
                                                          min_size=128, max_size=128, score_thresh=0.01),
    "tinyssd": lambda: TinySSD(3, size=64, score_thresh=0.0),
}


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Every norm far from the identity (gamma 1, beta 0, mean 0, var 1), so that
    folding is tested; gamma < 1 keeps the scores unsaturated and distinct."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(like, low, high):
        return torch.rand(like.shape, generator=generator) * (high - low) + low
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NORMS):
                if module.weight is not None:  # None: BatchNorm2d(affine=False)
                    module.weight.copy_(uniform(module.weight, 0.3, 0.8))
                    module.bias.copy_(uniform(module.bias, -0.1, 0.1))
                module.running_mean.copy_(uniform(module.running_mean, -0.1, 0.1))
                module.running_var.copy_(uniform(module.running_var, 0.5, 2.0))


@pytest.fixture(params=list(MODELS))
def model(request):
    torch.manual_seed(0)
    model = MODELS[request.param]()
    randomise_norms(model)
    return model  # in train mode, as built


def images():
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 120, 160, generator=generator), torch.rand(3, 100, 90, generator=generator)]


def test_fused_gives_the_eager_detections(model):
    fused = runtimes.optimize(model, "fused")
    eager = runtimes.optimize(model, "eager")
    with torch.no_grad():
        expected, got = eager(images()), fused(images())
    assert len(got) == len(expected) == 2
    for ours, theirs in zip(got, expected):
        assert set(ours) == set(theirs) == {"boxes", "scores", "labels"}
        assert len(theirs["scores"]) >= 50
        assert len(theirs["scores"].unique()) == len(theirs["scores"]), "setup: tied scores order arbitrarily"
        assert torch.equal(ours["labels"], theirs["labels"])
        torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=1e-2, rtol=0)
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=1e-4, rtol=0)


def test_fused_folds_every_norm(model):
    norms = sum(isinstance(m, NORMS) for m in model.modules())
    identities = sum(isinstance(m, nn.Identity) for m in model.modules())
    assert norms > 0
    fused = runtimes.optimize(model, "fused")
    assert not fused.training
    assert not any(isinstance(m, NORMS) for m in fused.modules())
    assert sum(isinstance(m, nn.Identity) for m in fused.modules()) == identities + norms
    if hasattr(model, "channels_last"):
        assert fused.channels_last
        convs = [m for m in fused.backbone.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_fused_leaves_the_model_as_it_was(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [(name, type(m)) for name, m in model.named_modules()]
    channels_last = getattr(model, "channels_last", None)
    runtimes.optimize(model, "fused")
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert [(name, type(m)) for name, m in model.named_modules()] == types
    assert model.training
    assert getattr(model, "channels_last", None) == channels_last


def test_eager_is_the_model_in_eval_mode():
    model = TinySSD(3, size=64)
    assert model.training
    assert runtimes.optimize(model) is model
    assert not model.training


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(6), nn.BatchNorm2d(6, eps=1e-3, affine=False),
                                  FrozenBatchNorm2d(6, eps=1e-4)], ids=["bn", "bn_no_affine", "frozen_bn"])
@pytest.mark.parametrize("bias", [False, True])
def test_folding_is_the_exact_algebra(norm, bias):
    """In float64, the folded conv is conv-then-norm to 1e-12."""
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=bias), norm).double()
    randomise_norms(layers)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    expected = layers.eval()(x)
    assert runtimes.fold_batchnorms(layers) == ["1"]
    assert isinstance(layers[1], nn.Identity) and layers[0].bias is not None
    torch.testing.assert_close(layers(x), expected, atol=1e-12, rtol=0)


class ConvOutputReused(nn.Module):
    """The conv's output feeds the norm and the sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class NormCalledTwice(ConvOutputReused):
    """The norm also takes the input: folding would change that call."""

    def forward(self, x):
        return self.bn(self.conv(x)) + self.bn(x)


@pytest.mark.parametrize("layers", [ConvOutputReused, NormCalledTwice,
                                    lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1))],
                         ids=["conv_output_reused", "norm_called_twice", "norm_before_conv"])
def test_a_norm_not_right_after_a_conv_stays(layers):
    torch.manual_seed(0)
    model = layers()
    randomise_norms(model)
    x = torch.randn(1, 3, 5, 5)
    with pytest.warns(UserWarning, match="1 norm layer"):
        fused = runtimes.optimize(model, "fused")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == 1
    torch.testing.assert_close(fused(x), model.eval()(x))


@pytest.mark.parametrize("name", ["tensorrt", "onnxruntime", "int8", "Fused"])
def test_an_unknown_runtime_is_refused(name):
    with pytest.raises(ValueError, match=f"unknown runtime '{name}'; available: eager, fused"):
        runtimes.optimize(TinySSD(3, size=64), name)
