"""The detection lineage side by side on one Shapes split: R-CNN, Fast R-CNN
and Faster R-CNN on the same body (ResNet-18's layer3 at quarter width, 128 px
inputs), the book's TinySSD and detkit's default SSD, each trained from
scratch by tools/train.py with its config, then scored on the held-out Shapes
set (seed 7, 500 images) and timed per image, all in this one run.

    python benchmarks/lineage.py                       # everything: about an hour on 2 cores
    python benchmarks/lineage.py --only fastrcnn tinyssd --work-dir work_dirs/lineage
    python benchmarks/lineage.py --skip-train          # re-score the checkpoints already in --work-dir

R-CNN and Fast R-CNN train on selective search proposals computed once for
the training split, in this run and timed on their own (the "proposals"
column); at test time they run selective search on every image, which the
inference time includes, as it did in the papers. Inference is one image at
a time on the CPU with torch's threads, the median over --time-images
held-out images, after one warm-up image; for R-CNN and Fast R-CNN the
model's own selective search step is then timed alone on the same images. The machine's fp32 GEMM GFLOP/s is
printed beside the times, before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# (key, the model's name in the table, config, trains on proposals, --set overrides)
LINEAGE = [
    ("rcnn", "R-CNN", "configs/rcnn_shapes.py", True, []),
    ("fastrcnn", "Fast R-CNN", "configs/fastrcnn_shapes.py", True, []),
    # The same with Mask R-CNN's RoIAlign for the paper's RoIPool: how much the quantised pooling
    # costs on objects that span 1-4 cells of the stride-16 map.
    ("fastrcnn_align", "Fast R-CNN, RoIAlign", "configs/fastrcnn_shapes.py", True, ["model.options.roi_pool=align"]),
    ("fasterrcnn_c4", "Faster R-CNN", "configs/fasterrcnn_c4_shapes.py", False, []),
    ("tinyssd", "TinySSD", "configs/tinyssd_shapes.py", False, []),
    ("ssd", "SSD (default)", "configs/ssd_shapes.py", False, []),
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=os.path.join(REPO, "work_dirs", "lineage"))
    parser.add_argument("--only", nargs="+", choices=[key for key, *_ in LINEAGE], help="a subset of the models")
    parser.add_argument("--skip-train", action="store_true", help="score the checkpoints already trained")
    parser.add_argument("--heldout-images", type=int, default=500)
    parser.add_argument("--time-images", type=int, default=50, help="held-out images timed per model")
    return parser.parse_args(argv)


def fmt_time(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def train_proposals(config_path: str, path: str) -> float:
    """Computes the training split's selective search proposals into `path`
    (a fresh file); returns the seconds it took."""
    from detkit.config import load_config
    from detkit.data import CocoDetection
    from detkit.data.proposals import compute_proposals
    from detkit.engine.build import prepare_shapes

    config = load_config(config_path)
    shapes = prepare_shapes(config.data)
    train = CocoDetection(shapes.image_root, shapes.coco_train)
    if os.path.exists(path):
        os.remove(path)
    start = time.perf_counter()
    compute_proposals(train, path, "fast", config.data.max_proposals, progress=False)
    return time.perf_counter() - start


def train(config: str, work_dir: str, proposals: str | None, overrides: list[str]) -> float:
    """Runs tools/train.py from an empty work dir; returns its wall seconds."""
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), os.path.join(REPO, config),
               "--work-dir", work_dir, "--no-progress"]
    overrides = overrides + ([f"data.proposals={proposals}"] if proposals else [])
    if overrides:
        command += ["--set", *overrides]
    if os.path.exists(os.path.join(work_dir, "last.pth")):
        os.remove(os.path.join(work_dir, "last.pth"))
    start = time.perf_counter()
    with open(os.path.join(work_dir, "train.out"), "w") as log:
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{config} failed (exit {done.returncode}); see {work_dir}/train.out")
    return time.perf_counter() - start


def train_images_per_s(work_dir: str) -> float:
    """Training throughput of the run's last logged window (all ranks), from its metrics.jsonl."""
    with open(os.path.join(work_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("type") == "train"][-1]["images_per_s"]


def inference_ms(checkpoint: str, heldout_root: str, heldout_images: int, count: int) -> tuple[float, float | None]:
    """Median ms per image of load_model(checkpoint) on `count` images of its
    held-out set, one at a time, and for a model that proposes with selective
    search the median ms of that step alone on the same images (else None)."""
    import torch

    from benchmarks.heldout import HELD_OUT_SEED, fresh_set
    from detkit.api import load_model
    from detkit.data import read_image

    model = load_model(checkpoint, "cpu")
    image_root = fresh_set(model.config.data, heldout_root, heldout_images, HELD_OUT_SEED).image_root
    files = sorted(os.listdir(image_root))[: count + 1]
    images = [torch.from_numpy(read_image(os.path.join(image_root, f))).permute(2, 0, 1).float() / 255
              for f in files]
    steps = {"model": lambda image: model([image])}
    if hasattr(model, "proposer"):
        steps["proposals"] = lambda image: model.proposer([image])
    medians = {}
    with torch.no_grad():
        for name, step in steps.items():
            seconds = []
            for image in images:
                start = time.perf_counter()
                step(image)
                seconds.append(time.perf_counter() - start)
            medians[name] = 1000 * statistics.median(seconds[1:])  # the first call warms up
    return medians["model"], medians.get("proposals")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from benchmarks.heldout import HELD_OUT_SEED, score
    from detkit.runtimes.machine import gemm_gflops

    torch.set_num_threads(min(2, torch.get_num_threads()))
    os.makedirs(args.work_dir, exist_ok=True)
    gemm_before = gemm_gflops()
    print(f"fp32 GEMM {gemm_before:.0f} GFLOP/s, {torch.get_num_threads()} threads", flush=True)
    chosen = [entry for entry in LINEAGE if not args.only or entry[0] in args.only]
    proposal_file = os.path.join(args.work_dir, "train_proposals.npz")
    results_path = os.path.join(args.work_dir, "lineage.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    if not args.skip_train and any(entry[3] for entry in chosen):
        seconds = train_proposals(os.path.join(REPO, "configs/fastrcnn_shapes.py"), proposal_file)
        results["proposals_s"] = seconds
        print(f"selective search on the training split: {fmt_time(seconds)}", flush=True)
    heldout_root = os.path.join(REPO, "datasets", "shapes_heldout")
    for key, label, config, needs, overrides in chosen:
        work_dir = os.path.join(args.work_dir, key)
        os.makedirs(work_dir, exist_ok=True)
        entry = results.setdefault(key, {"label": label, "config": config})
        if not args.skip_train:
            entry["train_s"] = train(config, work_dir, proposal_file if needs else None, overrides)
            entry["train_images_per_s"] = train_images_per_s(work_dir)
            print(f"{label}: trained in {fmt_time(entry['train_s'])}", flush=True)
        checkpoint = os.path.join(work_dir, "last.pth")
        stats = score(checkpoint, heldout_root, args.heldout_images, HELD_OUT_SEED)["bbox"]
        entry["AP50"], entry["AP"] = stats["AP50"], stats["AP"]
        entry["infer_ms"], entry["proposals_ms"] = inference_ms(checkpoint, heldout_root, args.heldout_images,
                                                               args.time_images)
        print(f"{label}: held-out AP50 {entry['AP50']:.3f}, AP {entry['AP']:.3f}, {entry['infer_ms']:.1f} ms/img",
              flush=True)
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1)
    gemm_after = gemm_gflops()
    print(f"\nfp32 GEMM {gemm_before:.0f} GFLOP/s before, {gemm_after:.0f} after; held-out Shapes set "
          f"(seed {HELD_OUT_SEED}, {args.heldout_images} images)\n")
    print("| model | config | held-out AP50 | AP | training wall | train images/s | inference ms/img "
          "| of which selective search |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key, label, config, needs, _ in chosen:
        entry = results[key]
        wall = fmt_time(entry["train_s"]) if "train_s" in entry else "-"
        if needs and "proposals_s" in results:
            wall += f" + {fmt_time(results['proposals_s'])} proposals"
        speed = f"{entry['train_images_per_s']:.0f}" if "train_images_per_s" in entry else "-"
        print(f"| {label} | `{os.path.basename(config)}` | {entry['AP50']:.3f} | {entry['AP']:.3f} | {wall} | "
              f"{speed} | {entry['infer_ms']:.1f} | {fmt_ms(entry.get('proposals_ms'))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
