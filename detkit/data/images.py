"""Reading images for the datasets: RGB uint8, with errors that name the file."""
from __future__ import annotations

import os

import cv2
import numpy as np

# The most pixels an image may have: OpenCV's own limit on a decoded image
# (CV_IO_MAX_IMAGE_PIXELS); annotation files claiming more are rejected.
MAX_IMAGE_PIXELS = 2**30
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as an HxWx3 uint8 RGB array.

    Grayscale and 4-channel images are converted to RGB. Raises
    FileNotFoundError for a missing file and ValueError, naming the file, for
    one that is empty, cannot be decoded or is truncated (OpenCV would
    otherwise assert on an empty buffer and return a silently half-grey
    picture for a cut-off JPEG).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except ValueError as exc:  # a NUL byte or a character the file system cannot encode in the name
        raise ValueError(f"{path!r}: not a usable file name ({exc})") from None
    if not data:
        raise ValueError(f"{path}: empty image file (0 bytes)")
    if _is_truncated(data):
        raise ValueError(f"{path}: truncated image file (no end marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise ValueError(f"{path}: not a readable image (OpenCV check failed: {exc.err})") from None
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _is_truncated(data: bytes) -> bool:
    """JPEG and PNG files carry an end marker; a cut-off file lacks it."""
    if data[:3] == b"\xff\xd8\xff":
        return _JPEG_END not in data[-1024:]  # trailing padding after EOI is allowed
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _PNG_END not in data[-64:]
    return False
