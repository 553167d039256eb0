"""The run's memory, stage by stage, as the process's peak resident set size.

``getrusage(RUSAGE_SELF).ru_maxrss`` is a high-water mark: it never goes down,
so what a stage can be charged with is how far it raised the mark. After each
stage the report keeps the mark (``peak_rss_mb``) and its rise during the stage
(``growth_mb``); a stage that worked within memory an earlier stage had already
reached shows a growth of 0. Jobs of a sweep that share a process start from
the mark the earlier jobs left (``start_peak_rss_mb``).
"""

from __future__ import annotations

import resource
import sys
from typing import Any

# ru_maxrss is in KiB on Linux and in bytes on macOS.
_RU_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RU_MAXRSS_BYTES / (1 << 20)


class StageMemory:
    """The peak RSS after each stage and its growth during it, for ``report["memory"]``."""

    def __init__(self) -> None:
        self.start = peak_rss_mb()
        self._last = self.start
        self.stages: dict[str, dict[str, float]] = {}

    def after(self, stage: str) -> None:
        peak = peak_rss_mb()
        self.stages[stage] = {"peak_rss_mb": round(peak, 1), "growth_mb": round(peak - self._last, 1)}
        self._last = peak

    def to_json(self) -> dict[str, Any]:
        return {"start_peak_rss_mb": round(self.start, 1), "peak_rss_mb": round(self._last, 1), "stages": self.stages}
