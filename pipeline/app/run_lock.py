"""One run per directory: a run holds an ``flock`` on ``DIR/.lock`` while it writes there.

A second run into a held directory stops before it writes anything, with
`RunDirectoryBusy` (exit 2) naming the holder's pid. The kernel releases the
lock when its holder's process ends, however it ends, so a lock left by a run
that was killed is taken over; the lock file still names that run's pid, and
the takeover is recorded in the new run's report (`takeover`). Holding is
re-entrant within a process, and a forked child (a sweep job's) inherits it.
The lock file is truncated on release, not removed: removing it would let two
runs lock two different files of the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.app.run_files import LOCK
from pipeline.app.schema import ConfigError

_held: dict[str, dict[str, int] | None] = {}  # resolved directory -> the takeover recorded when it was locked


class RunDirectoryBusy(ConfigError):
    """Another run is writing into the directory."""


@contextlib.contextmanager
def held(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock for the block (creating the directory); `RunDirectoryBusy` if another run does."""
    key = str(Path(out_dir).resolve())
    if key in _held:
        yield
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    descriptor = os.open(Path(out_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryBusy(
                f"{out_dir} is in use by another run (pid {_pid_in(descriptor) or 'unknown'}): it holds {LOCK} there. "
                "Wait for it to finish, or give this run another directory (hydra.run.dir=...)."
            ) from None
        earlier = _pid_in(descriptor)  # a holder that released would have emptied the file: it died holding it
        _held[key] = {"pid": earlier} if earlier and earlier != os.getpid() else None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            _held.pop(key, None)
            os.ftruncate(descriptor, 0)
    finally:
        os.close(descriptor)  # closing releases the lock


def takeover(out_dir: Path) -> dict[str, int] | None:
    """``{"pid": N}`` if this process took ``out_dir``'s lock over from run N, which died holding it."""
    return _held.get(str(Path(out_dir).resolve()))


def _pid_in(descriptor: int) -> int | None:
    text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
