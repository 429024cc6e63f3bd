import os
import shutil

import pytest
from hypothesis import settings

from tests.helpers import tiny_ssd_config

# Property tests: 80 examples by default; CI runs a fixed set (derandomized) so
# a result never depends on the draw; DETKIT_HYPOTHESIS_EXAMPLES=N runs N of
# them for a deeper local search.
settings.register_profile("default", max_examples=80, deadline=None)
settings.register_profile("ci", max_examples=80, deadline=None, derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
elif os.environ.get("DETKIT_HYPOTHESIS_EXAMPLES"):
    settings.register_profile("deep", max_examples=int(os.environ["DETKIT_HYPOTHESIS_EXAMPLES"]), deadline=None)
    settings.load_profile("deep")
else:
    settings.load_profile("default")


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("shapes_cache"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shapes_root):
    """(config, work dir) of one finished two-epoch run, shared by the tests
    that only read its outputs."""
    from detkit.engine import train

    config = tiny_ssd_config(shapes_root)
    work_dir = str(tmp_path_factory.mktemp("trained"))
    train(config, work_dir, progress=False)
    return config, work_dir


@pytest.fixture
def trained_copy(trained, tmp_path):
    config, work_dir = trained
    copy = str(tmp_path / "run")
    shutil.copytree(work_dir, copy)
    return config, copy


# The options of the issue-26 engine: a moving average of the weights, and
# bfloat16 autocast where the CPU has it (float32 elsewhere: the tests run on both).
EMA_BF16 = ["solver.ema_decay=0.9", "solver.ema_tau=2", "solver.amp=auto"]


@pytest.fixture(scope="session")
def trained_ema_bf16(tmp_path_factory, shapes_root):
    """(config, work dir) of `trained`'s run with EMA_BF16 on."""
    from detkit.config import apply_overrides
    from detkit.engine import train

    config = apply_overrides(tiny_ssd_config(shapes_root), EMA_BF16)
    work_dir = str(tmp_path_factory.mktemp("trained_ema_bf16"))
    train(config, work_dir, progress=False)
    return config, work_dir


@pytest.fixture(scope="session")
def overfit_maskrcnn(tmp_path_factory):
    """maskrcnn_resnet18_fpn_small trained from scratch on 4 Shapes images
    (128 px) for 70 steps: (model in eval mode, loss history, images,
    targets with masks). Read-only: test_learns checks that it learned, the
    export tests export it."""
    import torch

    from detkit.data import shapes
    from tests.helpers import overfit

    torch.manual_seed(0)
    paths = shapes.generate(tmp_path_factory.mktemp("shapes4_masks"), num_train=4, num_val=0, image_size=128, seed=0)
    return overfit("maskrcnn_resnet18_fpn_small", paths, 70, 2e-3, with_masks=True, min_size=128, max_size=128)


@pytest.fixture(scope="session")
def overfit_ssd(tmp_path_factory):
    """ssd300_resnet18_small trained for 100 steps on 8 Shapes images (128 px)
    until it finds their objects: (model in eval mode, images, targets, the
    set's paths; its 8 validation images are others to calibrate on).
    Read-only: the runtime and export tests share it."""
    import torch

    from detkit.data import shapes
    from tests.helpers import overfit

    torch.manual_seed(0)
    paths = shapes.generate(tmp_path_factory.mktemp("shapes8"), num_train=8, num_val=8, image_size=128, seed=0)
    model, _, images, targets = overfit("ssd300_resnet18_small", paths, 100, 1e-3, size=128, score_thresh=0.05)
    return model, images, targets, paths
