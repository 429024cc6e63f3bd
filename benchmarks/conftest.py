"""pytest-benchmark suites that time detkit against its peers (see peers.py).

    pytest benchmarks/ --benchmark-only [-k nms] [--benchmark-autosave] [--benchmark-compare]

The end of the run prints each case's detkit and peer medians and their
ratio. Saved runs (--benchmark-autosave, --benchmark-json) hold the machine's
fp32 GEMM GFLOP/s and detkit's op backends in their machine info, so a slower
run on a busy or different machine can be told from a regression.
"""
from __future__ import annotations

import functools

import pytest
import torch

from detkit.runtimes.machine import GEMM_SIZE, gemm_gflops
from benchmarks.peers import DETKIT, PeerChecks, time_side

CHECKS = pytest.StashKey[PeerChecks]()


@pytest.fixture
def peer_benchmark(benchmark, request):
    """peer_benchmark(case, side): checks the side's output, then times it."""
    checks = request.config.stash.setdefault(CHECKS, PeerChecks())
    return functools.partial(time_side, benchmark, checks)


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    from detkit import ops

    machine_info["gemm_fp32"] = {"gflops": round(gemm_gflops(), 1), "size": GEMM_SIZE,
                                 "threads": torch.get_num_threads()}
    machine_info["detkit_ops_backends"] = ops.backend()


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info: dict,
                                          compared_benchmark: dict) -> None:
    """Reports the GEMM speed of both runs, and takes it out of the dicts that
    pytest-benchmark's own hook (called after this one) compares: that hook
    warns on any difference, and GEMM speed differs a little on every run."""
    machine_info.pop("gemm_fp32", None)
    saved = compared_benchmark["machine_info"].pop("gemm_fp32", None)
    if saved:
        benchmarksession.logger.info(f"fp32 GEMM {GEMM_SIZE}x{GEMM_SIZE}: {gemm_gflops():.1f} GFLOP/s now, "
                                     f"{saved['gflops']} GFLOP/s in the run compared against")


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, config) -> None:
    checks = config.stash.get(CHECKS, None)
    if checks is None or not checks.agree:
        return
    medians = {(bench.extra_info["case"], bench.extra_info["side"]): bench.stats.median
               for bench in config._benchmarksession.benchmarks if bench and "case" in bench.extra_info}
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "detkit vs peers: median ms, ratio = peer / detkit (> 1: detkit is faster)")
    write(f"torch {torch.__version__}; fp32 GEMM {GEMM_SIZE}x{GEMM_SIZE}, {torch.get_num_threads()} threads: "
          f"{gemm_gflops():.1f} GFLOP/s")
    write("| case | threads | detkit ms | peer | peer ms | ratio | outputs |")
    write("|---|---:|---:|---|---:|---:|---|")
    for (case, peer), agree in checks.agree.items():
        ours, theirs = medians.get((case, DETKIT)), medians.get((case, peer))
        ratio = _ratio(theirs / ours) if ours and theirs else "-"
        write(f"| {case} | {checks.threads[case]} | {_ms(ours)} | {peer} | {_ms(theirs)} | {ratio} "
              f"| {'ok' if agree else 'FAILED'} |")
    if not medians:
        write("(no timings: benchmarks were disabled or skipped)")
    write("\nFirst detkit call of each case in this process (numba compile or cache load included), ms:")
    for case, seconds in checks.first_call_s.items():
        median = medians.get((case, DETKIT))
        write(f"  {case}: {seconds * 1e3:.1f}" + (f" (median {_ms(median)})" if median else ""))


def _ratio(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"
