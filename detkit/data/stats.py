"""What a dataset holds, before training on it: objects and images per class,
boxes per image, box sizes and shapes, COCO's small/medium/large split, and
image sizes; as a terminal table, a PNG figure and a JSON file.

    stats = dataset_stats(load_records("instances_train.json"))
    print(stats_table(stats)); plot_stats(stats, "stats.png"); write_json_atomic("stats.json", stats)
"""
from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any, Union

import numpy as np

# COCO's area ranges (pycocotools' areaRng): small < 32^2 <= medium < 96^2 <= large
SMALL_AREA, LARGE_AREA = 32 ** 2, 96 ** 2
SIZE_BINS = (0, 8, 16, 32, 64, 96, 128, 256, 512, 1024, math.inf)  # sqrt(area) in pixels
RATIO_BINS = (0, 1 / 8, 1 / 4, 1 / 2, 2 / 3, 3 / 2, 2, 4, 8, math.inf)  # width / height


def dataset_stats(records) -> dict[str, Any]:
    """The statistics of a Records (see the module docstring). Per class,
    `instances` counts annotations and `images` the images holding one, as
    pycocotools' getAnnIds(catIds=) and getImgIds(catIds=) do (crowd
    regions included). Sizes use the annotation's "area" as COCO's
    evaluation does (the segment's area where there is one), else the box's."""
    coco = records.coco
    anns = coco["annotations"]
    names = {c["id"]: str(c["name"]) for c in coco["categories"]}
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    areas = np.array([a.get("area", w * h) for a, (_, _, w, h) in zip(anns, xywh)], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = xywh[:, 2] / xywh[:, 3]
    per_image = Counter(a["image_id"] for a in anns)
    boxes_per_image = [per_image.get(image["id"], 0) for image in coco["images"]]
    return {
        "source": records.source,
        "images": len(coco["images"]),
        "annotations": len(anns),
        "classes": _per_class(anns, names),
        "boxes_per_image": {"mean": float(np.mean(boxes_per_image)) if boxes_per_image else 0.0,
                            "max": max(boxes_per_image, default=0),
                            "histogram": dict(sorted(Counter(boxes_per_image).items()))},
        "box_size": _histogram(np.sqrt(np.clip(areas, 0, None)), SIZE_BINS),
        "aspect_ratio": _histogram(ratios, RATIO_BINS),
        "coco_size_split": {"small": int((areas < SMALL_AREA).sum()),
                            "medium": int(((areas >= SMALL_AREA) & (areas < LARGE_AREA)).sum()),
                            "large": int((areas >= LARGE_AREA).sum())},
        "image_sizes": {f"{w}x{h}": n for (w, h), n in
                        Counter((i["width"], i["height"]) for i in coco["images"]).most_common()},
    }


def _per_class(anns: list[dict], names: dict[int, str]) -> list[dict[str, Any]]:
    instances = Counter(a["category_id"] for a in anns)
    images = Counter(cat for cat, _ in {(a["category_id"], a["image_id"]) for a in anns})
    return [{"id": cat, "name": name, "instances": instances.get(cat, 0), "images": images.get(cat, 0)}
            for cat, name in sorted(names.items())]


def _histogram(values: np.ndarray, edges: tuple) -> dict[str, Any]:
    """Counts of finite `values` in [edges[i], edges[i+1]), with bin labels."""
    finite = values[np.isfinite(values)]
    counts = np.histogram(finite, bins=np.array(edges, dtype=np.float64))[0] if finite.size else \
        np.zeros(len(edges) - 1, dtype=np.int64)
    labels = [f"{_edge(a)}-{_edge(b)}" for a, b in zip(edges, edges[1:])]
    summary = {"median": float(np.median(finite)), "min": float(finite.min()), "max": float(finite.max())} \
        if finite.size else {}
    return {"bins": labels, "counts": counts.astype(int).tolist(), **summary}


def _edge(value: float) -> str:
    if math.isinf(value):
        return "inf"
    if value >= 1 or value == 0:
        return f"{value:g}"
    return f"1/{1 / value:.3g}"  # 1/8, 1/4, 1/2, 1/1.5


def stats_table(stats: dict[str, Any]) -> str:
    """The statistics as plain-text tables for the terminal."""
    width = max([len(c["name"]) for c in stats["classes"]] + [5])
    lines = [f"{stats['source']}: {stats['images']} images, {stats['annotations']} objects, "
             f"{stats['boxes_per_image']['mean']:.2f} per image (max {stats['boxes_per_image']['max']})",
             "", f"{'class':<{width}}  {'objects':>8}  {'images':>7}"]
    lines += [f"{c['name']:<{width}}  {c['instances']:>8}  {c['images']:>7}" for c in stats["classes"]]
    split = stats["coco_size_split"]
    lines += ["", f"COCO size split: small {split['small']}, medium {split['medium']}, large {split['large']}"]
    for key, title in (("box_size", "box size (sqrt area, px)"), ("aspect_ratio", "aspect ratio (w / h)")):
        hist = stats[key]
        lines += ["", title] + [f"  {label:>10}  {count}" for label, count in zip(hist["bins"], hist["counts"])]
    sizes = list(stats["image_sizes"].items())
    lines += ["", "image sizes: " + ", ".join(f"{size} ({n})" for size, n in sizes[:8])
              + (f", ... {len(sizes) - 8} more" if len(sizes) > 8 else "")]
    return "\n".join(lines)


def plot_stats(stats: dict[str, Any], path: Union[str, os.PathLike]) -> None:
    """Four panels as one PNG: objects per class, boxes per image, box sizes, aspect ratios."""
    from ..io.viz import agg_figure, save_png

    fig = agg_figure(figsize=(12, 8))
    panels = fig.subplots(2, 2)
    names = [c["name"] for c in stats["classes"]]
    panels[0, 0].barh(names, [c["instances"] for c in stats["classes"]])
    panels[0, 0].set_title("objects per class")
    per_image = stats["boxes_per_image"]["histogram"]
    panels[0, 1].bar([int(k) for k in per_image], list(per_image.values()))
    panels[0, 1].set_title("boxes per image")
    for axis, key, title in ((panels[1, 0], "box_size", "box size, sqrt(area) px"),
                             (panels[1, 1], "aspect_ratio", "aspect ratio, width / height")):
        hist = stats[key]
        axis.bar(range(len(hist["counts"])), hist["counts"])
        axis.set_xticks(range(len(hist["bins"])), hist["bins"], rotation=45, fontsize=8)
        axis.set_title(title)
    fig.suptitle(f"{stats['source']}: {stats['images']} images, {stats['annotations']} objects", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
