"""The partition of one method: which FX nodes run in which delegate, and which on portable kernels.

Debug handles travel through ExecuTorch in the nodes' ``meta``: preprocess
writes each FX node's handle into ``node.meta["custom"]`` (`tag_handles`),
which torch.export, PT2E quantization and ExecuTorch's passes copy to every
node they derive from it. Nodes they insert (quantize/dequantize pairs, layout
copies) carry none and take the handles of the nearest node they read from, or
else of the nearest node that reads them.

ExecuTorch's emitter sets the ``debug_handle`` of each node that emits an
instruction to the instruction's index, and the nodes inside a delegate keep
the integer ``debug_handle`` they had when they were partitioned, which the
XNNPACK delegate's own nodes refer to. `method_table` joins these into one
entry per instruction of the method's (single) chain::

    {"instruction": 0, "kind": "delegate", "name": "XnnpackBackend", "handles": [...],
     "nodes": [{"name": "FullyConnected", "handles": [...]}, ...]}      # the delegate's own nodes
    {"instruction": 5, "kind": "kernel", "name": "aten::mul.Scalar_out", "handles": [...]}

A delegate's ``nodes`` are the XNNPACK subgraph's nodes in order
(`xnnpack_graph`); an edge node that XNNPACK fused into another (batch norm
and ReLU into a convolution) counts for the node that took it in: the nearest
one it reads from, else the nearest that reads it.

The backend map (`backend_map`) has one key per instruction,
``"<method>/<instruction>:<name>"``, and one per delegate node,
``"<method>/<instruction>:<delegate>/<index>:<node>"``. `partition_summary`
turns a lowered module's tables into the report's ``partition``.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch

from pipeline.backends.executorch.compile_spec import NAME
from pipeline.backends.executorch.installed import executorch_module
from pipeline.backends.executorch.program import execution_plan
from pipeline.backends.executorch.xnnpack_graph import delegate_nodes
from pipeline.core.backend import unpack_parts

HANDLE_KEY = "pipeline_debug_handle"
XNNPACK = "XnnpackBackend"
ET_VIEW = "executorch_prim::et_view"


def memory_view() -> Any:
    """ExecuTorch's view operator (``executorch.exir.memory.view``), which lowered programs call."""
    return executorch_module("executorch.exir.memory").view


def tag_handles(handles: dict[torch.fx.Node, int]) -> None:
    """Write each node's debug handle where torch and ExecuTorch carry it along (``meta["custom"]``),
    and make the node the first of its own provenance (``meta["from_node"]``).

    ExecuTorch numbers edge nodes by their oldest ancestor in that provenance. Captured programs can
    share ancestors across many nodes (strict export's tracing), which would give a whole delegate
    one number; starting each node's provenance at itself makes ExecuTorch's numbers one per node
    issued a handle here, shared only by the nodes lowering derives from it.
    """
    for node, handle in handles.items():
        node.meta.setdefault("custom", {})[HANDLE_KEY] = handle
        node.meta.pop("from_node", None)
        node.meta["from_node"] = [torch.fx.traceback.NodeSource(node, pass_name="pipeline debug handles")]


def method_table(program: Any, method: str) -> list[dict[str, Any]]:
    """One entry per instruction of ``method`` (see the module docstring)."""
    plan = execution_plan(program, method)
    emitted = _emitting_nodes(program.exported_program(method).graph_module.graph, plan)
    table = []
    for index, instruction in enumerate(plan.chains[0].instructions):
        arguments = instruction.instr_args
        kind = type(arguments).__name__
        node = emitted.get(index)
        own = _nearest(node, _own_handle) if node is not None else None
        entry: dict[str, Any] = {
            "instruction": index,
            "kind": "other",
            "name": kind,
            "handles": [] if own is None else [own],
        }
        if kind == "KernelCall":
            op = plan.operators[arguments.op_index]
            entry.update(kind="kernel", name=f"{op.name}.{op.overload}" if op.overload else op.name)
        elif kind == "DelegateCall":
            name = plan.delegates[arguments.delegate_index].id
            # A delegate call's first operand is the get_attr node of its lowered module.
            held = str(cast(torch.fx.Node, node.args[0]).target) if node is not None else ""
            lowered = getattr(node.graph.owning_module, held) if node is not None else None
            inside = _fx_handles_by_edge_handle(lowered.original_module.graph) if lowered is not None else {}
            nodes = _delegate_node_entries(lowered, inside) if lowered is not None and name == XNNPACK else []
            entry.update(kind="delegate", name=name, nodes=nodes, handles=_union(inside.values()))
        table.append(entry)
    return table


def _emitting_nodes(graph: torch.fx.Graph, plan: Any) -> dict[int, torch.fx.Node]:
    """Instruction index -> the node that emitted it. The emitter sets the ``debug_handle`` of each node
    that emits a kernel or delegate call to that instruction's index (getitems keep a stale one: skipped).

    Views are the exception: a view of a dynamic size is an ``et_view`` instruction, and its node keeps
    the handle it had before emitting (a static view is elided). The views that emitted are matched to
    the ``et_view`` instructions in order, as the emitter walks the graph.
    """
    found: dict[int, torch.fx.Node] = {}
    views = []
    for node in graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if node.target is memory_view():
            if not _elided(node):
                views.append(node)
        elif node.meta.get("debug_handle") is not None:
            found.setdefault(int(node.meta["debug_handle"]), node)
    et_views = [
        index
        for index, instruction in enumerate(plan.chains[0].instructions)
        if type(instruction.instr_args).__name__ == "KernelCall"
        and plan.operators[instruction.instr_args.op_index].name == ET_VIEW
    ]
    found.update(zip(et_views, views))
    return found


