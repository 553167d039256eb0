"""Dynamic dimensions through ExecuTorch: upper-bounded tensors, memory planned for each dimension's maximum.

ExecuTorch keeps a dimension dynamic by planning every tensor that depends on
it at its upper bound and resizing it at each call. Its default way to find
that bound (``ConstraintBasedSymShapeEvalPass``) asks the symbolic shape
environment, which the lowering passes narrow on the example's sizes: XNNPACK's
channels-last pass re-traces each convolution on fake tensors, and the fake
convolution's choice of kernel guards the batch below 16 (the example's batch
is 2), so the CNN declared up to 64 was planned for 15 and a batch of 16 or more
failed in ``set_inputs`` (error 0x10). `DeclaredBoundsShapeEval` plans for the
bounds the program was exported with (its ``range_constraints``, which the
pipeline's per-call check enforces), and so for the declared maximum
(`declared_bounds`).

A static program gets no backend config of its own (`backend_config` is None),
so its ``.pte`` is the one ExecuTorch's defaults emit, byte for byte.
"""

from __future__ import annotations

from typing import Any

from pipeline.backends.executorch.compile_spec import ExecuTorchCompileSpec, Quantize
from pipeline.backends.executorch.installed import executorch_module
from pipeline.core.backend import is_dynamic


def dynamic_refusal(spec: ExecuTorchCompileSpec) -> str | None:
    """Why a method lowered with ``spec`` cannot keep dynamic dimensions, or None."""
    if spec.quantize is not Quantize.none:
        # PT2E calibrates and re-exports the quantized module at the example inputs' shapes.
        return f"quantize={spec.quantize.value} exports the quantized method with the example's static shapes"
    return None


def backend_config(exported: Any) -> Any:
    """The ``ExecutorchBackendConfig`` that plans a dynamic program for its declared bounds; None for a
    static program (ExecuTorch's defaults)."""
    if not is_dynamic(exported):
        return None
    exir = executorch_module("executorch.exir")
    # Its own module imports ExecuTorch's pass base, so it is imported only when ExecuTorch is installed.
    bounds = executorch_module("pipeline.backends.executorch.declared_bounds")
    return exir.ExecutorchBackendConfig(sym_shape_eval_pass=bounds.DeclaredBoundsShapeEval(exported.range_constraints))
