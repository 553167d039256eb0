"""External data in an ONNX model: where it can hide, and the rule that a payload holds none.

An ONNX tensor may keep its bytes outside the model: ``data_location =
EXTERNAL``, with ``external_data`` entries naming a ``location`` (a file), an
offset and a length. onnxruntime resolves the location against the model's
folder, or, for a model given as bytes as a payload's is, against the working
directory: a received model whose initializer named ``secret.bin`` made it read
that file (with ``graph_optimization_level=disable``; absolute and ``../``
names were refused only because the optimizer happened to run first). So a
payload's model may hold no such tensor, wherever a tensor can stand:

* the graph's initializers and sparse initializers (values and indices),
* node attributes of type TENSOR, TENSORS, SPARSE_TENSOR and SPARSE_TENSORS,
* the graphs inside attributes (``If``, ``Loop``, ``Scan`` bodies), nested to any depth,
* the nodes of the model's functions, and its training-info graphs.

`external_tensors` lists each one with its place and location; `check_model`
refuses a model that has any, whatever the session's optimization level, and
bytes that are not an ONNX model at all (onnxruntime would also take its own
ORT format; the session is told to read ONNX only, `ONNX_ONLY`).

The seam for models past 2 GiB (the protobuf limit, so the exporter writes their
weights as external data): such data will live inside the artifact, as payload
parts, and be handed to onnxruntime from memory
(``SessionOptions.add_external_initializers_from_files_in_memory``, one buffer
per location), never as a path. `check_model` takes ``parts``, the names of the
payload parts a location may resolve to; today that set is always empty, so
every location is refused.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from pipeline.core.backend import LoweringError

# The session config entry that makes onnxruntime read the bytes as an ONNX model and nothing else.
ONNX_ONLY = ("session.load_model_format", "ONNX")


def check_model(model: bytes, what: str, parts: Collection[str] = ()) -> None:
    """A `LoweringError` naming ``what`` unless ``model`` is an ONNX model whose tensors all hold their own
    data, or name as their location one of ``parts`` (none yet: see the module's docstring)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.ModelProto.FromString(model)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise LoweringError(f"{what} is not an ONNX model: {error}") from None
    outside = [(where, location) for where, location in external_tensors(proto) if location not in parts]
    if outside:
        where, location = outside[0]
        more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
        raise LoweringError(
            f"{what}: tensor {where} keeps its data outside the model, in {location!r}{more}; a payload's model "
            "must hold all its data, because onnxruntime would read that file from wherever the model is loaded. "
            "Models whose weights pass 2 GiB (which ONNX keeps as external data) are not supported yet."
        )


def external_tensors(model: Any) -> list[tuple[str, str]]:
    """``(where, location)`` of every tensor of ``model`` (an ``onnx.ModelProto``) with external data."""
    found = []
    for where, tensor in _tensors(model):
        if tensor.data_location == tensor.EXTERNAL or len(tensor.external_data):
            entries = {entry.key: entry.value for entry in tensor.external_data}
            found.append((where, entries.get("location", "")))
    return found


def _tensors(model: Any) -> Iterator[tuple[str, Any]]:
    yield from _graph(model.graph, "graph")
    for function in model.functions:
        for node in function.node:
            yield from _node(node, f"function {function.name}")
    for i, info in enumerate(model.training_info):
        yield from _graph(info.initialization, f"training_info[{i}].initialization")
        yield from _graph(info.algorithm, f"training_info[{i}].algorithm")


def _graph(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    for tensor in graph.initializer:
        yield f"{where}.initializer {tensor.name!r}", tensor
    for sparse in graph.sparse_initializer:
        yield from _sparse(sparse, f"{where}.sparse_initializer {sparse.values.name!r}")
    for node in graph.node:
        yield from _node(node, where)


def _node(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    for attribute in node.attribute:
        at = f"{where}, node {node.name or node.op_type!r}, attribute {attribute.name!r}"
        if attribute.HasField("t"):
            yield at, attribute.t
        for tensor in attribute.tensors:
            yield at, tensor
        if attribute.HasField("sparse_tensor"):
            yield from _sparse(attribute.sparse_tensor, at)
        for sparse in attribute.sparse_tensors:
            yield from _sparse(sparse, at)
        if attribute.HasField("g"):
            yield from _graph(attribute.g, f"{at} (graph)")
        for i, graph in enumerate(attribute.graphs):
            yield from _graph(graph, f"{at} (graph {i})")


def _sparse(sparse: Any, where: str) -> Iterator[tuple[str, Any]]:
    yield f"{where} values", sparse.values
    yield f"{where} indices", sparse.indices
