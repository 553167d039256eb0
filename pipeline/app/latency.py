"""Latency: eager against lowered, medians of interleaved rounds after warm-up."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional, Tuple


@dataclass
class LatencyResult:
    method: str
    eager_us: float
    lowered_us: float
    speedup: float
    iterations: int
    rounds: int

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def per_call_us(fn: Callable, args: tuple, iterations: int, kwargs: Optional[Dict[str, Any]] = None) -> float:
    kwargs = kwargs or {}
    start = time.perf_counter()
    for _ in range(iterations):
        fn(*args, **kwargs)
    return (time.perf_counter() - start) / iterations * 1e6


def measure(method: str, eager: Callable, lowered: Callable, call: Tuple[tuple, Dict[str, Any]],
            warmup: int, iterations: int, rounds: int) -> LatencyResult:
    """Rounds alternate eager and lowered, so that machine noise hits both alike."""
    import torch

    args, kwargs = call
    with torch.no_grad():
        per_call_us(eager, args, warmup, kwargs)
        per_call_us(lowered, args, warmup, kwargs)
        eager_samples, lowered_samples = [], []
        for _ in range(rounds):
            eager_samples.append(per_call_us(eager, args, iterations, kwargs))
            lowered_samples.append(per_call_us(lowered, args, iterations, kwargs))
    eager_us, lowered_us = statistics.median(eager_samples), statistics.median(lowered_samples)
    return LatencyResult(method, eager_us, lowered_us, eager_us / lowered_us, iterations, rounds)
