"""detkit.runtimes: "fused" folds every BatchNorm into the convolution before
it and gives the eager model's detections, on a copy (the caller's model is
left as it was); "eager" is the model itself; other names are refused."""
import gc

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit import models, runtimes
from detkit.modeling.tinyssd import TinySSD
from detkit.runtimes.machine import has_vnni

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


@pytest.mark.parametrize("name", ["tensorrt", "ort", "Int8", "Fused"])
def test_an_unknown_runtime_is_refused(name):
    available = "eager, fused, bf16, onnxruntime, openvino, openvino_bf16, int8"
    with pytest.raises(ValueError, match=f"unknown runtime '{name}'; available: {available}"):
        runtimes.optimize(TinySSD(3, size=64), name)


# --- "onnxruntime" and "int8": the dense part in ONNX Runtime ---------------------------------------


def needs_onnxruntime(runtime: str = "onnxruntime"):
    """onnxruntime (and for int8 onnx), or a skip of the calling test only: the fused
    and bf16 tests in this file run without them."""
    if runtime == "int8":
        pytest.importorskip("onnx", reason="the int8 runtime needs onnx")
    return pytest.importorskip("onnxruntime", reason="the onnxruntime and int8 runtimes need onnxruntime")


@pytest.fixture(scope="module")
def ort():
    return needs_onnxruntime()


@pytest.fixture(scope="module")
def int8_ready():
    needs_onnxruntime("int8")


# Random weights give low, close scores: each model's score_thresh keeps enough detections to compare,
# and detections are compared above COMPARE[name] (the other runtime's down to a margin below it).
ORT_MODELS = {
    "ssd300_resnet18": lambda: models.build("ssd300_resnet18", num_classes=4, width=0.25, size=128,
                                            score_thresh=0.4, detections_per_img=300, channels_last=True),
    "fasterrcnn_resnet18_fpn_small": lambda: models.build("fasterrcnn_resnet18_fpn_small", num_classes=4,
                                                          min_size=128, max_size=128, score_thresh=0.2,
                                                          detections_per_img=300),
}
COMPARE = {"ssd300_resnet18": 0.43, "fasterrcnn_resnet18_fpn_small": 0.255}
PARTS = {"ssd300_resnet18": ["backbone", "head"], "fasterrcnn_resnet18_fpn_small": ["backbone", "rpn.head"]}


def ort_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = ORT_MODELS[name]()
    randomise_norms(model)
    return model


