"""The runtime half: ExecuTorch's Python runtime, one loaded program per method.

``compile`` loads each method's ``.pte`` with ``executorch.runtime.Runtime``
(``load_program(bytes)``, ``load_method(name)``); `ProgramMethod.run` calls the
loaded method with the argument tensors and returns its outputs (copies, which
ExecuTorch makes: its own output buffers are reused by the next call).

Threads: ExecuTorch has one thread pool per process, which every XNNPACK
delegate captures when it is loaded. Resizing it under a loaded delegate
crashes the process (it is ``_unsafe_reset_threadpool``), so `ThreadPool`
resizes it only while no method of this backend is loaded, and otherwise
refuses with a `pipeline.LoweringError` naming the pool's size.

A failed call becomes `pipeline.BackendRuntimeError`. ExecuTorch's Python
runtime raises only an error code; the instruction the call stopped at is found
from the ETDump of the call run again (`profile.failing_instruction`), and its
handles are the error's. Where no instruction ran (an input of the wrong shape
or dtype, refused before the first one) the handle is ``-1``.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from pipeline.backends.executorch import installed
from pipeline.backends.executorch.compile_spec import NAME, ExecuTorchCompileSpec
from pipeline.backends.executorch.dynamic import dynamic_refusal
from pipeline.backends.executorch.preprocess import preprocess
from pipeline.backends.executorch.profile import failing_instruction, profile_method
from pipeline.backends.executorch.pte_check import check_program
from pipeline.core.backend import (
    UNKNOWN_HANDLE,
    Backend,
    BackendRuntimeError,
    LoweringError,
    ProfileEvent,
    argument_leaves,
    method_part,
    unpack_parts,
)


class ExecuTorchBackend(Backend):
    """Each exported method lowered to an ExecuTorch program (`preprocess`), run by ExecuTorch's runtime."""

    name = NAME
    accepts = ("export",)
    dynamic_shapes = ("export",)  # upper-bounded: memory planned for each dimension's maximum (`dynamic`)
    CompileSpec = ExecuTorchCompileSpec
    runtime_packages = ("executorch",)
    reproducible = True
    carries_code = False  # a .pte is a flatbuffer of instructions and weights, interpreted by the runtime
    native_payload = True  # the runtime and XNNPACK parse the .pte in C++: a received file loads in a child first
    preprocess = staticmethod(preprocess)

    @classmethod
    def check_compile_spec(cls, specs: dict[str, ExecuTorchCompileSpec]) -> None:
        threads = sorted({spec.threads for spec in specs.values() if spec.threads})
        if len(threads) > 1:
            raise LoweringError(
                f"threads differ across methods ({threads}); ExecuTorch has one thread pool per process: give "
                "every method the same count, or 0 to leave the pool as it is."
            )

    @classmethod
    def dynamic_refusal(cls, method: str, spec: ExecuTorchCompileSpec) -> str | None:
        return dynamic_refusal(spec)

    def is_available(self) -> bool:
        return installed.available()

    def compile(self, payload: bytes, specs: dict[str, ExecuTorchCompileSpec]) -> dict[str, Any]:
        meta, programs = unpack_parts(payload, NAME)
        THREAD_POOL.resize(max((spec.threads for spec in specs.values()), default=0))
        return {
            method: ProgramMethod(method, method_part(programs, method, NAME), meta["methods"][method])
            for method in specs
        }


class ThreadPool:
    """ExecuTorch's process-wide thread pool, resized only while no loaded method uses it."""

    def __init__(self) -> None:
        self.users: weakref.WeakSet[ProgramMethod] = weakref.WeakSet()

    def size(self) -> int:
        return int(installed.runtime_bindings()._threadpool_get_thread_count())

    def resize(self, threads: int) -> None:
        if not threads or self.size() == threads:
            return
        if self.users:
            gc.collect()  # methods of modules that are gone but not yet collected do not count
        if self.users:
            raise LoweringError(
                f"Backend {NAME!r}: threads={threads}, but ExecuTorch's thread pool (one per process) has "
                f"{self.size()} threads and {len(self.users)} loaded method(s) use it; resizing it under them "
                f"would crash them. Use threads={self.size()} or 0, or release those modules first."
            )
        installed.runtime_bindings()._unsafe_reset_threadpool(threads)


THREAD_POOL = ThreadPool()


class ProgramMethod:
    """One method, ready to run: the handle `ExecuTorchBackend.compile` returns."""

    def __init__(self, method: str, program: bytes, meta: dict[str, Any]):
        self.method = method
        self.pte = program
        self.flat = bool(meta["flat"])
        self.instructions = meta["instructions"]
        check_program(program, method)  # what the runtime would log must be text it can decode
        try:
            verification = installed.runtime_bindings().Verification.InternalConsistency  # its flatbuffer verifier
            self.program = installed.runtime().load_program(program, verification=verification)
            self.loaded = self.program.load_method(method)
        except LoweringError:
            raise
        except Exception as error:
            raise LoweringError(f"Backend {NAME!r}: ExecuTorch cannot load method {method!r}: {error}") from error
        THREAD_POOL.users.add(self)
        # The bound C++ call (ExecuTorchMethod.__call__): what Method.execute calls, one Python frame less.
        self._run = self.loaded._method

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        arguments = inputs if self.flat else self.arguments(inputs)
        try:
            return self._run(arguments)
        except RuntimeError as error:
            contiguous = self.arguments(arguments, contiguous=True)
            if all(a is b for a, b in zip(contiguous, arguments)):
                raise self.failure(error, arguments) from error
        try:  # ExecuTorch takes contiguous (or channels-last) tensors only
            return self._run(contiguous)
        except RuntimeError as error:
            raise self.failure(error, contiguous) from error

    __call__ = run  # the runner's call is run itself: no frame in between on every call

    def failure(self, error: Exception, arguments: Sequence[Any]) -> BackendRuntimeError:
        """The error of a failed call, with the handles of the instruction it stopped at if one ran."""
        entry = failing_instruction(self, list(arguments))
        if entry is None:
            return BackendRuntimeError(f"ExecuTorch: {error}", [UNKNOWN_HANDLE])
        return BackendRuntimeError(
            f"ExecuTorch: {error} at instruction {entry['instruction']} ({entry['name']})",
            entry["handles"] or [UNKNOWN_HANDLE],
        )

    @staticmethod
    def arguments(inputs: Sequence[Any], contiguous: bool = False) -> list[Any]:
        """The flat argument list ExecuTorch takes: the leaves of the method's arguments, made
        contiguous if asked (tensors that already are stay the same objects)."""
        leaves = argument_leaves(inputs)
        if contiguous:
            leaves = [leaf.contiguous() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        return leaves

    def profile(self, inputs: Sequence[Any]) -> list[ProfileEvent]:
        return profile_method(self, self.arguments(inputs, contiguous=True))
