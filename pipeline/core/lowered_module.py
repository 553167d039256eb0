"""`LoweredModule`: an ``nn.Module`` whose methods run on a backend.

It holds what it is given: what was lowered (backend, frontend, compile spec,
payload, handle map, method signatures and output structures), the backend's
runtime with one runner per method (or none, where the backend is not
available), and the generated methods, which it binds; the generated source is
``.code``. Building it (compiling the payload, generating the methods) is the
last two steps of `pipeline.core.lowering.lower`, which ``load_lowered`` runs
too. The generated methods reach the runners through ``runtime_binding``
(`pipeline.core.binding`).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch.nn.modules.module import (
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)

from pipeline.core.backend import MethodRunner, ProfileEvent
from pipeline.core.binding import RuntimeBinding, unavailable_runner
from pipeline.core.codegen import GeneratedMethods
from pipeline.core.debug_handles import HandleMap
from pipeline.core.errors import BackendNotAvailableError, LoweringError, format_choices
from pipeline.core.literals import check_name
from pipeline.core.shape_check import checked_runner, runner_positions
from pipeline.core.shapes import MethodShapes
from pipeline.core.signature import MethodSignature, OutputStructure

_get_tracing_state = torch._C._get_tracing_state


class Runtime(Protocol):
    """What compiles a payload into runners: a `Backend` instance, or a partitioned payload's runtime."""

    def is_available(self) -> bool: ...

    def compile(self, payload: bytes, specs: dict[str, Any]) -> dict[str, MethodRunner]: ...