def sized_images(sizes=((120, 160), (150, 110)), seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


def matched_fraction(reference: dict, other: dict, thresh: float, iou: float, margin: float) -> float:
    """Greedy one-to-one matching, best reference score first, of reference detections scoring above
    `thresh` to the other's above thresh - margin with the same label and IoU >= iou: matches over
    the reference's count (1.0 when it has none)."""
    from torchvision.ops import box_iou

    keep, cand = reference["scores"] > thresh, other["scores"] > thresh - margin
    ref_boxes, ref_labels = reference["boxes"][keep], reference["labels"][keep]
    order = reference["scores"][keep].argsort(descending=True)
    if len(order) == 0:
        return 1.0
    overlaps = box_iou(ref_boxes[order], other["boxes"][cand]).nan_to_num(0.0)  # zero-area boxes: NaN
    overlaps[ref_labels[order][:, None] != other["labels"][cand][None, :]] = -1
    matched = 0
    for row in overlaps:
        if row.numel() and float(row.max()) >= iou:
            matched += 1
            overlaps[:, int(row.argmax())] = -1
    return matched / len(order)


def agreement(ours: list[dict], theirs: list[dict], thresh: float, iou: float, margin: float) -> tuple[float, int]:
    """The worse direction's matched fraction over all images, and the reference detections counted."""
    counts = [int((t["scores"] > thresh).sum()) for t in theirs]
    fractions = [min(matched_fraction(t, o, thresh, iou, margin), matched_fraction(o, t, thresh, iou, margin))
                 for o, t in zip(ours, theirs)]
    return sum(f * c for f, c in zip(fractions, counts)) / max(1, sum(counts)), sum(counts)


def needs_openvino():
    return pytest.importorskip("openvino", reason="the openvino runtimes need openvino")


# The runtimes that run the dense parts exported in float32: ONNX Runtime and OpenVINO (told float32).
FLOAT_EXPORTED = {"onnxruntime": needs_onnxruntime, "openvino": needs_openvino}


@pytest.fixture(scope="module", params=[(name, runtime) for runtime in FLOAT_EXPORTED for name in ORT_MODELS],
                ids=lambda p: "-".join(p))
def ort_case(request):
    name, runtime = request.param
    FLOAT_EXPORTED[runtime]()
    model = ort_model(name)
    exports = []
    real_export = torch.onnx.export
    patch = pytest.MonkeyPatch()
    patch.setattr(torch.onnx, "export", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    try:
        optimized = runtimes.optimize(model, runtime)
    finally:
        patch.undo()
    return name, model, optimized, len(exports), runtime


def test_onnxruntime_and_openvino_give_the_eager_detections_at_any_size(ort_case):
    name, model, optimized, exported, _ = ort_case
    assert exported == len(PARTS[name])
    for sizes in (((120, 160), (150, 110)), ((200, 140),)):
        with torch.no_grad():
            theirs, ours = model.eval()(sized_images(sizes)), optimized(sized_images(sizes))
        assert all(set(o) == {"boxes", "scores", "labels"} for o in ours)
        fraction, counted = agreement(ours, theirs, COMPARE[name], iou=0.95, margin=0.01)
        assert counted >= 10 * len(sizes), "setup: too few detections to compare"
        assert fraction >= 0.98, f"{fraction:.1%} of {counted} detections matched"


def test_onnxruntime_and_openvino_replace_the_dense_parts_of_a_copy(ort_case):
    name, model, optimized, _, runtime = ort_case
    from detkit.runtimes.openvino import OpenVINOModule
    from detkit.runtimes.ort import OrtModule

    kind = OpenVINOModule if runtime == "openvino" else OrtModule
    assert [path for path, m in optimized.named_modules() if type(m) is kind] == PARTS[name]
    assert not any(isinstance(m, OrtModule) for m in model.modules())
    assert not optimized.training
    assert not optimized.channels_last  # everything channels-last could apply to runs in ONNX Runtime
    assert not any(isinstance(m, NORMS) for m in optimized.modules())  # folded before export


@pytest.mark.parametrize("name", list(ORT_MODELS))
def test_an_onnxruntime_part_takes_any_batch_and_size(name, ort):
    """The exported backbone's maps equal torch's at sizes and batches other than the export's."""
    from detkit.runtimes.ort import OrtModule

    model = ort_model(name).eval()
    optimized = runtimes.optimize(model, "onnxruntime")
    assert isinstance(optimized.backbone, OrtModule)
    generator = torch.Generator().manual_seed(2)
    for shape in ((1, 3, 96, 160), (2, 3, 128, 64)):
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected, got = model.backbone(x), optimized.backbone(x.contiguous(memory_format=torch.channels_last))
        assert list(got) == list(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("runtime", list(FLOAT_EXPORTED))
def test_onnxruntime_and_openvino_copy_and_pickle(runtime):
    import copy
    import pickle

    FLOAT_EXPORTED[runtime]()
    model = ort_model("ssd300_resnet18")
    optimized = runtimes.optimize(model, runtime)
    images = sized_images()
    with torch.no_grad():
        expected = optimized(images)
        for twin in (copy.deepcopy(optimized), pickle.loads(pickle.dumps(optimized))):
            got = twin(images)
            for a, b in zip(got, expected):
                assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["boxes"], b["boxes"])


def current_signal_stack() -> tuple:
    """This thread's alternate signal stack: (address, flags, size), by sigaltstack(2)."""
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    stack = StackT()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    return stack.ss_sp, stack.ss_flags, stack.ss_size


def test_openvino_parts_leave_the_signal_stack_alone():
    """Each OpenVINO CPU plugin swaps in an alternate signal stack and puts the
    previous one back when it goes; parts that each made a plugin and were
    dropped out of order left the thread on a freed stack, and a DataLoader's
    SIGCHLD later wrote its frame there (the suite's segfault). All parts share
    one plugin, so making and dropping parts changes nothing."""
    needs_openvino()
    from detkit.runtimes.openvino import OpenVINOModule
    from detkit.runtimes.ort import export_onnx

    def compiled_part(channels: int) -> OpenVINOModule:
        torch.manual_seed(channels)
        part = OpenVINOModule(export_onnx(nn.Conv2d(3, channels, 3), (torch.rand(1, 3, 8, 8),)))
        part(torch.rand(1, 3, 8, 8))  # compiles on the first call
        return part

    first = compiled_part(2)
    before = current_signal_stack()
    second, third = compiled_part(3), compiled_part(4)
    assert current_signal_stack() == before
    del second
    del first, third
    gc.collect()
    assert current_signal_stack() == before


def test_fast_rcnn_runs_its_backbone_in_onnxruntime(ort):
    """One image at the model's size (scale 1) and one it upscales 1.6x, in one batch."""
    torch.manual_seed(0)
    model = models.build("fastrcnn_resnet18_c4", num_classes=3, width=0.25, min_size=128, max_size=128,
                         score_thresh=0.0)
    randomise_norms(model)
    optimized = runtimes.optimize(model, "onnxruntime")
    assert type(optimized.backbone).__name__ == "OrtModule"
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=generator), torch.rand(3, 64, 80, generator=generator)]
    proposals = [torch.tensor([[10.0, 10.0, 40.0, 50.0], [30.0, 20.0, 120.0, 90.0], [0.0, 0.0, 64.0, 64.0]]),
                 torch.tensor([[4.0, 4.0, 30.0, 40.0], [40.0, 10.0, 76.0, 60.0]])]
    with torch.no_grad():
        theirs, ours = model.eval()(images, proposals=proposals), optimized(images, proposals=proposals)
    for o, t in zip(ours, theirs):
        assert torch.equal(o["labels"], t["labels"]) and len(t["labels"]) > 0
        torch.testing.assert_close(o["boxes"], t["boxes"], atol=1e-2, rtol=0)
        torch.testing.assert_close(o["scores"], t["scores"], atol=1e-4, rtol=0)


