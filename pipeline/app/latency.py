"""Latency: eager against lowered, interleaved rounds after warm-up, with the spread that says how far to trust it.

Each call is timed on its own. Per side the report gives p10, median and p90
over all timed calls; per round, the median of each side and their ratio. A
speedup is flagged ``unstable`` when the round speedups straddle 1.0x (the
rounds disagree on which side is faster) or when a side's round medians vary
by more than 20%: on a shared machine, such a number is noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

UNSTABLE_ROUND_SPREAD = 0.20  # max/min of a side's round medians above 1.2: the rounds disagree


@dataclass
class Distribution:
    p10: float
    median: float
    p90: float

    @classmethod
    def of(cls, samples: list[float]) -> Distribution:
        ordered = sorted(samples)
        return cls(_quantile(ordered, 0.10), statistics.median(ordered), _quantile(ordered, 0.90))


@dataclass
class LatencyResult:
    method: str
    eager_us: float  # medians over all timed calls
    lowered_us: float
    speedup: float
    iterations: int
    rounds: int
    eager: Distribution
    lowered: Distribution
    round_speedups: list[float]  # eager round median / lowered round median, per round
    round_spread: float  # the larger side's max/min - 1 over its round medians
    unstable: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def per_call_us(fn: Callable, args: tuple, iterations: int, kwargs: dict[str, Any] | None = None) -> float:
    """Mean microseconds per call of ``iterations`` calls (for benchmarks that compare means)."""
    kwargs = kwargs or {}
    start = time.perf_counter()
    for _ in range(iterations):
        fn(*args, **kwargs)
    return (time.perf_counter() - start) / iterations * 1e6


def call_times_us(fn: Callable, args: tuple, kwargs: dict[str, Any], iterations: int) -> list[float]:
    clock, samples = time.perf_counter, []
    for _ in range(iterations):
        start = clock()
        fn(*args, **kwargs)
        samples.append((clock() - start) * 1e6)
    return samples


def measure(
    method: str,
    eager: Callable,
    lowered: Callable,
    call: tuple[tuple, dict[str, Any]],
    warmup: int,
    iterations: int,
    rounds: int,
) -> LatencyResult:
    """Rounds alternate eager and lowered, so that machine noise hits both alike."""
    import torch

    args, kwargs = call
    eager_rounds: list[list[float]] = []
    lowered_rounds: list[list[float]] = []
    with torch.no_grad():
        call_times_us(eager, args, kwargs, warmup)
        call_times_us(lowered, args, kwargs, warmup)
        for _ in range(rounds):
            eager_rounds.append(call_times_us(eager, args, kwargs, iterations))
            lowered_rounds.append(call_times_us(lowered, args, kwargs, iterations))
    eager_all = Distribution.of([t for r in eager_rounds for t in r])
    lowered_all = Distribution.of([t for r in lowered_rounds for t in r])
    eager_medians = [statistics.median(r) for r in eager_rounds]
    lowered_medians = [statistics.median(r) for r in lowered_rounds]
    round_speedups = [eager / lowered for eager, lowered in zip(eager_medians, lowered_medians)]
    spread = max(max(m) / min(m) - 1 for m in (eager_medians, lowered_medians))
    straddles = min(round_speedups) < 1.0 < max(round_speedups)
    return LatencyResult(
        method,
        eager_all.median,
        lowered_all.median,
        eager_all.median / lowered_all.median,
        iterations,
        rounds,
        eager_all,
        lowered_all,
        round_speedups,
        spread,
        straddles or spread > UNSTABLE_ROUND_SPREAD,
    )


def _quantile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted samples, by linear interpolation (numpy's default)."""
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
