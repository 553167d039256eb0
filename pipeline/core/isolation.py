"""Loading a received artifact's native payload in a child process first: `load_in_child`.

A backend whose payload is read by native code (``native_payload``: a
flatbuffer, a protobuf, an IR, a zip of kernels) can be taken down by a
hostile file however well it is checked first: the runtime's own parser may
abort, dereference what it should not, or throw through C++. So
``load_lowered`` builds the module once in a forked child (`forked`), which
only compiles the methods and leaves with ``os._exit``; if the child dies,
loading raises an `ArtifactError` naming the file, the backend, the signal,
and the last lines the runtime wrote to stderr, and this process never
touches the payload. If the child survives, the module is built again here.

What it costs: a fork (the parent's pages are shared, not copied) and one
more compile of the methods, per load (40 to 90 ms for the zoo MLP on the five
native backends). The child's temporary files go into a directory of the
parent's that is removed when the child is done, since its finalizers never
run. What it does not cover: a payload that
crashes only on a call, or only on some runs; and memory the child's compile
takes is taken twice for a moment.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.core import toolchain_output
from pipeline.core.errors import ArtifactError
from pipeline.core.forked import can_fork, run_in_child
from pipeline.core.registry import BackendInfo

TAIL_BYTES = 4096  # of the child's native stderr read back after a death
TAIL_LINES = 6
_KEPT: list[Any] = []  # in a child: what it built, so that nothing is destroyed before os._exit


def wanted(isolate: bool | None, backend: BackendInfo, path: Path) -> bool:
    """Whether to load in a child: ``isolate`` if given, else whether the backend's payload is native.
    Asking for it where there is no ``os.fork`` is an error, not a silent in-process load."""
    if isolate is None:
        return backend.native_payload and can_fork()
    if isolate and not can_fork():
        raise ArtifactError(
            f"{path}: isolate=True needs os.fork, which this platform does not have; "
            "pass isolate=False to load the payload in this process."
        )
    return bool(isolate)


def load_in_child(path: Path, backend: str, build: Callable[[], Any]) -> None:
    """Run ``build()`` in a forked child; an `ArtifactError` if the child dies, else nothing.

    An ordinary exception in the child is not reported here: the caller builds
    again in this process and raises it there, as an unisolated load would.
    """
    # The child leaves with os._exit, so the temporary files its runtime makes (an AOTInductor package's
    # unpacked directory) are never cleaned up by their finalizers: they go into a directory of the
    # parent's, removed when the child is done.
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryDirectory(prefix="pipeline-isolated-") as scratch:

        def job(report_stage: Callable[[str], None]) -> str:
            tempfile.tempdir = scratch
            os.environ["TMPDIR"] = scratch
            # Nothing built here is ever destroyed: the child leaves with os._exit. Runtimes' destructors
            # wait for worker threads that a forked child does not have (OpenVINO's stream executors hang).
            gc.disable()
            faulthandler.disable()  # a death here is reported as an ArtifactError, not dumped on the terminal
            # OpenMP's worker threads stayed in the parent, and a parallel op here would wait for them
            # forever (libgomp is not fork-safe): the child's torch ops run on its one thread.
            torch.set_num_threads(1)
            with toolchain_output.native_stderr_kept(stderr):
                try:
                    _KEPT.append(build())
                except BaseException as error:  # noqa: BLE001 - raised again by the parent's own build
                    _KEPT.append(error)
                    return type(error).__name__
            return "loaded"

        def died(stage: str, cause: str) -> None:
            output = _tail(stderr)
            raise ArtifactError(
                f"{path}: backend {backend!r} cannot load payload.bin: {cause} while compiling it. The payload "
                "crashes its runtime (it is malformed, or made to); it was not loaded into this process."
                + ("\n  the runtime's last output:\n" + "\n".join(f"    {line}" for line in output) if output else "")
            )

        run_in_child(job, died, process="the process that loaded it in isolation")


def _tail(file: Any) -> list[str]:
    """The last lines of ``file``, as printable text (the runtime may have echoed the payload's bytes)."""
    size = os.fstat(file.fileno()).st_size
    file.seek(max(0, size - TAIL_BYTES))
    text = file.read().decode("utf-8", errors="replace")
    lines = ["".join(c if c.isprintable() else "?" for c in line).strip() for line in text.splitlines()]
    return [line[:300] for line in lines if line][-TAIL_LINES:]
