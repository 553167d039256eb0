"""Which nodes of the optimized graph came from which nodes of the lowered one.

Debug handles are issued on the inlined graph of each method as it was lowered
(``G0``); what runs is that graph frozen and optimized (``G1``), whose nodes are
partly the same, partly rewritten. Per ``G1`` node, in order:

1. **By source range**: the ``G0`` ops with the same file, line and module
   path, and the same op (``relu_`` matches ``relu``) when there is one; when
   both graphs have the same number of such nodes they pair up in order,
   otherwise each ``G1`` node gets all of them. So ``prim::mkldnn_convolution``
   maps to the ``conv2d`` of its module, and the two GELUs of an MLP to theirs.
2. **By data flow**, for nodes passes create without a source range (the
   ``matmul`` + ``add`` freezing makes of a ``linear``, layout conversions): the
   node's value reaches input *i* of a node matched in step 1; it maps to the
   ``G0`` op that produced input *i* of that node's match.

What neither step finds (constants, values made only of constants) has no handles.
Nodes of a loaded archive no longer know their module: `translate_indices`
carries a map made on the in-memory graph over to the loaded one, whose nodes
are the same, constants aside.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from pipeline.core.backend import describe_node
from pipeline.core.backend import walk_nodes as walk  # program order, as handles are issued

Key = tuple[str, int, str]  # file, line, module path


def inlined_graph(module: torch.jit.ScriptModule, method: str) -> Any:
    graph = getattr(module, method).graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def match_nodes(
    lowered_graph: Any, lowered: dict[Any, int], optimized_graph: Any, by_module: bool = True
) -> dict[int, list[int]]:
    """``{index of a node of optimized_graph (in `walk` order): handles}`` for the nodes that came from
    handled nodes; ``lowered`` is the ``{node: handle}`` map issued on ``lowered_graph``. Without
    ``by_module`` (for graphs whose nodes lost their module, as loaded archives' do), source lines
    alone decide, and nodes on one line pair up in order."""
    optimized = list(walk(optimized_graph))
    key_of = functools.partial(_source_key, by_module=by_module)
    original: dict[Key, list[Any]] = {}
    for node in lowered:
        key = key_of(node)
        if key is not None and not node.kind().startswith("prim::"):
            original.setdefault(key, []).append(node)
    groups: dict[tuple[Key, str], list[int]] = {}
    for index, node in enumerate(optimized):
        key = key_of(node)
        if key is not None and key in original and not node.kind().startswith("prim::Constant"):
            groups.setdefault((key, _op(node)), []).append(index)
    matched: dict[int, list[Any]] = {}
    for (key, op), indices in groups.items():
        candidates = [n for n in original[key] if _op(n) == op] or original[key]
        if len(candidates) == len(indices):
            matched.update({index: [node] for index, node in zip(indices, candidates)})
        else:
            matched.update({index: candidates for index in indices})
    result = {index: sorted({lowered[node] for node in nodes}) for index, nodes in matched.items()}
    position = {node: index for index, node in enumerate(optimized)}
    for index, node in enumerate(optimized):
        if index in result or node.kind().startswith("prim::Constant") or not list(node.outputs()):
            continue
        producer = _producer_through_data_flow(node, position, matched, lowered, lowered_graph.return_node(), key_of)
        if producer is not None:
            result[index] = [lowered[producer]]
    for index, node in enumerate(optimized):  # what the passes insert for one op (to_mkldnn of its input) is its
        if index not in result and not node.kind().startswith("prim::") and list(node.outputs()):
            user = _first_user_with_handles(node, position, result)
            if user is not None:
                result[index] = result[user]
    return result


def _first_user_with_handles(node: Any, position: dict[Any, int], result: dict[int, list[int]]) -> int | None:
    """The index of the first node downstream of ``node`` that has handles, through nodes that have none."""
    frontier, seen = [use.user for value in node.outputs() for use in value.uses()], set()
    while frontier:
        user = frontier.pop(0)
        index = position.get(user)
        if index is None or user in seen:
            continue
        seen.add(user)
        if index in result:
            return index
        frontier += [use.user for value in user.outputs() for use in value.uses()]
    return None


def _producer_through_data_flow(
    node: Any,
    position: dict[Any, int],
    matched: dict[int, list[Any]],
    lowered: dict[Any, int],
    lowered_return: Any,
    key_of: Callable,
) -> Any | None:
    """Follow the node's values through other source-less nodes to the first matched user."""
    frontier = [use for value in node.outputs() for use in value.uses()]
    seen = set()
    while frontier:
        use = frontier.pop(0)
        user = use.user
        if user in seen:
            continue
        seen.add(user)
        index = position.get(user)
        if user.kind() == "prim::Return":
            counterpart = lowered_return
        elif index in matched:
            if len(matched[index]) != 1:
                return None  # an ambiguous match: no single input to point at
            counterpart = matched[index][0]
        elif key_of(user) is None:
            frontier += [next_use for value in user.outputs() for next_use in value.uses()]
            continue
        else:
            return None  # an op with a source that matched nothing: do not guess past it
        inputs = list(counterpart.inputs())
        if use.offset >= len(inputs):
            return None
        producer = inputs[use.offset].node()
        return producer if producer in lowered and not producer.kind().startswith("prim::") else None
    return None


def translate_indices(
    node_map: dict[int, list[int]], source_graph: Any, target_graph: Any
) -> dict[int, list[int]] | None:
    """The map re-indexed for another graph with the same nodes, constants aside (None if they differ)."""

    def ops(graph: Any) -> list[tuple[int, str]]:
        return [(i, n.kind()) for i, n in enumerate(walk(graph)) if not n.kind().startswith("prim::Constant")]

    source, target = ops(source_graph), ops(target_graph)
    if [kind for _, kind in source] != [kind for _, kind in target]:
        return None
    position = {s: t for (s, _), (t, _) in zip(source, target)}
    return {position[index]: handles for index, handles in node_map.items()}


def _source_key(node: Any, by_module: bool = True) -> Key | None:
    where = describe_node(node)
    if where.source is None:
        return None
    return where.source.file, where.source.line, where.module_path if by_module else ""


def _op(node: Any) -> str:
    return node.kind().rstrip("_")
