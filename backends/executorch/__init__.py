"""The executorch backend: each method lowered to an ExecuTorch program (``.pte``), run by ExecuTorch.

ExecuTorch is PyTorch's on-device runtime and the living successor of the
TorchScript backend API this project descends from: a partitioner hands the
nodes a delegate supports (here XNNPACK's CPU kernels) to that delegate, and
the rest run on ExecuTorch's portable kernels. It is an optional extra::

    pip install 'lowering-pipeline[executorch]'

Without it the backend is still listed, ``is_available()`` is False, and
lowering to it is a `pipeline.LoweringError` naming that command. It accepts
the export frontend and is found through the ``pipeline.backends`` entry point::

    import pipeline
    lowered = pipeline.to_backend("executorch", model, {"forward": {"threads": 1}},
                                  example_inputs={"forward": (x,)})
    lowered(x)

or from the command line::

    python -m pipeline backend=executorch backend.compile_spec.forward.quantize=int8_dynamic

How it lowers (`preprocess`): ``executorch.exir.to_edge_transform_and_lower``
with the ``XnnpackPartitioner`` (or none), then ``to_executorch()``; the
``.pte`` is the program's flatbuffer (`program`). A kernel left outside the
delegate that the installed runtime lacks is a lowering error naming it, not a
failure when the program is loaded. With ``quantize``, the method is first
quantized to int8 through PT2E with ExecuTorch's ``XNNPACKQuantizer``
(symmetric, per-channel weights; `quantize`): ``int8_dynamic`` quantizes the
weights and, at each call, the activations from their own range;
``int8_static`` fixes the activation ranges ahead of time from the example
inputs plus ``calibration_samples`` seeded random inputs of the same shapes.

The payload (`pipeline.core.payload`): one ``.pte`` per method, with a JSON
header holding each method's instruction table (below). Neither is code that
Python runs: loading an artifact needs no trust opt-in. The same model lowered
twice gives the same bytes.

How it runs (`runtime.ExecuTorchBackend`): ``compile`` checks each ``.pte``
(`pte_check`: the extended header, segments inside the file and not
overlapping, every text the runtime may log, the XNNPACK blobs' headers and
named keys; ExecuTorch's Python bindings abort the process on a log line that
is not UTF-8) and loads it with ``executorch.runtime.Runtime``, which runs its
flatbuffer verifier; a call passes the argument tensors to the
loaded method and returns its outputs. The shapes are those of the example
inputs, except the dimensions a lowering declares dynamic (`dynamic`): those
are upper-bounded, every tensor planned for the dimension's maximum, and
resized at each call. A quantized method keeps static shapes only
(``dynamic_refusal``).
A kernel that fails (an index out of range) is a `pipeline.BackendRuntimeError`
naming the instruction, with the handles of the FX nodes it runs, and so the
source line: ExecuTorch raises only an error code, so the call is run again on a
separate copy of the program with ETDump on, whose events end at that instruction.

Compile-spec options (`ExecuTorchCompileSpec`, per method; defaults in brackets):

========================  ===================================================================
``partitioner``           ``xnnpack`` (delegate what XNNPACK supports) or ``none``
                          (portable kernels only) [xnnpack]
``threads``               size of ExecuTorch's thread pool, one per process; 0 leaves it as
                          it is (one thread per core) [0]
``quantize``              ``none``, ``int8_dynamic`` or ``int8_static``; needs
                          ``partitioner=xnnpack`` [none]
``calibration_samples``   ``int8_static``: random inputs that calibrate with the example
                          inputs [16]
========================  ===================================================================

Threads: every XNNPACK delegate holds on to the pool it was loaded with, and
resizing the pool under it crashes the process, so a ``threads`` that differs
from the pool's size is applied only while no executorch method is loaded,
and is otherwise refused naming the size (set it in the first module loaded).

Debug handles and the partition (`partition`): the backend map has a key per
instruction, ``"<method>/<instruction>:<kernel or delegate>"``, and one per
node inside an XNNPACK delegate,
``"<method>/<instruction>:XnnpackBackend/<index>:<node type>"``, each mapped to
the handles of the FX nodes it runs. `partition_summary` gives, per method,
the delegates and portable kernels with their handles and how many FX nodes
went to each.

Profiles (`profile`): from ETDump. Portable kernels are timed per instruction;
inside an XNNPACK delegate each XNNPACK operator is timed (to the microsecond,
as XNNPACK reports it) and mapped to the delegate node it runs, and so to the
FX nodes' handles.
"""

from __future__ import annotations

from pipeline.backends.executorch.compile_spec import ExecuTorchCompileSpec, Partitioner, Quantize
from pipeline.backends.executorch.partition import partition_summary
from pipeline.backends.executorch.preprocess import preprocess
from pipeline.backends.executorch.runtime import ExecuTorchBackend

__all__ = ["ExecuTorchBackend", "ExecuTorchCompileSpec", "Partitioner", "Quantize", "partition_summary", "preprocess"]
