"""The runtime half: load each method's AOTInductor package and call it.

``compile`` checks each ``.pt2`` (a zip: no absolute or ``..`` member names, no
symlinks, no bombs), writes it to a private directory (``tempfile.mkdtemp``:
mode 0700) and loads it with ``torch._inductor.aoti_load_package``, which
loads the compiled shared library into the process (see the package
docstring). The loader unpacks the package into a fresh ``aotinductor_*``
directory under the system temp directory (C++ ``temp_directory_path()``, which
reads ``TMPDIR``); with ``TMPDIR`` pointed at the private directory during the
load, it unpacks there instead, and the private directory is removed when the
method's runner is released or the process exits. The runner passes the
flattened tensor arguments to the package's runner (``loader.boxed_run``, what
``AOTICompiledModel.__call__`` calls after flattening) and returns its flat
list of outputs. A failure of the runner becomes `pipeline.BackendRuntimeError`
with handle ``-1``: the generated code does not say which kernel failed.

A package compiled for static shapes reads its inputs as it was compiled for:
a tensor of another size gives wrong numbers, and an empty one crashes the
process. The generated code checks every input's size, stride and dtype when
``AOTI_RUNTIME_CHECK_INPUTS`` is set, which this module sets before any package
is loaded (the check is read once per process, at the first call of any AOTInductor
model). An input whose only fault is its strides is retried as a contiguous copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from pipeline.backends.inductor.compile_spec import NAME, InductorCompileSpec
from pipeline.backends.inductor.preprocess import PACKAGE_NAME, preprocess
from pipeline.core.backend import (
    UNKNOWN_HANDLE,
    Backend,
    BackendRuntimeError,
    LoweringError,
    ProfileEvent,
    argument_leaves,
    check_extractable,
    method_part,
    unpack_parts,
)

os.environ.setdefault("AOTI_RUNTIME_CHECK_INPUTS", "1")


class InductorBackend(Backend):
    """Each exported method compiled by AOTInductor (`preprocess`) to a package with a shared library."""

    name = NAME
    accepts = ("export",)
    dynamic_shapes = ("export",)  # AOTInductor compiles a program's symbolic sizes into the package's kernels
    CompileSpec = InductorCompileSpec
    runtime_packages = ("torch",)
    reproducible = False  # AOTI packages embed a random serialization id and build commands
    carries_code = True  # loading the payload loads a shared library
    native_payload = True  # the package's shared library is loaded with dlopen: a received file loads in a child first
    preprocess = staticmethod(preprocess)

    def compile(self, payload: bytes, specs: dict[str, InductorCompileSpec]) -> dict[str, Any]:
        meta, packages = unpack_parts(payload, NAME)
        return {
            method: PackageMethod(method, method_part(packages, method, NAME), meta["methods"][method], spec)
            for method, spec in specs.items()
        }


class PackageMethod:
    """One method, ready to run: the handle `InductorBackend.compile` returns."""

    def __init__(self, method: str, package: bytes, meta: dict[str, Any], spec: InductorCompileSpec):
        self.method = method
        self.flat = bool(meta["flat"])
        self.kernels = [(str(name), tuple(int(h) for h in found)) for name, found in meta["kernels"]]
        check_extractable(package, f"Backend {NAME!r}: the AOTInductor package of method {method!r}")
        self.directory = tempfile.mkdtemp(prefix="pipeline-aoti-load-")
        # Removed when this handle is collected, or at exit if it never is (a LoweredModule lives in a cycle).
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.directory, ignore_errors=True)
        try:
            path = os.path.join(self.directory, PACKAGE_NAME)
            with open(path, "wb") as handle:
                handle.write(package)
            with _temp_dir(self.directory):
                self.model = torch._inductor.aoti_load_package(path, run_single_threaded=spec.run_single_threaded)
            os.remove(path)  # the loader has unpacked what it needs beside it
        except Exception as error:
            self._cleanup()
            raise LoweringError(
                f"Backend {NAME!r}: cannot load the AOTInductor package of method {method!r}: {error}"
            ) from error
        self._run = self.model.loader.boxed_run

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        # a new list either way: boxed_run empties the list it is given
        tensors = list(inputs) if self.flat else [x for x in argument_leaves(inputs) if isinstance(x, torch.Tensor)]
        try:
            return self._run(tensors)
        except Exception as error:
            leaves = argument_leaves(inputs)
            views = any(isinstance(t, torch.Tensor) and not t.is_contiguous() for t in leaves)
            if views and "unmatched stride" in str(error):  # a view of the right size: run it as a contiguous copy
                return self.run([t.contiguous() if isinstance(t, torch.Tensor) else t for t in leaves])
            raise BackendRuntimeError(f"AOTInductor: {error}", [UNKNOWN_HANDLE]) from error

    __call__ = run  # the runner's call is run itself: no frame in between on every call

    def profile(self, inputs: Sequence[Any]) -> list[ProfileEvent]:
        """The top-level events of one call under ``torch.profiler``, aligned with the kernel calls.

        Extern kernels (``aoti_torch_cpu_addmm_out``, ...) always record an
        event; generated kernels only when compiled with
        ``cpp_enable_kernel_profile``. Each event is matched to the next kernel
        call of the same name and takes its handles.
        """
        from torch.profiler import ProfilerActivity, profile

        self.run(inputs)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as recorded:
            self.run(inputs)
        events, cursor = [], 0
        for event in recorded.events():
            if event.cpu_parent is not None:
                continue
            found = next(
                (
                    i
                    for i in range(cursor, len(self.kernels))
                    if event.name.endswith(self.kernels[i][0].rsplit(":", 1)[0])
                ),
                None,
            )
            if found is None:
                events.append(ProfileEvent(f"{self.method}/? {event.name}", event.cpu_time_total / 1e6))
                continue
            cursor = found + 1
            name, handles = self.kernels[found]
            events.append(ProfileEvent(f"{self.method}/{name}", event.cpu_time_total / 1e6, handles))
        return events


_TMPDIR_LOCK = threading.Lock()


@contextlib.contextmanager
def _temp_dir(directory: str) -> Iterator[None]:
    """``TMPDIR`` set to ``directory`` while the C++ loader picks its unpacking directory (one load at a time).

    Python's own ``tempfile`` is not affected: it caches its directory on first use, which the
    ``mkdtemp`` before any load has made.
    """
    with _TMPDIR_LOCK:
        before = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = directory
        try:
            yield
        finally:
            if before is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = before