# int8: calibrated on `calibration()` images, compared with eager on others, more loosely: (IoU, share matched).
# Measured: SSD 100% at IoU 0.8; Faster R-CNN 76-84% at IoU 0.8, 92-93% at 0.5 (its random-weight scores
# all lie within 0.02 of each other, so int8 rounding reorders them and NMS keeps other boxes).
INT8 = {"ssd300_resnet18": (0.8, 0.95), "fasterrcnn_resnet18_fpn_small": (0.5, 0.85)}


def calibration(n=8, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 120 + 8 * i, 160 - 4 * i, generator=generator) for i in range(n)]


INT8_ENGINES = ("onnxruntime", "torch")


def needs_int8_engine(engine: str) -> None:
    from detkit.runtimes.int8_torch import torch_int8_available

    if engine == "onnxruntime":
        needs_onnxruntime("int8")
    elif not torch_int8_available():
        pytest.skip("this torch build has no x86 quantized backend")


@pytest.fixture(scope="module", params=[(name, engine) for engine in INT8_ENGINES for name in ORT_MODELS],
                ids=lambda p: "-".join(p))
def int8_case(request):
    name, engine = request.param
    needs_int8_engine(engine)
    model = ort_model(name)
    return name, model, runtimes.optimize(model, "int8", calibration=calibration(), int8_engine=engine)


