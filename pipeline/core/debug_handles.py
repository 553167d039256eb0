"""Debug handles: integers that tie what a backend runs back to source.

``generate_debug_handles(graph)`` gives every node of a TorchScript graph (every
block walked) or FX graph a handle, and records where the node came from. The
strategy decides the numbers:

* ``sequential``: 0, 1, 2, ... in graph order, counted per lowering (the
  original's counter is process-global, so identical lowerings differ);
* ``stable``: derived from the node's place in the program (method, module
  path, op, occurrence of that op in that module), so a node keeps its handle
  across runs and across unrelated edits elsewhere in the model;
* ``none``: no handles, nothing recorded.

The records form a `HandleMap`; a backend adds its own ``backend_map`` from its
instruction or kernel ids to handles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.core.bounded_json import expect, member
from pipeline.core.errors import LoweringError, MalformedInput, format_choices
from pipeline.core.source import Frame, HierarchyPath, NodeSource, describe_node, format_module_hierarchy

STRATEGIES = ("sequential", "stable", "none")
UNKNOWN_HANDLE = -1
_STABLE_BITS = 52  # stays an exact integer in JSON readers that use doubles


@dataclass(frozen=True)
class HandleRecord:
    handle: int
    method: str
    op: str
    node: str
    source: Frame | None
    module_hierarchy: str
    call_stack: tuple[Frame, ...] = ()
    partition: str | None = None  # partitioned lowering: the group it runs in ("forward_p0") or "fallback"

    def to_json(self) -> dict[str, Any]:
        source = self.source.to_json() if self.source else {"file": None, "line": None, "function": None, "text": None}
        partition = {} if self.partition is None else {"partition": self.partition}
        return {
            **partition,
            "handle": self.handle,
            "method": self.method,
            "op": self.op,
            "node": self.node,
            "source": source,
            "module_hierarchy": self.module_hierarchy,
            "call_stack": [frame.to_json() for frame in self.call_stack],
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "handle") -> HandleRecord:
        """A record as an artifact holds it; `MalformedInput` naming the field if it is not one."""
        src = member(data, "source", (dict, type(None)), where) or {}
        source = _frame(src, f"{where}.source") if src.get("file") is not None else None
        stack = member(data, "call_stack", list, where, default=[])
        return cls(
            handle=member(data, "handle", int, where),
            method=member(data, "method", str, where),
            op=member(data, "op", str, where),
            node=member(data, "node", str, where),
            source=source,
            module_hierarchy=member(data, "module_hierarchy", str, where),
            call_stack=tuple(_frame(frame, f"{where}.call_stack[{i}]") for i, frame in enumerate(stack)),
            partition=member(data, "partition", (str, type(None)), where, default=None),
        )

    def describe(self) -> str:
        lines = [f"debug handle {self.handle}: Module hierarchy: {self.module_hierarchy}"]
        for frame in self.call_stack or ((self.source,) if self.source else ()):
            lines.append(f'  File "{frame.file}", line {frame.line}, in {frame.function}')
            if frame.text:
                lines.append(f"    {frame.text}")
        return "\n".join(lines)


@dataclass
class HandleMap:
    """Every issued handle with its source, plus the backend's own ids -> handles."""

    strategy: str = "sequential"
    handles: dict[int, HandleRecord] = field(default_factory=dict)
    backend_map: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "handles": [self.handles[h].to_json() for h in sorted(self.handles)],
            "backend_map": {key: list(self.backend_map[key]) for key in sorted(self.backend_map)},
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "handle map") -> HandleMap:
        """The map as `to_json` wrote it; `MalformedInput` naming the field if it is not one."""
        strategy = member(data, "strategy", str, where, default="sequential")
        if strategy not in STRATEGIES:
            raise MalformedInput(f"{where}: strategy {strategy!r} is not one of {list(STRATEGIES)}.")
        items = member(data, "handles", list, where, default=[])
        records = [HandleRecord.from_json(item, f"{where}: handles[{i}]") for i, item in enumerate(items)]
        backend_map = {}
        for key, handles in member(data, "backend_map", dict, where, default={}).items():
            at = f"{where}: backend_map[{key!r}]"
            backend_map[key] = [expect(h, int, at) for h in expect(handles, list, at)]
        return cls(strategy=strategy, handles={record.handle: record for record in records}, backend_map=backend_map)

    def describe(self, handle: int) -> str:
        record = self.handles.get(handle)
        if record is not None:
            return record.describe()
        if handle == UNKNOWN_HANDLE:
            return f"debug handle {handle}: unknown (the backend did not say which instruction failed)"
        return f"debug handle {handle}: unknown (no debug info was recorded for it)"


