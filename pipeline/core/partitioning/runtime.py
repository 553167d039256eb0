"""Partitioned lowering: the subgraphs a backend supports run on it, the rest in PyTorch, and it is recorded.

``to_backend(..., partition=True)`` (export frontend only) comes here through
`split_program`: each method's program is functionalized if it writes in place, its nodes get debug
handles, `pipeline.core.partition.split_method` finds the supported groups,
and the backend's ``preprocess`` lowers all groups of all methods in one call,
each group as a method of its own (``forward_p0``, ``forward_p1``, ...), with
the handles issued on the whole method, so they stay unique and point at the
user's lines. `partitioned_module` then builds a `PartitionedModule`: a
`LoweredModule` whose payload is a container (`pack_parts`, kind
``partitioned``) of the backend's payload, each method's fallback as JSON
(`pipeline.core.fallback`) and the tensors the fallback reads, and whose
runtime, `PartitionedRuntime`, runs a method by walking its fallback and
calling the backend's compiled handles for the groups.

Nothing about the split is silent: `PartitionedModule.partition` (saved in the
artifact's manifest, written to report.json) lists every group's nodes and
every fallback op with its source line and module path, and its ``summary`` is
the one line the app prints.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.export.graph_signature import InputKind

from pipeline.core.backend import MethodRunner, ProfileEvent
from pipeline.core.bounded_json import expect, member
from pipeline.core.debug_handles import HandleMap, walk_nodes
from pipeline.core.errors import LoweringError, MalformedInput, UnsupportedOpError
from pipeline.core.fallback import FallbackProgram, PartitionCall, TensorTable, encode, op_name, step_problem
from pipeline.core.frontends import CapturedProgram
from pipeline.core.lowered_module import LoweredModule
from pipeline.core.op_policy import NAMESPACES
from pipeline.core.partition import FALLBACK, MethodSplit, counted, split_method
from pipeline.core.payload import pack_parts, unpack_parts
from pipeline.core.registry import BackendInfo
from pipeline.core.source import describe_node
from pipeline.core.tensor_data import read_tensor

KIND = "partitioned"
MAX_LISTED = 3  # fallback places named in the summary line; the record lists all
# Issues debug handles: generator(graph, method) -> {node: handle}.
HandleIssuer = Callable[..., dict[Any, int]]


@dataclass
class ProgramSplit:
    """All methods split: the groups' programs and compile specs for the backend, and a generator that
    gives the groups' nodes the handles issued on their methods."""

    methods: dict[str, MethodSplit]
    programs: dict[str, torch.export.ExportedProgram]
    spec: dict[str, Any]
    generator: HandleIssuer
    handles: dict[str, dict[torch.fx.Node, int]]


def split_program(
    backend: BackendInfo, captured: CapturedProgram, spec: dict[str, Any], generator: HandleIssuer, min_nodes: int
) -> ProgramSplit:
    if captured.frontend != "export":
        raise LoweringError(
            f"Partitioned lowering splits exported programs; this one was captured with the {captured.frontend!r} "
            "frontend. Use frontend='export' (allowed with partition=True: 'export')."
        )
    if isinstance(min_nodes, bool) or not isinstance(min_nodes, int) or min_nodes < 1:
        raise LoweringError(f"min_nodes must be an int of at least 1, not {min_nodes!r}.")
    if "partition" in spec:
        raise LoweringError(
            "A partitioned module has an attribute 'partition' of its own; a method of that name "
            "cannot be lowered with partition=True."
        )
    methods: dict[str, MethodSplit] = {}
    handles: dict[str, dict[torch.fx.Node, int]] = {}
    for method in spec:
        program = functionalize(captured.program[method], method)
        handles[method] = generator(program.graph, method)
        methods[method] = split_method(program, method, backend.backend_cls.supports, min_nodes, backend.name)
    by_name = {method: {node.name: h for node, h in issued.items()} for method, issued in handles.items()}
    owner = {group.name: method for method, split in methods.items() for group in split.groups}

    def group_handles(graph: Any, method: str = "forward") -> dict[Any, int]:
        issued = by_name.get(owner.get(method, method), {})
        return {node: issued[node.name] for node in walk_nodes(graph) if getattr(node, "name", None) in issued}

    programs = {g.name: g.program for split in methods.values() for g in split.groups}
    return ProgramSplit(methods, programs, {g: spec[owner[g]] for g in programs}, group_handles, handles)


def functionalize(program: torch.export.ExportedProgram, method: str) -> torch.export.ExportedProgram:
    """No in-place op may write across a group's edge: a program with an op that writes into its arguments
    is functionalized (``run_decompositions({})``, which also normalizes some ops: ``batch_norm`` to
    ``_native_batch_norm_legit_no_training``, ``flatten`` to ``view``); any other is kept as exported."""
    if not any(
        isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable
        for node in program.graph.nodes
        if node.op == "call_function"
    ):
        return program
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, inside deepcopy
            functional: torch.export.ExportedProgram = program.run_decompositions({})
            return functional
    except Exception as error:
        raise LoweringError(
            f"Partitioned lowering: functionalizing method {method!r} failed: {type(error).__name__}: {error}"
        ) from error


