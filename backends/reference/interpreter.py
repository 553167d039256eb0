"""The runtime half: `ReferenceBackend` parses the payload and interprets it.

``compile`` turns each method's instructions into steps with their kernels
looked up once (`ops.kernel_for`) and operands turned into readers of a flat
value table. The runner binds the flattened inputs, runs the steps under
``torch.no_grad()`` (the backend runs inference) and returns the output
leaves. A failing step raises `pipeline.BackendRuntimeError` with its
instruction's debug handle, so the lowered module can point at the source line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from pipeline.backends.reference import ops
from pipeline.backends.reference.compile_spec import ReferenceCompileSpec
from pipeline.backends.reference.compiler import node_support, preprocess, why_not_runnable
from pipeline.backends.reference.program import (
    NO_HANDLE,
    Block,
    InputSpec,
    Instruction,
    MethodProgram,
    Ref,
    is_constant,
    parse,
)
from pipeline.core.backend import (
    Backend,
    BackendRuntimeError,
    LoweringError,
    ProfileEvent,
    argument_leaves,
    format_choices,
    guarded,
    sized,
)

Reader = Callable[[list[Any]], Any]  # reads one operand from the value table
Events = list[ProfileEvent] | None  # collected when profiling


class ReferenceBackend(Backend):
    """A small compiler to an instruction list (`compiler.preprocess`), interpreted with PyTorch's own kernels."""

    name = "reference"
    accepts = ("torchscript", "export")
    # Exported programs compute their symbolic sizes at run time (`symbolic`); scripted ones never knew them.
    dynamic_shapes = ("export", "torchscript")
    CompileSpec = ReferenceCompileSpec
    preprocess = staticmethod(preprocess)

    @classmethod
    def supports(cls, node: Any) -> bool | str:
        """From the op table and the compiler's own checks (`compiler.node_support`)."""
        return node_support(node)

    def compile(self, payload: bytes, specs: dict[str, ReferenceCompileSpec]) -> dict[str, Any]:
        program = parse(payload)
        runners = {}
        for method, spec in specs.items():
            if method not in program.methods:
                raise LoweringError(
                    f"Reference backend: the payload has no method {method!r}; it has "
                    f"{format_choices(program.methods)}."
                )
            runners[method] = CompiledMethod(program.methods[method], check_inputs=spec.check_inputs)
        return runners


MAX_VALUES = 1 << 22  # value numbers a method may use; real programs use thousands


class CompiledMethod:
    """One method, ready to run: the runner `ReferenceBackend.compile` returns (called on the inputs)."""

    def __init__(self, method: MethodProgram, check_inputs: bool = False):
        self.name = method.name
        self.inputs = method.inputs
        self.check_inputs = check_inputs
        self.flatten_inputs = method.flatten_inputs
        self.flatten_outputs = method.flatten_outputs
        defined = _defined_values(method)
        # The interpreter allocates one slot per value number: a forged payload must not choose that size.
        if any(not 0 <= value < MAX_VALUES for value in defined):
            raise LoweringError(
                f"Reference backend: method {method.name!r} of the payload numbers a value outside 0..{MAX_VALUES - 1}."
            )
        self.num_values = 1 + max(defined, default=-1)
        try:
            for instruction in method.instructions():  # the checks preprocess made: the payload may be forged
                reason = why_not_runnable(instruction)
                if reason:
                    raise LoweringError(
                        f"Reference backend: method {method.name!r} of the payload: instruction "
                        f"{instruction.id} ({instruction.op}) {reason}."
                    )
            self.body = _BlockSteps(method.name, method.body)
        except (KeyError, AttributeError, ValueError, RuntimeError) as error:
            raise LoweringError(
                f"Reference backend: method {method.name!r} of the payload names an op this PyTorch does not "
                f"have: {error}. Lower the model again with this version."
            ) from error

    def run(self, inputs: Sequence[Any], events: Events = None) -> list[Any]:
        inputs = argument_leaves(inputs) if self.flatten_inputs else list(inputs)
        self._check(inputs)
        values: list[Any] = [None] * self.num_values
        for spec, value in zip(self.inputs, inputs):
            values[spec.value] = value
        with torch.no_grad():
            outputs = self.body.run(values, events)
        return pytree.tree_leaves(outputs) if self.flatten_outputs else list(outputs)

    __call__ = run  # the runner's call is run itself: no frame in between on every call

    def profile(self, inputs: Sequence[Any]) -> list[ProfileEvent]:
        events: list[ProfileEvent] = []
        self.run(inputs, events)
        return events

    def _check(self, inputs: list[Any]) -> None:
        if len(inputs) != len(self.inputs):
            names = ", ".join(spec.name for spec in self.inputs)
            flattened = " once tuples are flattened" if self.flatten_inputs else ""
            raise BackendRuntimeError(
                f"Reference backend: method {self.name!r} takes {len(self.inputs)} input values ({names})"
                f"{flattened}; it got {len(inputs)}."
            )
        if not self.check_inputs:
            return
        for position, (spec, value) in enumerate(zip(self.inputs, inputs)):
            problem = _input_problem(spec, value)
            if problem:
                raise BackendRuntimeError(
                    f"Reference backend: input {position} ({spec.name!r}) of method {self.name!r} {problem} "
                    "(compile-spec option check_inputs)."
                )


