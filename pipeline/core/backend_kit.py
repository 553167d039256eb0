"""What a backend may use besides torch, in one module, so that a backend imports only the contract and this.

Node walking and description (`walk_nodes`, `describe_node`, and `handles_by_origin` for graphs an exporter
derives from the program); the installed version of a runtime (`package_version`) and a backend's own
(`backend_version`); silencing a runtime's log noise (`quiet_logs_from`, `quiet`); payload containers
(`pack_parts`, `unpack_parts`, `method_part`); `canonical_json`; tensors and torch constants as JSON beside
raw bytes (`TensorTable`, `read_tensor`, `torch_constant`, `read_torch_constant`; `pipeline.core.operands`);
compile-spec parsing and the bounds of spec fields (`parse_compile_spec`, `out_of_range`, `MAX_THREADS`,
`MAX_CALIBRATION_SAMPLES`); `exported_method` (one method's ExportedProgram, for export-only backends);
`check_extractable` (member names and sizes of a zip that a loader of the backend's will unpack); the size
limit on tensors a program from a file may ask for (`MAX_TENSOR_BYTES`, `size_problem`, `sized`, `guarded`,
`UNKNOWN`; `pipeline.core.op_policy`); the dynamic dimensions of an exported program (`input_shapes`,
`is_dynamic`, `narrowed_dimensions`, `InputShape`, `Dynamic`; `pipeline.core.shapes`); attention decomposed
in the fused op's layout (`decomposed_attention`; `pipeline.core.attention`); marking a long step for the
heartbeat of the stage (`progress_step`; `pipeline.core.progress`); and the error types.
`pipeline.core.backend` re-exports all of it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from pipeline.core.attention import decomposed_attention
from pipeline.core.bounded_zip import check_extractable
from pipeline.core.debug_handles import UNKNOWN_HANDLE, handles_by_origin, walk_nodes
from pipeline.core.environment import package_version
from pipeline.core.errors import BackendRuntimeError, LoweringError, UnsupportedOpError, did_you_mean, format_choices
from pipeline.core.hashing import canonical_json
from pipeline.core.op_policy import MAX_TENSOR_BYTES, UNKNOWN, guarded, size_problem, sized
from pipeline.core.operands import TensorTable, read_tensor, read_torch_constant, torch_constant
from pipeline.core.payload import method_part, pack_parts, unpack_parts
from pipeline.core.progress import step as progress_step
from pipeline.core.shapes import UNBOUNDED, Dynamic, InputShape, input_shapes, is_dynamic, narrowed_dimensions
from pipeline.core.signature import argument_leaves
from pipeline.core.source import Frame, NodeSource, describe_node, portable_path
from pipeline.core.spec import (
    MAX_CALIBRATION_SAMPLES,
    MAX_THREADS,
    FieldError,
    SpecError,
    options_of,
    out_of_range,
    parse_compile_spec,
    parse_method_specs,
)
from pipeline.core.tensor_data import tensor_bytes
from pipeline.core.toolchain_output import quiet, quiet_logs_from

FRONTENDS: tuple[str, ...] = ("torchscript", "export")
PROJECT = "lowering-pipeline"

__all__ = [
    "FRONTENDS",
    "progress_step",
    "BackendRuntimeError",
    "FieldError",
    "Frame",
    "LoweringError",
    "MAX_CALIBRATION_SAMPLES",
    "MAX_TENSOR_BYTES",
    "MAX_THREADS",
    "NodeSource",
    "UNKNOWN",
    "SpecError",
    "TensorTable",
    "UNKNOWN_HANDLE",
    "UnsupportedOpError",
    "argument_leaves",
    "backend_version",
    "canonical_json",
    "Dynamic",
    "InputShape",
    "UNBOUNDED",
    "input_shapes",
    "narrowed_dimensions",
    "is_dynamic",
    "decomposed_attention",
    "check_extractable",
    "describe_node",
    "did_you_mean",
    "exported_method",
    "format_choices",
    "guarded",
    "handles_by_origin",
    "method_part",
    "options_of",
    "out_of_range",
    "pack_parts",
    "package_version",
    "parse_compile_spec",
    "parse_method_specs",
    "portable_path",
    "quiet",
    "quiet_logs_from",
    "read_tensor",
    "read_torch_constant",
    "size_problem",
    "sized",
    "tensor_bytes",
    "torch_constant",
    "unpack_parts",
    "walk_nodes",
]


@functools.cache  # one metadata lookup per package set, whatever imports a backend
def backend_version(runtime_packages: tuple[str, ...]) -> str:
    """The pipeline's version, with each runtime package's installed version as a local part:
    ``"0.1.0"`` for none, ``"0.1.0+onnxruntime.1.23.2"`` for ``("onnxruntime",)`` (``missing`` when
    the package is not installed). Reports and artifacts record it; loading does not compare it."""
    project = package_version(PROJECT) or "unknown"
    local = ".".join(f"{name}.{package_version(name) or 'missing'}" for name in runtime_packages)
    return f"{project}+{local}" if local else project


def exported_method(program: Any, method: str, backend: str) -> torch.export.ExportedProgram:
    """``program[method]`` of an export-frontend program, or a `LoweringError` saying that ``backend``
    lowers exported programs only."""
    exported = program.get(method) if isinstance(program, dict) else None
    if not isinstance(exported, torch.export.ExportedProgram):
        raise LoweringError(
            f"Backend {backend!r} lowers exported programs (the export frontend); method {method!r} of a "
            f"{type(program).__name__} is not one."
        )
    return exported
