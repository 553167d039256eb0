"""The runtime half: load each method's AOTInductor package and call it.

``compile`` writes each ``.pt2`` to a private temporary directory and loads it
with ``torch._inductor.aoti_load_package``, which loads the compiled shared
library into the process (see the package docstring). ``execute`` passes the
flattened tensor arguments to the package's runner (``loader.boxed_run``, what
``AOTICompiledModel.__call__`` calls after flattening) and returns its flat
list of outputs. A failure of the runner becomes `pipeline.BackendRuntimeError`
with handle ``-1``: the generated code does not say which kernel failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, List, Sequence

import torch
import torch.utils._pytree as pytree

from pipeline.core.backend import (UNKNOWN_HANDLE, Backend, BackendRuntimeError, LoweringError, ProfileEvent,
                                   method_part, parse_compile_spec, unpack_parts)

from pipeline.backends.inductor.compile_spec import NAME, InductorCompileSpec
from pipeline.backends.inductor.preprocess import PACKAGE_NAME, preprocess


class InductorBackend(Backend):
    """Each exported method compiled by AOTInductor (`preprocess`) to a package with a shared library."""

    name = NAME
    accepts = ("export",)
    CompileSpec = InductorCompileSpec
    version = f"0.1.0+torch.{torch.__version__}"
    reproducible = False  # AOTI packages embed a random serialization id and build commands
    carries_code = True  # loading the payload loads a shared library
    preprocess = staticmethod(preprocess)

    def compile(self, payload: bytes, method_compile_spec: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        meta, packages = unpack_parts(payload, NAME)
        handles = {}
        for method, options in method_compile_spec.items():
            spec = parse_compile_spec(InductorCompileSpec, options, f"compile_spec.{method}")
            handles[method] = PackageMethod(method, method_part(packages, method, NAME), meta["methods"][method], spec)
        return handles




class PackageMethod:
    """One method, ready to run: the handle `InductorBackend.compile` returns."""

    def __init__(self, method: str, package: bytes, meta: Dict[str, Any], spec: InductorCompileSpec):
        self.method = method
        self.flat = bool(meta["flat"])
        self.kernels = [(str(name), tuple(int(h) for h in found)) for name, found in meta["kernels"]]
        directory = tempfile.mkdtemp(prefix="pipeline-aoti-load-")
        try:
            path = os.path.join(directory, PACKAGE_NAME)
            with open(path, "wb") as handle:
                handle.write(package)
            self.model = torch._inductor.aoti_load_package(path, run_single_threaded=spec.run_single_threaded)
        except Exception as error:
            raise LoweringError(
                f"Backend {NAME!r}: cannot load the AOTInductor package of method {method!r}: {error}"
            ) from error
        finally:
            shutil.rmtree(directory, ignore_errors=True)  # the loader has extracted what it needs
        self._run = self.model.loader.boxed_run

    def run(self, inputs: Sequence[Any]) -> List[Any]:
        # a new list either way: boxed_run empties the list it is given
        tensors = list(inputs) if self.flat else [x for x in pytree.tree_leaves(list(inputs))
                                                   if isinstance(x, torch.Tensor)]
        try:
            return self._run(tensors)
        except Exception as error:
            raise BackendRuntimeError(f"AOTInductor: {error}", [UNKNOWN_HANDLE]) from error

    def profile(self, inputs: Sequence[Any]) -> List[ProfileEvent]:
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
            found = next((i for i in range(cursor, len(self.kernels))
                          if event.name.endswith(self.kernels[i][0].rsplit(":", 1)[0])), None)
            if found is None:
                events.append(ProfileEvent(f"{self.method}/? {event.name}", event.cpu_time_total / 1e6))
                continue
            cursor = found + 1
            name, handles = self.kernels[found]
            events.append(ProfileEvent(f"{self.method}/{name}", event.cpu_time_total / 1e6, handles))
        return events
