"""The fallback of a partitioned method: what PyTorch runs between the backend's subgraphs, as data.

A method's fallback is a list of steps over named values, kept as JSON::

    {"inputs": ["x"],
     "steps": [{"call": "partition", "target": "forward_p0", "args": [{"ref": "x"}], "outputs": ["relu"]},
               {"call": "op", "target": "aten::fft_fft.default", "args": [{"ref": "relu"}],
                "kwargs": {}, "outputs": ["fft_fft"], "handle": 3},
               {"call": "item", "args": [{"ref": "max_1"}, {"literal": "0"}], "outputs": ["getitem"]}],
     "outputs": [{"ref": "mul"}]}

An ``op`` step names an ATen or prims overload as ``namespace::name.overload``;
at load it is looked up as ``torch.ops.<namespace>.<name>.<overload>`` and must
be on the allow-list of `pipeline.core.op_policy` (functional, data in and out,
no file names, no samplers, public or one of the private ops export writes),
and the sizes it asks for within its limit; anything else is refused, naming
the op (`step_problem`). Lowering applies the same check to every step it
writes, so what the writer makes, the reader accepts. The ops run through
`op_policy.guarded`: sizes computed while running are judged before the op
runs, and what it returns after. A ``partition`` step calls the backend's compiled handle of that
subgraph. Operands are ``{"ref": name}``, ``{"tensor": i}`` (a parameter or
constant, stored as raw bytes beside the JSON), ``{"literal": text}`` (the
closed literal set of `pipeline.core.literals`), ``{"list": [...]}``, and
``{"dtype"|"device"|"layout"|"memory_format"|"float": text}``.
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core.backend import BackendRuntimeError, ProfileEvent, argument_leaves
from pipeline.core.bounded_json import expect, member
from pipeline.core.errors import LoweringError, MalformedInput
from pipeline.core.literals import literal_source, read_literal
from pipeline.core.op_policy import NAMESPACES, UNKNOWN, guarded, lookup, refusal, size_problem
from pipeline.core.operands import TORCH_CONSTANT_TAGS, read_torch_constant, torch_constant
from pipeline.core.operands import TensorTable as _OperandTable

MAX_STEPS = 1_000_000
# Reads one operand from the values computed so far.
OperandReader = Callable[[dict[str, Any]], Any]
# What a ``partition`` step calls: run(inputs), profile(inputs) and the group's handles.
PartitionCall = tuple[
    Callable[[list[Any]], Sequence[Any]], Callable[[list[Any]], list[ProfileEvent] | None], tuple[int, ...]
]

# -- encoding (at lowering) -----------------------------------------------------------------------


def op_name(target: Any) -> str | None:
    """``aten::fft_fft.default`` for an OpOverload of an allowed namespace, else None."""
    if not isinstance(target, torch._ops.OpOverload) or target.namespace not in NAMESPACES:
        return None
    return f"{target._schema.name}.{target._overloadname}"


class TensorTable(_OperandTable):
    """Tensors a fallback reads (parameters, constants), each object stored once, in first-use order,
    as parts ``tensor/<index>`` of the artifact."""

    def __init__(self) -> None:
        super().__init__("a fallback")

    def add(self, tensor: torch.Tensor) -> int:
        try:
            return super().add(tensor)
        except TypeError as error:
            raise LoweringError(f"Partitioned lowering: {error}.") from None

    def to_parts(self) -> tuple[list[dict[str, object]], dict[str, bytes]]:
        indices = range(len(self.tensors))
        return [self.entry(i) for i in indices], {f"tensor/{i}": self.data(i) for i in indices}


def encode(value: Any, tensors: TensorTable, tensor_of: Callable[[torch.fx.Node], torch.Tensor | None]) -> Any:
    """One operand as JSON; ``tensor_of`` gives a lifted parameter's or constant's tensor for its node."""
    if isinstance(value, torch.fx.Node):
        tensor = tensor_of(value)
        return {"tensor": tensors.add(tensor)} if tensor is not None else {"ref": value.name}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    text = literal_source(value)
    if text is not None:
        return {"literal": text}
    if isinstance(value, (list, tuple)):
        return {"list": [encode(item, tensors, tensor_of) for item in value]}
    constant = torch_constant(value)
    if constant is not None:
        return constant
    raise LoweringError(
        f"Partitioned lowering: a {type(value).__name__} argument ({value!r}) cannot be kept in "
        "a fallback; it holds tensors, literals, dtypes, devices, layouts and memory formats."
    )


# -- decoding and running (at load) ---------------------------------------------------------------


def resolve_op(name: str, where: str) -> torch._ops.OpOverload:
    """``torch.ops.<namespace>.<name>.<overload>`` for an op on the allow-list; else `MalformedInput`."""
    namespace, _, rest = name.partition("::")
    op, _, overload = rest.partition(".")
    if namespace not in NAMESPACES or not all(part.isidentifier() for part in (op, overload)):
        raise MalformedInput(
            f"{where}: op {name!r} is not allowed; a fallback runs ops of the namespaces "
            f"{list(NAMESPACES)}, named 'namespace::name.overload'."
        )
    found = lookup(namespace, op, overload)
    if found is None:
        raise MalformedInput(f"{where}: op {name!r} does not exist in this PyTorch.")
    reason = refusal(found)
    if reason:
        raise MalformedInput(f"{where}: op {name!r} is not on the fallback's allow-list: it {reason}.")
    return found


def step_problem(
    target: str, args: Sequence[Any], kwargs: dict[str, Any], tensors: Sequence[torch.Tensor], where: str
) -> tuple[torch._ops.OpOverload | None, str]:
    """An op step's kernel and ``""``, or None and what is wrong with it: an op off the allow-list, or a
    size past the limit among the operands the step writes down (`op_policy.size_problem`)."""
    try:
        kernel = resolve_op(target, where)
    except MalformedInput as error:
        return None, str(error)
    known_args = [_known(a, tensors) for a in args]
    known_kwargs = {k: _known(v, tensors) for k, v in kwargs.items()}
    problem = size_problem(kernel, known_args, known_kwargs)
    return kernel, f"{where}: op {target!r} {problem}." if problem else ""


def _known(data: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """An operand as far as it is known before running: values computed at run time are `UNKNOWN`."""
    ((tag, content),) = data.items()
    if tag == "ref":
        return UNKNOWN
    if tag == "tensor":
        return tensors[content]
    if tag == "list":
        return [_known(item, tensors) for item in content]
    return _constant(tag, content, "operand")


def decode(data: Any, tensors: Sequence[torch.Tensor], where: str, defined: set[str] | None = None) -> OperandReader:
    """A reader of one operand from the values computed so far (``defined``: their names, when checked)."""
    if not isinstance(data, dict) or len(data) != 1:
        raise MalformedInput(f"{where}: an operand is a one-key object, not {type(data).__name__}.")
    ((tag, content),) = data.items()
    if tag == "ref":
        name = expect(content, str, where)
        if defined is not None and name not in defined:
            raise MalformedInput(f"{where}: {name!r} is read before any input or step defines it.")
        return lambda values: values[name]
    if tag == "tensor":
        index = expect(content, int, where)
        if not 0 <= index < len(tensors):
            raise MalformedInput(f"{where}: tensor {index} is not one of the {len(tensors)} stored.")
        tensor = tensors[index]
        return lambda values: tensor
    if tag == "list":
        items = [decode(item, tensors, f"{where}[{i}]", defined) for i, item in enumerate(expect(content, list, where))]
        return lambda values: [read(values) for read in items]
    constant = _constant(tag, content, where)
    return lambda values: constant


def _constant(tag: str, content: Any, where: str) -> Any:
    if tag in TORCH_CONSTANT_TAGS:
        with contextlib.suppress(ValueError):  # a name torch does not have: said below
            return read_torch_constant(tag, content)
    try:
        if tag == "literal":
            return read_literal(content, where)
        if tag == "float" and content in ("inf", "-inf", "nan"):
            return float(content)
    except LoweringError as error:
        raise MalformedInput(f"{where}: {error}") from None
    raise MalformedInput(f"{where}: {tag} {content!r} is not an operand this reader knows.")


@dataclass
class _Step:
    call: str  # "op", "item" or "partition"
    target: str
    run: Callable[[list[Any], dict[str, Any]], list[Any]]
    args: list[OperandReader]
    kwargs: dict[str, OperandReader]
    outputs: list[str]
    handles: tuple[int, ...]


class FallbackProgram:
    """One method's fallback, read from JSON and ready to run with the backend's partition handles."""

    def __init__(
        self,
        method: str,
        data: Any,
        tensors: Sequence[torch.Tensor],
        partitions: dict[str, PartitionCall],
    ):
        """``partitions`` maps each partition name to (run(inputs), profile(inputs), its handles)."""
        where = f"fallback of {method!r}"
        self.method = method
        self.inputs = [expect(name, str, f"{where}: inputs") for name in member(data, "inputs", list, where)]
        steps = member(data, "steps", list, where)
        if len(steps) > MAX_STEPS:
            raise MalformedInput(f"{where}: more than {MAX_STEPS} steps.")
        defined = set(self.inputs)  # every read is checked against what is defined before it
        self.steps = [
            self._step(step, tensors, partitions, f"{where}: steps[{i}]", defined) for i, step in enumerate(steps)
        ]
        self.outputs = [decode(o, tensors, f"{where}: outputs", defined) for o in member(data, "outputs", list, where)]
        self.profilers = {name: profile for name, (_, profile, _) in partitions.items()}

    @staticmethod
    def _step(
        data: Any,
        tensors: Sequence[torch.Tensor],
        partitions: dict[str, PartitionCall],
        where: str,
        defined: set[str],
    ) -> _Step:
        call = member(data, "call", str, where)
        args = [
            decode(a, tensors, f"{where}.args[{i}]", defined) for i, a in enumerate(member(data, "args", list, where))
        ]
        kwargs = {
            expect(k, str, where): decode(v, tensors, f"{where}.kwargs.{k}", defined)
            for k, v in member(data, "kwargs", dict, where, default={}).items()
        }
        outputs = [expect(name, str, f"{where}.outputs") for name in member(data, "outputs", list, where)]
        defined.update(outputs)
        target = member(data, "target", str, where, default="")
        if call == "op":
            kernel, problem = step_problem(target, data["args"], data.get("kwargs", {}), tensors, where)
            if kernel is None or problem:
                raise MalformedInput(problem)
            run = guarded(kernel)
            handle = member(data, "handle", int, where, default=None)
            handles = () if handle is None else (handle,)
            return _Step(call, target, lambda a, k: [run(*a, **k)], args, kwargs, outputs, handles)
        if call == "item":
            return _Step(call, "getitem", lambda a, k: [operator.getitem(*a)], args, {}, outputs, ())
        if call == "partition":
            if target not in partitions:
                raise MalformedInput(f"{where}: partition {target!r} is not one of {sorted(partitions)}.")
            run_group, _, group_handles = partitions[target]
            return _Step(call, target, lambda a, k: list(run_group(a)), args, {}, outputs, group_handles)
        raise MalformedInput(f"{where}: call {call!r} is not one of 'op', 'item', 'partition'.")

    def run(self, inputs: Sequence[Any], events: list[ProfileEvent] | None = None) -> list[Any]:
        leaves = argument_leaves(inputs)  # as export's user inputs: every leaf, in order
        if len(leaves) != len(self.inputs):
            raise BackendRuntimeError(
                f"Partitioned method {self.method!r} takes {len(self.inputs)} input values "
                f"({', '.join(self.inputs)}); it got {len(leaves)}."
            )
        values = dict(zip(self.inputs, leaves))
        with torch.no_grad():
            for step in self.steps:
                args = [read(values) for read in step.args]
                kwargs = {name: read(values) for name, read in step.kwargs.items()}
                start = time.perf_counter()
                results = self._call(step, args, kwargs)
                if events is not None:
                    self._record(step, args, time.perf_counter() - start, events)
                if len(results) != len(step.outputs):
                    raise BackendRuntimeError(
                        f"Partitioned method {self.method!r}: {step.target} gave "
                        f"{len(results)} values; the fallback expects {len(step.outputs)}.",
                        debug_handles=list(step.handles),
                    )
                values.update(zip(step.outputs, results))
            return [read(values) for read in self.outputs]

    def _call(self, step: _Step, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        if step.call == "partition":
            return step.run(args, kwargs)  # the backend's own errors carry their handles
        try:
            return step.run(args, kwargs)
        except Exception as error:
            raise BackendRuntimeError(
                f"Fallback op {step.target} of method {self.method!r} failed: {type(error).__name__}: {error}",
                debug_handles=list(step.handles),
            ) from error

    def _record(self, step: _Step, args: list[Any], seconds: float, events: list[ProfileEvent]) -> None:
        if step.call != "partition":
            events.append(ProfileEvent(f"fallback:{step.target}", seconds, step.handles))
            return
        inner = self.profilers[step.target](args)
        if inner:  # the backend's own per-instruction events, named by partition
            events.extend(ProfileEvent(f"{step.target}:{e.name}", e.seconds, tuple(e.debug_handles)) for e in inner)
        else:
            events.append(ProfileEvent(step.target, seconds, step.handles))

    def profile(self, inputs: Sequence[Any]) -> list[ProfileEvent]:
        events: list[ProfileEvent] = []
        self.run(inputs, events)
        return events
