"""Files that tell whether a loader touched them, for the tests that a received artifact reads and writes nothing.

`secret_file` writes bytes that must never appear in anything a load returns or
says. `FifoWatch` is a named pipe with a thread that notices whoever opens it
for reading: opening a FIFO for writing without blocking succeeds only while
some process has it open for reading (a reader blocked in ``open`` counts), so
the thread polls that open; on success it records the reader and closes at
once, which gives the reader end-of-file, so nobody hangs.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path


def secret_file(path: Path) -> bytes:
    """Writes 64 recognisable bytes at ``path`` and returns them."""
    data = b"SECRET-" + os.urandom(24).hex().encode() + b"-" * 9
    path.write_bytes(data)
    return data


class FifoWatch:
    """``with FifoWatch(path) as watch: ...``; afterwards ``watch.opened`` says whether anything opened it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        os.mkfifo(self.path)
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "FifoWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.05)  # a reader that opens just before the end is still seen
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: no reader now
                    raise
                time.sleep(0.002)
                continue
            self.opened = True
            os.close(descriptor)
