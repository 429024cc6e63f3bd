"""Precomputed region proposals, as Fast R-CNN trains on and Detectron's
proposal files hold: {image_id: (boxes float32 Tensor[N, 4] (x1, y1, x2, y2)
absolute pixels, scores float32 Tensor[N])}, best first.

detkit's file is a .npz read with allow_pickle=False (a proposal file from
elsewhere cannot run code), written atomically:

    ids      int64 [I] or unicode [I]   image ids, unique
    offsets  int64 [I + 1]              image i owns rows offsets[i]:offsets[i + 1]
    boxes    float32 [R, 4]             all images' boxes, concatenated
    scores   float32 [R]
    meta     unicode scalar             JSON object: how they were made (may be "{}")

One array per field rather than per image: a 5,000-image set is four zip
members, not 10,000. Detectron's own pickled files load through
load_detectron_proposals, whose unpickler builds nothing but numpy arrays and
plain containers.
"""
from __future__ import annotations

import _compat_pickle
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..io.jsonio import atomic_write, short_repr
from ..io.progress import ProgressBar
from .coco import CocoDetection
from .images import read_image
from .voc import VOCDetection

ImageId = Union[int, str]
Proposals = dict[ImageId, tuple[Tensor, Tensor]]
PathLike = Union[str, os.PathLike]
_FIELDS = ("ids", "offsets", "boxes", "scores", "meta")


# --- detkit's .npz format ------------------------------------------------------------------------


def save_proposals(path: PathLike, proposals: Mapping[ImageId, tuple[Any, Any]], meta: Optional[dict] = None) -> None:
    """Writes `proposals` ({image_id: (boxes [N, 4], scores [N])}, tensors or
    arrays) to the .npz file `path`, atomically. Ids are all ints or all
    strs. Raises ValueError naming the image and field for bad shapes or
    non-finite or inverted boxes, before anything is written."""
    path = os.fspath(path)
    ids = _pack_ids(list(proposals), path)
    boxes, scores = [], []
    for image_id, value in proposals.items():
        b, s = _pair(value, f"{path}: proposals[{image_id!r}]")
        boxes.append(b)
        scores.append(s)
    offsets = np.zeros(len(ids) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in boxes], dtype=np.int64)
    arrays = {
        "ids": ids,
        "offsets": offsets,
        "boxes": np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        "scores": np.concatenate(scores) if scores else np.zeros(0, np.float32),
        "meta": np.array(json.dumps(meta or {})),
    }
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load_proposals(path: PathLike) -> Proposals:
    """Reads a file that save_proposals wrote: {image_id: (boxes float32
    Tensor[N, 4], scores float32 Tensor[N])}. FileNotFoundError / ValueError
    name the file, and for bad contents the field (and image)."""
    return _read(path)[0]


