"""The ahead-of-time half: each exported method to OpenVINO IR (xml + bin), and each IR node to its handles.

Per method: convert the ExportedProgram (`convert.convert`), give made-up node
names reproducible ones (`mapping.canonical_names`), map every IR node to the
handles of the FX nodes it came from (`mapping.ir_node_handles`), then write
the IR (``openvino.serialize``, in a private temporary directory that is
removed) and pack every method's xml and bin into one payload
(``pack_parts``), with each method's node -> handles map in its header. The
bin goes in from its file, after the converted model is gone, so weights of
several GiB are held once, in the payload (the IR has no size limit of its
own: a 1.1B-parameter decoder's 4.4 GB bin is one part). The
IR's inputs are the method's flattened tensor arguments, in order. The backend
map is ``{"<method>/<IR node name>": [handles]}``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.backends.openvino.compile_spec import NAME, OpenVinoCompileSpec, require_openvino
from pipeline.backends.openvino.convert import Converted, convert, inputs_of
from pipeline.backends.openvino.mapping import canonical_names, ir_node_handles
from pipeline.backends.openvino.received_ir import check_xml
from pipeline.core.backend import LoweringError, PreprocessResult, handles_by_origin, pack_parts, progress_step


def preprocess(
    program: Any, specs: Mapping[str, OpenVinoCompileSpec], generate_debug_handles: Callable
) -> PreprocessResult:
    require_openvino()
    methods: dict[str, Any] = {}
    parts: dict[str, bytes | Path] = {}
    backend_map: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="pipeline-openvino-") as scratch:
        for method in specs:
            exported = program.get(method) if isinstance(program, dict) else None
            if not isinstance(exported, torch.export.ExportedProgram):
                raise LoweringError(
                    f"Backend {NAME!r}: cannot convert method {method!r} of a {type(program).__name__}; expected a "
                    "dict {method: torch.export.ExportedProgram} (the export frontend)."
                )
            folder = Path(scratch) / method
            folder.mkdir()
            methods[method], parts[f"{method}.xml"], parts[f"{method}.bin"] = _ir(
                exported, method, generate_debug_handles, folder
            )
            backend_map.update({f"{method}/{node}": found for node, found in methods[method]["node_handles"].items()})
        return PreprocessResult(pack_parts(NAME, {"methods": methods}, parts), backend_map)


def _ir(
    exported: torch.export.ExportedProgram, method: str, generate_debug_handles: Callable, folder: Path
) -> tuple[dict[str, Any], bytes, Path]:
    """One method's header entry, its IR's xml, and the file of its weights in ``folder``; the converted
    model goes when this returns, before the payload is made."""
    handles = generate_debug_handles(exported.graph, method=method)
    with progress_step("openvino: convert", method=method):
        converted = convert(exported, method)
    origins = handles_by_origin(converted.graph.nodes, {node.name: handle for node, handle in handles.items()})
    canonical_names(converted.model, method)
    node_handles = ir_node_handles(converted.model, origins)
    flat = feeding_plan(exported, converted)
    with progress_step("openvino: serialize", method=method):
        xml, weights = serialize(converted.model, folder)
    check_xml(xml, f"Backend {NAME!r}: the IR of method {method!r}")  # the loader's check
    return {"flat": flat, "node_handles": node_handles}, xml, weights


def feeding_plan(program: torch.export.ExportedProgram, converted: Converted) -> bool:
    """Whether the method's arguments are its IR inputs already, in order: one tensor each, nothing nested
    and no keyword arguments (the runner then skips flattening them)."""
    in_spec = program.call_spec.in_spec
    args_spec = in_spec.child(0) if in_spec is not None and in_spec.num_children else None
    return bool(
        args_spec is not None
        and in_spec.child(1).num_children == 0
        and all(args_spec.child(i).is_leaf() for i in range(args_spec.num_children))
        and args_spec.num_children == len(inputs_of(converted.graph))
    )


def serialize(model: Any, folder: Path) -> tuple[bytes, Path]:
    """The IR's xml bytes and the path of its bin in ``folder``, without the conversion's fused-names
    runtime info."""
    import openvino
    from openvino._offline_transformations import apply_fused_names_cleanup

    apply_fused_names_cleanup(model)
    xml, weights = folder / "model.xml", folder / "model.bin"
    openvino.serialize(model, str(xml), str(weights))
    return xml.read_bytes(), weights
