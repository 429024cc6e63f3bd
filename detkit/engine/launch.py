"""Starting several local training processes without torchrun (detectron2's
`launch`): each becomes one DDP rank with an equal share of the CPU threads.
On a small CPU, two single-threaded ranks get more done than one process with
two threads, whose small convolutions wait on each other at every layer.

The launcher watches its ranks: when one dies (an error, or a kill that lets
it say nothing), the others are stopped, because they would otherwise wait
for it in their next collective for as long as the process group's timeout,
and launch raises a RankFailedError that names the rank."""
from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


class RankFailedError(RuntimeError):
    """A spawned rank died or failed; the other ranks were stopped. The
    message names the rank; `traceback` holds the rank's own traceback when
    it raised an exception it did not handle."""

    traceback: str = ""


def launch(fn: Callable[..., Any], processes: int, *args: Any) -> Any:
    """Runs fn(*args) in `processes` local ranks (spawned, gloo on the CPU),
    or directly when processes <= 1 or torchrun already started this one.
    Returns fn's result when run directly, else None."""
    if processes <= 1 or "RANK" in os.environ:
        return fn(*args)
    port = _free_port()
    context = mp.start_processes(_rank_main, args=(fn, processes, port, args), nprocs=processes,
                                 start_method="spawn", join=False)
    try:
        # join returns as soon as any rank exits; a failed one makes it stop the rest (SIGTERM, then
        # SIGKILL after 30 s) and raise.
        while not context.join():
            pass
    except mp.ProcessExitedException as exc:
        how = (f"was killed by signal {exc.signal_name}" if exc.signal_name else
               f"exited with code {exc.exit_code} (its error is above)")
        raise RankFailedError(f"rank {exc.error_index} of {processes} {how}; the other ranks were stopped") from None
    except mp.ProcessRaisedException as exc:  # an exception the rank did not handle; exc.msg holds its traceback
        error = RankFailedError(f"rank {exc.error_index} of {processes} failed ({exc.msg.strip().splitlines()[-1]});"
                                f" the other ranks were stopped")
        error.traceback = exc.msg
        raise error from None
    return None


def _rank_main(rank: int, fn: Callable[..., Any], world: int, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    fn(*args)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
