"""solver.amp: which float type a training step runs in, on CPUs with and
without bfloat16 instructions, and that only the dense layers run in it."""
import copy

import pytest
import torch

from detkit import ops
from detkit.config import ConfigError, apply_overrides
from detkit.engine import precision as precision_module
from detkit.engine.build import build_datasets, build_model
from detkit.engine.evaluate import loss_target
from detkit.engine.precision import training_precision
from detkit.data import collate

from tests.helpers import tiny_ssd_config

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["bf16-cpu", "plain-cpu"])
def bf16_hardware(request, monkeypatch):
    """Both kinds of CPU, whichever this one is."""
    monkeypatch.setattr(precision_module, "has_bfloat16_hardware", lambda: request.param)
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx512_bf16"} if request.param else ()))
    return request.param


@pytest.mark.parametrize("amp", ["auto", "bf16"])
def test_bfloat16_runs_where_the_cpu_has_it_and_says_which(bf16_hardware, amp):
    chosen = training_precision(amp, CPU)
    if bf16_hardware:
        assert chosen.dtype == torch.bfloat16 and not chosen.scaled
        assert chosen.reason == f"solver.amp={amp!r}: bfloat16 autocast (this CPU has AVX512-BF16)"
    else:
        assert chosen.dtype is None
        assert chosen.reason.startswith(f"solver.amp={amp!r}: training in float32 (this CPU has neither AMX nor "
                                        "AVX512-BF16")


@pytest.mark.parametrize("amp", ["fp16", True])
def test_float16_is_cuda_only(bf16_hardware, amp):
    chosen = training_precision(amp, CPU)
    assert chosen.dtype is None and "float16 autocast is for CUDA GPUs" in chosen.reason


def test_off_is_float32():
    assert training_precision(False, CPU).dtype is None


def test_the_config_takes_the_words_and_refuses_others(shapes_root):
    config = tiny_ssd_config(shapes_root)
    assert apply_overrides(config, ["solver.amp=bf16"]).solver.amp == "bf16"
    assert apply_overrides(config, ["solver.amp=False"]).solver.amp is False
    with pytest.raises(ConfigError, match=r"solver\.amp must be one of \[False, True, 'auto', 'bf16', 'fp16'\], "
                                          r"got 'bfloat16'"):
        apply_overrides(config, ["solver.amp=bfloat16"])
    with pytest.raises(ConfigError, match=r"solver\.amp' expects bool or str, got 1\.5"):
        apply_overrides(config, ["solver.amp=1.5"])


@pytest.mark.parametrize("config_name", ["ssd", "fasterrcnn"])
def test_under_bf16_autocast_only_the_dense_layers_leave_float32(shapes_root, config_name, monkeypatch):
    """A training step under bfloat16 autocast: convolutions compute in
    bfloat16; box coding, matching (their inputs and outputs), the losses and
    the gradients of the float32 weights stay float32."""
    config = tiny_ssd_config(shapes_root)
    if config_name == "fasterrcnn":
        config = apply_overrides(config, ["model.name=fasterrcnn_resnet18_fpn_small", "data.augment=rcnn",
                                          "data.min_size=[96]", "data.max_size=96",
                                          "model.options={'min_size': 96, 'max_size': 96}"])
    splits = build_datasets(config)
    torch.manual_seed(0)
    model = build_model(config.model, len(splits.classes) + 1).train()
    images, targets = collate([splits.train[i] for i in range(4)])
    seen = {"conv": set(), "coder": set()}
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: seen["conv"].add(out.dtype))
    # Box coding and matching: the coders' methods, the IoU matrices the matchers take, SSD's fused assignment.
    for coder in {m.box_coder for m in model.modules() if hasattr(m, "box_coder")}:
        for name in ("encode", "decode", "encode_single", "decode_single"):
            monkeypatch.setattr(coder, name, _recording(getattr(coder, name), seen["coder"]))
    for name in ("box_iou", "ssd_assign"):
        monkeypatch.setattr(ops, name, _recording(getattr(ops, name), seen["coder"]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(list(images), [loss_target(t, CPU) for t in targets])
    sum(losses.values()).backward()
    assert seen["conv"] == {torch.bfloat16}
    assert seen["coder"] == {torch.float32}, seen["coder"]
    assert {v.dtype for v in losses.values()} == {torch.float32}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}


def _recording(method, dtypes):
    def wrapped(*args, **kwargs):
        out = method(*args, **kwargs)
        for value in (*args, *kwargs.values(), *(out if isinstance(out, tuple) else (out,))):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                dtypes.add(value.dtype)
        return out
    return wrapped


def test_strided_convolutions_on_one_pixel_give_the_same_output_at_stride_one():
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.Conv2d(8, 16, 5, stride=(2, 3), padding=2),
             torch.nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2)]
    untouched = [torch.nn.Conv2d(8, 16, 3, stride=2, padding=0), torch.nn.Conv2d(8, 16, 3, stride=1, padding=1)]
    model = torch.nn.ModuleList(convs + untouched)
    plain = copy.deepcopy(model)
    assert precision_module.single_pixel_convolutions_at_stride_one(model) == len(convs)
    for size in (1, 5):
        x = torch.randn(2, 8, size, size)
        for ours, theirs in zip(model, plain):
            if x.shape[-1] >= theirs.kernel_size[0] - 2 * theirs.padding[0]:
                assert torch.equal(ours(x), theirs(x))


def test_the_one_pixel_convolution_trains_in_bfloat16_without_nan():
    """PyTorch's CPU bfloat16 weight gradient of this convolution on a 1 x 1
    input held NaN in 10-45% of calls here (7 of these 100 without the
    change); at stride 1 it is finite every time."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)
    precision_module.single_pixel_convolutions_at_stride_one(conv)
    for _ in range(100):
        for dtype in (torch.bfloat16, torch.float32):  # freed NaN memory, for an uninitialised read to find
            junk = torch.full((64 * 64 * 9,), float("nan"), dtype=dtype)
            del junk
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(torch.randn(4, 64, 1, 1))
        y.float().sum().backward()
        assert torch.isfinite(conv.weight.grad).all()
        conv.weight.grad = None
