"""One benchmark case: detkit and its peers doing the same job on the same inputs.

Each side of a case is its own pytest-benchmark test in the case's group, so
`--benchmark-autosave` / `--benchmark-compare` track every side between
commits. Before a side is timed, detkit's output and the peer's are compared
once per session (`PeerChecks.check`); the test fails if they differ.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

DETKIT = "detkit"


@dataclass(frozen=True)
class Case:
    """A row of the ratio table and a benchmark group.

    detkit and every function in peers take the same arguments: none, or a
    fresh tuple from fresh_inputs for every call (for runs that change their
    inputs, such as pycocotools' loadRes). The first peer is the reference
    that detkit's own test checks against. rounds fixes the number of timed
    rounds for sides that take seconds per call (3 when fresh_inputs is set
    and the side has none); the other sides are timed the pytest-benchmark
    way (--benchmark-min-rounds, --benchmark-max-time, ...).
    """

    name: str
    detkit: Callable[..., Any]
    peers: Mapping[str, Callable[..., Any]]
    same: Callable[[Any, Any], bool]  # (detkit output, peer output) -> do they agree
    fresh_inputs: Callable[[], tuple] | None = None
    rounds: Mapping[str, int] = field(default_factory=dict)

    @property
    def sides(self) -> list[str]:
        return [DETKIT, *self.peers]

    def function(self, side: str) -> Callable[..., Any]:
        return self.detkit if side == DETKIT else self.peers[side]

    def call(self, side: str) -> Any:
        return self.function(side)(*(self.fresh_inputs() if self.fresh_inputs else ()))


class PeerChecks:
    """Session record of the (case, peer) pairs checked so far, in order, with
    detkit's first call per case (numba compile or cache load included) and
    the torch threads the case ran with."""

    def __init__(self) -> None:
        self.agree: dict[tuple[str, str], bool] = {}
        self.first_call_s: dict[str, float] = {}
        self.threads: dict[str, int] = {}

    def check(self, case: Case, peer: str) -> None:
        """Runs both sides once (untimed by the benchmark) unless done before;
        AssertionError when their outputs differ."""
        if (case.name, peer) not in self.agree:
            self.threads[case.name] = torch.get_num_threads()
            start = time.perf_counter()
            ours = case.call(DETKIT)
            self.first_call_s.setdefault(case.name, time.perf_counter() - start)
            self.agree[case.name, peer] = bool(case.same(ours, case.call(peer)))
        assert self.agree[case.name, peer], f"{case.name}: detkit's output differs from {peer}'s"


def time_side(benchmark, checks: PeerChecks, case: Case, side: str) -> None:
    """Checks `side` against its partner (detkit against the reference peer, a
    peer against detkit), then times it with the pytest-benchmark fixture."""
    benchmark.group = case.name
    benchmark.extra_info.update(case=case.name, side=side, threads=torch.get_num_threads())
    checks.check(case, next(iter(case.peers)) if side == DETKIT else side)
    if side == DETKIT:
        benchmark.extra_info["first_call_s"] = checks.first_call_s[case.name]
    function, rounds = case.function(side), case.rounds.get(side)
    if case.fresh_inputs is None and rounds is None:
        benchmark(function)
    else:
        setup = (lambda: (case.fresh_inputs(), {})) if case.fresh_inputs else None
        benchmark.pedantic(function, setup=setup, rounds=rounds or 3)
