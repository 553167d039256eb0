"""The nodes of an XNNPACK delegate, read back from the bytes XNNPACK's preprocess wrote.

A delegate's payload is an ``XNNHeader`` followed by a flatbuffer ``XNNGraph``
(schema ``executorch/backends/xnnpack/serialization/schema.fbs``) whose
``xnodes`` are the XNNPACK subgraph's nodes in definition order, each with the
ExecuTorch debug handle of the edge node it was made from. `delegate_nodes`
decodes it with the ``flatc`` ExecuTorch ships and its own schema (in a private
temporary directory, removed afterwards) and returns ``[(node type, debug
handle)]``; the XNNPACK runtime creates its operators from these nodes in this
order, which is what lets `profile` tie the runtime's per-operator timings back
to them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

from pipeline.backends.executorch.compile_spec import NAME
from pipeline.backends.executorch.installed import executorch_module
from pipeline.core.backend import LoweringError

_PREFIX = "XNN"
# flatc writes non-finite floats (a clamp's output_min/max) as bare inf/nan, which JSON has not.
_NON_FINITE = re.compile(r"(?<=[:\[,\s])(-?)(inf|nan)\b")


def delegate_nodes(processed: bytes) -> list[tuple[str, int]]:
    """``[(node type without the XNN prefix, ExecuTorch debug handle)]`` of one XNNPACK delegate."""
    serialize = executorch_module("executorch.backends.xnnpack.serialization.xnnpack_graph_serialize")
    flatbuffer = executorch_module("executorch.exir._serialize._flatbuffer")
    header = serialize.XNNHeader.from_bytes(bytes(processed[: serialize.XNNHeader.EXPECTED_LENGTH]))
    graph_bytes = bytes(processed[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size])
    with tempfile.TemporaryDirectory(prefix="pipeline-executorch-xnn-") as directory:
        schema = os.path.join(directory, "schema.fbs")
        graph = os.path.join(directory, "graph.bin")
        with open(schema, "wb") as handle:
            handle.write(serialize._get_schema_bytes())
        with open(graph, "wb") as handle:
            handle.write(graph_bytes)
        try:
            flatbuffer._flatc_decompile(directory, schema, graph, ["--raw-binary"])
            with open(os.path.join(directory, "graph.json")) as handle:
                text = handle.read()
        except Exception as error:
            raise LoweringError(f"Backend {NAME!r}: cannot read back an XNNPACK delegate's graph: {error}") from error
    decoded = json.loads(_NON_FINITE.sub(_json_number, text))
    return [(_short(node["xnode_union_type"]), int(node["debug_handle"])) for node in decoded.get("xnodes", [])]


def _json_number(match: re.Match[str]) -> str:
    return {"inf": f"{match[1]}Infinity", "nan": "NaN"}[match[2]]


def _short(node_type: str) -> str:
    return node_type[len(_PREFIX) :] if node_type.startswith(_PREFIX) else node_type