def _read(path: PathLike) -> tuple[Proposals, dict]:
    path = os.fspath(path)
    arrays = _load_npz(path)
    ids, offsets, boxes, scores = arrays["ids"], arrays["offsets"], arrays["boxes"], arrays["scores"]
    if ids.ndim != 1 or not (ids.dtype.kind in "iu" or ids.dtype.kind == "U"):
        raise ValueError(f"{path}: 'ids' must be a 1-d array of ints or strings, got {ids.dtype} {ids.shape}")
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"{path}: 'ids' repeats an image id")
    if offsets.dtype.kind not in "iu" or offsets.shape != (len(ids) + 1,):
        raise ValueError(f"{path}: 'offsets' must be {len(ids) + 1} ints (one more than 'ids'), "
                         f"got {offsets.dtype} {offsets.shape}")
    if len(boxes.shape) != 2 or boxes.shape[1] != 4 or boxes.dtype.kind != "f":
        raise ValueError(f"{path}: 'boxes' must be a float array [R, 4], got {boxes.dtype} {boxes.shape}")
    if scores.dtype.kind != "f" or scores.shape != (len(boxes),):
        raise ValueError(f"{path}: 'scores' must be a float array [{len(boxes)}] like 'boxes', "
                         f"got {scores.dtype} {scores.shape}")
    if len(offsets) and (offsets[0] != 0 or offsets[-1] != len(boxes) or (np.diff(offsets) < 0).any()):
        raise ValueError(f"{path}: 'offsets' must rise from 0 to {len(boxes)} (the rows of 'boxes')")
    meta = _meta(arrays["meta"], path)
    keys = [int(i) if ids.dtype.kind in "iu" else str(i) for i in ids.tolist()]
    owner = np.repeat(np.arange(len(keys)), np.diff(offsets)) if len(keys) else np.zeros(0, np.int64)
    _check_rows(boxes, scores, f"{path}: ", lambda row: f"image {keys[owner[row]]!r}")
    boxes, scores = torch.from_numpy(boxes.astype(np.float32)), torch.from_numpy(scores.astype(np.float32))
    proposals = {key: (boxes[offsets[i]:offsets[i + 1]], scores[offsets[i]:offsets[i + 1]])
                 for i, key in enumerate(keys)}
    return proposals, meta


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"proposal file not found: {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # a pickle, garbage, a folder
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if not hasattr(npz, "files"):
        raise ValueError(f"{path}: a single .npy array, not a .npz proposal file")
    with npz:
        missing = [name for name in _FIELDS if name not in npz.files]
        if missing:
            raise ValueError(f"{path}: not a detkit proposal file: missing array(s) {', '.join(missing)}")
        arrays = {}
        for name in _FIELDS:
            try:
                arrays[name] = npz[name]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # an object array, a bad member
                raise ValueError(f"{path}: field {name!r} cannot be read ({type(exc).__name__}: {exc})") from None
        return arrays


def _meta(array: np.ndarray, path: str) -> dict:
    if array.shape != () or array.dtype.kind != "U":
        raise ValueError(f"{path}: 'meta' must be a JSON string, got {array.dtype} {array.shape}")
    try:
        meta = json.loads(str(array))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: 'meta' must be a JSON object, got {short_repr(str(array))}")
    return meta


def _pack_ids(ids: list, path: str) -> np.ndarray:
    def is_int(i: Any) -> bool:
        return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))

    if all(map(is_int, ids)):
        return np.array(ids, dtype=np.int64)
    if all(isinstance(i, str) for i in ids):
        return np.array(ids, dtype=str)
    kinds = sorted({"int" if is_int(i) else "str" if isinstance(i, str) else type(i).__name__ for i in ids})
    raise ValueError(f"{path}: image ids must be all ints or all strs, got {', '.join(kinds)}")


def _pair(value: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(boxes float32 [N, 4], scores float32 [N]) from a (boxes, scores) pair, checked."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{what} must be a (boxes, scores) pair, got {short_repr(value)}")
    boxes, scores = (_as_array(v, f"{what} {name}") for v, name in zip(value, ("boxes", "scores")))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} boxes must have shape [N, 4], got {boxes.shape}")
    if scores.shape != (len(boxes),):
        raise ValueError(f"{what} scores must have shape [{len(boxes)}] like its boxes, got {scores.shape}")
    _check_rows(boxes, scores, f"{what} ", lambda row: "")
    return boxes.astype(np.float32), scores.astype(np.float32)


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
    if array is None or array.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be a real tensor or array, got {short_repr(value)}")
    return array


def _check_rows(boxes: np.ndarray, scores: np.ndarray, prefix: str, where: Callable[[int], str]) -> None:
    """ValueError naming the first non-finite or inverted box, or non-finite score."""
    for name, bad, reason in (
        ("boxes", ~np.isfinite(boxes).all(axis=1), "is not finite"),
        ("boxes", (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]), "has x2 < x1 or y2 < y1"),
        ("scores", ~np.isfinite(scores), "is not finite"),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = boxes[row].tolist() if name == "boxes" else float(scores[row])
            at = where(row)
            raise ValueError(f"{prefix}{name}[{row}]{f' ({at})' if at else ''} {reason}: {value}")


