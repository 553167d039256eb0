"""The torchscript backend: TorchScript itself, frozen and optimized for inference.

It accepts the torchscript frontend (a scripted or traced module) and is found
through the ``pipeline.backends`` entry point (its class)::

    import pipeline
    lowered = pipeline.to_backend("torchscript", model, {"forward": {}}, frontend="torchscript",
                                  example_inputs={"forward": (x,)})

or from the command line::

    python -m pipeline backend=torchscript frontend=torchscript

How it lowers (`preprocess`): ``torch.jit.freeze`` the module (every lowered
method is preserved), then ``torch.jit.save`` it to bytes. How it runs
(`runtime.TorchScriptBackend`): ``torch.jit.load`` the bytes, then
``torch.jit.optimize_for_inference`` (its MKLDNN weights cannot be saved, so it
runs at each load, in milliseconds), then call the method with grad mode off
and flatten its output with ``torch.utils._pytree``.

The payload is a TorchScript archive (a zip). Its constants and attributes are
pickled data, which ``torch.jit.load`` reads with TorchScript's own restricted
unpickler: it rebuilds tensors and TorchScript types and runs TorchScript
code (a class's ``__setstate__``, for one), not arbitrary Python. Still, loading
runs code from the file, so the backend declares ``carries_code`` and
``pipeline.load_lowered`` refuses its artifacts unless called with
``trust_code=True``. The archive also holds the node -> handle map as
the extra file ``pipeline/backend_map.json``. Two lowerings of one model give
archives that differ in TorchScript's per-process class-name mangling
(``___torch_mangle_N``), so the payload is not byte-reproducible.

Compile-spec options (`TorchScriptCompileSpec`, per method, but every method
must agree, since both act on the whole module):

==========================  ===============================================================
``freeze``                  ``torch.jit.freeze`` when lowering [true]
``optimize_for_inference``  ``torch.jit.optimize_for_inference`` when loading; needs
                            ``freeze`` [true]
==========================  ===============================================================

There is no fuser option: TorchScript's fusers are process-wide switches
(``torch.jit.fuser``), not a property of one module, and the CPU fuser is off
in PyTorch builds by default.

Debug handles: the backend map is ``{"<method>/<index>": [handles]}`` over the
nodes of the optimized graph in program order; `mapping` says how nodes are
matched (by source range and module, then by data flow for nodes the passes
create, such as the ``matmul`` + ``add`` of a frozen ``linear``). A failing call
reports the handles of the ops on the innermost line of TorchScript's traceback.

Profiles (`runtime.ScriptMethod.profile`): ``torch.autograd.profiler`` records
the ops the interpreter runs; each top-level op is aligned with the next graph
node of the same name and reported as ``"<method>/<index> <op>"`` with that
node's handles (``"<method>/? <op>"`` and no handles if none aligns).
"""

from __future__ import annotations

from pipeline.backends.torchscript.compile_spec import TorchScriptCompileSpec
from pipeline.backends.torchscript.preprocess import preprocess
from pipeline.backends.torchscript.runtime import TorchScriptBackend

__all__ = ["TorchScriptBackend", "TorchScriptCompileSpec", "preprocess"]
