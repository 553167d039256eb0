"""`LoweredModule`: an ``nn.Module`` whose methods run on a backend.

It holds what was lowered (backend, frontend, compile spec, payload, handle
map, method signatures and output structures), compiles the payload on the
backend when it is created (at lowering and again at load), and binds one
generated method per compile-spec key. The generated source is ``.code``.
"""

from __future__ import annotations

import time
import types
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.nn.modules.module import (
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)

from pipeline.core import toolchain_output
from pipeline.core.backend import Backend, BackendInfo, ProfileEvent
from pipeline.core.codegen import generate_methods, same_value
from pipeline.core.debug_handles import HandleMap
from pipeline.core.errors import (
    ArgumentError,
    BackendNotAvailableError,
    BackendRuntimeError,
    LoweringError,
    format_choices,
)
from pipeline.core.literals import check_name
from pipeline.core.signature import (
    STRUCTURE,
    TENSOR,
    VAR_KEYWORD,
    VAR_POSITIONAL,
    CapturedValue,
    MethodSignature,
    OutputStructure,
)

_get_tracing_state = torch._C._get_tracing_state
_RECAPTURE = "Lower the model again with example inputs like this call's, to run it."


def _matches(expected: CapturedValue, value: Any) -> bool:
    if expected.kind == TENSOR:
        return isinstance(value, torch.Tensor)
    if expected.kind == STRUCTURE:
        return pytree.treespec_dumps(pytree.tree_structure(value)) == expected.value
    if expected.value is None or isinstance(expected.value, bool):
        return value is expected.value
    return same_value(value, expected.value)


def _described(expected: CapturedValue) -> str:
    if expected.kind == TENSOR:
        return "a Tensor"
    if expected.kind == STRUCTURE:
        return "a structure of tensors"
    return f"{expected.value!r}"


