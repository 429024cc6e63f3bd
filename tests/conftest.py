import os
import shutil

import pytest
from hypothesis import settings

from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_ssd_config(shapes_root: str, **schedule) -> Config:
    """A quarter-width SSD on 12 Shapes images: a few seconds an epoch."""
    return Config(
        name="tiny_ssd",
        model=ModelConfig(name="ssd300_resnet18", options={"width": 0.25, "size": 96}),
        data=DataConfig(format="shapes", root=shapes_root, augment="ssd", size=96, batch_size=4, num_workers=1,
                        shapes=ShapesConfig(num_train=12, num_val=4, image_size=96, seed=3)),
        solver=SolverConfig(optimizer="adamw", lr=1e-3, clip_grad_norm=10.0),
        schedule=ScheduleConfig(**{"epochs": 2, "warmup_iters": 2, "decay": "cosine", **schedule}),
        eval=EvalConfig(period=1, metric="coco", key="AP50", vis_images=2),
        log_period=1,
        keep_checkpoints=5,
    )


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
