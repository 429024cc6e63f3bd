import matplotlib
import numpy as np
import pytest

from detkit.evaluation import plot_pr_curves
from detkit.io.viz import image_grid, plot_training_curves

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def svg_backend():
    """A backend that is not Agg, as a notebook's inline backend is not."""
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    yield plt
    plt.switch_backend(before)


def test_plotting_leaves_the_users_backend_and_figures_alone(svg_backend, tmp_path):
    plt = svg_backend
    user_figure = plt.figure()
    records = [{"type": "train", "iteration": i, "loss": 1.0 / (i + 1)} for i in range(20)]
    records += [{"type": "eval", "epoch": 1, "AP50": 0.5}, {"type": "eval", "epoch": 2, "AP50": 0.7}]
    plot_training_curves(records, tmp_path / "curves.png", metric="AP50")
    recall = np.linspace(0, 1, 11)
    plot_pr_curves({"a": (recall, 1 - recall), "b": (recall, np.ones(11))}, tmp_path / "pr.png")
    assert matplotlib.get_backend().lower() == "svg"
    assert plt.get_fignums() == [user_figure.number]  # no pyplot figure made or left open
    plt.close(user_figure)
    for name in ("curves.png", "pr.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "pr.png"]  # no temporary file left


def test_the_image_grid_keeps_every_image_whole():
    images = [np.full((h, w, 3), i + 1, np.uint8) for i, (h, w) in enumerate([(4, 6), (5, 3), (2, 2)])]
    grid = image_grid(images, columns=2, pad=1, fill=255)
    assert grid.shape == (1 + 2 * 6, 1 + 2 * 7, 3)
    assert (grid[1:5, 1:7] == 1).all() and (grid[1:6, 8:11] == 2).all() and (grid[7:9, 1:3] == 3).all()
    assert (grid[0] == 255).all() and (grid[5:7, 1:7] == 255).all()  # the padding and the rest of short cells
