"""JSON files: fast loading with errors that name the file, atomic writing."""
from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import reprlib
import tempfile
from typing import IO, Any, Iterator, Union

PathLike = Union[str, os.PathLike]

# The name prefix of atomic_write's temporary files: never a finished file, so a
# writer's next start may delete what a killed one left (remove_temp_files).
TEMP_PREFIX = ".tmp-"


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
    """json.load of `path` (UTF-8, as JSON files are); FileNotFoundError /
    ValueError name the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f, gc_paused():
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, an integer of over 4300 digits, [[[...]]] too deep
        raise ValueError(f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def short_repr(value: Any, limit: int = 60) -> str:
    """repr(value), shortened to about `limit` characters, for error messages
    that quote a file's data: it may be megabytes of garbage (reprlib never
    builds the whole repr)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int of more than 4300 digits has no str()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Opens a temp file beside `path` for writing; on success it is flushed
    to disk and renamed over `path`, on error removed. A crash never leaves a
    half-written file at `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=os.path.splitext(path)[1])
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_temp_files(folder: PathLike) -> list[str]:
    """Deletes the temporary files that killed atomic_write calls left in
    `folder` (a SIGKILL skips their clean-up); returns their paths. Call it
    only where no other writer is at work in `folder`."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    stale = [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.startswith(TEMP_PREFIX)]
    for path in stale:
        if os.path.isfile(path):
            os.remove(path)
    return stale


def check_writable_folder(folder: PathLike, what: str = "folder", probe_bytes: int = 1 << 16) -> None:
    """Makes `folder` and writes, syncs and deletes a small probe file in it,
    so that a read-only, unwritable or full disk is an OSError naming the
    folder now rather than at the first real write, hours later."""
    folder = os.fspath(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX + "probe-")
        try:
            os.write(fd, bytes(probe_bytes))
            os.fsync(fd)  # a full disk may only say so here (delayed allocation, network file systems)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as exc:
        reasons = {errno.ENOSPC: "the disk is full", errno.ENOTDIR: "a folder on its path is a file",
                   errno.EEXIST: "it is a file, not a folder"}
        reason = reasons.get(exc.errno, exc.strerror or str(exc))
        error = OSError(f"{what} {folder} cannot be written: {reason}")
        error.errno = exc.errno
        raise error from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: PathLike, payload: Any) -> None:
    """json.dump to `path` through atomic_write."""
    with atomic_write(path) as f:
        json.dump(payload, f)
