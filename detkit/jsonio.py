"""JSON files: fast loading with errors that name the file, atomic writing."""
from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pauses the cyclic garbage collector: while json.load builds a large
    object graph it would otherwise walk that graph again and again (JSON
    makes no reference cycles, so nothing is lost). Loading a 5,000-image
    COCO file takes half the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_json(path: PathLike, what: str = "file") -> Any:
    """json.load of `path`; FileNotFoundError / ValueError name the file."""
    path = os.fspath(path)
    try:
        with open(path) as f, gc_paused():
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def write_json_atomic(path: PathLike, payload: Any) -> None:
    """json.dump to a temp file in the same folder, then rename: a crash never
    leaves a half-written file at `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
