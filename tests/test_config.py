import dataclasses
import glob
import os

import pytest

from detkit import models
from detkit.config import EVAL_KEYS, Config, ConfigError, apply_overrides, load_config
from detkit.engine.build import build_model
from detkit.evaluation.coco import STAT_NAMES
from detkit.evaluation.voc import STAT_NAMES as VOC_STAT_NAMES

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))
REQUIRED = {"ssd300_vgg16_voc", "ssd300_vgg16_coco", "ssd512_vgg16_voc", "fasterrcnn_resnet50_fpn_coco",
            "maskrcnn_resnet50_fpn_coco", "fasterrcnn_googlenet_fpn_voc", "ssd_shapes", "maskrcnn_shapes",
            "tinyssd_shapes", "fastrcnn_shapes", "rcnn_shapes", "fasterrcnn_c4_shapes"}


def test_every_required_config_exists():
    names = {os.path.splitext(os.path.basename(p))[0] for p in CONFIGS}
    assert REQUIRED <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_loads_names_a_real_model_and_round_trips(path):
    config = load_config(path)
    assert config.name == os.path.splitext(os.path.basename(path))[0]
    assert config.model.name in models.list_models()
    assert Config.from_dict(config.to_dict()) == config


def write(tmp_path, text, name="cfg.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_overrides_parse_by_field_type():
    config = apply_overrides(Config(), ["solver.lr=0.05", "data.batch_size=3", "data.root=/data/my coco",
                                        "model.options.width=0.5", "solver.clip_grad_norm=None",
                                        "schedule.milestones=[3, 4]", "data.masks=True", "solver.momentum=1",
                                        "model.name=maskrcnn_resnet18_fpn_small"])
    assert config.solver.lr == 0.05 and config.data.batch_size == 3 and config.data.root == "/data/my coco"
    assert config.model.options == {"width": 0.5} and config.solver.clip_grad_norm is None
    assert config.schedule.milestones == [3, 4] and config.data.masks is True
    assert isinstance(config.solver.momentum, float)


def test_overrides_leave_the_original_alone():
    original = Config()
    apply_overrides(original, ["model.options.width=0.5", "solver.lr=1.0"])
    assert original.model.options == {} and original.solver.lr == Config().solver.lr


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'solver.lrr'.*solver\.lr.*solver\.momentum"):
        apply_overrides(Config(), ["solver.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'sover.lr'.*valid keys here: name, model"):
        apply_overrides(Config(), ["sover.lr=0.1"])


@pytest.mark.parametrize("item, message", [
    ("data.batch_size=two", "expects int"),
    ("data.batch_size=2.5", "expects int"),
    ("solver.lr", "key=value"),
    ("solver=1", "is a section"),
    ("solver.lr.x=1", "is a value, not a section"),
    ("solver.optimizer=adam", r"solver.optimizer must be one of \['sgd', 'adamw'\]"),
    ("data.batch_size=0", "data.batch_size must be positive"),
])
def test_bad_overrides_are_named(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [item])


def test_config_file_errors_name_file_and_line(tmp_path):
    path = write(tmp_path, "from detkit.config import Config\nconfig = Config(\n")
    with pytest.raises(ConfigError, match=r"cfg\.py, line \d+: SyntaxError"):
        load_config(path)
    path = write(tmp_path, "from detkit.config import Config\n\nconfig = Config(nmae='x')\n")
    with pytest.raises(ConfigError, match=r"cfg\.py, line 3: TypeError.*nmae"):
        load_config(path)
    path = write(tmp_path, "x = 1\n")
    with pytest.raises(ConfigError, match=r"cfg\.py: must assign a detkit.config.Config to the name 'config'"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found: .*missing.py"):
        load_config(str(tmp_path / "missing.py"))


def test_config_file_with_bad_values_is_named(tmp_path):
    path = write(tmp_path, "from detkit.config import Config, SolverConfig\n"
                           "config = Config(solver=SolverConfig(optimizer='rmsprop'))\n")
    with pytest.raises(ConfigError, match="cfg.py.*solver.optimizer must be one of"):
        load_config(path)


def test_from_dict_rejects_unknown_and_mistyped_keys():
    values = Config().to_dict()
    values["solver"]["lrr"] = 1
    with pytest.raises(ConfigError, match=r"ckpt: unknown config key solver\.lrr; valid keys: solver\.optimizer"):
        Config.from_dict(values, "ckpt")
    values = Config().to_dict()
    values["data"]["batch_size"] = "8"
    with pytest.raises(ConfigError, match="data.batch_size.*expects int"):
        Config.from_dict(values, "ckpt")


@pytest.mark.parametrize("items, message", [
    (["eval.metric=voc"], r"eval.key 'AP50' is not a voc metric; .*use one of \['mAP'\]"),
    (["eval.key=mAP"], r"eval.key 'mAP' is not a coco metric"),
    (["data.format=voc", "eval.key=AP"], r"data.format='voc' has no COCO ground truth.*eval.metric=voc"),
    (["model.name=maskrcnn_resnet18_fpn_small", "eval.iou_type=segm", "eval.metric=voc", "eval.key=mAP"],
     r"eval.iou_type='segm' needs eval.metric='coco'"),
    (["eval.iou_type=segm"], r"needs a mask model \(maskrcnn_\*\), but model.name is 'ssd300_vgg16'"),
    (["data.masks=True", "model.name=fasterrcnn_resnet18_fpn"], r"data.masks=True .* 'fasterrcnn_resnet18_fpn'"),
    (["data.augment=rcnn", "data.min_size=[]"], r"data.min_size must list positive sizes"),
    (["schedule.milestones=[0, 3]"], r"schedule.milestones are epochs and must be positive"),
    (["eval.num_images=-1"], r"eval.num_images must be >= 0"),
    (["model.name=maskrcnn_resnet18_fpn_small"], r"'maskrcnn_resnet18_fpn_small' learns masks: set data.masks=True"),
])
def test_fields_that_cannot_work_together_are_named_at_load_time(items, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), items)


def test_pairs_that_fit_are_accepted():
    config = apply_overrides(Config(), ["eval.metric=voc", "eval.key=mAP", "data.format=voc"])
    assert config.eval.key == "mAP"
    config = apply_overrides(Config(), ["model.name=maskrcnn_resnet18_fpn_small", "eval.iou_type=segm",
                                        "data.masks=True", "eval.key=AP"])
    assert config.eval.iou_type == "segm"


def test_eval_keys_are_the_evaluators_metric_names():
    assert EVAL_KEYS["coco"] == STAT_NAMES and EVAL_KEYS["voc"] == VOC_STAT_NAMES


def test_backbone_weights_given_twice_are_refused():
    config = apply_overrides(Config(), ["model.backbone_weights=IMAGENET1K_V1",
                                        "model.options.backbone_weights=IMAGENET1K_V1"])
    with pytest.raises(ConfigError, match="model.backbone_weights and model.options.backbone_weights"):
        build_model(config.model, num_classes=4)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_every_config_builds_its_model(path):
    """Catches options a config gives that its model does not take. Starting
    weights are left out: they would be fetched from the internet."""
    config = load_config(path)
    model_config = dataclasses.replace(config.model, weights=None, backbone_weights=None)
    model = build_model(model_config, num_classes=4)
    assert model.num_classes == 4


SHAPES_RCNN_CONFIGS = ["fasterrcnn_shapes", "maskrcnn_shapes", "fasterrcnn_c4_shapes", "fastrcnn_shapes",
                       "rcnn_shapes", "tinyssd_shapes", "ssdlite_shapes"]


@pytest.mark.parametrize("name", SHAPES_RCNN_CONFIGS)
def test_shapes_config_trains_two_iterations_as_written(name, tmp_path):
    """The config as shipped (model, options, augmentation, solver, schedule),
    shrunk only in data: 8 images, 2 steps of 4, one process, then evaluated."""
    from detkit.engine import train

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py"), [
        f"data.root={tmp_path / 'shapes'}", "data.shapes.num_train=8", "data.shapes.num_val=2",
        "data.batch_size=4", "schedule.epochs=1", "schedule.warmup_iters=1", "eval.period=1", "processes=1"])
    state = train(config, str(tmp_path / "run"), progress=False)
    assert state.iteration == 2 and state.epoch == 1
    assert config.eval.key in state.last_metrics
    assert os.path.exists(tmp_path / "run" / "last.pth")
