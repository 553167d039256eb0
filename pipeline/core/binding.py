"""`RuntimeBinding`: the one object the generated methods of a lowered module call.

Generated code is part of the artifact format (loading renders it again and compares it with ``code.py``),
so what it calls is a small public interface with a version of its own, not the module's private methods.
Version 1 is what ``self.runtime_binding`` offers the methods of format-version-4 artifacts:

* ``runners[method](inputs)``: the backend's `MethodRunner` for ``method``, on the flat inputs;
* ``argument_error(method, call)``: why a call is not the one the program was captured with;
* ``source_error(error, method)``: a `BackendRuntimeError` with its debug handles resolved to source;
* ``output_error(method, outputs)``: the backend returned the wrong number or kinds of leaves.

A change to any of these is a new binding version, a new template in `pipeline.core.codegen` and a new
artifact format version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

from pipeline.core.backend import MethodRunner
from pipeline.core.debug_handles import HandleMap
from pipeline.core.errors import ArgumentError, BackendRuntimeError, format_choices
from pipeline.core.signature import (
    STRUCTURE,
    TENSOR,
    VAR_KEYWORD,
    VAR_POSITIONAL,
    CapturedValue,
    MethodSignature,
    OutputStructure,
)

VERSION = 1
_RECAPTURE = "Lower the model again with example inputs like this call's, to run it."


class RuntimeBinding:
    """What generated methods call (version `VERSION`): the runners and the three errors they raise."""

    version = VERSION

    def __init__(
        self,
        backend_name: str,
        original_type: str,
        signatures: dict[str, MethodSignature],
        outputs: dict[str, OutputStructure],
        handle_map: HandleMap,
        runners: dict[str, MethodRunner],
    ):
        self.backend_name = backend_name
        self.original_type = original_type
        self.signatures = signatures
        self.outputs = outputs
        self.handle_map = handle_map
        self.runners = runners

    def source_error(self, error: BackendRuntimeError, method: str) -> BackendRuntimeError:
        """The backend's error with each debug handle resolved to module hierarchy and source."""
        return source_error(self.handle_map, self.backend_name, error, method)

    def output_error(self, method: str, outputs: Any) -> BackendRuntimeError:
        expected = self.outputs[method]
        try:
            got = f"{len(outputs)} values of kinds {[type(o).__name__ for o in outputs]}"
        except TypeError:
            got = f"a {type(outputs).__name__}"
        return BackendRuntimeError(
            f"Backend {self.backend_name!r} returned {got} for method {method!r}; expected a list of "
            f"{expected.num_leaves} values of kinds {list(expected.leaf_kinds)}."
        )

    def argument_error(self, method: str, call: dict[str, Any]) -> ArgumentError:
        """Why a call is not the one ``method``'s program was captured with (the generated check failed)."""
        signature = self.signatures[method]
        captured = signature.captured
        name = f"{self.original_type}.{method} lowered to {self.backend_name!r}"
        if captured is None:  # a scripted program's methods check nothing, so they never get here
            return ArgumentError(f"{name}: this call does not match the captured one. {_RECAPTURE}")
        var = {p.kind: p.name for p in signature.params if p.kind in (VAR_POSITIONAL, VAR_KEYWORD)}
        extra = call.get(var.get(VAR_KEYWORD, ""), {})
        if VAR_KEYWORD in var and set(extra) != set(captured.keywords):
            added, dropped = sorted(set(extra) - set(captured.keywords)), sorted(set(captured.keywords) - set(extra))
            return ArgumentError(
                f"{name}: the program was captured with keyword arguments "
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
                f"{name}: the program was captured with {captured.var_positional} value(s) for "
                f"*{var[VAR_POSITIONAL]}; this call passes {len(positional)}. {_RECAPTURE}"
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
                        f"{name}: argument {expected.name!r} was captured as {_described(expected)}; this call "
                        f"passes {_given(value)}. The lowered program is specialised on it. {_RECAPTURE}"
                    )
        return ArgumentError(f"{name}: this call does not match the captured one. {_RECAPTURE}")


def source_error(
    handle_map: HandleMap, backend_name: str, error: BackendRuntimeError, method: str
) -> BackendRuntimeError:
    """``error`` with each debug handle resolved to module hierarchy and source (``method`` may be
    ``"compile"``, for a failure while compiling)."""
    where = "\n".join(handle_map.describe(h) for h in error.debug_handles)
    handles = ", ".join(str(h) for h in error.debug_handles) or "none"
    message = f"{error.message}\n  (backend {backend_name!r}, method {method!r}, debug handles: {handles})"
    if where:
        message += "\n" + "\n".join("  " + line for line in where.splitlines())
    return BackendRuntimeError(message, error.debug_handles)


def unavailable_runner(fail: Callable[[], BaseException]) -> MethodRunner:
    """A runner that raises ``fail()``: the methods of a module whose backend is not available here."""

    def run(inputs: list[Any]) -> list[Any]:
        raise fail()

    return run


def same_value(given: Any, captured: Any) -> bool:
    """Equal and of the same kind (``1`` for ``1.0`` is the same number; ``True`` is not ``1``)."""
    numbers = (int, float)
    if type(captured) in numbers:
        return type(given) in numbers and given == captured
    return type(given) is type(captured) and given == captured


def _matches(expected: CapturedValue, value: Any) -> bool:
    if expected.kind == TENSOR:
        return isinstance(value, torch.Tensor)
    if expected.kind == STRUCTURE:
        return bool(pytree.treespec_dumps(pytree.tree_structure(value)) == expected.value)
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