def _given(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a Tensor of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else f"a {type(value).__name__}"


class LoweredModule(torch.nn.Module):
    def __init__(
        self,
        backend: BackendInfo,
        *,
        frontend: str,
        method_compile_spec: dict[str, dict[str, Any]],
        payload: bytes,
        handle_map: HandleMap,
        notes: dict[str, Any] | None = None,
        signatures: dict[str, MethodSignature],
        outputs: dict[str, OutputStructure],
        original_type: str,
        original_methods: Sequence[str] = (),
        timings: dict[str, float] | None = None,
    ):
        super().__init__()
        for name in method_compile_spec:
            check_method_name(name)
        self.backend_name = backend.name
        self.frontend = frontend
        self.method_compile_spec = method_compile_spec
        self.payload = payload
        self.notes = dict(notes or {})  # the backend's facts about this lowering, for reports
        self.handle_map = handle_map
        self.signatures = signatures
        self.outputs = outputs
        self.original_type = original_type
        self.original_methods = sorted(set(original_methods) | set(method_compile_spec))
        self.backend_version = backend.version
        self._backend = backend.backend_cls()
        self._handles: dict[str, Any] = {}
        with toolchain_output.logged():  # asking imports the runtime, and some print as they load
            self.available = bool(self._backend.is_available())
        timings = {} if timings is None else timings
        start = time.perf_counter()
        if self.available:
            self._handles = self._compile()
            self._execute = _bound_execute(self._backend, self._handles)
        else:
            warnings.warn(
                f"Backend {self.backend_name!r} is not available on this machine. Lowering succeeded; "
                "calling the module raises until it is loaded where the backend is available.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._execute = self._unavailable
            self._handles = {method: None for method in method_compile_spec}
        timings["compile"] = time.perf_counter() - start
        start = time.perf_counter()
        generated = generate_methods(self.backend_name, {m: (signatures[m], outputs[m]) for m in method_compile_spec})
        self._code = generated.source
        for name, fn in generated.functions.items():
            self.__dict__[name] = types.MethodType(fn, self)
        if "forward" not in generated.functions:
            self.__dict__["forward"] = self._not_lowered("forward")
        timings["codegen"] = time.perf_counter() - start

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
    def runtime(self) -> Backend:
        """The backend's runtime instance that compiled the payload and runs the methods."""
        return self._backend

    def compiled(self, method: str) -> Any:
        """What the backend's ``compile`` returned for ``method`` (a session, a loaded package, ...)."""
        if method not in self.method_compile_spec:
            raise AttributeError(self._not_lowered_message(method))
        return self._handles[method]

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
            self._unavailable(None, [])
        values = self.signatures[method].bind(args, kwargs, method=method)
        return self._backend.profile(self._handles[method], values)

    def _compile(self) -> dict[str, Any]:
        try:
            with toolchain_output.logged():  # runtimes log as they load (ExecuTorch's cpuinfo): to the log
                handles = self._backend.compile(self.payload, self.method_compile_spec)
        except BackendRuntimeError as error:
            raise self._source_error(error, "compile") from error
        except LoweringError:
            raise
        except Exception as error:
            raise LoweringError(f"Backend {self.backend_name!r} failed to compile: {error}") from error
        missing = [m for m in self.method_compile_spec if m not in handles]
        if missing:
            raise LoweringError(
                f"Backend {self.backend_name!r}: compile() returned no handle for method(s) {missing}; "
                f"it returned handles for {format_choices(handles)}."
            )
        return dict(handles)

    def _unavailable(self, handle: Any, inputs: list[Any]) -> list[Any]:
        raise BackendNotAvailableError(
            f"Backend {self.backend_name!r} is not available. Execution of this module is possible after "
            "saving it and loading it on a machine where the backend is available."
        )

    def _not_lowered(self, method: str):
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

    def _source_error(self, error: BackendRuntimeError, method: str) -> BackendRuntimeError:
        """The backend's error with each debug handle resolved to module hierarchy and source."""
        where = "\n".join(self.handle_map.describe(h) for h in error.debug_handles)
        handles = ", ".join(str(h) for h in error.debug_handles) or "none"
        message = f"{error.message}\n  (backend {self.backend_name!r}, method {method!r}, debug handles: {handles})"
        if where:
            message += "\n" + "\n".join("  " + line for line in where.splitlines())
        return BackendRuntimeError(message, error.debug_handles)

    def _argument_error(self, method: str, call: dict[str, Any]) -> ArgumentError:
        """Why a call is not the one ``method``'s program was captured with (the generated check failed)."""
        signature = self.signatures[method]
        captured = signature.captured
        var = {p.kind: p.name for p in signature.params if p.kind in (VAR_POSITIONAL, VAR_KEYWORD)}
        extra = call.get(var.get(VAR_KEYWORD, ""), {})
        if VAR_KEYWORD in var and set(extra) != set(captured.keywords):
            added, dropped = sorted(set(extra) - set(captured.keywords)), sorted(set(captured.keywords) - set(extra))
            return ArgumentError(
                f"{self._call_name(method)}: the program was captured with keyword arguments "
                f"{format_choices(captured.keywords)} through **{var[VAR_KEYWORD]}; this call "
                + (f"adds {format_choices(added)}" if added else "")
                + (" and " if added and dropped else "")
                + (f"leaves out {format_choices(dropped)}" if dropped else "")
                + ". "
                + _RECAPTURE
            )
        positional = call.get(var.get(VAR_POSITIONAL, ""), ())
        if VAR_POSITIONAL in var and len(positional) != captured.var_positional:
            return ArgumentError(
                f"{self._call_name(method)}: the program was captured with "
                f"{captured.var_positional} value(s) for *{var[VAR_POSITIONAL]}; this call passes "
                f"{len(positional)}. {_RECAPTURE}"
            )
        values = iter(captured.values)
        for p in signature.params:
            if p.kind == VAR_POSITIONAL:
                given = list(positional)
            elif p.kind == VAR_KEYWORD:
                given = [extra[k] for k in captured.keywords]
            else:
                given = [call.get(p.name)]
            for value in given:
                expected = next(values)
                if not _matches(expected, value):
                    return ArgumentError(
                        f"{self._call_name(method)}: argument {expected.name!r} was captured as "
                        f"{_described(expected)}; this call passes {_given(value)}. The lowered program is "
                        f"specialised on it. {_RECAPTURE}"
                    )
        return ArgumentError(f"{self._call_name(method)}: this call does not match the captured one. {_RECAPTURE}")

    def _call_name(self, method: str) -> str:
        return f"{self.original_type}.{method} lowered to {self.backend_name!r}"

    def _output_error(self, method: str, outputs: Any) -> BackendRuntimeError:
        expected = self.outputs[method]
        try:
            got = f"{len(outputs)} values of kinds {[type(o).__name__ for o in outputs]}"
        except TypeError:
            got = f"a {type(outputs).__name__}"
        return BackendRuntimeError(
            f"Backend {self.backend_name!r} returned {got} for method {method!r}; expected a list of "
            f"{expected.num_leaves} values of kinds {list(expected.leaf_kinds)}."
        )

    def extra_repr(self) -> str:
        return f"backend={self.backend_name!r}, frontend={self.frontend!r}, methods={self.methods}"


def _bound_execute(backend: Backend, handles: dict[str, Any]):
    """What the generated methods call as ``self._execute(handle, inputs)``.

    It is the backend's ``execute``, unless the backend keeps the default (which
    calls ``handle.run(inputs)``) and every handle is of one class: then it is
    that class's ``run`` function itself, one Python frame less on every call.
    """
    kinds = {type(handle) for handle in handles.values()}
    run = getattr(next(iter(kinds)), "run", None) if len(kinds) == 1 else None
    if type(backend).execute is Backend.execute and isinstance(run, types.FunctionType):
        return run
    return backend.execute


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
        "original_type",
        "original_methods",
        "backend_version",
        "available",
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
    return name
