"""Frontends: turn a model's methods into the program a backend reads.

* ``torchscript``: one ``torch.jit.ScriptModule`` (scripted, or traced from
  example inputs) holding every lowered method;
* ``export``: one ``torch.export.ExportedProgram`` per method, ``forward`` or not.

`capture` returns a `CapturedProgram`: the program plus what codegen needs to
know of each method (its signature and output structure).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import os
import re
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core import progress, toolchain_output
from pipeline.core.backend import FRONTENDS
from pipeline.core.dynamic_checks import capture_refusal, unlowered_method
from pipeline.core.errors import LoweringError, did_you_mean, format_choices
from pipeline.core.shapes import (
    AUTO,
    MethodShapes,
    ShapeDeclarationError,
    exported_contract,
    input_shapes,
    parse_declaration,
    scripted_contract,
)
from pipeline.core.signature import (
    CONSTANT,
    EVERY_VALUE,
    TENSORS_ONLY,
    VAR_KEYWORD,
    VAR_POSITIONAL,
    CapturedCall,
    MethodSignature,
    OutputStructure,
)
from pipeline.core.specialization import GuardSites, guard_sites, specialized_error

TORCHSCRIPT_MODES = ("script", "trace")
# {method: args}: a tuple of positional arguments, or {"args": (...), "kwargs": {...}} to pass some by name.
ExampleInputs = Mapping[str, Any]
# None (static), "auto", or {method: "auto" | {argument: {dimension: {name, min, max} | name | Dim}}}
DynamicShapes = Any
# One call's (args, kwargs).
CallArguments = tuple[tuple[Any, ...], dict[str, Any]]


def call_arguments(example: Any, method: str) -> CallArguments:
    """``(args, kwargs)`` of one method's example inputs, given as a tuple or as ``{"args":, "kwargs":}``."""
    if isinstance(example, Mapping):
        unknown = [k for k in example if k not in ("args", "kwargs")]
        args, kwargs = example.get("args", ()), example.get("kwargs", {})
        if unknown or not isinstance(args, (tuple, list)) or not isinstance(kwargs, Mapping):
            raise LoweringError(
                f"Example inputs of method {method!r}: expected a tuple of arguments or "
                f"{{'args': (...), 'kwargs': {{...}}}}, got keys {sorted(map(str, example))}."
            )
        return tuple(args), dict(kwargs)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    raise LoweringError(
        f"Example inputs of method {method!r}: expected a tuple of arguments or "
        f"{{'args': (...), 'kwargs': {{...}}}}, got a {type(example).__name__}."
    )


@dataclass
class CapturedProgram:
    frontend: str
    program: Any  # torch.jit.ScriptModule, or {method: torch.export.ExportedProgram}
    signatures: dict[str, MethodSignature]
    outputs: dict[str, OutputStructure]
    top_type: str
    shapes: dict[str, MethodShapes] = dataclasses.field(default_factory=dict)  # no entry: nothing checked
    modes: dict[str, CaptureMode] = dataclasses.field(default_factory=dict)  # how each method was captured


@dataclass(frozen=True)
class CaptureMode:
    """How one method was captured: ``strict`` or ``non_strict`` export, or torchscript's ``script`` or
    ``trace``; ``fallback_reason`` is why the mode asked for failed, when another one captured."""

    mode: str
    fallback_reason: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"mode": self.mode, "fallback_reason": self.fallback_reason}


def default_frontend(model: Any) -> str:
    return "torchscript" if isinstance(model, torch.jit.ScriptModule) else "export"


def model_methods(model: Any) -> list[str]:
    """The methods a model has that could be lowered."""
    if isinstance(model, torch.jit.ScriptModule):
        return sorted(model._c._method_names())
    return class_methods(type(model))