def partitioned_payload(split: ProgramSplit, backend_payload: bytes) -> bytes:
    tensors = TensorTable()
    methods = {method: _fallback_json(s, split.handles[method], tensors) for method, s in split.methods.items()}
    partitions = {
        g.name: {
            "method": method,
            "handles": sorted(split.handles[method][n] for n in g.nodes if n in split.handles[method]),
        }
        for method, s in split.methods.items()
        for g in s.groups
    }
    entries, parts = tensors.to_parts()
    meta = {"methods": methods, "partitions": partitions, "tensors": entries}
    return pack_parts(KIND, meta, {"backend": backend_payload, **parts})


def _fallback_json(split: MethodSplit, handles: dict[torch.fx.Node, int], tensors: TensorTable) -> dict[str, Any]:
    program = split.program
    specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}

    def tensor_of(node: torch.fx.Node) -> torch.Tensor | None:
        spec = specs.get(node.name) if node.op == "placeholder" else None
        if spec is None or spec.kind == InputKind.USER_INPUT:
            return None
        found = program.state_dict.get(spec.target, program.constants.get(spec.target))
        if not isinstance(found, torch.Tensor):
            raise LoweringError(
                f"Partitioned lowering: method {split.method!r} takes {spec.kind.name} "
                f"{spec.target!r}, which a fallback cannot hold."
            )
        return found.detach()

    def operand(value: Any) -> Any:
        return encode(value, tensors, tensor_of)

    steps = []
    for unit in split.order:
        if not isinstance(unit, torch.fx.Node):
            steps.append(
                {
                    "call": "partition",
                    "target": unit.name,
                    "outputs": [n.name for n in unit.outputs],
                    "args": [operand(n) for n in unit.inputs if tensor_of(n) is None],
                }
            )
        elif unit.op == "call_function" and unit.target is operator.getitem:
            steps.append({"call": "item", "args": [operand(a) for a in unit.args], "outputs": [unit.name]})
        else:
            name = op_name(unit.target) if unit.op == "call_function" else None
            if name is None:
                raise UnsupportedOpError(_cannot_fall_back(split, unit, f"runs ATen ops of {list(NAMESPACES)} only"))
            step: dict[str, Any] = {
                "call": "op",
                "target": name,
                "args": [operand(a) for a in unit.args],
                "kwargs": {k: operand(v) for k, v in unit.kwargs.items()},
                "outputs": [unit.name],
            }
            _, problem = step_problem(name, step["args"], step["kwargs"], tensors.tensors, f"steps[{len(steps)}]")
            if problem:  # the loader's own check: what lowering writes, loading accepts
                raise UnsupportedOpError(_cannot_fall_back(split, unit, problem.rstrip(".")))
            if unit in handles:
                step["handle"] = handles[unit]
            steps.append(step)
    inputs = [n.name for n in program.graph.nodes if n.op == "placeholder" and tensor_of(n) is None]
    output = next(n for n in program.graph.nodes if n.op == "output")
    return {"inputs": inputs, "steps": steps, "outputs": [operand(v) for v in output.args[0]]}


def _cannot_fall_back(split: MethodSplit, node: torch.fx.Node, why: str) -> str:
    where = describe_node(node)
    line = f" at {where.source.file}:{where.source.line}" if where.source else ""
    return (
        f"Partitioned lowering: node {node.name} of method {split.method!r} ({where.op}{line}) cannot run in the "
        f"fallback ({why}), and the backend does not take it ({split.reasons.get(node, 'not in a group')})."
    )


def partition_record(split: ProgramSplit, backend: str, min_nodes: int) -> dict[str, Any]:
    """The report's ``partition`` entry: every group's nodes, every fallback op with its source."""
    partitions, fallback = [], []
    for method, s in split.methods.items():
        handles = split.handles[method]
        for group in s.groups:
            partitions.append(
                {
                    "name": group.name,
                    "method": method,
                    "backend": backend,
                    "nodes": [n.name for n in group.nodes if counted(n)],
                    "handles": sorted(handles[n] for n in group.nodes if n in handles),
                }
            )
        for node in s.fallback_nodes:
            if counted(node):
                fallback.append(_fallback_entry(method, node, handles.get(node), s.reasons.get(node, "")))
    total = sum(counted(n) for s in split.methods.values() for n in s.program.graph.nodes)
    on_backend = sum(len(p["nodes"]) for p in partitions)
    record = {
        "backend": backend,
        "min_nodes": min_nodes,
        "nodes": total,
        "on_backend": on_backend,
        "partitions": partitions,
        "fallback": fallback,
    }
    record["summary"] = summary_line(record)
    return record


def _fallback_entry(method: str, node: torch.fx.Node, handle: int | None, reason: str) -> dict[str, Any]:
    where = describe_node(node)
    source = where.source
    return {
        "method": method,
        "node": node.name,
        "op": where.op,
        "handle": handle,
        "reason": reason,
        "source": f"{source.file}:{source.line}" if source else None,
        "text": source.text if source else None,
        "module_path": where.module_path,
    }