def _elided(view: torch.fx.Node) -> bool:
    """Whether the emitter elided this view (as ``_emit_view`` decides): static and memory planned."""
    spec = view.meta["spec"]
    planned = (spec.mem_id is not None and spec.mem_offset is not None) or (spec.const and spec.storage is not None)
    return bool(spec.is_static_shape_tensor and planned)


def backend_map(method: str, table: list[dict[str, Any]]) -> dict[str, list[int]]:
    entries: dict[str, list[int]] = {}
    for entry in table:
        key = f"{method}/{entry['instruction']}:{entry['name']}"
        entries[key] = list(entry["handles"])
        for index, node in enumerate(entry.get("nodes", ())):
            entries[f"{key}/{index}:{node['name']}"] = list(node["handles"])
    return entries


def partition_summary(lowered: Any) -> dict[str, Any]:
    """Per method of an executorch-lowered module: its delegates and portable kernels with the debug
    handles of the FX nodes each runs, and how many of the method's FX nodes went where (`method_partition`)."""
    meta, _ = unpack_parts(lowered.payload, NAME)
    return {
        method: method_partition(
            method_meta["instructions"],
            {h for h, r in lowered.handle_map.handles.items() if r.method == method},
            lowered.method_compile_spec[method],
        )
        for method, method_meta in meta["methods"].items()
    }


def method_partition(table: list[dict[str, Any]], issued: set[int], options: dict[str, Any]) -> dict[str, Any]:
    """One method's partition, as the run's report shows it (``backend_notes``).

    ``not_run`` counts FX nodes no instruction runs: folded away while lowering (``detach``, no-op
    ``dropout``, ...), or whose handles ExecuTorch did not carry.
    """
    delegated = _union(e["handles"] for e in table if e["kind"] == "delegate")
    portable = sorted(set(_union(e["handles"] for e in table if e["kind"] == "kernel")) - set(delegated))
    return {
        "partitioner": options["partitioner"],
        "quantize": options["quantize"],
        "delegates": [
            {
                "instruction": e["instruction"],
                "backend": e["name"],
                "debug_handles": e["handles"],
                "nodes": [node["name"] for node in e["nodes"]],
            }
            for e in table
            if e["kind"] == "delegate"
        ],
        "portable_kernels": [
            {"instruction": e["instruction"], "kernel": e["name"], "debug_handles": e["handles"]}
            for e in table
            if e["kind"] == "kernel"
        ],
        "fx_nodes": len(issued),
        "delegated": len(delegated),
        "portable": len(portable),
        "not_run": len(issued - set(delegated) - set(portable)),
    }


def _delegate_node_entries(lowered: Any, fx_of: dict[int, list[int]]) -> list[dict[str, Any]]:
    nodes = delegate_nodes(lowered.processed_bytes)
    owner: dict[int, int] = {}
    for index, (_, edge_handle) in enumerate(nodes):
        owner.setdefault(edge_handle, index)
    taken_in: dict[int, set[int]] = {index: {edge_handle} for index, (_, edge_handle) in enumerate(nodes)}
    for node in lowered.original_module.graph.nodes:
        for edge_handle in _edge_handles(node):
            if edge_handle in owner:
                continue
            nearest = _nearest(node, lambda n: next((owner[h] for h in _edge_handles(n) if h in owner), None))
            if nearest is not None:
                taken_in[nearest].add(edge_handle)
    return [
        {"name": name, "handles": _union(fx_of.get(h, ()) for h in sorted(taken_in[index]))}
        for index, (name, _) in enumerate(nodes)
    ]


def _fx_handles_by_edge_handle(graph: torch.fx.Graph) -> dict[int, list[int]]:
    found: dict[int, set[int]] = {}
    for node in graph.nodes:
        edge_handles = _edge_handles(node)
        if not edge_handles:
            continue
        handles = _nearest(node, _own_handle)
        for edge_handle in edge_handles:
            found.setdefault(edge_handle, set()).update([] if handles is None else [handles])
    return {edge_handle: sorted(handles) for edge_handle, handles in found.items()}


def _own_handle(node: torch.fx.Node) -> int | None:
    custom = node.meta.get("custom")
    return custom.get(HANDLE_KEY) if isinstance(custom, dict) else None


def _nearest(node: torch.fx.Node, value_of: Callable[[torch.fx.Node], int | None]) -> int | None:
    """``value_of`` the node itself, else of the nearest node it reads from that has one (a quantize
    node: the op whose output it quantizes), else of the nearest that reads it (a weight's
    dequantize: the op that uses the weight)."""
    own = value_of(node)
    if own is not None:
        return own
    for neighbours in (lambda n: n.all_input_nodes, lambda n: list(n.users)):
        queue, seen = deque(neighbours(node)), {node}
        while queue:
            current = queue.popleft()
            if current in seen or current.op in ("placeholder", "output", "get_attr"):
                continue
            seen.add(current)
            value = value_of(current)
            if value is not None:
                return value
            queue.extend(neighbours(current))
    return None


def _edge_handles(node: torch.fx.Node) -> list[int]:
    if node.op != "call_function":
        return []
    return _as_list(node.meta.get("debug_handle"))


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def _union(groups: Iterable[Iterable[int]]) -> list[int]:
    return sorted({h for group in groups for h in group})
