"""Inference over files: images, folders and videos in, drawn copies and one
detections JSON out (tools/infer.py).

Many images run as a pipeline: background threads read and decode the files
(OpenCV releases the GIL) a bounded number ahead, the model takes them in
batches where batching leaves each image's detections as they are alone
(models that resize every image to one fixed size, SSD and TinySSD: any
images; the others: consecutive images of one size, as they are padded to the
batch's largest), and other threads draw and write the results. Detections
match one-at-a-time inference up to float rounding (batched convolutions may
round differently); the JSON and the drawings keep the input order.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from contextlib import closing
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np
from torch import nn

from .api import detect
from .data.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, expand_inputs, image_files, read_image
from .io.jsonio import write_json_atomic
from .io.progress import ProgressBar
from .io.rle import encode_masks
from .io.viz import draw_detections, write_image

__all__ = ["run_inference", "detect_files", "decoded", "detections_json", "expand_inputs", "image_files",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

FIXED_SIZE_BATCH = 8  # default batch for models that resize every image to one size
DEFAULT_WORKERS = 2  # reader threads


@dataclass
class Frame:
    """One decoded image: the file files[number], or frame `index` of that video (index None for an image)."""

    number: int
    path: str
    index: Optional[int]
    image: np.ndarray  # H x W x 3 uint8 RGB
    fps: float = 0.0  # videos: the frame rate to write them back at


def run_inference(model: nn.Module, inputs: Sequence[str], out: str, score_threshold: float = 0.5,
                  batch_size: Optional[int] = None, workers: Optional[int] = None, progress: bool = False) -> str:
    """Detects on every input; draws each into `out` (images as .jpg, videos as
    .mp4) and writes out/detections.json. batch_size, workers: see
    detect_files; progress: a tqdm bar on stderr. Returns a one-line summary
    with the images (and video frames) per second."""
    files = expand_inputs(inputs)
    os.makedirs(out, exist_ok=True)
    taken: set[str] = set()
    stems = [os.path.join(out, _unique_stem(path, taken)) for path in files]
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    detections = detect_files(model, files, score_threshold, batch_size, workers)
    with closing(detections), _Outputs(model.classes, workers) as outputs, \
            ProgressBar(total=_count_frames(files), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for frame, result in detections:
            if frame.index is None:
                outputs.image(stems[frame.number] + ".jpg", frame.image, result)
                records.append({"file": frame.path, **detections_json(result)})
            else:
                outputs.frame(stems[frame.number] + ".mp4", frame.image, result, frame.fps)
                records.append({"file": frame.path, "frame": frame.index, **detections_json(result)})
            bar.update()
    seconds = time.perf_counter() - start
    write_json_atomic(os.path.join(out, "detections.json"), records)
    total = sum(len(r["detections"]) for r in records)
    rate = len(records) / seconds if seconds > 0 else float("inf")
    return (f"{total} detections in {len(records)} images/frames from {len(files)} inputs; written to {out} "
            f"({rate:.1f} images/s)")


def detect_files(model: nn.Module, files: Sequence[str], score_threshold: float = 0.5,
                 batch_size: Optional[int] = None, workers: Optional[int] = None) -> Iterator[tuple[Frame, dict]]:
    """(frame, detect() result) for every image file and video frame of `files`, in order.

    batch_size: images per model call (default: 8 for models that resize every
        image to one fixed size, SSD and TinySSD; else 1). Other models batch
        only consecutive images of one size, whose padding is then the same as
        alone; either way the detections are those of one image at a time up
        to float rounding.
    workers: threads that read and decode image files ahead of the model
        (default 2; 0: read in this thread). A video is read by one thread.
    """
    batch_size = default_batch_size(model) if batch_size is None else batch_size
    workers = DEFAULT_WORKERS if workers is None else workers
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    fixed = _fixed_size(model) is not None
    batch: list[Frame] = []
    with closing(decoded(files, workers, ahead=max(2 * batch_size, 2 * workers, 2))) as frames:
        for frame in frames:
            if batch and (len(batch) == batch_size or not (fixed or frame.image.shape == batch[0].image.shape)):
                yield from zip(batch, detect([f.image for f in batch], model, score_threshold))
                batch = []
            batch.append(frame)
    if batch:
        yield from zip(batch, detect([f.image for f in batch], model, score_threshold))


def default_batch_size(model: nn.Module) -> int:
    return FIXED_SIZE_BATCH if _fixed_size(model) is not None else 1


def _fixed_size(model: nn.Module):
    """(width, height) every input is resized to, or None (sizes kept in proportion, or unknown)."""
    return getattr(getattr(model, "transform", None), "fixed_size", None)


def decoded(files: Sequence[str], workers: int = DEFAULT_WORKERS, ahead: int = 8) -> Iterator[Frame]:
    """The images of `files` and the frames of its videos, in order, read by
    `workers` threads (0: this one) at most `ahead` images in advance."""
    if workers == 0:
        for number, path in enumerate(files):
            if _is_video(path):
                yield from _video_frames(number, path, ahead=0)
            else:
                yield Frame(number, path, None, read_image(path))
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="detkit-read")
    pending: deque[tuple[int, Future]] = deque()
    try:
        i = 0
        while i < len(files) or pending:
            while i < len(files) and len(pending) < ahead and not _is_video(files[i]):
                pending.append((i, pool.submit(read_image, files[i])))
                i += 1
            if pending:
                number, image = pending.popleft()
                yield Frame(number, files[number], None, image.result())
            else:  # a video, after every image before it
                yield from _video_frames(i, files[i], ahead)
                i += 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def _video_frames(number: int, path: str, ahead: int) -> Iterator[Frame]:
    """The frames of a video as RGB, read by a thread `ahead` frames in advance (0: by this thread)."""
    capture = cv2.VideoCapture(path)
    frames = None
    try:
        if not capture.isOpened():
            raise ValueError(f"{path}: cannot open the video")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        frames = _read_frames(capture) if ahead == 0 else _in_background(_read_frames(capture), ahead)
        index = -1
        for index, image in enumerate(frames):
            yield Frame(number, path, index, image, fps)
        if index < 0:
            raise ValueError(f"{path}: the video has no readable frames")
    finally:
        if frames is not None:
            frames.close()  # stops and joins the reading thread before the capture goes
        capture.release()


def _read_frames(capture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _in_background(items: Iterator, ahead: int) -> Iterator:
    """`items`, produced by a thread at most `ahead` in advance; its errors raised here."""
    buffer: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)
            return
        put(_END)

    thread = threading.Thread(target=produce, name="detkit-video", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _count_frames(files: Sequence[str]) -> Optional[int]:
    """Images plus the frames the videos claim; None if a video does not say."""
    total = 0
    for path in files:
        if not _is_video(path):
            total += 1
            continue
        capture = cv2.VideoCapture(path)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        if frames <= 0:
            return None
        total += frames
    return total


class _Outputs:
    """Draws and writes results in background threads: images by a pool,
    video frames in order by one thread. At most `limit` writes wait."""

    def __init__(self, classes: Sequence[str], workers: Optional[int], limit: int = 32):
        self.classes, self.limit = classes, limit
        self.images = ThreadPoolExecutor(max(1, DEFAULT_WORKERS if workers is None else workers),
                                         thread_name_prefix="detkit-write")
        self.videos = ThreadPoolExecutor(1, thread_name_prefix="detkit-video-write")
        self.pending: deque[Future] = deque()
        self.video_path: Optional[str] = None
        self.writer = None  # the open cv2.VideoWriter; used by the video thread only

    def image(self, path: str, image: np.ndarray, result: dict) -> None:
        self._wait_for(self.images.submit(self._write_image, path, image, result))

    def frame(self, path: str, image: np.ndarray, result: dict, fps: float) -> None:
        if path != self.video_path:
            self._end_video()
            self.video_path = path
        self._wait_for(self.videos.submit(self._write_frame, path, image, result, fps))

    def _write_image(self, path: str, image: np.ndarray, result: dict) -> None:
        write_image(path, draw_detections(image, result, self.classes))

    def _write_frame(self, path: str, image: np.ndarray, result: dict, fps: float) -> None:
        drawn = cv2.cvtColor(draw_detections(image, result, self.classes), cv2.COLOR_RGB2BGR)
        if self.writer is None:
            self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.shape[1::-1])
        self.writer.write(drawn)

    def _release(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def _end_video(self) -> None:
        if self.video_path is not None:
            self._wait_for(self.videos.submit(self._release))
            self.video_path = None

    def _wait_for(self, future: Future) -> None:
        self.pending.append(future)
        while len(self.pending) > self.limit or (self.pending and self.pending[0].done()):
            self.pending.popleft().result()

    def __enter__(self) -> "_Outputs":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is None:
                self._end_video()
                while self.pending:
                    self.pending.popleft().result()
        finally:
            for pool in (self.images, self.videos):
                pool.shutdown(wait=True, cancel_futures=error is not None)
            self._release()


def _unique_stem(path: str, taken: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name)
    return name


def detections_json(result: dict[str, Any]) -> dict[str, Any]:
    """One image's detections as JSON-ready values (boxes x1, y1, x2, y2 in
    pixels; masks as COCO RLE)."""
    detections = []
    boxes, scores, labels = result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()
    rles = encode_masks(result["masks"]) if "masks" in result else [None] * len(scores)
    for box, score, label, name, rle in zip(boxes, scores, labels, result["class_names"], rles):
        item = {"box": [round(v, 2) for v in box], "score": round(score, 5), "label": label, "class_name": name}
        if rle is not None:
            item["mask"] = rle
        detections.append(item)
    return {"detections": detections}
