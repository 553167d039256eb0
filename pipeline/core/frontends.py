"""Frontends: turn a model's methods into the program a backend reads.

* ``torchscript``: one ``torch.jit.ScriptModule`` (scripted, or traced from
  example inputs) holding every lowered method;
* ``export``: one ``torch.export.ExportedProgram`` per method, ``forward`` or not.

`capture` returns a `CapturedProgram`: the program plus what codegen needs to
know of each method (its signature and output structure).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from pipeline.core.backend import FRONTENDS
from pipeline.core.errors import LoweringError, did_you_mean, format_choices
from pipeline.core.signature import MethodSignature, OutputStructure

TORCHSCRIPT_MODES = ("script", "trace")
ExampleInputs = Mapping[str, Tuple[Any, ...]]


@dataclass
class CapturedProgram:
    frontend: str
    program: Any  # torch.jit.ScriptModule, or {method: torch.export.ExportedProgram}
    signatures: Dict[str, MethodSignature]
    outputs: Dict[str, OutputStructure]
    top_type: str


def default_frontend(model: Any) -> str:
    return "torchscript" if isinstance(model, torch.jit.ScriptModule) else "export"


def model_methods(model: Any) -> List[str]:
    """The methods a model has that could be lowered."""
    if isinstance(model, torch.jit.ScriptModule):
        return sorted(model._c._method_names())
    return class_methods(type(model))


def class_methods(cls: type) -> List[str]:
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


def capture(model: Any, methods: Sequence[str], frontend: Optional[str] = None,
            example_inputs: Optional[ExampleInputs] = None, torchscript_mode: str = "script") -> CapturedProgram:
    frontend = frontend or default_frontend(model)
    if frontend not in FRONTENDS:
        raise LoweringError(f"Unknown frontend {frontend!r}; allowed: {format_choices(FRONTENDS)}")
    check_methods(model, methods)
    example_inputs = dict(example_inputs or {})
    if frontend == "torchscript":
        return _capture_torchscript(model, methods, example_inputs, torchscript_mode)
    return _capture_export(model, methods, example_inputs)


def _capture_torchscript(model: Any, methods: Sequence[str], example_inputs: Dict[str, tuple],
                         mode: str) -> CapturedProgram:
    if mode not in TORCHSCRIPT_MODES:
        raise LoweringError(f"Unknown torchscript mode {mode!r}; allowed: {format_choices(TORCHSCRIPT_MODES)}")
    if isinstance(model, torch.jit.ScriptModule):
        scripted = model
    elif mode == "trace":
        missing = [m for m in methods if m not in example_inputs]
        if missing:
            raise LoweringError(f"Tracing needs example_inputs for method(s) {missing}.")
        scripted = torch.jit.trace_module(model, {m: tuple(example_inputs[m]) for m in methods}, check_trace=False)
    else:
        scripted = _script(model, methods)
    compiled = set(scripted._c._method_names())
    for method in methods:
        if method not in compiled:
            raise LoweringError(f"Method {method!r} is not defined on the scripted {type_name(scripted)}.")
    signatures = {}
    outputs = {}
    for method in methods:
        source = getattr(model, method) if not isinstance(model, torch.jit.ScriptModule) else getattr(scripted, method)
        signatures[method] = (MethodSignature.of(source, method) if mode == "script"
                              else MethodSignature.from_schema(getattr(scripted, method).schema))
        if method in example_inputs:
            with torch.no_grad():
                outputs[method] = OutputStructure.of_value(getattr(scripted, method)(*example_inputs[method]))
        else:
            outputs[method] = OutputStructure.of_schema(getattr(scripted, method).schema.returns[0].type, method)
    return CapturedProgram("torchscript", scripted, signatures, outputs, type_name(model))


def _script(model: torch.nn.Module, methods: Sequence[str]) -> torch.jit.ScriptModule:
    """``torch.jit.script``, plus the requested top-level methods that are not ``@torch.jit.export``."""
    from torch.jit import _recursive

    def stubs(module: torch.nn.Module):
        found = _recursive.infer_methods_to_compile(module)
        if module is model:
            have = {stub.def_.name().name for stub in found}
            found += [_recursive.make_stub_from_method(module, m) for m in methods if m not in have]
        return found

    try:
        return _recursive.create_script_module(model, stubs)
    except Exception as error:
        raise LoweringError(f"torch.jit.script failed for {type_name(model)}: {error}") from error


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


def _capture_export(model: Any, methods: Sequence[str], example_inputs: Dict[str, tuple]) -> CapturedProgram:
    if isinstance(model, torch.jit.ScriptModule):
        raise LoweringError("The export frontend needs an eager nn.Module, not a ScriptModule; use frontend='torchscript'.")
    programs, signatures, outputs = {}, {}, {}
    for method in methods:
        if method not in example_inputs:
            raise LoweringError(
                f"The export frontend needs example_inputs for method {method!r} "
                "(a dict {method: tuple of args})."
            )
        signature = MethodSignature.of(getattr(model, method), method)
        values = signature.bind(tuple(example_inputs[method]), method=method)
        args = tuple(v for p, v in zip(signature.params, values) if p.kind == "positional")
        kwargs = {p.name: v for p, v in zip(signature.params, values) if p.kind == "keyword_only"}
        programs[method] = program = _export(_MethodAsForward.make(model, method), args, kwargs, method)
        signatures[method] = signature
        outputs[method] = OutputStructure.of_exported(program)
    return CapturedProgram("export", programs, signatures, outputs, type_name(model))


def _export(module: torch.nn.Module, args: tuple, kwargs: dict, method: str) -> "torch.export.ExportedProgram":
    """Strict export first: its stack traces follow calls into other methods, so every
    node gets its source line; non-strict export is the fallback for what Dynamo cannot trace."""
    try:
        return torch.export.export(module, args, kwargs, strict=True)
    except Exception as strict_error:
        try:
            return torch.export.export(module, args, kwargs, strict=False)
        except Exception as error:
            strict_reason = str(strict_error).strip().splitlines()[0] if str(strict_error).strip() else ""
            raise LoweringError(
                f"torch.export failed for method {method!r} of {type_name(module)}: {error} "
                f"(strict export failed too: {type(strict_error).__name__}: {strict_reason})"
            ) from error


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
        return CapturedProgram("export", {m: program[m] for m in methods}, signatures, outputs, "Module")
    raise LoweringError(
        f"Cannot lower a {type(program).__name__}: expected a torch.jit.ScriptModule or a dict "
        "{method: torch.export.ExportedProgram}."
    )


def _signature_of_exported(program: "torch.export.ExportedProgram") -> MethodSignature:
    """Parameter names from an ExportedProgram's user inputs (defaults are not kept by export)."""
    from pipeline.core.signature import Param

    specs = program.graph_signature.input_specs
    names = [s.arg.name for s in specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    return MethodSignature(tuple(Param(name, "positional") for name in names))
