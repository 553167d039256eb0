"""Files that tell whether a loader touched them, for the tests that a received artifact reads and writes nothing.

`secret_file` writes bytes that must never appear in anything a load returns or
says. `OpenWatch` asks the kernel (Linux's inotify) to report every open of a
file and every read from it while a test runs: asking whether a file exists or
what size it is (``stat``) is not an open, so only a real read attempt counts.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest

_IN_ACCESS, _IN_OPEN = 0x1, 0x20


def secret_file(path: Path) -> bytes:
    """Writes 64 recognisable bytes at ``path`` and returns them."""
    data = b"SECRET-" + os.urandom(24).hex().encode() + b"-" * 9
    path.write_bytes(data)
    return data


class OpenWatch:
    """``with OpenWatch(path) as watch: ...``; afterwards ``watch.opened`` says whether anything opened or read
    the file (which must exist) meanwhile."""

    def __init__(self, path: Path):
        if not sys.platform.startswith("linux"):
            pytest.skip("OpenWatch uses Linux's inotify")
        self.path = Path(path)
        self.opened = False
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = -1

    def __enter__(self) -> "OpenWatch":
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0 or self._libc.inotify_add_watch(self._fd, str(self.path).encode(), _IN_OPEN | _IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), f"inotify cannot watch {self.path}")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.opened = bool(os.read(self._fd, 1 << 16))
        except BlockingIOError:  # no event: nothing opened it
            self.opened = False
        finally:
            os.close(self._fd)


def assert_refused_unread(artifact: Path, secret: Path, match: str) -> None:
    """Loading ``artifact`` raises `pipeline.ArtifactError` matching ``match``, and ``secret`` (a file the
    artifact names) is never opened meanwhile."""
    import pipeline

    with OpenWatch(secret) as watch:
        with pytest.raises(pipeline.ArtifactError, match=match):
            pipeline.load_lowered(artifact)
    assert not watch.opened
