"""Images on disk: reading one as RGB uint8 with errors that name the file, and
finding the images (and videos) that paths, folders and glob patterns name."""
from __future__ import annotations

import glob
import os
from struct import error as struct_error
from typing import Optional, Sequence

import cv2
import numpy as np

# The most pixels an image may have: OpenCV's own limit on a decoded image
# (CV_IO_MAX_IMAGE_PIXELS); annotation files claiming more are rejected.
MAX_IMAGE_PIXELS = 2**30
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
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
    return decode_image(data, path)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes as an HxWx3 uint8 RGB array, as read_image reads
    files (no EXIF rotation: sizes stay those of the header); an empty,
    truncated or undecodable one is a ValueError naming `name`."""
    if not data:
        raise ValueError(f"{name}: empty image file (0 bytes)")
    if _is_truncated(data):
        raise ValueError(f"{name}: truncated image file (no end marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise ValueError(f"{name}: not a readable image (OpenCV check failed: {exc.err})") from None
    if image is None:
        raise ValueError(f"{name}: not a readable image")
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding it
    (the imagesize package: JPEG, PNG, BMP, GIF, TIFF, WebP, ...); a missing
    file or a header it cannot read is an error naming the file."""
    import imagesize

    path = os.fspath(path)
    try:
        # The stored size, as read_image decodes it (OpenCV's IMREAD_UNCHANGED does not apply EXIF rotation).
        width, height = imagesize.get(path, exif_rotation=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, ValueError, struct_error) as exc:
        raise ValueError(f"{path}: cannot read the image size from its header ({exc})") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: cannot read the image size from its header (not a known image format)")
    return int(width), int(height)


def path_problem(name: str) -> Optional[str]:
    """Why a file name taken from an annotation file could lead outside its
    dataset's folder (absolute, a drive, a `..` part, a NUL), or None when it
    stays inside."""
    parts = name.replace("\\", "/").split("/")
    if "\0" in name:
        return f"file name {name!r} holds a NUL character"
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"file name {name!r} is absolute; it must be relative to the dataset's image folder"
    if ".." in parts:
        return f"file name {name!r} leads outside the dataset's image folder ('..')"
    return None


def _is_truncated(data: bytes) -> bool:
    """JPEG and PNG files carry an end marker; a cut-off file lacks it."""
    if data[:3] == b"\xff\xd8\xff":
        return _JPEG_END not in data[-1024:]  # trailing padding after EOI is allowed
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _PNG_END not in data[-64:]
    return False


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given and the images inside folders (sorted); a missing path
    or a file of unknown type is an error naming it."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ValueError(f"{item}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif not os.path.exists(item):
            raise FileNotFoundError(f"input not found: {item}")
        elif not item.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS):
            raise ValueError(f"{item}: not an image or video file by its extension")
        else:
            files.append(item)
    return files


def image_files(spec: str) -> list[str]:
    """The images a folder holds, a glob pattern matches (both sorted), or one image file."""
    if os.path.isdir(spec):
        return expand_inputs([spec])
    if os.path.isfile(spec):
        if not spec.lower().endswith(IMAGE_EXTENSIONS):
            raise ValueError(f"{spec}: not an image file by its extension")
        return [spec]
    if glob.has_magic(spec):
        found = sorted(path for path in glob.glob(spec) if path.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise ValueError(f"{spec}: the pattern matches no images ({', '.join(IMAGE_EXTENSIONS)})")
        return found
    raise FileNotFoundError(f"images not found: {spec}")