def test_int8_detections_agree_loosely_with_eager(int8_case):
    name, model, quantized = int8_case
    with torch.no_grad():
        theirs, ours = model.eval()(sized_images()), quantized(sized_images())
    iou, share = INT8[name]
    fraction, counted = agreement(ours, theirs, COMPARE[name], iou=iou, margin=0.05)
    assert counted >= 20, "setup: too few detections to compare"
    assert fraction >= share, f"{fraction:.1%} of {counted} detections matched"


def test_int8_parts_hold_quantised_ops(int8_case, tmp_path):
    name, _, quantized = int8_case
    if quantized.int8_engine == "torch":
        return assert_torch_int8_parts(name, quantized)
    import onnx

    ort = needs_onnxruntime()
    for path in PARTS[name]:
        part = quantized.get_submodule(path)
        counts = part.op_counts()
        convs = counts["Conv"]
        assert convs > 0 and counts["QuantizeLinear"] >= convs and counts["DequantizeLinear"] >= 2 * convs, counts
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp_path / f"{path}.onnx")
        ort.InferenceSession(part.onnx_bytes, options, providers=["CPUExecutionProvider"])
        fused = [n.op_type for n in onnx.load(str(tmp_path / f"{path}.onnx")).graph.node]
        assert fused.count("QLinearConv") >= convs // 2, sorted(set(fused))


CONVS = {"backbone": 8, "head": 12}  # fewer than each part of these models has


def assert_torch_int8_parts(name: str, quantized: nn.Module) -> None:
    """The convolutions of each part are torch's quantized ones, but for the RPN head's, kept float;
    the SSD head, which FX cannot trace whole (it loops over the levels), is quantised conv by conv."""
    from torch.ao.nn import quantized as nnq
    from torch.ao.nn.intrinsic import quantized as nniq

    from detkit.runtimes.int8_torch import QuantizedPart

    for path in PARTS[name]:
        part = quantized.get_submodule(path)
        assert isinstance(part, QuantizedPart)
        floats = [n for n, m in part.named_modules() if type(m) is nn.Conv2d]
        if path == "rpn.head":
            assert floats == ["part.conv.0.0", "part.cls_logits", "part.bbox_pred"]
            continue
        assert floats == []
        # a traced unit holds quantized conv modules; a bare Conv2d unit traces to the functional op
        modules = sum(isinstance(m, (nnq.Conv2d, nniq.ConvReLU2d)) for m in part.modules())
        functional = sum(m.code.count("torch.ops.quantized.conv2d") for m in part.modules()
                         if isinstance(m, torch.fx.GraphModule))
        assert modules + functional >= CONVS[path], (modules, functional)
    if name.startswith("ssd"):
        assert all(isinstance(m, torch.fx.GraphModule) for m in quantized.head.part.regression_head.module_list)


@pytest.mark.parametrize("faster", INT8_ENGINES)
def test_int8_auto_keeps_the_engine_measured_faster(faster, monkeypatch):
    for engine in INT8_ENGINES:
        needs_int8_engine(engine)
    from detkit.runtimes import int8
    from detkit.runtimes.int8_torch import quantize_part_torch

    def fake_build(model, runtime, replace, images):
        built = nn.Module()
        built.replace = replace  # which quantiser the copy was made with
        return built
    monkeypatch.setattr(int8, "replace_dense_parts", fake_build)
    monkeypatch.setattr(int8, "_milliseconds", lambda models, image: {
        name: 1.0 if name == faster else 2.0 for name in models})
    chosen = runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=calibration(2))
    assert chosen.int8_engine == faster and chosen.int8_timings == {"torch": 1.0 if faster == "torch" else 2.0,
                                                                    "onnxruntime": 1.0 if faster != "torch" else 2.0}
    assert (chosen.replace is quantize_part_torch) == (faster == "torch")


