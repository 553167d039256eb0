"""The dynamic axes of an exported ONNX model, named as the lowering declared them.

The dynamo exporter writes each dynamic dimension as a ``dim_param`` named after torch.export's
symbol (``s77``), and sizes computed from them as expressions of those symbols (``4*s77``). The
declaration named them (``batch``, ``seq``); `symbol_names` reads those names back from the program
(`pipeline.core.shapes.input_shapes`) and `name_dynamic_axes` writes them into the model: on its
inputs and outputs, and on every intermediate value's shape, so that one dimension has one name
wherever the model mentions it (tools such as onnxruntime's ``free_dimension_overrides`` and
Netron go by it). A static program has no symbols, and its model stays as the exporter wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from pipeline.core.backend import Dynamic, input_shapes

_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def symbol_names(program: torch.export.ExportedProgram) -> dict[str, str]:
    """``{torch.export symbol: declared name}`` for each dynamic dimension of the program's tensor inputs
    that is one symbol (a size such as ``2*s0`` names no dimension of its own)."""
    placeholders = {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}
    names: dict[str, str] = {}
    for shape in input_shapes(program):
        value = placeholders.get(shape.argument)
        for size, declared in zip(value.shape if isinstance(value, torch.Tensor) else (), shape.sizes):
            if isinstance(declared, Dynamic) and isinstance(size, torch.SymInt) and size.node.expr.is_symbol:
                names[str(size.node.expr)] = declared.name
    return names


def name_dynamic_axes(model: Any, names: Mapping[str, str]) -> None:
    """Rename the symbols of every ``dim_param`` of ``model`` (an ``onnx.ModelProto``, changed in place)."""
    if not names:
        return
    for dimension in _dimensions(model):
        if dimension.HasField("dim_param"):
            dimension.dim_param = _SYMBOL.sub(lambda match: names.get(match[0], match[0]), dimension.dim_param)


def _dimensions(model: Any) -> Iterator[Any]:
    for graph in _graphs(model):
        for value in (*graph.input, *graph.output, *graph.value_info):
            yield from _type_dimensions(value.type)
    for function in model.functions:
        for value in function.value_info:
            yield from _type_dimensions(value.type)


def _graphs(model: Any) -> Iterator[Any]:
    """The main graph, and the subgraphs of its control-flow nodes (If, Loop, Scan), at any depth;
    and those of the model's functions."""
    import onnx

    pending = [model.graph]
    for function in model.functions:
        pending += [a.g for node in function.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    while pending:
        graph = pending.pop()
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    pending.append(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    pending.extend(attribute.graphs)


def _type_dimensions(kind: Any) -> Iterator[Any]:
    """The dimensions of a tensor type, and of the element types of sequences, maps and optionals."""
    field = kind.WhichOneof("value")
    if field in ("tensor_type", "sparse_tensor_type"):
        yield from getattr(kind, field).shape.dim
    elif field == "sequence_type":
        yield from _type_dimensions(kind.sequence_type.elem_type)
    elif field == "optional_type":
        yield from _type_dimensions(kind.optional_type.elem_type)
    elif field == "map_type":
        yield from _type_dimensions(kind.map_type.value_type)
