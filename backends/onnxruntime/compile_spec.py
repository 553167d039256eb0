"""`OnnxRuntimeCompileSpec`: the options of one lowered method, and the session options they make.

They arrive as a plain dict ``{option: value}`` (``{}`` means all defaults);
values of the enum options are their names as strings::

    pipeline.to_backend("onnxruntime", model, {"forward": {"intra_op_num_threads": 2,
                                                           "graph_optimization_level": "extended"}}, ...)
"""

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pipeline.backends.onnxruntime.external_data import ONNX_ONLY
from pipeline.core.backend import (
    MAX_CALIBRATION_SAMPLES,
    MAX_TENSOR_BYTES,
    MAX_THREADS,
    LoweringError,
    format_choices,
    out_of_range,
)

if TYPE_CHECKING:
    import onnxruntime

NAME = "onnxruntime"
DEFAULT_OPSET = 20


class GraphOptimizationLevel(enum.Enum):
    """ORT's graph optimization levels (``onnxruntime.GraphOptimizationLevel``)."""

    disable = "disable"
    basic = "basic"
    extended = "extended"
    layout = "layout"
    all = "all"


class Quantize(enum.Enum):
    """int8 quantization of the exported model (`quantize`): none, weights only with activations
    quantized per call, or weights and activations with scales calibrated ahead of time."""

    none = "none"
    int8_dynamic = "int8_dynamic"
    int8_static = "int8_static"


class ExecutionMode(enum.Enum):
    """Run independent nodes one at a time, or in parallel on the inter-op pool."""

    sequential = "sequential"
    parallel = "parallel"


@dataclass
class OnnxRuntimeCompileSpec:
    # -- used when the method is exported to ONNX (preprocess) --
    # The ai.onnx opset to export to: 7 to the installed onnx's newest.
    opset: int = DEFAULT_OPSET
    # Run the ONNX exporter's own graph optimizer (onnxscript) on the exported model.
    export_optimize: bool = True
    # Torchscript frontend only: the shapes (and dtypes, default float32) of the method's tensor
    # arguments, to export with. Not needed for traced modules, whose graphs carry them. Sizes >= 0, each
    # tensor at most MAX_TENSOR_BYTES (8 GiB): the exporter makes one of each.
    input_shapes: list[list[int]] | None = None
    input_dtypes: list[str] | None = None
    # int8 quantization of the exported model, with onnxruntime.quantization (see quantize.py).
    quantize: Quantize = Quantize.none
    # int8_static: random calibration samples besides the example inputs (seeded, like the examples);
    # 0..MAX_CALIBRATION_SAMPLES (10,000).
    calibration_samples: int = 8
    # -- the InferenceSession (compile) --
    graph_optimization_level: GraphOptimizationLevel = GraphOptimizationLevel.all
    intra_op_num_threads: int = 0  # 0: ORT's default (one per physical core); 0..MAX_THREADS (256)
    inter_op_num_threads: int = 0  # 0: ORT's default; used with execution_mode=parallel; 0..MAX_THREADS (256)
    execution_mode: ExecutionMode = ExecutionMode.sequential
    # Checked against onnxruntime.get_available_providers() when lowering and when loading.
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    enable_mem_pattern: bool = True
    enable_cpu_mem_arena: bool = True
    enable_mem_reuse: bool = True
    use_deterministic_compute: bool = False
    # Let intra-op threads spin while waiting for work: lower latency, more CPU burnt.
    allow_spinning: bool = True
    log_severity_level: int = 3  # 0 verbose, 1 info, 2 warning, 3 error, 4 fatal; 0..4

    def __post_init__(self) -> None:
        bounds = {
            "intra_op_num_threads": (0, MAX_THREADS, "0: onnxruntime's default"),
            "inter_op_num_threads": (0, MAX_THREADS, "0: onnxruntime's default"),
            "calibration_samples": (0, MAX_CALIBRATION_SAMPLES, ""),
            "log_severity_level": (0, 4, "0 verbose .. 4 fatal"),
        }
        problems = [
            f"{name} {problem}"
            for name, (low, high, meaning) in bounds.items()
            for problem in [out_of_range(getattr(self, name), low, high, meaning)]
            if problem
        ]
        max_opset = _max_onnx_opset()
        if not 7 <= self.opset <= max_opset:
            problems.append(f"opset must be in 7..{max_opset} (the installed onnx's range), not {self.opset}")
        if not self.providers:
            problems.append("providers must name at least one execution provider")
        dtypes = self.input_dtypes or []
        for i, shape in enumerate(self.input_shapes or []):
            dtype = getattr(torch, dtypes[i], None) if i < len(dtypes) else torch.float32
            itemsize = dtype.itemsize if isinstance(dtype, torch.dtype) else 1  # unknown: refused below
            if any(size < 0 for size in shape) or math.prod(shape) * itemsize > MAX_TENSOR_BYTES:
                problems.append(
                    f"input_shapes[{i}] {shape} must have sizes >= 0 and at most {MAX_TENSOR_BYTES} "
                    "bytes (MAX_TENSOR_BYTES)"
                )
        if self.input_dtypes is not None:
            unknown = [d for d in self.input_dtypes if not isinstance(getattr(torch, d, None), torch.dtype)]
            if unknown:
                problems.append(f"input_dtypes names unknown torch dtypes {unknown}")
            if self.input_shapes is None or len(self.input_dtypes) != len(self.input_shapes):
                problems.append("input_dtypes needs input_shapes of the same length")
        if problems:
            raise LoweringError("; ".join(problems) + ".")


def check_providers(spec: OnnxRuntimeCompileSpec, method: str) -> None:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    missing = [p for p in spec.providers if p not in available]
    if missing:
        raise LoweringError(
            f"Backend {NAME!r}, method {method!r}: execution provider(s) {missing} are not available in this "
            f"onnxruntime ({onnxruntime.__version__}); available: {format_choices(available)}."
        )


def session_options(spec: OnnxRuntimeCompileSpec) -> "onnxruntime.SessionOptions":
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        GraphOptimizationLevel.disable: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        GraphOptimizationLevel.basic: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        GraphOptimizationLevel.extended: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        GraphOptimizationLevel.layout: ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT,
        GraphOptimizationLevel.all: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[spec.graph_optimization_level]
    options.execution_mode = {
        ExecutionMode.sequential: ort.ExecutionMode.ORT_SEQUENTIAL,
        ExecutionMode.parallel: ort.ExecutionMode.ORT_PARALLEL,
    }[spec.execution_mode]
    options.intra_op_num_threads = spec.intra_op_num_threads
    options.inter_op_num_threads = spec.inter_op_num_threads
    options.enable_mem_pattern = spec.enable_mem_pattern
    options.enable_cpu_mem_arena = spec.enable_cpu_mem_arena
    options.enable_mem_reuse = spec.enable_mem_reuse
    options.use_deterministic_compute = spec.use_deterministic_compute
    options.log_severity_level = spec.log_severity_level
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spec.allow_spinning else "0")
    options.add_session_config_entry(*ONNX_ONLY)  # a payload is an ONNX model, checked as one (external_data)
    return options


def _max_onnx_opset() -> int:
    import onnx

    return onnx.defs.onnx_opset_version()