def _input_problem(spec: InputSpec, leaf: Any) -> str:
    if spec.kind == "Tensor":
        if not isinstance(leaf, torch.Tensor):
            return f"must be a Tensor, not a {type(leaf).__name__}"
        expected = _describe_tensor(spec.dtype, spec.shape)
        if (spec.dtype is not None and leaf.dtype != spec.dtype) or (
            spec.shape is not None and tuple(leaf.shape) != spec.shape
        ):
            return f"must be {expected}; got {_describe_tensor(leaf.dtype, tuple(leaf.shape))}"
        return ""
    kinds = {"int": (int,), "float": (float, int), "bool": (bool,), "str": (str,)}
    if spec.kind in kinds and (not isinstance(leaf, kinds[spec.kind]) or isinstance(leaf, torch.Tensor)):
        return f"must be a {spec.kind}, not a {type(leaf).__name__}"
    if spec.has_constant and leaf != spec.constant:
        return f"was specialized to {spec.constant!r} when the method was exported; got {leaf!r}"
    return ""


def _describe_tensor(dtype: torch.dtype | None, shape: tuple | None) -> str:
    text = f"a {str(dtype).removeprefix('torch.')} tensor" if dtype is not None else "a tensor"
    return text + (f" of shape {tuple(shape)}" if shape is not None else "")


def _defined_values(method: MethodProgram) -> list[int]:
    values = [spec.value for spec in method.inputs] + list(method.body.inputs)
    for instruction in method.instructions():
        values += instruction.outputs
        for block in instruction.blocks:
            values += block.inputs
    return values


# -- steps ---------------------------------------------------------------------------------------


class _BlockSteps:
    def __init__(self, method: str, block: Block):
        self.steps = [_step(method, instruction) for instruction in block.instructions]
        self.outputs = [_reader(o) for o in block.outputs]
        self.inputs = list(block.inputs)

    def run(self, values: list[Any], events: Events) -> list[Any]:
        for step in self.steps:
            if events is None or step.structured:
                step.run(values, events)
            else:
                start = time.perf_counter()
                step.run(values, events)
                events.append(ProfileEvent(step.label, time.perf_counter() - start, step.handles))
        return [read(values) for read in self.outputs]


class _Step:
    structured = False

    def __init__(self, method: str, instruction: Instruction):
        self.op = instruction.op
        self.label = f"{method}/{instruction.id} {instruction.op}"
        self.handle = instruction.handle
        self.handles = (instruction.handle,) if instruction.handle != NO_HANDLE else ()
        self.outputs = instruction.outputs
        self.args = [_reader(a) for a in instruction.args]
        self.kwargs = {k: _reader(v) for k, v in instruction.kwargs.items()}

    def store(self, values: list[Any], result: Any) -> None:
        for value_id, value in zip(self.outputs, ops.result_values(self.op, len(self.outputs), result)):
            values[value_id] = value

    def failure(self, error: Exception) -> BackendRuntimeError:
        if isinstance(error, ops.ModelRaised):
            message = f"{self.label}: the program raised: {error}"
        else:
            message = f"{self.label} failed: {type(error).__name__}: {error}"
        return BackendRuntimeError(message, [self.handle])


class _Call(_Step):
    def __init__(self, method: str, instruction: Instruction):
        super().__init__(method, instruction)
        self.kernel = ops.kernel_for(instruction.op)
        if sized(self.kernel):  # a size the program computes is judged when it is known
            self.kernel = guarded(self.kernel, check_results=False)
        self.one_output = len(self.outputs) == 1 and not ops.definition(self.op).unpacks

    def run(self, values: list[Any], events: Events) -> None:
        try:
            args = [read(values) for read in self.args]
            kwargs = {name: read(values) for name, read in self.kwargs.items()}
            result = self.kernel(*args, **kwargs)
            if self.one_output:  # the common case, without the general unpacking
                values[self.outputs[0]] = result
            else:
                self.store(values, result)
        except Exception as error:
            raise self.failure(error) from error


class _Structured(_Step):
    """A step that runs nested blocks; its outputs are the outputs of the block that ran."""

    structured = True

    def store(self, values: list[Any], result: Any) -> None:
        for value_id, value in zip(self.outputs, result):
            values[value_id] = value


class _If(_Structured):
    def __init__(self, method: str, instruction: Instruction):
        super().__init__(method, instruction)
        self.then_block, self.else_block = (_BlockSteps(method, b) for b in instruction.blocks)

    def run(self, values: list[Any], events: Events) -> None:
        try:
            condition = bool(self.args[0](values))
        except Exception as error:
            raise self.failure(error) from error
        block = self.then_block if condition else self.else_block
        self.store(values, block.run(values, events))


class _Loop(_Structured):
    """TorchScript's loop: ``Loop(max_trips, condition, *carried)``, body ``(i, *carried) -> (condition, *carried)``."""

    def __init__(self, method: str, instruction: Instruction):
        super().__init__(method, instruction)
        (self.body,) = (_BlockSteps(method, b) for b in instruction.blocks)

    def run(self, values: list[Any], events: Events) -> None:
        try:
            max_trips, condition, *carried = (read(values) for read in self.args)
        except Exception as error:
            raise self.failure(error) from error
        trip = 0
        while trip < max_trips and condition:
            for value_id, value in zip(self.body.inputs, [trip, *carried]):
                values[value_id] = value
            condition, *carried = self.body.run(values, events)
            trip += 1
        self.store(values, carried)


def _step(method: str, instruction: Instruction) -> _Call | _If | _Loop:
    if instruction.op == "prim::If":
        return _If(method, instruction)
    if instruction.op == "prim::Loop":
        return _Loop(method, instruction)
    return _Call(method, instruction)


def _reader(operand: Any) -> Reader:
    if isinstance(operand, Ref):
        index = operand.value
        return lambda values: values[index]
    if isinstance(operand, (list, tuple)) and not is_constant(operand):
        readers = [_reader(o) for o in operand]
        make = type(operand)
        return lambda values: make(read(values) for read in readers)
    return lambda values: operand
