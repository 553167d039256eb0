"""The ahead-of-time half: ``preprocess`` exports each method to ONNX and packs the models.

Per method: validate the compile spec (and its execution providers), export
the method (`exporters.export_program` or `exporters.export_torchscript`),
quantize it if the spec says so (`quantize.quantize`), check that it holds all
its data or keeps it in its own weights part (`external_data.check_model`, the
loader's own check), then pack all models into one payload
(`pipeline.core.payload.pack_parts`), with the feeding plan and node -> handles
map of each in the header. A model past `external_data.EXTERNAL_DATA_ABOVE`
is followed by its weights part (``forward.weights``), copied from the
exporter's file in a private directory that goes when the payload is made.
The backend map is ``{"<method>/<ONNX node name>": [handles]}``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.backends.onnxruntime.compile_spec import NAME, OnnxRuntimeCompileSpec, Quantize, check_providers
from pipeline.backends.onnxruntime.exporters import ExportedMethod, export_program, export_torchscript
from pipeline.backends.onnxruntime.external_data import check_model, weights_part
from pipeline.backends.onnxruntime.quantize import quantize
from pipeline.core.backend import LoweringError, PreprocessResult, pack_parts, progress_step


def preprocess(
    program: Any, specs: Mapping[str, OnnxRuntimeCompileSpec], generate_debug_handles: Callable
) -> PreprocessResult:
    for method, spec in specs.items():
        check_providers(spec, method)
    with tempfile.TemporaryDirectory(prefix="pipeline-ort-") as scratch:
        exported = {
            method: _exported(program, method, spec, generate_debug_handles, Path(scratch))
            for method, spec in specs.items()
        }
        parts: dict[str, bytes | Path] = {}
        for method, e in exported.items():
            parts[method] = e.model
            if e.weights is not None:
                parts[weights_part(method)] = e.weights
        payload = pack_parts(NAME, {"methods": {m: e.meta() for m, e in exported.items()}}, parts)
    backend_map = {
        f"{method}/{node}": handles for method, e in exported.items() for node, handles in e.node_handles.items()
    }
    notes = {method: {"exported_after": e.retried_on} for method, e in exported.items() if e.retried_on}
    return PreprocessResult(payload, backend_map, notes)


def _exported(
    program: Any, method: str, spec: OnnxRuntimeCompileSpec, generate_debug_handles: Callable, scratch: Path
) -> ExportedMethod:
    """One method as ONNX, quantized if its spec says so, and checked as the loader will check it."""
    if isinstance(program, torch.jit.ScriptModule):
        program.eval()  # inference: branches on `training` export as in eval mode
        with progress_step("onnxruntime: torch.onnx.export (torchscript)", method=method):
            exported = export_torchscript(program, method, spec, generate_debug_handles)
    elif isinstance(program, dict) and isinstance(program.get(method), torch.export.ExportedProgram):
        with progress_step("onnxruntime: torch.onnx.export (dynamo)", method=method):
            exported = export_program(program[method], method, spec, generate_debug_handles, scratch)
    else:
        raise LoweringError(
            f"Backend {NAME!r}: cannot export method {method!r} of a {type(program).__name__}; expected a "
            "torch.jit.ScriptModule or a dict {method: torch.export.ExportedProgram}."
        )
    if spec.quantize is not Quantize.none:
        exported = quantize(exported, spec, method)
    weights = {} if exported.weights is None else {weights_part(method): exported.weights.stat().st_size}
    check_model(exported.model, f"Backend {NAME!r}: the exported model of method {method!r}", weights)
    return exported
