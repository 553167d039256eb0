"""The onnxruntime backend: each method exported to ONNX, run by an ``onnxruntime.InferenceSession``.

It accepts both frontends and is found through the ``pipeline.backends``
entry point (its class)::

    import pipeline
    lowered = pipeline.to_backend("onnxruntime", model, {"forward": {"intra_op_num_threads": 2}},
                                  example_inputs={"forward": (x,)})
    lowered(x)

or from the command line::

    python -m pipeline backend=onnxruntime backend.compile_spec.forward.graph_optimization_level=extended

How it lowers (`preprocess`): an exported method goes to the dynamo ONNX
exporter (``torch.onnx.export(exported_program, dynamo=True)``); a TorchScript
method to the TorchScript ONNX exporter while the installed torch has it (else
a `pipeline.LoweringError` says so). See `exporters` for both, and for what
the torchscript route cannot do: it needs argument shapes (a traced module
has them; a scripted one takes ``input_shapes`` in the compile spec), and it
fails on models whose scripted graphs branch on runtime state or use ops it has
no ONNX symbolic for (``nn.TransformerEncoder`` is one: lower it with the
export frontend).

Dynamic shapes (export frontend): the dimensions the lowering declares dynamic
stay dynamic in the ONNX model, named as declared (``dim_param`` ``batch``, not
torch.export's ``s77``; see `dynamic_axes`), so one session takes every size in
the bounds; the pipeline checks the bounds before a call reaches it. Both
quantization paths keep them. The torchscript route exports at the shapes of
its example arguments (``input_shapes``), static: the pipeline refuses a
declaration there before any work.

The payload (`pipeline.core.payload`): one ONNX model per method, with a JSON header
holding each method's input-feeding plan and node -> debug-handle map. No
pickle; the same model lowered twice gives the same bytes.

How it runs (`runtime.OnnxRuntimeBackend`): ``compile`` makes one
``InferenceSession`` per method with the session options of its compile spec;
each method's runner feeds the tensors by the ONNX input names and returns
``torch.from_numpy`` of each output, in the method's output-leaf order. Any
onnxruntime failure is a `pipeline.BackendRuntimeError`, with the debug
handles of the failing node when onnxruntime's message names it, else ``-1``.

Compile-spec options (`OnnxRuntimeCompileSpec`, per method; defaults in brackets):

==========================  ===============================================================
``opset``                   ai.onnx opset to export to [20]
``export_optimize``         run the exporter's onnxscript optimizer [true]
``input_shapes``            torchscript frontend: argument shapes to export with [null]
``input_dtypes``            dtypes for ``input_shapes`` [null: float32]
``quantize``                ``none``, ``int8_dynamic`` or ``int8_static`` (see below) [none]
``calibration_samples``     ``int8_static``: random calibration samples besides the examples [8]
``graph_optimization_level`` ``disable``, ``basic``, ``extended``, ``layout``, ``all`` [all]
``intra_op_num_threads``    threads of one op; 0 is onnxruntime's default [0]
``inter_op_num_threads``    threads across ops (``execution_mode=parallel``); 0 default [0]
``execution_mode``          ``sequential`` or ``parallel`` [sequential]
``providers``               execution providers, checked against
                            ``onnxruntime.get_available_providers()`` [["CPUExecutionProvider"]]
``enable_mem_pattern``      pre-plan allocations from the first run's shapes [true]
``enable_cpu_mem_arena``    allocate CPU memory from an arena [true]
``enable_mem_reuse``        reuse buffers within a run [true]
``use_deterministic_compute`` deterministic kernels where onnxruntime has a choice [false]
``allow_spinning``          intra-op threads spin while idle (``session.intra_op.allow_spinning``) [true]
``log_severity_level``      0 verbose .. 4 fatal [3]
==========================  ===============================================================

Quantization (`quantize`): ``int8_dynamic`` stores weights as int8 and
quantizes activations per call from their own range; ``int8_static`` also fixes
every activation's scale ahead of time, calibrated on the method's example
inputs plus ``calibration_samples`` seeded random ones (QDQ format; the scales
are per tensor, not per shape, so a dynamic program calibrated at its example
shapes runs at every size in its bounds). Both use
``onnxruntime.quantization`` on the exported model, and the node map is kept:
nodes the quantizer inserts (QuantizeLinear, DequantizeLinear, ...) map to the
handles of the node they feed. A quantized run verifies against the
``quantized_tolerance`` of ``conf/backend/onnxruntime.yaml``.

Threads: the defaults are onnxruntime's own (one intra-op thread per core,
idle threads spinning), which is fastest when the lowered module is what the
process mostly runs. onnxruntime's pool is separate from torch's: where torch
ops run between calls on a few cores, the spinning workers take cores from
torch (and torch's from them), so set ``allow_spinning=false`` or
``intra_op_num_threads`` to what is free (``benchmarks/bench_backends.py``
measures with both pools the same size and no spinning).

Debug handles: the backend map is ``{"<method>/<ONNX node name>": [handles]}``.
Export frontend: every ONNX node the exporter writes names its FX node, so each
maps to the handles of the FX nodes it implements (through the exporter's
decompositions). Torchscript frontend: nodes are matched by source range and
module scope; nodes with no source (folded weights such as BatchNorm into Conv,
constants) map to nothing.

Profiles (`runtime.SessionMethod.profile`): a separate session with
``enable_profiling`` is made on demand; each ``Node`` kernel event of one run
becomes a `pipeline.ProfileEvent` named ``"<method>/<node> <op type>"``. Nodes
onnxruntime fused are mapped back through the optimized model onnxruntime
writes (the exported nodes whose values they compute); layout nodes it inserts
(``gemm_input_reshape``, ...) have no handles.
"""

from __future__ import annotations

from pipeline.backends.onnxruntime.compile_spec import ExecutionMode, GraphOptimizationLevel, OnnxRuntimeCompileSpec
from pipeline.backends.onnxruntime.preprocess import preprocess
from pipeline.backends.onnxruntime.runtime import OnnxRuntimeBackend

__all__ = ["ExecutionMode", "GraphOptimizationLevel", "OnnxRuntimeBackend", "OnnxRuntimeCompileSpec", "preprocess"]