def test_torch_int8_copies():
    """deepcopy only: torch 2.14.1 cannot unpickle an FX GraphModule holding quantized Conv2d modules
    ('Conv2d' object has no attribute '_modules'), a torch limitation the docstring states."""
    import copy

    needs_int8_engine("torch")
    optimized = runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=calibration(2), int8_engine="torch")
    images = sized_images()
    with torch.no_grad():
        expected = optimized(images)
        for twin in (copy.deepcopy(optimized),):
            for a, b in zip(twin(images), expected):
                assert len(b["labels"]) > 0
                assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["boxes"], b["boxes"])


def test_int8_auto_falls_back_to_the_engine_that_builds(monkeypatch):
    needs_int8_engine("onnxruntime")
    needs_int8_engine("torch")

    def broken(part, inputs):
        raise ValueError("not traceable")
    monkeypatch.setattr("detkit.runtimes.int8_torch.quantize_part_torch", broken)
    with pytest.warns(UserWarning, match="int8: the torch engine failed on this model .*not traceable"):
        chosen = runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=calibration(1))
    assert chosen.int8_engine == "onnxruntime" and chosen.int8_timings == {}
    with pytest.raises(ValueError, match="not traceable"):  # asked for by name, a failure is an error
        runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=calibration(1), int8_engine="torch")


def test_int8_names_an_unknown_or_missing_engine(monkeypatch):
    with pytest.raises(ValueError, match=r"int8_engine must be one of \('auto', 'onnxruntime', 'torch'\), got 'tvm'"):
        runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=calibration(1), int8_engine="tvm")
    monkeypatch.setattr("detkit.runtimes.int8_torch.torch_int8_available", lambda: False)
    with pytest.raises(RuntimeError, match="int8 engine 'torch' needs torch's x86 quantized backend"):
        runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=calibration(1), int8_engine="torch")


@pytest.mark.parametrize("engine", INT8_ENGINES)
def test_int8_takes_paths_arrays_and_tensors(tmp_path, engine):
    """A path, an array and a tensor of the same pixels are the same calibration image:
    calibrating on one of each gives the detections of calibrating on tensors alone
    (min-max calibration is deterministic). Each channel has its own range, so reading
    a file as BGR or scaling an array other than by 1/255 changes the quantisation."""
    import cv2
    import numpy as np

    generator = np.random.default_rng(0)
    top = np.array([255, 140, 60])  # R, G, B maxima
    arrays = [(generator.random((100 + 10 * i, 130, 3)) * top).astype(np.uint8) for i in range(3)]
    path = tmp_path / "a.png"  # lossless, so it reads back as arrays[0]
    cv2.imwrite(str(path), arrays[0][:, :, ::-1])
    tensors = [torch.tensor(a, dtype=torch.float32).permute(2, 0, 1) / 255 for a in arrays]
    needs_int8_engine(engine)
    model = ort_model("ssd300_resnet18")
    mixed = runtimes.optimize(model, "int8", calibration=[str(path), arrays[1], tensors[2]], int8_engine=engine)
    plain = runtimes.optimize(model, "int8", calibration=tensors, int8_engine=engine)
    with torch.no_grad():
        ours, theirs = mixed(sized_images()), plain(sized_images())
    assert len(ours) == 2
    for o, t in zip(ours, theirs):
        assert len(t["scores"]) >= 20, "setup: too few detections to compare"
        assert torch.equal(o["labels"], t["labels"])
        torch.testing.assert_close(o["boxes"], t["boxes"], atol=1e-6, rtol=0)
        torch.testing.assert_close(o["scores"], t["scores"], atol=1e-6, rtol=0)


# --- errors ------------------------------------------------------------------------------------------

CALIBRATION_HELP = "runtime 'int8' needs calibration images (a list of paths, HxWx3 uint8 arrays or [3,H,W] tensors)"


