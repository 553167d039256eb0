"""The ahead-of-time half: ``preprocess`` turns captured methods into the payload.

Per method: convert the graph (`from_torchscript` or `from_export`), fold
constants, drop dead code (as the compile spec says), rewrite in-place ops as
functional ones, simplify again; then reject what the backend cannot run, all
methods' problems in one message grouped by op (`rejection_message`), number
values and instructions, serialize all methods into one payload
(`program.serialize`) and map each instruction id (``"forward/3"``) to the
debug handle of the node it came from.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.backends.reference import from_export, from_torchscript, ops, passes, symbolic
from pipeline.backends.reference.compile_spec import ReferenceCompileSpec
from pipeline.backends.reference.program import (
    NO_HANDLE,
    Instruction,
    MethodProgram,
    Program,
    Ref,
    encodable,
    serialize,
)
from pipeline.core.backend import (
    UNKNOWN,
    LoweringError,
    PreprocessResult,
    UnsupportedOpError,
    describe_node,
    size_problem,
)


def preprocess(
    program: Any, specs: Mapping[str, ReferenceCompileSpec], generate_debug_handles: Callable
) -> PreprocessResult:
    methods: dict[str, MethodProgram] = {}
    problems: list[Problem] = []
    for name, spec in specs.items():
        methods[name], found = compile_method(program, name, spec, generate_debug_handles)
        problems += found
    if problems:
        folding_off = any(not spec.constant_folding for spec in specs.values())
        raise UnsupportedOpError(rejection_message(problems, folding_off))
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


def compile_method(
    program: Any, method: str, spec: ReferenceCompileSpec, generate_debug_handles: Callable
) -> tuple[MethodProgram, list[Problem]]:
    """One method, converted and optimized, and the problems that keep the backend from running it."""
    if isinstance(program, torch.jit.ScriptModule):
        program.eval()  # the backend compiles for inference: `training` folds to False
        converted = from_torchscript.convert_method(program, method, generate_debug_handles)
        return converted, optimize(converted, spec)
    if isinstance(program, dict) and isinstance(program.get(method), torch.export.ExportedProgram):
        converted, graphs = from_export.convert_method(program[method], method)
        problems = optimize(converted, spec)
        if any(problem.in_place for problem in problems):  # torch's functionalization rewrites writes into views
            converted, graphs = from_export.convert_method(from_export.functionalize(program[method], method), method)
            problems = optimize(converted, spec)
        from_export.assign_handles(converted, graphs, generate_debug_handles)
        return converted, problems
    raise LoweringError(
        f"Reference backend: cannot compile method {method!r} of a {type(program).__name__}; expected a "
        "torch.jit.ScriptModule or a dict {method: torch.export.ExportedProgram}."
    )


def optimize(method: MethodProgram, spec: ReferenceCompileSpec) -> list[Problem]:
    """Fold and drop dead code (as the spec says), make in-place ops functional, simplify what that
    exposed; the problems left."""
    _simplify(method, spec)
    reasons = passes.functionalize(method)
    _simplify(method, spec)
    return find_problems(method, reasons)


def _simplify(method: MethodProgram, spec: ReferenceCompileSpec) -> None:
    if spec.constant_folding:
        passes.fold_constants(method)
    if spec.dead_code_elimination:
        passes.eliminate_dead_code(method)


@dataclass(frozen=True)
class Problem:
    """One instruction the backend cannot run: its op, why, and where it came from."""

    op: str  # without overload: problems group by it
    reason: str
    location: str
    in_place: bool = False  # an in-place op that passes.functionalize could not rewrite


def find_problems(method: MethodProgram, reasons: Mapping[int, str] | None = None) -> list[Problem]:
    """One `Problem` per instruction the backend cannot run; ``reasons`` (by ``id(instruction)``) are
    what earlier passes found (an in-place op that could not be made functional)."""
    reasons = reasons or {}
    return [
        Problem(instruction.op_name, reason, where(instruction, method.name), id(instruction) in reasons)
        for instruction in method.instructions()
        for reason in [reasons.get(id(instruction)) or why_not_runnable(instruction)]
        if reason
    ]


def why_not_runnable(instruction: Instruction) -> str:
    """``""`` if the backend runs ``instruction``, else why not. Preprocess asks it of every instruction it
    writes, and compile of every instruction it reads, so what the writer makes, the reader accepts: an op of
    the table (`ops.SUPPORTED_OPS`) in an overload that writes into no argument, whose sizes are within
    `MAX_TENSOR_BYTES`."""
    if not ops.is_supported(instruction.op):
        return hint_for(instruction.op)
    op = ops.definition(instruction.op)
    if not ops.callable_from_python(instruction.op):
        return (
            "is TorchScript's generic list overload, which the reference backend has no kernel for; "
            "lower with the export frontend"
        )
    if op.compile_time:
        return "reads a value known only at run time, which the reference backend cannot do"
    written = ops.written_arguments(instruction.op)
    if written and not op.mutates_first_arg:
        return (
            f"writes into its argument {written[0]!r} in place; the reference backend runs "
            "functional programs (call the op without out=)"
        )
    if op.inference_flag is not None:
        name = op.inference_flag
        flag = ops.argument(instruction.op, instruction.args, instruction.kwargs, name)
        if flag is not False:
            state = "decided at run time" if isinstance(flag, Ref) or not is_plain(flag) else repr(flag)
            return (
                f"has {name}={state}; the reference backend runs inference only and needs {name}=False "
                "(lower the model in eval mode)"
            )
    constants = [a for a in [*instruction.args, *instruction.kwargs.values()] if not encodable(_without_refs(a))]
    if constants:
        return f"takes a {type(constants[0]).__name__} constant, which a reference-backend program cannot hold"
    kernel = ops.torch_overload(instruction.op)
    if kernel is not None:
        return size_problem(
            kernel,
            [_unknown_refs(a) for a in instruction.args],
            {k: _unknown_refs(v) for k, v in instruction.kwargs.items()},
        )
    return ""


def node_support(node: Any) -> bool | str:
    """`Backend.supports` for one FX node: the op table (``ops.SUPPORTED_OPS``) and the same checks
    `find_problems` makes on the instruction the node would become (in-place writes, training flags,
    constants a program cannot hold), so that what it accepts, preprocess compiles. Python's arithmetic on
    symbolic sizes is judged as the builtin it becomes (`symbolic.builtin_for`)."""
    if node.op != "call_function":
        return f"is a {node.op} node"
    if node.target is operator.getitem:
        return True
    if symbolic.is_symbolic_call(node):
        op = symbolic.builtin_for(node)
        if op is None:
            return symbolic.unsupported_reason(node)
    elif isinstance(node.target, torch._ops.OpOverload):
        op = describe_node(node).op
    else:  # torch.cond and other higher-order ops
        return "is not an ATen op; the reference backend runs torch.cond only in a whole program, not in a partition"

    def refs(value: Any) -> Any:
        return (
            Ref(0)
            if isinstance(value, torch.fx.Node)
            else (type(value)(refs(v) for v in value) if isinstance(value, (list, tuple)) else value)
        )

    instruction = Instruction(op, [refs(a) for a in node.args], {k: refs(v) for k, v in node.kwargs.items()}, [0])
    return why_not_runnable(instruction) or True


# Ops that appear only when a model is captured in training mode.
_TRAINING_OPS = (
    "aten::native_dropout",
    "aten::bernoulli",
    "aten::_native_batch_norm_legit_functional",
    "aten::_native_batch_norm_legit",
    "aten::native_batch_norm",
)


def hint_for(op: str) -> str:
    """Why an op outside the table is rejected, and the way out, in one line."""
    name = ops.op_name(op)
    if name in _TRAINING_OPS:
        return "appears when a model is captured in training mode; call model.eval() before lowering"
    if name.startswith("call_function::"):  # a Python callable or a higher-order op such as while_loop
        return (
            "is not an ATen op the reference backend runs (of export's control-flow ops it runs torch.cond); "
            "lower on onnxruntime or inductor"
        )
    return (
        "is not in the reference backend's op table; lower on onnxruntime or inductor, or write it with supported ops"
    )


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


def _unknown_refs(operand: Any) -> Any:
    """The operand as known before running: values the program computes are `UNKNOWN`."""
    if isinstance(operand, Ref):
        return UNKNOWN
    if isinstance(operand, (list, tuple)):
        return type(operand)(_unknown_refs(o) for o in operand)
    return operand


def _without_refs(operand: Any) -> Any:
    if isinstance(operand, Ref):
        return None
    if isinstance(operand, (list, tuple)):
        return type(operand)(_without_refs(o) for o in operand)
    if isinstance(operand, dict):
        return {k: _without_refs(v) for k, v in operand.items()}
    return operand


MAX_LISTED_OPS = 8  # the message stays short (under ~15 lines) however many ops a model has


def rejection_message(problems: Sequence[Problem], folding_off: bool = False) -> str:
    """One line per op (its count, first location and why), at most `MAX_LISTED_OPS`; the rest in one line."""
    groups: dict[str, list[Problem]] = {}
    for problem in problems:
        groups.setdefault(problem.op, []).append(problem)
    nodes = "1 node" if len(problems) == 1 else f"{len(problems)} nodes"
    lines = [f"The reference backend cannot compile {nodes} of {len(groups)} op{'s' if len(groups) > 1 else ''}:"]
    for op, found in list(groups.items())[:MAX_LISTED_OPS]:
        count = f" ({len(found)} nodes; the first)" if len(found) > 1 else ""
        lines.append(f"  - {op}{count} {found[0].reason} ({found[0].location}).")
    rest = list(groups.items())[MAX_LISTED_OPS:]
    if rest:
        lines.append(f"  - and {len(rest)} more ops: " + ", ".join(f"{op} ({len(found)})" for op, found in rest) + ".")
    lines.append(
        f"The reference backend runs the {len(ops.SUPPORTED_OPS)} ops listed in "
        "pipeline.backends.reference's docstring (ops.SUPPORTED_OPS)."
    )
    if folding_off:
        lines.append(
            "Constant folding is off, so branches that constants decide (such as those on `self.training`) were kept."
        )
    return "\n".join(lines)
