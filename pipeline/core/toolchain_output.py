"""What toolchains print while a model is captured and lowered: to the log, or nowhere.

torch.export, Dynamo, the ONNX exporter and the deployment toolchains write
hundreds of lines while they work (graphs, guard failures, passes) and more
when they fail; none of it says anything about the model a user can act on.

* `logged` sends all of it, logging records, ``print`` output, Python
  warnings and what native code writes to the process's stderr (ExecuTorch's
  cpuinfo lines, OpenVINO's and onnxruntime's own logs) alike, to the
  ``pipeline.torch`` logger, around capture, preprocess and compile (which
  loading an artifact runs too). The Hydra app writes that logger to the job's
  log file only; a library user sees none of it unless they attach a handler
  to it (it has a `logging.NullHandler`, so Python's last-resort handler never
  prints it).
* `quiet` lowers one library logger's level (and hides warnings) for a block,
  and `quiet_logs_from` drops root-logger records logged from inside one
  package: for backends whose runtimes log on their own while compiling.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

LOG = logging.getLogger("pipeline.torch")
LOG.addHandler(logging.NullHandler())
MAX_NATIVE_BYTES = 1 << 20  # of native output kept per block: a runtime that floods stderr must not fill memory
_NOISY = ("torch", "onnxscript", "onnx_ir")  # loggers whose records belong to the log, not the console


class _Forward(logging.Handler):
    """Re-emits a record under ``pipeline.torch``, keeping its level and text."""

    def emit(self, record: logging.LogRecord) -> None:
        LOG.log(record.levelno, "[%s] %s", record.name, record.getMessage())


class _LineWriter(io.TextIOBase):
    """A text stream whose lines become log records.

    Logging may itself write to the redirected stream (its last-resort handler
    prints to ``sys.stderr`` when no handler is configured): such writes go to
    the original stream instead of looping back into the log.
    """

    def __init__(self, level: int, original: TextIO):
        self.level, self.original, self.pending = level, original, ""
        self.busy = threading.local()

    def write(self, text: str) -> int:
        if getattr(self.busy, "active", False):
            return self.original.write(text)
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        self.busy.active = True
        try:
            for line in lines:
                if line.strip():
                    LOG.log(self.level, "%s", line)
        finally:
            self.busy.active = False
        return len(text)


@contextlib.contextmanager
def logged() -> Iterator[None]:
    """Within the block, torch's logging, prints and warnings go to the ``pipeline.torch`` logger."""
    forward = _Forward()
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    tops = [logging.getLogger(name) for name in _NOISY]
    children = [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and logger.handlers and name.split(".")[0] in _NOISY
    ]
    for logger in dict.fromkeys(tops + children):  # a child with handlers of its own (torch._logging sets some)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers, logger.propagate = [forward], False
    try:
        with (
            native_stderr_logged(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(_LineWriter(logging.INFO, sys.stdout)),
            contextlib.redirect_stderr(_LineWriter(logging.WARNING, sys.stderr)),
        ):
            warnings.showwarning = _log_warning
            yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


@contextlib.contextmanager
def native_stderr_logged() -> Iterator[None]:
    """Within the block, what is written to file descriptor 2 (by native code, which Python's
    ``sys.stderr`` does not see) goes to a temporary file, whose lines are logged when the block ends.

    Process-wide while it lasts: another thread's stderr goes to the log too. Standard output is left
    alone: the Hydra app's console is there, and the runtimes log to stderr.
    """
    if _kept:  # a forked loader keeps all of it in one file, for its parent to read if it dies
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to redirect (a daemon, a closed descriptor)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read(MAX_NATIVE_BYTES).decode(errors="replace").splitlines():
                if line.strip():
                    LOG.info("%s", line)


_kept: list[bool] = []


@contextlib.contextmanager
def native_stderr_kept(file: Any) -> Iterator[None]:
    """Within the block, file descriptor 2 writes to ``file``, and `native_stderr_logged` blocks inside
    leave it there: a child process that may die keeps what native code said last where its parent
    can read it (`pipeline.core.isolation`)."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    _kept.append(True)
    try:
        yield
    finally:
        _kept.pop()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _log_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    LOG.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)


@contextlib.contextmanager
def quiet(logger: str, level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, ``logger`` (and its children) log only at ``level`` and above, and warnings
    are not shown."""
    target = logging.getLogger(logger)
    previous = target.level
    target.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        target.setLevel(previous)


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
