"""External data in an ONNX model: where it can hide, and the rule that keeps it inside the payload.

An ONNX tensor may keep its bytes outside the model: ``data_location =
EXTERNAL``, with ``external_data`` entries naming a ``location`` (a file), an
offset and a length. onnxruntime resolves the location against the model's
folder, or, for a model given as bytes as a payload's is, against the working
directory: a received model whose initializer named ``secret.bin`` made it read
that file (with ``graph_optimization_level=disable``; absolute and ``../``
names were refused only because the optimizer happened to run first). So a
payload's model may hold no such tensor that points outside the payload,
wherever a tensor can stand:

* the graph's initializers and sparse initializers (values and indices),
* node attributes of type TENSOR, TENSORS, SPARSE_TENSOR and SPARSE_TENSORS,
* the graphs inside attributes (``If``, ``Loop``, ``Scan`` bodies), nested to any depth,
* the nodes of the model's functions, and its training-info graphs.

`external_tensors` lists each one with its place and entries; `check_model`
refuses a model that has any, whatever the session's optimization level, and
bytes that are not an ONNX model at all (onnxruntime would also take its own
ORT format; the session is told to read ONNX only, `ONNX_ONLY`).

Models past 2 GiB (the protobuf limit) are the one exception, and their data
never leave the artifact. A method whose weights pass `EXTERNAL_DATA_ABOVE`
(1 GiB) is saved by the exporter's own writer (``onnx_ir.save`` with
``external_data``) as a small model plus one weights file, and the file goes
into the payload as the part `weights_part` names (``forward.weights``). Every
location in the model must be that part's name, exactly (so no absolute path, no
``..``, no other file), with offset and length inside it, and nothing else among
a tensor's external-data keys; `check_model` refuses anything else, when
lowering and when loading. The session then gets the part from memory
(`in_memory_weights`: ``add_external_initializers_from_files_in_memory``), so
onnxruntime finds every location among the buffers it was given and opens no
file. Smaller models stay one protobuf with all their data, as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.core.backend import LoweringError, format_choices

# A method whose initializers hold more bytes than this keeps them as external data: well below protobuf's
# 2 GiB, which also has to hold the graph. Below it the payload's model is one protobuf, as it always was.
EXTERNAL_DATA_ABOVE = 1 << 30

# The session config entry that makes onnxruntime read the bytes as an ONNX model and nothing else.
ONNX_ONLY = ("session.load_model_format", "ONNX")


def weights_part(method: str) -> str:
    """The payload part that holds a method's external data, and the only location its model may name (a
    method name is an identifier, so it has no dot: no method's model part can be called so)."""
    return f"{method}.weights"


def check_model(model: bytes, what: str, parts: Mapping[str, int] | None = None) -> None:
    """A `LoweringError` naming ``what`` unless ``model`` is an ONNX model whose tensors all hold their own
    data or keep it in one of ``parts`` (``{payload part name: size}``), inside the part."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.ModelProto.FromString(model)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise LoweringError(f"{what} is not an ONNX model: {error}") from None
    parts = parts or {}
    for where, entries in external_tensors(proto):
        problem = _outside(entries, parts)
        if problem:
            allowed = (
                f"it may name only the payload's part {format_choices(parts)}, exactly"
                if parts
                else "this payload carries no weights part, so its model must hold all its data"
            )
            raise LoweringError(
                f"{what}: tensor {where} keeps its data outside the model: {problem}. A payload's model keeps "
                f"external data only inside the artifact ({allowed}), because onnxruntime would otherwise read a "
                "file from wherever the model is loaded."
            )


def in_memory_weights(options: Any, parts: Mapping[str, Any]) -> None:
    """Hand each weights part to the session from memory, under the location its model names: onnxruntime
    then reads no file (it copies what it needs while the session is made)."""
    if parts:
        options.add_external_initializers_from_files_in_memory(
            list(parts), list(parts.values()), [len(data) for data in parts.values()]
        )


_EXTERNAL_KEYS = {"location", "offset", "length"}  # what onnx_ir writes; "basepath" or "checksum" is refused


def _outside(entries: dict[str, str], parts: Mapping[str, int]) -> str:
    """Why external-data ``entries`` do not stay inside ``parts``, or ``""``."""
    location = entries.get("location", "")
    if location not in parts:
        kind = (
            "an absolute path"
            if location.startswith(("/", "\\")) or location[1:3] in (":/", ":\\")
            else "a path that leaves its folder"
            if ".." in location.replace("\\", "/").split("/")
            else "a name the payload does not carry"
        )
        return f"its location {location!r} is {kind}"
    unknown = sorted(set(entries) - _EXTERNAL_KEYS)
    if unknown:
        return f"it has external-data keys {unknown}; only {sorted(_EXTERNAL_KEYS)} are allowed"
    try:
        offset, length = int(entries.get("offset", "0")), int(entries["length"])
    except (KeyError, ValueError):
        return f"its offset and length must be integers, not {entries.get('offset')!r} and {entries.get('length')!r}"
    if offset < 0 or length < 0 or offset + length > parts[location]:
        return f"bytes {offset}..{offset + length} are outside part {location!r} ({parts[location]} bytes)"
    return ""


def external_tensors(model: Any) -> list[tuple[str, dict[str, str]]]:
    """``(where, {key: value})`` of every tensor of ``model`` (an ``onnx.ModelProto``) with external data: its
    place in the model and its external-data entries (``location``, ``offset``, ``length``, ...)."""
    found = []
    for where, tensor in _tensors(model):
        if tensor.data_location == tensor.EXTERNAL or len(tensor.external_data):
            found.append((where, {entry.key: entry.value for entry in tensor.external_data}))
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
