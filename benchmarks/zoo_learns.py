"""Every detector in the zoo learns: each architecture, at small width and
from scratch, trains on the same Shapes images for the same number of
iterations with its family's Shapes recipe, then is scored on a fresh Shapes
set (seed 7) that nothing was tuned on.

    python benchmarks/zoo_learns.py                       # all models, ~30 min on 2 cores
    python benchmarks/zoo_learns.py --models fasterrcnn_vgg16_pool ssd300_vgg16 --epochs 1

Same input size where the family allows: the ResNet/GoogLeNet SSDs and every
R-CNN see the 128 px images at 128 px; the VGG SSDs only run at their own
sizes (300, 512; smaller inputs leave their last layers with nothing to
convolve), so the same images are upscaled for them. Recipes: SSDs train with
configs/ssd_shapes.py's solver and augmentation, R-CNNs with
configs/fasterrcnn_shapes.py's (maskrcnn_shapes.py's for the mask model).
Each run is `tools/train.py` with two spawned ranks, as users run it; the wall
time covers the whole command (start-up, training, validation).

A model that stays near AP 0 where its siblings learn is a bug, not a row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.heldout import score  # noqa: E402
from detkit.runtimes.machine import gemm_gflops  # noqa: E402

SSD_SCALES = [0.12, 0.2, 0.32, 0.46, 0.6, 0.75, 0.9]  # configs/ssd_shapes.py: the objects' sizes
BATCH_PER_RANK = 8  # x 2 ranks
RCNN_FROM_SCRATCH = {"trainable_backbone_layers": 5, "frozen_bn": False}  # BN learns when nothing is pretrained


class Entry(NamedTuple):
    name: str  # the row's name
    model: str  # the zoo name
    recipe: str  # configs/<recipe>.py gives solver, augmentation and detector settings
    options: dict  # model options on top of the recipe's


ZOO = [
    # The VGG SSDs run only at their own 300 / 512 px, far more work per image than 128 px: eighth width.
    Entry("ssd300_vgg16", "ssd300_vgg16", "ssd_shapes", {"width": 0.125, "size": 300}),
    Entry("ssd512_vgg16", "ssd512_vgg16", "ssd_shapes", {"width": 0.125, "size": 512}),
    Entry("ssd300_resnet18", "ssd300_resnet18", "ssd_shapes", {"width": 0.25, "size": 128, "scales": SSD_SCALES}),
    Entry("ssd300_resnet50", "ssd300_resnet50", "ssd_shapes", {"width": 0.25, "size": 128, "scales": SSD_SCALES}),
    Entry("ssd300_googlenet", "ssd300_googlenet", "ssd_shapes", {"width": 0.25, "size": 128, "scales": SSD_SCALES}),
    Entry("fasterrcnn_resnet18_fpn", "fasterrcnn_resnet18_fpn", "fasterrcnn_shapes",
          {"width": 0.25, **RCNN_FROM_SCRATCH}),
    Entry("fasterrcnn_googlenet_fpn", "fasterrcnn_googlenet_fpn", "fasterrcnn_shapes",
          {"width": 0.25, "anchor_sizes": [16, 32, 64, 128], "trainable_backbone_layers": 4}),
    Entry("fasterrcnn_vgg16_align", "fasterrcnn_vgg16", "fasterrcnn_shapes",
          {"width": 0.25, "anchor_sizes": [16, 32, 64, 128], "trainable_backbone_layers": 5, "roi_pool": "align"}),
    Entry("fasterrcnn_vgg16_pool", "fasterrcnn_vgg16", "fasterrcnn_shapes",
          {"width": 0.25, "anchor_sizes": [16, 32, 64, 128], "trainable_backbone_layers": 5, "roi_pool": "pool"}),
    Entry("maskrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn", "maskrcnn_shapes", {"width": 0.25, **RCNN_FROM_SCRATCH}),
]
# Options of a recipe's model that the other family members don't share, or that the entry replaces.
RECIPE_ONLY = {"ssd_shapes": {"width", "size", "scales"}, "fasterrcnn_shapes": set(), "maskrcnn_shapes": set()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=[e.name for e in ZOO], default=[e.name for e in ZOO],
                        metavar="NAME", help="rows to run (default: all): %(choices)s")
    parser.add_argument("--images", type=int, default=2400, help="training images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs over them (default: %(default)s)")
    parser.add_argument("--held-out", type=int, default=300, help="fresh held-out images (default: %(default)s)")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "work_dirs", "zoo_learns"))
    return parser.parse_args(argv)


def config_for(entry: Entry, images: int, epochs: int, data_root: str):
    """The recipe's config with this entry's model, on the shared training images."""
    from detkit.config import load_config

    config = load_config(os.path.join(REPO, "configs", f"{entry.recipe}.py"))
    options = {k: v for k, v in config.model.options.items() if k not in RECIPE_ONLY[entry.recipe]}
    options.update(entry.options)
    shapes = dataclasses.replace(config.data.shapes, num_train=images, num_val=200)
    # One batch size for all (ssd_shapes uses 16 per rank), so every model takes the same steps.
    return dataclasses.replace(
        config, name=entry.name, model=dataclasses.replace(config.model, name=entry.model,
                                                                              options=options),
        data=dataclasses.replace(config.data, root=data_root, shapes=shapes, batch_size=BATCH_PER_RANK),
        schedule=dataclasses.replace(config.schedule, epochs=epochs),
        eval=dataclasses.replace(config.eval, period=epochs, vis_images=0))


def train(config, work_dir: str) -> float:
    """Runs tools/train.py on `config` (written as a config file); returns the wall time."""
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, "config_zoo.py")
    with open(path, "w") as f:
        f.write("import json\nfrom detkit.config import Config\n\n"
                f"config = Config.from_dict(json.loads({json.dumps(json.dumps(config.to_dict()))}))\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), path, "--work-dir", work_dir,
                    "--no-progress"], check=True, cwd=REPO)
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    work = os.path.abspath(args.work_dir)
    chosen = [e for e in ZOO if e.name in args.models]
    data_root = os.path.join(REPO, "datasets", "shapes")
    rows = []
    for entry in chosen:
        config = config_for(entry, args.images, args.epochs, data_root)
        folder = os.path.join(work, config.name)
        wall = train(config, folder)
        stats = score(os.path.join(folder, "last.pth"), os.path.join(REPO, "datasets", "shapes_heldout"),
                      args.held_out, 7)
        size = config.model.options.get("size") or config.model.options.get("min_size")
        rows.append((entry.name, config.model.options["width"], size, stats["bbox"]["AP50"], stats["bbox"]["AP"], wall))
        print(f"--> {entry.name}: held-out AP50 {stats['bbox']['AP50']:.3f}, wall {wall:.0f} s", flush=True)
    iterations = args.epochs * (args.images // (config.data.batch_size * config.processes))
    print(f"\nEvery model from scratch at width 0.25 (the VGG SSDs 0.125): {args.images} Shapes images (128 px), {iterations} iterations "
          f"of {config.data.batch_size} x {config.processes} ranks; held-out: a fresh Shapes set, seed 7, "
          f"{args.held_out} images. This CPU: fp32 GEMM {gemm_gflops():.0f} GFLOP/s (1024x1024 torch.mm).\n")
    print("| model | width | input px | held-out AP50 | held-out AP | wall (train + val) |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, width, size, ap50, ap, wall in rows:
        print(f"| {name} | {width} | {size} | {ap50:.3f} | {ap:.3f} | {wall / 60:.1f} min |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
