"""The machine's measured speed, printed beside every wall time: machines
differ (one 2-core box trains the default config 1.7x slower than another)."""
from __future__ import annotations

import functools
import platform
import statistics
import time
from typing import Callable

import torch

GEMM_SIZE = 1024


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the Linux kernel lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def gemm_gflops(n: int = GEMM_SIZE, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Median GFLOP/s of an n x n torch.mm on the CPU, with torch's threads, in
    `dtype` (float32 unless said: the number printed beside wall times)."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
    torch.mm(a, b)  # the first call starts the thread pool
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(seconds) / 1e9


def alternated_medians(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function over `runs` rounds that call every
    function in turn (a busy spell of the machine slows all alike), after
    `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def has_vnni() -> bool:
    """Whether this CPU has the int8 dot-product instructions (or is not x86, where the question does not arise)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