class DebugHandleGenerator:
    """Issues handles for one lowering and records them in `handle_map`.

    Called as ``generator(graph, method="forward")``; returns ``{node: handle}``.
    ``top_type`` and ``prefix`` place the lowered program in its model, so that a
    selectively lowered submodule reports the hierarchy from the model's top.
    """

    def __init__(
        self,
        strategy: str = "sequential",
        *,
        top_type: str = "Module",
        prefix: HierarchyPath = (),
        call_sites: dict[str, dict[str, Frame]] | None = None,
    ):
        if strategy not in STRATEGIES:
            raise LoweringError(f"Unknown debug-handle strategy {strategy!r}; allowed: {format_choices(STRATEGIES)}")
        self.strategy = strategy
        self.top_type = top_type
        self.prefix = tuple(prefix)
        self.handle_map = HandleMap(strategy)
        # {method: {submodule attribute: the user's line that calls it}}: where a scripted node whose own
        # source is inside torch (F.relu's body) came from in the user's code (`torchscript_call_sites`).
        self.call_sites = call_sites or {}
        self._next = 0

    def __call__(self, graph: Any, method: str = "forward") -> dict[Any, int]:
        if self.strategy == "none":
            return {}
        with _gc_paused():
            return self._issue(graph, method)

    def _issue(self, graph: Any, method: str) -> dict[Any, int]:
        handles: dict[Any, int] = {}
        occurrences: dict[tuple[str, str], int] = {}
        for node in walk_nodes(graph):
            where = self._from_user_code(describe_node(node), method)
            if self.strategy == "sequential":
                handle = self._next
                self._next += 1
            else:
                key = (where.module_path, where.op)
                occurrence = occurrences.get(key, 0)
                occurrences[key] = occurrence + 1
                handle = self._stable_handle(method, where.module_path, where.op, occurrence)
            handles[node] = handle
            levels = self.prefix + where.hierarchy
            op_name = where.op.split(".", 1)[0] if "::" in where.op else where.op
            self.handle_map.handles[handle] = HandleRecord(
                handle,
                method,
                where.op,
                where.node,
                where.source,
                format_module_hierarchy(self.top_type, levels, op_name),
                where.call_stack,
            )
        return handles

    def _from_user_code(self, where: NodeSource, method: str) -> NodeSource:
        inside_torch = where.source is not None and where.source.file.startswith("<torch>/")
        site = self.call_sites.get(method, {}).get(where.hierarchy[0][0]) if where.hierarchy else None
        if not inside_torch or site is None:
            return where
        return dataclasses.replace(where, source=site, call_stack=(site,) + tuple(where.call_stack))

    def _stable_handle(self, method: str, module_path: str, op: str, occurrence: int) -> int:
        key = f"{method}|{module_path}|{op}|{occurrence}".encode()
        handle = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & ((1 << _STABLE_BITS) - 1)
        while handle in self.handle_map.handles:  # a collision: probe deterministically
            handle = (handle + 1) & ((1 << _STABLE_BITS) - 1)
        return handle


def _frame(data: Any, where: str) -> Frame:
    return Frame(
        member(data, "file", str, where),
        member(data, "line", (int, type(None)), where),
        member(data, "function", (str, type(None)), where) or "<unknown>",
        member(data, "text", (str, type(None)), where),
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Issuing only allocates (no cycles); full collections over a growing heap would make it superlinear."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def generate_debug_handles(
    graph: Any, strategy: str = "sequential", *, method: str = "forward", top_type: str = "Module"
) -> dict[Any, int]:
    """Handles for one graph on its own; see `DebugHandleGenerator` for lowerings."""
    return DebugHandleGenerator(strategy, top_type=top_type)(graph, method)


def walk_nodes(graph: Any) -> Iterator[Any]:
    """Nodes in program order; for TorchScript, each node before its blocks' nodes."""
    if isinstance(graph, torch.fx.GraphModule):
        graph = graph.graph
    if isinstance(graph, torch.fx.Graph):
        for node in graph.nodes:
            if node.op not in ("placeholder", "output"):
                yield node
        return
    stack: list[Iterator[Any]] = [iter(graph.nodes())]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        yield node
        for block in reversed(list(node.blocks())):
            stack.append(iter(block.nodes()))


def handles_by_origin(nodes: Iterable[Any], handle_of: Mapping[str, int]) -> dict[str, list[int]]:
    """FX node name -> handles of the lowered program's nodes it came from, for a graph derived from
    that program (decomposed or re-traced by an exporter or converter).

    ``handle_of`` maps the program's node names to their handles. A derived node
    records its ancestry in ``meta["from_node"]`` (a chain of sources, each with
    a ``name`` and its own ``from_node``); a node without one is taken to be the
    program's node of the same name. Nodes that come from no handled node are left out.
    """
    origins = {}
    for node in nodes:
        sources = node.meta.get("from_node")
        names = _ancestors(sources) if sources else {node.name}
        found = sorted({handle_of[name] for name in names if name in handle_of})
        if found:
            origins[node.name] = found
    return origins


def _ancestors(sources: list[Any]) -> set[str]:
    names = set()
    stack = list(sources)
    while stack:
        source = stack.pop()
        name = getattr(source, "name", None)
        if isinstance(name, str):
            names.add(name)
        stack.extend(getattr(source, "from_node", None) or [])
    return names