@pytest.mark.parametrize("runtime", ["openvino", "openvino_bf16"])
def test_a_missing_openvino_is_named(runtime, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError) as info:
        runtimes.optimize(TinySSD(3, size=64), runtime)
    assert str(info.value) == f"runtime '{runtime}' needs OpenVINO: pip install openvino"


def test_openvino_bf16_without_bfloat16_hardware_is_refused(monkeypatch):
    needs_openvino()
    monkeypatch.setattr("detkit.runtimes.bf16.has_bfloat16_hardware", lambda: False)
    with pytest.raises(RuntimeError, match="runtime 'openvino_bf16' needs a CPU with bfloat16 instructions"):
        runtimes.optimize(ort_model("ssd300_resnet18"), "openvino_bf16")


@pytest.mark.parametrize("runtime", ["onnxruntime", "int8"])
def test_a_missing_onnxruntime_is_named(runtime, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(ImportError) as info:  # int8's 'auto' engine would take torch's instead
        runtimes.optimize(TinySSD(3, size=64), runtime, calibration=[torch.rand(3, 64, 64)],
                          int8_engine="onnxruntime")
    assert str(info.value) == f"runtime '{runtime}' needs onnxruntime: pip install onnxruntime"


@pytest.mark.parametrize("calibration", [None, [], ()], ids=["none", "empty_list", "empty_tuple"])
def test_int8_needs_calibration_images(calibration):
    with pytest.raises(ValueError) as info:
        runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=calibration)
    assert str(info.value) == CALIBRATION_HELP


@pytest.mark.parametrize("bad, message", [
    (3, r"calibration\[1\] is a int"),
    ("no/such/image.jpg", r"calibration\[1\]: image file not found: no/such/image.jpg"),
    (torch.rand(1, 8, 8), r"calibration\[1\] is a torch.float32 Tensor of shape \[1, 8, 8\]"),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), r"calibration\[1\] is a torch.uint8 Tensor"),
    (torch.full((3, 8, 8), float("nan")), r"calibration\[1\] contains NaN or inf"),
], ids=["int", "missing_file", "one_channel_tensor", "uint8_tensor", "nan_tensor"])
def test_int8_names_a_bad_calibration_image(bad, message, int8_ready):  # the imports come before the images
    import numpy as np

    for item in (bad, np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8)):
        expected = message if item is bad else r"calibration\[1\] is a \w+ array of shape \(8, 8(, 3)?\)"
        with pytest.raises(ValueError, match=expected):
            runtimes.optimize(ort_model("ssd300_resnet18"), "int8", calibration=[torch.rand(3, 8, 8), item])


@pytest.mark.parametrize("runtime", ["bf16", "onnxruntime", "int8"])
def test_a_model_without_a_known_dense_part_is_refused(runtime):
    if runtime != "bf16":
        needs_onnxruntime(runtime)  # imported before the model is looked at
    with pytest.raises(ValueError, match=f"runtime '{runtime}' does not know the dense part of a TinySSD"):
        runtimes.optimize(TinySSD(3, size=64), runtime, calibration=[torch.rand(3, 64, 64)])


def test_the_model_zoo_offers_optimize():
    from detkit import models, runtimes

    assert models.optimize is runtimes.optimize and models.RUNTIMES == runtimes.RUNTIMES


# --- bf16 ------------------------------------------------------------------------------------------------

@pytest.fixture
def bf16_anywhere(monkeypatch):
    """The bf16 runtime on any CPU: without bfloat16 instructions torch emulates them (slowly, but these
    models are small), so what is wrapped and how it computes is tested everywhere."""
    monkeypatch.setattr("detkit.runtimes.bf16.has_bfloat16_hardware", lambda: True)  # where optimize_bf16 looks
BF16_PARTS = {"ssd300_resnet18": PARTS["ssd300_resnet18"],
              "fasterrcnn_resnet18_fpn_small": PARTS["fasterrcnn_resnet18_fpn_small"] + ["roi_heads.box_head"]}


