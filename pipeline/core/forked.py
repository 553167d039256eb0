"""Running a function in a forked child, so that a crash in native code takes down only the child.

`run_in_child(job, on_death)` forks, runs ``job(report_stage)`` in the child
and returns its JSON result; if the child dies (a signal, the out-of-memory
killer, an abort in native code) or exits without a result, it returns
``on_death(stage, cause)`` instead, with the last stage the child reported
and `cause` saying how it ended. Forking is cheap where torch is already
imported (the child shares the parent's pages) and needs no pickling. The
child leaves with ``os._exit``, so that no atexit handler, finalizer or
native destructor of the parent's runs twice.

Used by the app's sweep jobs (`pipeline.app.faults`) and by ``load_lowered``'s
isolation (`pipeline.core.isolation`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any


def can_fork() -> bool:
    return hasattr(os, "fork")


def run_in_child(
    job: Callable[[Callable[[str], None]], Any], on_death: Callable[[str, str], Any], process: str = "the job's process"
) -> Any:
    """Run ``job(report_stage)`` in a forked child; return what it returned, or ``on_death(stage, cause)``.

    The child sends each stage it enters through a pipe (``report_stage(name)``)
    and its result as the last message, so the parent knows where a child that
    died was. The child's result must be JSON-serializable. ``process`` names
    the child in the cause (``"the job's process was killed by signal 9 ..."``).
    """
    read_end, write_end = os.pipe()
    pid = fork()
    if pid == 0:  # the child
        os.close(read_end)
        code = 1
        try:
            with os.fdopen(write_end, "w", buffering=1) as channel:

                def report_stage(stage: str) -> None:
                    channel.write(json.dumps({"stage": stage}) + "\n")

                result = job(report_stage)
                channel.write(json.dumps({"result": result}) + "\n")
            code = 0
        finally:
            _flush_std_streams()
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as channel:
            messages = [json.loads(line) for line in channel if line.strip()]
        results = [m["result"] for m in messages if "result" in m]
        if results:
            # All the child does after its result is os._exit(0); its exit (unmapping a process the size
            # of torch's) takes as long as the fork did, so it is reaped in the background.
            threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()
            return results[-1]
        _, status = os.waitpid(pid, 0)
    except BaseException:  # interrupted while waiting: the child goes too, leaving no orphan or zombie
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    stages = [m["stage"] for m in messages if "stage" in m]
    return on_death(stages[-1] if stages else "start", cause(status, process))


def fork() -> int:
    """``os.fork()``, with the parent's objects out of the child's garbage collector.

    The child inherits the parent's uncollected garbage. Collecting it there would run destructors of
    the parent's runtime objects (an OpenVINO compiled model waits for its executor's worker threads,
    which a forked child does not have, and hangs), so every object that exists at the fork is frozen
    (`gc.freeze`) for the child; the parent unfreezes its own at once. What the child makes is
    collected as usual.
    """
    gc.freeze()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a process with threads may deadlock the child: the child
            # here runs only the job, which takes no lock another thread of the parent may hold.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        gc.unfreeze()
        raise
    if pid:
        gc.unfreeze()
    return pid


def cause(status: int, process: str = "the job's process") -> str:
    """How a child with wait ``status`` ended, in words."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        hint = " (SIGKILL is also what the out-of-memory killer sends)" if signum == signal.SIGKILL else ""
        return f"{process} was killed by signal {signum} ({name}){hint}"
    return f"{process} exited with code {os.WEXITSTATUS(status)} before recording its result"


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
