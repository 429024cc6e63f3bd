"""Starting several local training processes without torchrun (detectron2's
`launch`): each becomes one DDP rank with an equal share of the CPU threads.
On a small CPU, two single-threaded ranks get more done than one process with
two threads, whose small convolutions wait on each other at every layer."""
from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


def launch(fn: Callable[..., Any], processes: int, *args: Any) -> Any:
    """Runs fn(*args) in `processes` local ranks (spawned, gloo on the CPU),
    or directly when processes <= 1 or torchrun already started this one.
    Returns fn's result when run directly, else None."""
    if processes <= 1 or "RANK" in os.environ:
        return fn(*args)
    port = _free_port()
    mp.start_processes(_rank_main, args=(fn, processes, port, args), nprocs=processes, start_method="spawn")
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
