"""The ahead-of-time half: ``preprocess`` turns captured methods into the payload.

Per method: convert the graph (`from_torchscript` or `from_export`), fold
constants, drop dead code (as the compile spec says), reject what the backend
cannot run, number values and instructions; then serialize all methods into
one payload (`program.serialize`) and map each instruction id
(``"forward/3"``) to the debug handle of the node it came from.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping

import torch

from pipeline.core.backend import LoweringError, PreprocessResult, UnsupportedOpError, parse_compile_spec

from pipeline.backends.reference import from_export, from_torchscript, ops, passes
from pipeline.backends.reference.compile_spec import ReferenceCompileSpec
from pipeline.backends.reference.program import NO_HANDLE, Instruction, MethodProgram, Program, Ref, encodable, serialize


def preprocess(program: Any, method_compile_spec: Mapping[str, Mapping[str, Any]],
               generate_debug_handles: Callable) -> PreprocessResult:
    specs = {method: parse_compile_spec(ReferenceCompileSpec, options, f"compile_spec.{method}")
             for method, options in method_compile_spec.items()}
    methods = {method: convert_method(program, method, generate_debug_handles) for method in specs}
    problems: List[str] = []
    for name, method in methods.items():
        optimize(method, specs[name])
        problems += find_problems(method)
    if problems:
        hint = any(not spec.constant_folding for spec in specs.values())
        raise UnsupportedOpError(_rejection_message(problems, hint))
    for method in methods.values():
        passes.number(method)
    try:
        payload = serialize(Program(methods))
    except TypeError as error:
        raise LoweringError(f"Reference backend: cannot serialize the program: {error}") from error
    backend_map = {
        f"{name}/{instruction.id}": [instruction.handle]
        for name, method in methods.items()
        for instruction in method.instructions()
        if instruction.handle != NO_HANDLE
    }
    return PreprocessResult(payload, backend_map)


def convert_method(program: Any, method: str, generate_debug_handles: Callable) -> MethodProgram:
    if isinstance(program, torch.jit.ScriptModule):
        program.eval()  # the backend compiles for inference: `training` folds to False
        return from_torchscript.convert_method(program, method, generate_debug_handles)
    if isinstance(program, dict) and isinstance(program.get(method), torch.export.ExportedProgram):
        return from_export.convert_method(program[method], method, generate_debug_handles)
    raise LoweringError(
        f"Reference backend: cannot compile method {method!r} of a {type(program).__name__}; expected a "
        "torch.jit.ScriptModule or a dict {method: torch.export.ExportedProgram}."
    )


def optimize(method: MethodProgram, spec: ReferenceCompileSpec) -> None:
    if spec.constant_folding:
        passes.fold_constants(method)
    if spec.dead_code_elimination:
        passes.eliminate_dead_code(method)


def find_problems(method: MethodProgram) -> List[str]:
    """One sentence per instruction the backend cannot run, naming op, method and source line."""
    problems = []
    for instruction in method.instructions():
        reason = _why_not_runnable(instruction)
        if reason:
            problems.append(f"The node of {instruction.op_name} {reason} ({where(instruction, method.name)}).")
    return problems


def _why_not_runnable(instruction: Instruction) -> str:
    if not ops.is_supported(instruction.op):
        return "is not supported by the reference backend"
    op = ops.definition(instruction.op)
    if op.compile_time:
        return "reads a value known only at run time, which the reference backend cannot do"
    if op.inference_flag is not None:
        position, name = op.inference_flag
        flag = instruction.kwargs.get(name, instruction.args[position] if len(instruction.args) > position else False)
        if flag is not False:
            state = "decided at run time" if isinstance(flag, Ref) or not is_plain(flag) else repr(flag)
            return (f"has {name}={state}; the reference backend runs inference only and needs {name}=False "
                    "(lower the model in eval mode)")
    constants = [a for a in [*instruction.args, *instruction.kwargs.values()] if not encodable(_without_refs(a))]
    if constants:
        return f"takes a {type(constants[0]).__name__} constant, which a reference-backend program cannot hold"
    return ""


def where(instruction: Instruction, method: str) -> str:
    """``method 'forward', /path/model.py:14: `return x * h`, module A0(A)``."""
    parts = [f"method {method!r}"]
    origin = instruction.origin
    source = getattr(origin, "source", None)
    parts.append(f"{source.file}:{source.line}: `{source.text}`" if source else "source unknown")
    if getattr(origin, "hierarchy", ()):
        parts.append("module " + ".".join(f"{name}({kind})" for name, kind in origin.hierarchy))
    return ", ".join(parts)


def is_plain(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str)) or value is None


def _without_refs(operand: Any) -> Any:
    if isinstance(operand, Ref):
        return None
    if isinstance(operand, (list, tuple)):
        return type(operand)(_without_refs(o) for o in operand)
    if isinstance(operand, dict):
        return {k: _without_refs(v) for k, v in operand.items()}
    return operand


def _rejection_message(problems: List[str], folding_off: bool) -> str:
    supported = f"Supported ops: {ops.supported_op_names()}."
    if folding_off:
        supported += (" Constant folding is off, so branches that constants decide (such as those on "
                      "`self.training`) were kept.")
    if len(problems) == 1:
        return f"{problems[0]} {supported}"
    listed = "\n".join(f"  - {problem}" for problem in problems)
    return f"The reference backend cannot compile {len(problems)} nodes:\n{listed}\n{supported}"