@pytest.mark.parametrize("name", list(ORT_MODELS))
def test_bf16_runs_the_dense_parts_of_a_copy_in_bfloat16(name, bf16_anywhere):
    model = ort_model(name)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimized = runtimes.optimize(model, "bf16")
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # caller's model kept
    for path in BF16_PARTS[name]:
        part = optimized.get_submodule(path)
        assert isinstance(part, runtimes.BFloat16Part), path
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}, path
    outside = [p for n, p in optimized.named_parameters()
               if not any(n.startswith(path + ".") for path in BF16_PARTS[name])]
    assert outside == [] or {p.dtype for p in outside} == {torch.float32}  # e.g. the box predictor
    with torch.no_grad():
        detections = optimized(sized_images())
    assert all(d["boxes"].dtype == d["scores"].dtype == torch.float32 for d in detections)


@pytest.mark.parametrize("name", list(ORT_MODELS))
def test_bf16_dense_outputs_are_eager_to_bfloat16_precision(name, bf16_anywhere):
    """Each part's outputs within 5% of the largest eager value (bfloat16 keeps 8 significant bits; the
    error grows through the layers), and not equal: the part did compute in bfloat16."""
    model, images = ort_model(name).eval(), sized_images()
    optimized = runtimes.optimize(model, "bf16")
    for path in PARTS[name]:
        theirs, ours = part_outputs(model, path, images), part_outputs(optimized, path, images)
        assert len(theirs) == len(ours) > 0
        for a, b in zip(theirs, ours):
            assert b.dtype == torch.float32 and b.shape == a.shape
            error = float((a - b).abs().max() / a.abs().max())
            assert 0 < error <= 0.05, (path, error)