# --- Detectron's pickles -------------------------------------------------------------------------


def _box_mode(value: Any) -> int:
    """Stands in for detectron2's BoxMode enum: its members unpickle as BoxMode(value)."""
    return int(value)


def _safe_encode(text: str, encoding: str = "utf-8") -> bytes:
    """_codecs.encode, which Python 3 pickles use for byte strings, limited to plain text codecs."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in _SAFE_ENCODINGS:
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {short_repr(encoding)}")
    return text.encode(encoding)


def _empty_bytes(*args: Any) -> bytes:
    """bytes(), as protocols 0-2 pickle b"" (an empty array's data); no
    arguments, so a file cannot make it allocate bytes(10**12)."""
    if args:
        raise pickle.UnpicklingError("refusing bytes() with arguments")
    return b""


_SAFE_ENCODINGS = ("latin1", "latin-1", "utf-8", "utf8", "ascii")
# Everything the unpickler may build: numpy arrays, dtypes and scalars
# (under numpy 1 and 2 module names), ordered dicts (as dicts), byte strings
# (text codecs only) and detectron2's BoxMode as a plain int.
_ARRAY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float32(0).__reduce__()[0]
_FROM_BUFFER = np.zeros(1).__reduce_ex__(5)[0]  # pickle protocol 5's array constructor
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _FROM_BUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROM_BUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): dict,
    ("_codecs", "encode"): _safe_encode,
    ("builtins", "bytes"): _empty_bytes,
    ("detectron2.structures.boxes", "BoxMode"): _box_mode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers only: any other global (a
    function such as os.system that a __reduce__ names, a class) is refused
    before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2's names (Detectron's files; Python 3 at protocols 0-2 writes them too), as pickle maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: proposal files hold only "
                                         "numpy arrays and plain containers")
        return found


def load_detectron_proposals(path: PathLike) -> Proposals:
    """Reads a Detectron (Python 2 or 3) or detectron2 proposal pickle:
    {"ids": [...], "boxes": [array [N, 4], ...], and "scores" (Detectron) or
    "objectness_logits" (detectron2): [array [N], ...]; detectron2's optional
    "bbox_mode" must be XYXY_ABS (0) or XYWH_ABS (1, converted)}. Boxes are
    returned as the file holds them: Detectron's corners are inclusive pixel
    indices, a box's x2 one less than detkit's.

    The unpickler builds only numpy arrays and plain containers, so a
    malicious file fails with a ValueError before any code of its runs."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"proposal file not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, ImportError, UnicodeError, MemoryError) as exc:
        raise ValueError(f"{path}: not a readable proposal pickle ({type(exc).__name__}: {exc})") from None
    return _detectron_dict(data, path)


def _detectron_dict(data: Any, path: str) -> Proposals:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a proposal pickle holds a dict, got {type(data).__name__}")
    score_key = "scores" if "scores" in data else "objectness_logits"
    missing = [key for key in ("ids", "boxes") if key not in data]
    if score_key not in data:
        missing.append("scores (Detectron) or objectness_logits (detectron2)")
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)} (keys: {sorted(map(str, data))})")
    ids, boxes, scores = (list(data[key]) if isinstance(data[key], (list, tuple, np.ndarray)) else None
                          for key in ("ids", "boxes", score_key))
    if ids is None or boxes is None or scores is None or not len(ids) == len(boxes) == len(scores):
        raise ValueError(f"{path}: 'ids', 'boxes' and {score_key!r} must be lists of one length")
    mode = data.get("bbox_mode", 0)
    if mode not in (0, 1):
        raise ValueError(f"{path}: 'bbox_mode' must be XYXY_ABS (0) or XYWH_ABS (1), got {short_repr(mode)}")
    keys = [i.item() if isinstance(i, np.generic) else i for i in ids]
    _pack_ids(keys, path)
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: 'ids' repeats an image id")
    out = {}
    for key, b, s in zip(keys, boxes, scores):
        b, s = _pair((b, s), f"{path}: image {key!r}")
        if mode == 1:
            b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        out[key] = (torch.from_numpy(b), torch.from_numpy(s))
    return out


