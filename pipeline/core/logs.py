"""Keeping a runtime's own log messages out of the pipeline's output while it works.

Some runtimes log advice and tracebacks about themselves on the root logger
(``logging.warning(...)``) while they convert or quantize; `quiet_logs_from`
drops those records, and only those, for the duration of a ``with`` block::

    with quiet_logs_from("openvino"):
        convert(...)

It filters by the file that logged (a path inside the package), so the
pipeline's own messages, and other threads' messages, still get through.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


class _FromPackage(logging.Filter):
    def __init__(self, package: str):
        super().__init__()
        self.marker = "/" + package.replace(".", "/") + "/"

    def filter(self, record: logging.LogRecord) -> bool:
        return self.marker not in record.pathname.replace("\\", "/")


@contextlib.contextmanager
def quiet_logs_from(package: str) -> Iterator[None]:
    """Drop root-logger records logged from inside ``package`` (a dotted name) until the block ends."""
    root = logging.getLogger()
    drop = _FromPackage(package)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