def part_outputs(model: nn.Module, path: str, images) -> list[torch.Tensor]:
    """The float tensors the submodule at `path` returns while `model` runs on `images`."""
    outputs = []
    handle = model.get_submodule(path).register_forward_hook(lambda module, args, result: outputs.extend(
        t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor) and t.is_floating_point()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return outputs


def test_bfloat16_part_casts_floats_in_and_out():
    class Probe(nn.Module):
        def forward(self, x, extra):
            self.seen = (x.dtype, x.is_contiguous(memory_format=torch.channels_last), extra["index"].dtype)
            return {"out": x * 2, "index": extra["index"]}

    probe = Probe()
    part = runtimes.BFloat16Part(probe)
    x = torch.rand(1, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    result = part(x, {"index": torch.arange(3)})
    assert probe.seen == (torch.bfloat16, True, torch.int64)
    assert result["out"].dtype == torch.float32 and result["index"].dtype == torch.int64
    assert torch.equal(result["out"], (x.bfloat16() * 2).float())


def test_bf16_without_bfloat16_hardware_is_refused(monkeypatch):
    monkeypatch.setattr("detkit.runtimes.bf16.has_bfloat16_hardware", lambda: False)
    with pytest.raises(RuntimeError) as info:
        runtimes.optimize(ort_model("ssd300_resnet18"), "bf16")
    assert str(info.value) == ("runtime 'bf16' needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX), "
                               "which this one lacks: use 'fused' or 'int8'")


# --- every runtime on trained models ------------------------------------------------------------------------

# (IoU, share of eager's detections above 0.3 matched one-to-one with the same label), both directions.
# The issue's bar for float runtimes; int8's is looser (stated): on these 128 px objects its boxes move
# by a pixel or two, so few stay at IoU 0.95 (held-out AP, benchmarks/heldout.py, is its real measure).
# int8 calibrated on 8 other Shapes images, measured at IoU 0.8: SSD 21/23, Faster R-CNN 24/26.
# bf16 computes in reduced precision, not float rounding, and its rounding depends on the matrix unit:
# on Intel AMX all 26 Faster R-CNN detections matched at IoU 0.95; on AMD Zen 4 (AVX512-BF16, no AMX)
# 25 of 26 at IoU 0.95 and 0.9, all 26 at 0.85. Its bar is IoU 0.85 (held-out AP is its real measure).
# OpenVINO's bfloat16 also rounds the activations between its layers: on Zen 4, 25 of 26 Faster R-CNN
# detections matched at IoU 0.85; its bar is 95% there.
# Without VNNI (AVX2 only) ONNX Runtime's int8 takes 7-bit weights (reduce_range, which avoids its kernels'
# int16 saturation there), and its boxes move more: on AMD Zen 3 the SSD matched 21 of 23 at IoU 0.75,
# 18 at 0.8; PyTorch's engine all 23 at 0.8. Its bar there is IoU 0.75.
TRAINED_AGREEMENT = {"fused": (0.95, 0.98), "bf16": (0.85, 0.98), "onnxruntime": (0.95, 0.98),
                     "int8:onnxruntime": (0.8 if has_vnni() else 0.75, 0.8), "int8:torch": (0.8, 0.8),
                     "openvino": (0.95, 0.98), "openvino_bf16": (0.85, 0.95)}
# The trained SSD is conftest.overfit_ssd (100 steps, lr 1e-3, shared with the export tests); the Faster R-CNN's recipe:
RCNN_RECIPE = dict(steps=60, lr=2e-3, min_size=128, max_size=128, score_thresh=0.05)


@pytest.fixture(scope="module", params=["ssd300_resnet18_small", "fasterrcnn_resnet18_fpn_small"])
def trained_model(request, tmp_path_factory):
    """A small detector trained until it finds every object of 8 Shapes images:
    (name, model, the images, its detections on them, 8 other Shapes images to
    calibrate int8 on: ranges from the scored images themselves would flatter it)."""
    import json
    import os

    from detkit.data import shapes
    from tests.helpers import overfit

    if request.param == "ssd300_resnet18_small":
        model, images, targets, paths = request.getfixturevalue("overfit_ssd")
    else:
        torch.manual_seed(0)
        paths = shapes.generate(tmp_path_factory.mktemp("shapes8"), num_train=8, num_val=8, image_size=128, seed=0)
        options = dict(RCNN_RECIPE)
        model, _, images, targets = overfit(request.param, paths, options.pop("steps"), options.pop("lr"), **options)
    with open(paths.coco_val) as f:
        others = [os.path.join(paths.image_root, image["file_name"]) for image in json.load(f)["images"]]
    with torch.no_grad():
        detections = model(images)
    confident = sum(int((d["scores"] > 0.3).sum()) for d in detections)
    assert confident >= 0.9 * sum(len(t["labels"]) for t in targets), "setup: the model did not learn the images"
    return request.param, model, images, detections, others


@pytest.mark.parametrize("runtime", list(TRAINED_AGREEMENT))
def test_each_runtime_finds_the_eager_detections_of_a_trained_model(trained_model, runtime, bf16_anywhere):
    if runtime == "onnxruntime":
        needs_onnxruntime(runtime)
    if runtime.startswith("openvino"):
        needs_openvino()
    engine = runtime.split(":")[1] if runtime.startswith("int8") else "auto"
    if runtime.startswith("int8"):
        needs_int8_engine(engine)
    _, model, images, expected, others = trained_model
    optimized = runtimes.optimize(model, runtime.split(":")[0], calibration=others if engine != "auto" else None,
                                  int8_engine=engine)
    with torch.no_grad():
        detections = optimized(images)
    iou, share = TRAINED_AGREEMENT[runtime]
    fraction, counted = agreement(detections, expected, 0.3, iou=iou, margin=0.05)
    assert counted >= 20, "setup: too few detections to compare"
    assert fraction >= share, f"{runtime}: {fraction:.1%} of {counted} detections matched at IoU {iou}"
