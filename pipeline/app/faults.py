"""Faults that must still leave a true record: signals, and job processes that die.

* `signals_raise`: SIGINT and SIGTERM raise `Interrupted` in the run, so it
  unwinds like any error: atomic writes remove their temporary files, and the
  run records ``status: interrupted`` with the stage it was in, then exits
  130 or 143 (128 + the signal's number, as shells report it).
* `run_in_child`: a sweep job runs in a forked child of the job's process, so a
  job that is killed (SIGKILL, the out-of-memory killer, a crash in native code)
  takes down only itself: the parent records ``status: crashed`` with the stage
  the child was in, and the launcher's worker goes on with the other jobs.
  Forking is cheap here (torch is already imported) and needs no pickling; the
  mechanics are `pipeline.core.forked`'s, which ``load_lowered`` uses too.
* `record_lost_job`: a job that a scheduler ended (scancel, a time limit, a
  lost node) may leave a report.json but never returns its result to the
  sweep; the launcher records it from its directory, with the scheduler's word.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.forked import can_fork, run_in_child

__all__ = [
    "INTERRUPTING_SIGNALS",
    "Interrupted",
    "can_fork",
    "exit_code_of",
    "record_lost_job",
    "run_in_child",
    "signals_deferred",
    "signals_raise",
]

INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A signal asked the run to stop; a BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code_of(report: dict[str, Any]) -> int | None:
    """The exit code an interrupted run's report asks for, else None."""
    name = report.get("signal")
    return 128 + int(signal.Signals[name]) if report.get("status") == "interrupted" and name else None


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` (main thread only, as Python allows)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in INTERRUPTING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block (writing the final record), SIGINT and SIGTERM wait until it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {signum: signal.signal(signum, lambda s, f: received.append(s)) for signum in INTERRUPTING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            os.kill(os.getpid(), received[0])


def record_lost_job(job_dir: Path, cause: str, overrides: list[str]) -> dict[str, Any]:
    """The record of a sweep job whose result never reached the sweep, ``cause`` saying why (the scheduler's
    account): the job's own report.json with ``cause`` added to its error, or a ``crashed`` report if it left
    none that can be read. Written back into ``job_dir``, so the summary reads it as it reads every job's."""
    from pipeline.app.records import RecordError, read_record
    from pipeline.app.run_files import REPORT
    from pipeline.core.files import write_json

    try:
        report = read_record(job_dir / REPORT, "report")
    except RecordError as error:
        report = {
            "status": "crashed",
            "stage": None,
            "error": f"{cause}; its report: {error}",
            "overrides": overrides,
            "run_dir": str(job_dir),
        }
    else:
        if report["status"] == "ok":  # it finished and recorded everything before the scheduler ended it
            return report
        report["error"] = f"{report['error']} ({cause})"
    write_json(job_dir / REPORT, report)
    return report
