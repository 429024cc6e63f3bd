"""Process-group helpers. A plain `python` run is a world of one; `torchrun`
sets RANK, WORLD_SIZE and LOCAL_RANK and `init_distributed` joins the group
(gloo on the CPU, nccl on CUDA)."""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


def init_distributed(device: torch.device) -> bool:
    """Joins the torchrun process group if there is one; returns whether it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_initialized():
        return is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return True


def local_device(requested: str | None = None) -> torch.device:
    """`requested`, else this process's GPU (LOCAL_RANK) when CUDA is there, else the CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a one-item list outside torchrun)."""
    if not is_initialized():
        return [value]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_ranks_finite(value: torch.Tensor) -> bool:
    """Whether `value` is finite on every rank. All ranks must agree before
    backward, or a rank that stops leaves the others waiting in all-reduce."""
    finite = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if is_initialized():
        finite = finite.to(_collective_device())
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item() > 0)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    if not is_initialized() or not values:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / get_world_size()).tolist()))


def broadcast_module(module: torch.nn.Module, source: int = 0) -> None:
    """Overwrites every rank's parameters and buffers of `module` with rank
    `source`'s, in place."""
    if not is_initialized():
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, source)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
