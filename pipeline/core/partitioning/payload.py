"""The partitioned payload: a container of the backend's payload, each method's fallback and its tensors.

`partitioned_payload` packs (`pack_parts`, kind ``partitioned``) the backend's payload of all groups, each
method's fallback as JSON (`pipeline.core.partitioning.fallback`) and the tensors the fallbacks read. Every
op step it writes passes the loader's own check, so what lowering writes, loading accepts.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.export.graph_signature import InputKind

from pipeline.core.errors import LoweringError, UnsupportedOpError
from pipeline.core.op_policy import NAMESPACES
from pipeline.core.partitioning.fallback import TensorTable, encode, op_name, step_problem
from pipeline.core.partitioning.split import MethodSplit, ProgramSplit
from pipeline.core.payload import pack_parts
from pipeline.core.source import describe_node

KIND = "partitioned"


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