class LoweredModule(torch.nn.Module):
    def __init__(
        self,
        *,
        backend_name: str,
        backend_version: str | None,
        runtime: Runtime,
        runners: dict[str, MethodRunner] | None,
        generated: GeneratedMethods,
        frontend: str,
        method_compile_spec: dict[str, dict[str, Any]],
        payload: bytes,
        handle_map: HandleMap,
        notes: dict[str, Any] | None = None,
        signatures: dict[str, MethodSignature],
        outputs: dict[str, OutputStructure],
        original_type: str,
        original_methods: Sequence[str] = (),
        shapes: dict[str, MethodShapes] | None = None,
    ):
        """``runners`` is None where the backend is not available: the methods then raise
        `BackendNotAvailableError` until the module is saved and loaded where it is."""
        super().__init__()
        for name in method_compile_spec:
            check_method_name(name)
        self.backend_name = backend_name
        self.backend_version = backend_version
        self.frontend = frontend
        self.method_compile_spec = method_compile_spec
        self.payload = payload
        self.notes = dict(notes or {})  # the backend's facts about this lowering, for reports
        self.handle_map = handle_map
        self.signatures = signatures
        self.outputs = outputs
        self.shapes = dict(shapes or {})  # the shape contract of each method (no entry: nothing is checked)
        self.original_type = original_type
        self.original_methods = sorted(set(original_methods) | set(method_compile_spec))
        self.available = runners is not None
        self._runtime = runtime
        self._compiled = runners
        if runners is None:
            runners = {method: unavailable_runner(self._unavailable) for method in method_compile_spec}
        else:
            runners = {method: self._checked(method, runner) for method, runner in runners.items()}
        self.runtime_binding = RuntimeBinding(backend_name, original_type, signatures, outputs, handle_map, runners)
        self._code = generated.source
        for name, fn in generated.functions.items():
            self.__dict__[name] = types.MethodType(fn, self)
        if "forward" not in generated.functions:
            self.__dict__["forward"] = self._not_lowered("forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # torch.nn.Module.__call__ costs about 1 us a call (two frames that repack the arguments, the tracing
        # state, eight hook checks) before it reaches forward: most of a lowered call's overhead at small
        # sizes. With no hooks, no tracer and no torch.compile wrapper, call forward directly; otherwise
        # torch's own path runs, hooks and all.
        if (
            self._forward_pre_hooks
            or self._forward_hooks
            or self._backward_pre_hooks
            or self._backward_hooks
            or _global_forward_pre_hooks
            or _global_forward_hooks
            or _global_backward_pre_hooks
            or _global_backward_hooks
            or self._compiled_call_impl is not None
            or _get_tracing_state()
        ):
            return torch.nn.Module.__call__(self, *args, **kwargs)
        return self.forward(*args, **kwargs)

    @property
    def code(self) -> str:
        """The generated Python source of the lowered methods."""
        return self._code

    @property
    def runtime(self) -> Runtime:
        """The backend's runtime instance that compiled the payload."""
        return self._runtime

    def compiled(self, method: str) -> MethodRunner:
        """The runner the backend's ``compile`` returned for ``method`` (a session, a loaded package, ...)."""
        if method not in self.method_compile_spec:
            raise AttributeError(self._not_lowered_message(method))
        return (self._compiled or self.runtime_binding.runners)[method]

    def _checked(self, method: str, runner: MethodRunner) -> MethodRunner:
        """The runner behind the check of ``method``'s shape contract, if it has one."""
        contract = self.shapes.get(method)
        if contract is None or not contract.inputs:
            return runner
        name = f"{self.original_type}.{method} lowered to {self.backend_name!r}"
        return checked_runner(runner, contract, runner_positions(self.signatures[method]), method, name)

    @property
    def methods(self) -> list[str]:
        return list(self.method_compile_spec)

    def profile(self, method: str, *args: Any, **kwargs: Any) -> list[ProfileEvent] | None:
        """The backend's timed events for one call of ``method``, or None if it cannot report them.

        Each `ProfileEvent` carries the debug handles of what it timed; `handle_map`
        resolves them to source (`pipeline.core.profiling` adds them up per line).
        """
        if method not in self.method_compile_spec:
            raise AttributeError(self._not_lowered_message(method))
        if not self.available:
            raise self._unavailable()
        values = self.signatures[method].bind(args, kwargs, method=method)
        profile = getattr(self.runtime_binding.runners[method], "profile", None)
        return profile(values) if profile is not None else None

    def _unavailable(self) -> BackendNotAvailableError:
        return BackendNotAvailableError(
            f"Backend {self.backend_name!r} is not available. Execution of this module is possible after "
            "saving it and loading it on a machine where the backend is available."
        )

    def _not_lowered(self, method: str) -> Any:
        def raise_not_lowered(*args: Any, **kwargs: Any) -> Any:
            raise AttributeError(self._not_lowered_message(method))

        return raise_not_lowered

    def _not_lowered_message(self, method: str) -> str:
        return (
            f"Method {method!r} of {self.original_type} was not lowered to backend {self.backend_name!r}; "
            f"lowered methods: {format_choices(self.method_compile_spec)}. Add it to the compile spec to lower it."
        )

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in self.__dict__.get("original_methods", ()):
                raise AttributeError(self._not_lowered_message(name)) from None
            raise

    def extra_repr(self) -> str:
        return f"backend={self.backend_name!r}, frontend={self.frontend!r}, methods={self.methods}"


# Set on every instance (by __init__ or torch.nn.Module): a lowered method of the same name would replace them.
_INSTANCE_ATTRIBUTES = frozenset(
    {
        "backend_name",
        "frontend",
        "method_compile_spec",
        "payload",
        "handle_map",
        "signatures",
        "outputs",
        "shapes",
        "original_type",
        "original_methods",
        "backend_version",
        "available",
        "runtime_binding",
        "training",
    }
)


def check_method_name(name: Any) -> str:
    """Each lowered method becomes an attribute: it may not replace one the module itself relies on."""
    check_name(name, "method name")
    if name.startswith("_") or (name != "forward" and (hasattr(LoweredModule, name) or name in _INSTANCE_ATTRIBUTES)):
        raise LoweringError(
            f"Method {name!r} cannot be lowered under that name: a LoweredModule has an attribute {name!r} of "
            "its own (lowered method names may not start with '_' or be a torch.nn.Module or LoweredModule "
            "attribute, except 'forward')."
        )
    return str(name)
