"""What the tutorials share: a small Shapes set made once per machine, and a
way to show images side by side. Kept beside the notebooks so that each one
starts with `from tutorial_data import ...` and runs offline."""
from __future__ import annotations

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from matplotlib_inline.backend_inline import set_matplotlib_formats

from detkit.config import DataConfig, ShapesConfig
from detkit.data import shapes
from detkit.engine.build import prepare_shapes

CACHE = os.path.join(tempfile.gettempdir(), "detkit-tutorials")
set_matplotlib_formats("jpeg")  # the pictures are photographs of textures: a PNG of each is 10x the size
plt.rcParams["figure.dpi"] = 80


def shapes_set(num_train: int = 200, num_val: int = 50, image_size: int = 128, seed: int = 0,
               preset: str = "basic") -> shapes.ShapesPaths:
    """A Shapes set in a cache folder of the system's temp dir, generated on the
    first call (as a config's data.root would be: see detkit.engine.build)."""
    spec = ShapesConfig(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed, preset=preset)
    return prepare_shapes(DataConfig(format="shapes", root=CACHE, shapes=spec))


def work_dir(name: str) -> str:
    """A fresh folder for a tutorial's training run."""
    os.makedirs(CACHE, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{name}-", dir=CACHE)


def show(images: list[np.ndarray], titles: list[str] = (), columns: int = 4, size: float = 3.0) -> None:
    """Images (H x W x 3 uint8 RGB) in a grid, with their titles."""
    rows = (len(images) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, list(titles) + [""] * len(images)):
        axis.imshow(image)
        axis.set_title(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def repo_config(name: str, overrides: list[str]) -> "Config":
    """configs/<name>.py of this repository (the notebooks run in docs/tutorials), with `overrides`."""
    from detkit.config import load_config

    here = os.path.dirname(os.path.abspath(__file__))
    return load_config(os.path.join(here, "..", "..", "configs", f"{name}.py"), overrides)