def summary_line(record: dict[str, Any]) -> str:
    """``42 of 45 nodes on reference in 2 subgraphs; fallback: fft_fft at model.py:31``."""
    count = len(record["partitions"])
    text = (
        f"{record['on_backend']} of {record['nodes']} nodes on {record['backend']} in {count} "
        f"subgraph{'s' * (count != 1)}"
    )
    ops_at: dict[str, list[str]] = {}  # place -> ops there, in program order
    for entry in record["fallback"]:
        op = entry["op"].split("::")[-1].split(".")[0]
        file, _, line = (entry["source"] or "").rpartition(":")
        place = f"{os.path.basename(file)}:{line}" if entry["source"] else "unknown source"
        if op not in ops_at.setdefault(place, []):
            ops_at[place].append(op)
    if not ops_at:
        return text + "; no fallback"
    places = [f"{'/'.join(ops)} at {place}" for place, ops in ops_at.items()]
    more = f" and {len(places) - MAX_LISTED} more" if len(places) > MAX_LISTED else ""
    return f"{text}; fallback: {', '.join(places[:MAX_LISTED])}{more}"


def mark_handles(handle_map: HandleMap, split: ProgramSplit) -> None:
    """handles.json says, for every handle, the partition its node went to (or ``fallback``)."""
    for method, s in split.methods.items():
        owner = {node: group.name for group in s.groups for node in group.nodes}
        for node, handle in split.handles[method].items():
            record = handle_map.handles.get(handle)
            if record is not None:
                handle_map.handles[handle] = dataclasses.replace(record, partition=owner.get(node, FALLBACK))


class _Partition:
    """A fallback step's call of one group: the backend's runner, and its profile if it has one."""

    def __init__(self, runner: MethodRunner):
        self.runner = runner
        self.profiler = getattr(runner, "profile", None)

    def profile(self, inputs: list[Any]) -> list[ProfileEvent] | None:
        return self.profiler(inputs) if self.profiler is not None else None


class _FallbackRunner(FallbackProgram):
    """A method's fallback as the `MethodRunner` the contract asks for: called on the inputs, it runs."""

    def __call__(self, inputs: list[Any]) -> list[Any]:
        return self.run(inputs)


class PartitionedRuntime:
    """Compiles a partitioned payload: each method's fallback, with the backend's runners for the groups.

    Not a `Backend` (it is never registered and has no preprocess): it is the runtime a
    `PartitionedModule` is built with, wrapping the runtime of the backend the artifact names.
    """

    def __init__(self, inner: BackendInfo):
        self.inner_info = inner
        self.inner = inner.runtime()

    def is_available(self) -> bool:
        return bool(self.inner.is_available())

    def compile(self, payload: bytes, specs: dict[str, Any]) -> dict[str, MethodRunner]:
        meta, parts = unpack_parts(payload, KIND)
        try:
            return self._programs(meta, parts, specs)
        except MalformedInput as error:
            raise LoweringError(f"Partitioned payload of backend {self.inner_info.name!r}: {error}") from None

    def _programs(
        self, meta: dict[str, Any], parts: dict[str, bytes], specs: dict[str, Any]
    ) -> dict[str, MethodRunner]:
        groups = member(meta, "partitions", dict, "partitions")
        entries = member(meta, "tensors", list, "tensors")
        tensors = [
            read_tensor(entry, parts.get(f"tensor/{i}", b""), f"tensors[{i}]") for i, entry in enumerate(entries)
        ]
        inner_specs = {}
        for name, info in groups.items():
            method = member(info, "method", str, f"partitions.{name}")
            if method not in specs:
                raise MalformedInput(f"partition {name!r} belongs to method {method!r}, which is not lowered.")
            inner_specs[name] = specs[method]
        compiled = self.inner.compile(parts.get("backend", b""), inner_specs) if inner_specs else {}
        missing = sorted(set(inner_specs) - set(compiled))
        if missing:
            raise MalformedInput(f"backend {self.inner_info.name!r} compiled no runner for partitions {missing}.")
        calls: dict[str, PartitionCall] = {}
        for name, info in groups.items():
            handles = tuple(
                expect(h, int, f"partitions.{name}.handles")
                for h in member(info, "handles", list, f"partitions.{name}")
            )
            partition = _Partition(compiled[name])
            calls[name] = (partition.runner, partition.profile, handles)
        methods = member(meta, "methods", dict, "methods")
        missing = sorted(set(specs) - set(methods))
        if missing:
            raise MalformedInput(f"no fallback for methods {missing}.")
        return {method: _FallbackRunner(method, methods[method], tensors, calls) for method in specs}


class PartitionedModule(LoweredModule):
    """A `LoweredModule` whose methods run partly on the backend, partly in PyTorch; `partition` says how."""

    def __init__(self, *, partition: dict[str, Any], **held: Any):
        super().__init__(**held)
        self._partition = partition

    @property
    def partition(self) -> dict[str, Any]:
        """The record: groups with their nodes, fallback ops with their sources, and the ``summary`` line."""
        return self._partition
