"""The openvino backend: each exported method converted to OpenVINO IR, run by the CPU plugin.

An optional extra (``pip install 'lowering-pipeline[openvino]'``). Without it the
backend is still listed, its ``is_available()`` is False, and lowering to it
fails with an error that names the extra. It accepts the export frontend and is
found through the ``pipeline.backends`` entry point (its class)::

    import pipeline
    lowered = pipeline.to_backend("openvino", model, {"forward": {"threads": 1}},
                                  example_inputs={"forward": (x,)})
    lowered(x)

or from the command line::

    python -m pipeline backend=openvino backend.compile_spec.forward.threads=1

How it lowers (`preprocess`): the steps of
``openvino.convert_model(exported_program)`` (see `convert`), keeping what
maps IR nodes back to FX nodes (see `mapping`).

The payload: each method's IR, its ``.xml`` (the graph) and ``.bin`` (the
weights), with a JSON header holding each method's input-feeding plan and IR
node -> debug-handle map (``pack_parts``). It is data, not code: loading it
needs no trust opt-in. The same program lowered twice gives the same bytes.

How it runs (`runtime.OpenVinoBackend`): ``compile`` compiles each method's IR
for the CPU and creates one ``InferRequest`` per method; its runner sets each
argument on it as a tensor sharing the argument's memory, runs it and returns
copies of its outputs. Any OpenVINO failure is a `pipeline.BackendRuntimeError`.

Compile-spec options (`OpenVinoCompileSpec`, per method; defaults in brackets):

=========================  ===============================================================
``inference_precision``    ``f32``, ``bf16`` or ``f16`` (``INFERENCE_PRECISION_HINT``) [f32]
``performance_hint``       ``LATENCY``, ``THROUGHPUT`` or ``CUMULATIVE_THROUGHPUT`` [LATENCY]
``num_streams``            parallel inference streams; 0: as the hint chooses [0]
``threads``                CPU threads (``INFERENCE_NUM_THREADS``); 0: the plugin's default [0]
=========================  ===============================================================

Precision: on CPUs with AVX-512 BF16 or AMX, OpenVINO's own default is bf16,
about 1e-3 from eager on the zoo models; here the default is f32 (about 1e-7).
A compiled model that reports another precision than the spec's (the plugin
falls back to f32 where the CPU lacks bf16 or f16) is rejected at compile
time, so the spec recorded with the run is the precision it ran at; the
handle's ``inference_precision`` is what the compiled model reports.

Debug handles: the backend map is ``{"<method>/<IR node name>": [handles]}``:
every IR node that does work maps to the handles of the FX nodes it came from,
including nodes fused while converting (their ``fused_names``).

Profiles (`runtime.RequestMethod.profile`): the method is compiled once more
with ``PERF_COUNT``; each node the plugin executed in one call becomes a
`pipeline.ProfileEvent` named ``"<method>/<node> <type>"``, with the handles of
every IR node it executes (the runtime model's ``originalLayersNames``: a
``FullyConnected`` that fused MatMul, Add and GELU maps to all three).
"""

from __future__ import annotations

from pipeline.backends.openvino.compile_spec import InferencePrecision, OpenVinoCompileSpec, PerformanceHint
from pipeline.backends.openvino.preprocess import preprocess
from pipeline.backends.openvino.runtime import OpenVinoBackend

__all__ = ["InferencePrecision", "OpenVinoBackend", "OpenVinoCompileSpec", "PerformanceHint", "preprocess"]
