"""Looking at a dataset before training on it: grids of images with their
boxes, masks and class names drawn, written as JPEG files.

    paths = browse(load_records("data.yaml"), "browse/", per_grid=16)
"""
from __future__ import annotations

import math
import os
from typing import Union

import cv2
import numpy as np
import torch

from ..io.viz import draw_detections, image_grid, write_image


def browse(records, out: Union[str, os.PathLike], per_grid: int = 16, max_images: int = 64, tile: int = 320,
           with_masks: bool = True, start: int = 0) -> list[str]:
    """Writes grids of `per_grid` images (the dataset's images from `start`,
    at most `max_images`), each drawn with its ground truth and fitted into a
    `tile` x `tile` cell, as out/grid_000.jpg, ...; returns their paths."""
    has_polygons = any(a.get("segmentation") for a in records.coco["annotations"])
    dataset = records.dataset(with_masks=with_masks and has_polygons)
    classes = records.classes
    numbers = range(start, min(len(dataset), start + max_images))
    os.makedirs(out, exist_ok=True)
    paths = []
    for first in range(0, len(numbers), per_grid):
        tiles = [_tile(*dataset[n], classes, tile) for n in numbers[first:first + per_grid]]
        path = os.path.join(os.fspath(out), f"grid_{first // per_grid:03d}.jpg")
        write_image(path, _grid(tiles))
        paths.append(path)
    return paths


def _tile(image: np.ndarray, target: dict, classes: list[str], size: int) -> np.ndarray:
    """The image with its targets drawn, scaled to fit size x size, on black."""
    truth = {"boxes": torch.as_tensor(target["boxes"]), "labels": torch.as_tensor(target["labels"])}
    if "masks" in target:
        truth["masks"] = torch.as_tensor(target["masks"]).float()
    drawn = draw_detections(image, truth, classes)
    scale = size / max(drawn.shape[:2])
    drawn = cv2.resize(drawn, (max(1, round(drawn.shape[1] * scale)), max(1, round(drawn.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    cell = np.zeros((size, size, 3), dtype=np.uint8)
    cell[:drawn.shape[0], :drawn.shape[1]] = drawn
    return cell


def _grid(tiles: list[np.ndarray]) -> np.ndarray:
    """Equal tiles, about as many columns as rows, on dark grey."""
    return image_grid(tiles, columns=math.ceil(math.sqrt(len(tiles))), fill=32)