# --- computing them ------------------------------------------------------------------------------


def compute_proposals(images: Any, path: PathLike, mode: str = "fast", max_proposals: int = 2000, seed: int = 0,
                      progress: bool = True, save_every: int = 50) -> Proposals:
    """Selective search proposals for every image, cached in `path` so that
    a dataset's are computed once: images already in the file are not
    recomputed, and the file is rewritten every `save_every` images, so a
    killed run resumes where it stopped.

    Args:
        images: a CocoDetection or VOCDetection (its image files, before any
            transforms; keyed by the dataset's image ids), a mapping
            {image_id: image path}, or a sequence of image paths (keyed by
            file name without extension, which must then be unique).
        path: the .npz proposal file (see save_proposals).
        mode, seed: passed to detkit.ops.selective_search.
        max_proposals: keep at most this many per image, best-ranked first.
        progress: show a tqdm progress bar.
        save_every: images between rewrites of the file.

    Returns:
        {image_id: (boxes float32 Tensor[N, 4], scores float32 Tensor[N])}
        for the given images. Selective search has no scores: they fall
        linearly with rank, from 1 for the first box to 1/N for the last.

    Raises ValueError if `path` holds proposals made with other settings.
    """
    from ..ops.selective_search import MODES, selective_search  # ops stays out of `import detkit.data`

    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    if isinstance(max_proposals, bool) or not isinstance(max_proposals, int) or max_proposals < 1:
        raise ValueError(f"max_proposals must be a positive int, got {max_proposals!r}")
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ValueError(f"save_every must be a positive int, got {save_every!r}")
    path = os.fspath(path)
    sources = image_paths(images)
    meta = {"method": "selective_search", "mode": mode, "max_proposals": max_proposals, "seed": seed}
    done: Proposals = {}
    if os.path.exists(path):
        done, found = _read(path)
        if found != meta:
            raise ValueError(f"{path} holds proposals made with {found}, not {meta}: "
                             "delete it or choose another file")
    todo = [image_id for image_id in sources if image_id not in done]
    for n, image_id in enumerate(ProgressBar(todo, desc="selective search", disable=not progress)):
        boxes = selective_search(read_image(sources[image_id]), mode=mode, seed=seed)[:max_proposals]
        scores = torch.arange(len(boxes), 0, -1, dtype=torch.float32) / len(boxes)
        done[image_id] = (boxes, scores)
        if (n + 1) % save_every == 0 or n + 1 == len(todo):
            save_proposals(path, done, meta)
    if not todo and not os.path.exists(path):
        save_proposals(path, done, meta)
    return {image_id: done[image_id] for image_id in sources}


def image_paths(images: Any) -> dict[ImageId, str]:
    """{image_id: path} for compute_proposals' `images` argument."""
    if isinstance(images, CocoDetection):
        return {i: os.path.join(images.image_root, images.images[i]["file_name"]) for i in images.ids}
    if isinstance(images, VOCDetection):
        return {i: os.path.join(images.root, "JPEGImages", images.target(i)[1]) for i in images.ids}
    if isinstance(images, Mapping):
        return {key: os.fspath(value) for key, value in images.items()}
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        out: dict[ImageId, str] = {}
        for path in map(os.fspath, images):
            stem = os.path.splitext(os.path.basename(path))[0]
            if stem in out:
                raise ValueError(f"two images are named {stem!r} ({out[stem]} and {path}): pass a mapping "
                                 "{image_id: path} instead")
            out[stem] = path
        return out
    raise ValueError(f"images must be a CocoDetection, a VOCDetection, a mapping {{image_id: path}} or a "
                     f"sequence of paths, got {type(images).__name__}")