def class_methods(cls: type) -> list[str]:
    """Public methods a model class defines itself (not those of nn.Module), and forward."""
    names = []
    for klass in cls.__mro__:
        if klass in (torch.nn.Module, object):
            break
        names += [n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")]
    return sorted(set(names) | {"forward"})


def check_methods(model: Any, methods: Sequence[str]) -> None:
    available = model_methods(model)
    for method in methods:
        if method not in available:
            raise LoweringError(
                f"Compile spec names method {method!r}, which {type_name(model)} does not have; "
                f"it has: {format_choices(available)}.{did_you_mean(method, available)}"
            )


def type_name(model: Any) -> str:
    if isinstance(model, torch.jit.ScriptModule):
        return model.original_name
    return type(model).__name__


def capture(
    model: Any,
    methods: Sequence[str],
    frontend: str | None = None,
    example_inputs: ExampleInputs | None = None,
    torchscript_mode: str = "script",
    dynamic_shapes: DynamicShapes = None,
    strict: bool = True,
) -> CapturedProgram:
    """``dynamic_shapes`` declares the dimensions that vary (`pipeline.core.shapes`); the rest are the
    examples' sizes. The export frontend runs torch.export strict (Dynamo) first and non-strict, torch's own
    default, if that fails; ``strict=False`` turns the order round. Strict comes first because only its
    stack traces reach the line inside a method the model calls on itself (non-strict stops at the call in
    ``forward``), and those lines are what the debug handles point at. `CapturedProgram.modes` says which
    mode captured."""
    frontend = frontend or default_frontend(model)
    if frontend not in FRONTENDS:
        raise LoweringError(f"Unknown frontend {frontend!r}; allowed: {format_choices(FRONTENDS)}")
    check_methods(model, methods)
    check_declared_methods(dynamic_shapes, methods)
    example_inputs = dict(example_inputs or {})
    with toolchain_output.logged():  # torch's own output goes to the log, not the console
        if frontend == "torchscript":
            with progress.step(f"torchscript: {torchscript_mode}"):
                return _capture_torchscript(model, methods, example_inputs, torchscript_mode, dynamic_shapes)
        return _capture_export(model, methods, example_inputs, dynamic_shapes, strict)


def _capture_torchscript(
    model: Any, methods: Sequence[str], example_inputs: dict[str, Any], mode: str, dynamic_shapes: DynamicShapes = None
) -> CapturedProgram:
    if mode not in TORCHSCRIPT_MODES:
        raise LoweringError(f"Unknown torchscript mode {mode!r}; allowed: {format_choices(TORCHSCRIPT_MODES)}")
    calls = {m: call_arguments(example_inputs[m], m) for m in methods if m in example_inputs}
    if isinstance(model, torch.jit.ScriptModule):
        scripted, mode = model, "script"
    declared = {m: d for m in methods if (d := _declared(dynamic_shapes, m)) is not None}
    refusal = capture_refusal(mode, declared, "dynamic_shapes", static="dynamic_shapes=None")
    if refusal:
        raise ShapeDeclarationError(refusal)
    if mode == "trace":
        scripted, signatures = _trace(model, methods, calls)
    elif not isinstance(model, torch.jit.ScriptModule):
        scripted = _script(model, methods)
    compiled = set(scripted._c._method_names())
    for method in methods:
        if method not in compiled:
            raise LoweringError(f"Method {method!r} is not defined on the scripted {type_name(scripted)}.")
    if mode == "script":
        signatures = {
            m: MethodSignature.of(getattr(scripted if isinstance(model, torch.jit.ScriptModule) else model, m), m)
            for m in methods
        }
    outputs = {}
    for method in methods:
        if method in calls:
            args, kwargs = calls[method]
            with torch.no_grad():  # the structure callers get: eager's (a traced dict stands for a ModelOutput)
                produced = getattr(model, method)(*args, **kwargs)
            outputs[method] = OutputStructure.of_value(produced)
        else:
            outputs[method] = OutputStructure.of_schema(getattr(scripted, method).schema.returns[0].type, method)
    shapes = {
        method: _scripted_shapes(signatures[method], calls.get(method), declared[method], method) for method in declared
    }
    modes = {method: CaptureMode(mode) for method in methods}
    return CapturedProgram("torchscript", scripted, signatures, outputs, type_name(model), shapes, modes)


def _scripted_shapes(
    signature: MethodSignature, call: CallArguments | None, declared: Any, method: str
) -> MethodShapes:
    if call is None:
        raise ShapeDeclarationError(
            f"dynamic_shapes.{method}: declaring dynamic dimensions needs example inputs of method {method!r} "
            "(their sizes are the static dimensions, and they must lie within the bounds)."
        )
    arguments = _by_captured_name(CapturedCall.of(signature, *call, method), signature.bind(*call, method))
    return scripted_contract(arguments, parse_declaration(declared, method, arguments, f"dynamic_shapes.{method}"))


def _trace(
    model: torch.nn.Module, methods: Sequence[str], calls: dict[str, CallArguments]
) -> tuple[torch.jit.ScriptModule, dict[str, MethodSignature]]:
    """Trace each method on its example inputs. The trace takes the tensor arguments only (by name);
    every other value is baked in, and the signature's capture record says which, so that a call
    with another value is refused instead of silently answered for the traced one."""
    missing = [m for m in methods if m not in calls]
    if missing:
        raise LoweringError(f"Tracing needs example_inputs for method(s) {missing}.")
    signatures, inputs, constants = {}, {}, {}
    for method in methods:
        signature, captured = _captured_signature(model, method, calls[method], TENSORS_ONLY)
        if captured.keywords or captured.var_positional:
            raise LoweringError(
                f"Tracing method {method!r} with arguments passed through *args or **kwargs is not possible "
                "(torch.jit.trace names each input); pass them as named parameters, or use frontend=export."
            )
        bound = signature.bind_call(*calls[method], method)
        inputs[method] = {v.name: bound.arguments[v.name] for v in captured.values if v.kind != CONSTANT}
        constants[method] = {v.name: bound.arguments[v.name] for v in captured.values if v.kind == CONSTANT}
        signatures[method] = signature
    # The trace sees the constants as the call had them (use_cache=False, ...), bound to each method.
    host = copy.copy(model)
    for method in methods:
        setattr(host, method, _with_constants(getattr(model, method), constants[method], list(inputs[method])))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace_module(host, inputs, check_trace=False, strict=False, example_inputs_is_kwarg=True)
    except Exception as error:
        raise LoweringError(
            f"torch.jit.trace failed for {type_name(model)}: {short_error(error)} "
            "Try frontend=export, or script the model (frontend.mode=script)."
        ) from None
    return traced, signatures


def _captured_signature(
    model: Any, method: str, call: CallArguments, takes: str = EVERY_VALUE
) -> tuple[MethodSignature, CapturedCall]:
    """The method's signature with the record of the call it is captured with, and that record."""
    plain = MethodSignature.of(getattr(model, method), method)
    captured = CapturedCall.of(plain, *call, method, takes)
    return dataclasses.replace(plain, captured=captured), captured


def _with_constants(function: Any, constants: dict[str, Any], tensor_names: list[str]) -> Any:
    """``function`` with ``constants`` bound, whose signature (which the tracer reads) names only the tensors."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs, **constants)

    # A function takes any attribute, but typeshed declares no __signature__ on it; inspect.signature reads it.
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in tensor_names]
    )
    return call


def _script(model: torch.nn.Module, methods: Sequence[str]) -> torch.jit.ScriptModule:
    """``torch.jit.script``, plus the requested top-level methods that are not ``@torch.jit.export``."""
    from torch.jit import _recursive

    def stubs(module: torch.nn.Module) -> list[_recursive.ScriptMethodStub]:
        found: list[_recursive.ScriptMethodStub] = _recursive.infer_methods_to_compile(module)
        if module is model:
            have = {stub.def_.name().name for stub in found}
            found += [_recursive.make_stub_from_method(module, m) for m in methods if m not in have]
        return found

    try:
        scripted: torch.jit.ScriptModule = _recursive.create_script_module(model, stubs)
        return scripted
    except Exception as error:
        raise LoweringError(
            f"torch.jit.script failed for {type_name(model)}: {short_error(error)} Models "
            "written for eager mode often cannot be scripted: trace it instead "
            "(frontend.mode=trace), or use frontend=export."
        ) from None


class _MethodAsForward:
    """A shallow copy of a model whose ``forward`` is another of its methods.

    torch.export traces ``forward``; the copy shares every submodule and
    parameter, so module paths and names in the exported graph stay those of
    the original model.
    """

    @staticmethod
    def make(model: torch.nn.Module, method: str) -> torch.nn.Module:
        if method == "forward":
            return model
        shallow = copy.copy(model)
        shallow.forward = getattr(model, method)
        return shallow


def _capture_export(
    model: Any, methods: Sequence[str], example_inputs: dict[str, Any], dynamic_shapes: DynamicShapes, strict: bool
) -> CapturedProgram:
    if isinstance(model, torch.jit.ScriptModule):
        raise LoweringError(
            "The export frontend needs an eager nn.Module, not a ScriptModule; use frontend='torchscript'."
        )
    programs, signatures, outputs, shapes, modes = {}, {}, {}, {}, {}
    for method in methods:
        if method not in example_inputs:
            raise LoweringError(
                f"The export frontend needs example_inputs for method {method!r} (a dict {{method: tuple of args}})."
            )
        args, kwargs = call_arguments(example_inputs[method], method)
        signature, captured = _captured_signature(model, method, (args, kwargs))
        flat = signature.bind(args, kwargs, method)
        arguments = _by_captured_name(captured, flat)
        declaration = parse_declaration(
            _declared(dynamic_shapes, method), method, arguments, f"dynamic_shapes.{method}"
        )
        export_args, export_kwargs = captured.export_arguments(signature, flat)
        by_parameter = _by_parameter(signature, captured, declaration.export_specs(arguments))
        module = _MethodAsForward.make(model, method)
        with progress.step("torch.export", method=method):
            programs[method], modes[method] = _export(module, export_args, export_kwargs, method, by_parameter, strict)
        program = programs[method]
        signatures[method] = signature
        outputs[method] = OutputStructure.of_exported(program)
        shapes[method] = exported_contract(program, signature, captured, declaration)
    return CapturedProgram("export", programs, signatures, outputs, type_name(model), shapes, modes)


def _by_captured_name(captured: CapturedCall, flat: list[Any]) -> dict[str, Any]:
    """Each value of a bound call by the name its capture record gives it (a declaration's argument names)."""
    return {value.name: given for value, given in zip(captured.values, flat)}


def _declared(dynamic_shapes: DynamicShapes, method: str) -> Any:
    if dynamic_shapes is None or dynamic_shapes == AUTO:
        return dynamic_shapes
    if not isinstance(dynamic_shapes, Mapping):
        raise ShapeDeclarationError(
            f"dynamic_shapes: expected {AUTO!r} or a mapping {{method: {{argument: {{dimension: ...}}}}}}, "
            f"got a {type(dynamic_shapes).__name__}."
        )
    return dynamic_shapes.get(method)


def check_declared_methods(dynamic_shapes: DynamicShapes, methods: Sequence[str]) -> None:
    """Every method a declaration names is one that is lowered."""
    if isinstance(dynamic_shapes, Mapping) and (problem := unlowered_method(dynamic_shapes, methods, "dynamic_shapes")):
        raise ShapeDeclarationError(problem)


def _by_parameter(signature: MethodSignature, captured: Any, specs: dict[str, Any]) -> dict[str, Any] | None:
    """torch.export's ``dynamic_shapes`` keyed by parameter name (None where nothing is dynamic)."""
    if all(spec is None for spec in specs.values()):
        return None
    by_parameter: dict[str, Any] = {}
    values = iter(captured.values)
    for p in signature.params:
        if p.kind == VAR_POSITIONAL:
            by_parameter[p.name] = tuple(specs[next(values).name] for _ in range(captured.var_positional))
        elif p.kind == VAR_KEYWORD:  # torch.export names what **kwargs received at the top level
            by_parameter.update((k, specs[next(values).name]) for k in captured.keywords)
        else:
            by_parameter[p.name] = specs[next(values).name]
    return by_parameter


def _export(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    method: str,
    dynamic_shapes: dict[str, Any] | None = None,
    strict: bool = True,
) -> tuple[torch.export.ExportedProgram, CaptureMode]:
    """The program and how it was captured: the mode asked for first (strict interprets the model
    with Dynamo; non-strict, torch's default, runs its own Python), the other if that fails, with the reason.

    A declared dimension the model fixes is the model's doing, not the mode's: it is reported at once,
    naming the line, and the other mode is not tried."""
    first, second = ("strict", "non_strict") if strict else ("non_strict", "strict")
    try:
        return _export_as(first, module, args, kwargs, method, dynamic_shapes), CaptureMode(first)
    except ShapeDeclarationError:
        raise
    except Exception as first_error:
        try:
            program = _export_as(second, module, args, kwargs, method, dynamic_shapes)
        except ShapeDeclarationError:
            raise
        except Exception as second_error:
            errors = {first: first_error, second: second_error}
            raise _export_error(module, method, errors["non_strict"], errors["strict"]) from None
        reason = f"{first} export failed: {type(first_error).__name__}: {short_error(first_error, limit=300)}"
        return program, CaptureMode(second, reason)


def _export_as(
    mode: str,
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    method: str,
    dynamic_shapes: dict[str, Any] | None,
) -> torch.export.ExportedProgram:
    """One torch.export, with a declared dimension the model fixes as a `ShapeDeclarationError` naming the
    line that fixed it (`specialization.guard_sites` listens to the shape log while the model runs; with
    nothing declared there is nothing to fix, and torch's guard log stays off)."""
    listening = guard_sites() if dynamic_shapes is not None else contextlib.nullcontext(GuardSites())
    with listening as sites:
        try:
            return torch.export.export(module, args, kwargs, strict=mode == "strict", dynamic_shapes=dynamic_shapes)
        except Exception as error:
            specialized = specialized_error(error, sites, method)
            if specialized is not None:
                raise specialized from None
            raise


def _export_error(module: torch.nn.Module, method: str, error: Exception, strict_error: Exception) -> LoweringError:
    """A few lines: what failed, where in the user's code (non-strict export ran it as Python, so its
    traceback holds the user's frames), and the ways out."""
    what = f"torch.export cannot capture method {method!r} of {type_name(module)}"
    where = _user_line(error)
    at = f" at\n  {where}" if where else ""
    if "data-dependent" in str(error) or type(error).__name__ == "GuardOnDataDependentSymNode":
        return LoweringError(
            f"{what}: it branches on a value computed from its inputs (data-dependent control flow){at}\n"
            "Ways out: write the branch with torch.cond, which captures both branches; or lower with "
            "frontend=torchscript, which scripts the branch."
        )
    strict_reason = short_error(strict_error, limit=200)
    return LoweringError(
        f"{what}: {type(error).__name__}: {short_error(error)}{at}\n"
        f"(strict export failed too: {type(strict_error).__name__}: {strict_reason})"
    )


def _user_line(error: BaseException) -> str:
    """``file:line: code`` of the user's code the error points at: the call torch names, or else the
    innermost traceback frame outside torch."""
    match = _RAISED_AT.search(str(error))
    if match:
        return f"{match['file']}:{match['line']}: {match['code'].strip()}"
    torch_dir = os.path.dirname(torch.__file__)
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if not frame.filename.startswith(torch_dir) and not frame.filename.startswith("<"):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return ""


_RAISED_AT = re.compile(
    r'The following call raised this error:\s*File "(?P<file>[^"]+)", line (?P<line>\d+), '
    r"in \S+\n(?P<code>[^\n]*)"
)


def short_error(error: BaseException, limit: int = 600) -> str:
    """An exception's message without tensor dumps, cut to ``limit`` characters: one paragraph, not a wall."""
    text = " ".join(str(error).split())
    parts, start = [], 0
    for match in re.finditer(r"\btensor\(", text):
        if match.start() < start:
            continue
        depth, end = 0, len(text)
        for index in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[index], 0)
            if depth == 0:
                end = index + 1
                break
        parts += [text[start : match.start()], "tensor(...)"]
        start = end
    text = "".join(parts) + text[start:]
    return text if len(text) <= limit else text[:limit] + " ..."


def as_captured(program: Any, methods: Sequence[str]) -> CapturedProgram:
    """Wrap a program a caller captured themselves (ScriptModule or dict of ExportedPrograms)."""
    if isinstance(program, CapturedProgram):
        return program
    if isinstance(program, torch.jit.ScriptModule):
        return _capture_torchscript(program, methods, {}, "script")
    if isinstance(program, dict) and all(isinstance(p, torch.export.ExportedProgram) for p in program.values()):
        missing = [m for m in methods if m not in program]
        if missing:
            raise LoweringError(
                f"Compile spec names method(s) {missing} that the program does not have; "
                f"it has: {format_choices(program)}."
            )
        signatures = {m: _signature_of_exported(program[m]) for m in methods}
        outputs = {m: OutputStructure.of_exported(program[m]) for m in methods}
        shapes = {m: MethodShapes(tuple(input_shapes(program[m]))) for m in methods}
        return CapturedProgram("export", {m: program[m] for m in methods}, signatures, outputs, "Module", shapes)
    raise LoweringError(
        f"Cannot lower a {type(program).__name__}: expected a torch.jit.ScriptModule or a dict "
        "{method: torch.export.ExportedProgram}."
    )


def _signature_of_exported(program: torch.export.ExportedProgram) -> MethodSignature:
    """Parameter names from an ExportedProgram's user inputs (defaults are not kept by export)."""
    from pipeline.core.signature import Param

    specs = program.graph_signature.input_specs
    names = [s.arg.name for s in specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    return MethodSignature(tuple(Param(name, "positional") for name in names))
