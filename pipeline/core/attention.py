"""Scaled dot-product attention decomposed into matmul, softmax and matmul, with the fused op's layout.

Some runtimes need attention in pieces: OpenVINO's fused node answers wrongly on dynamic programs, and
ExecuTorch's edge passes re-trace the program after decomposing it. torch's own decomposition returns its
result in the strides of the last matmul, not the contiguous ones of the fused op, so a later ``view`` that
the capture recorded against the fused op (GPT-2's ``x.view(-1, x.size(-1))``) fails with "Cannot view a
tensor with shape ...". `decomposed_attention` makes each decomposed result contiguous, as the fused op's was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def decomposed_attention(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with each scaled dot-product attention decomposed (the nodes keep their provenance,
    ``from_node``, so debug handles still map), or ``program`` itself when it has none."""
    from torch._decomp import core_aten_decompositions

    table = {op: _contiguous(fn) for op, fn in core_aten_decompositions().items() if "scaled_dot_product" in str(op)}
    if not any(node.target in table for node in program.graph.nodes if node.op == "call_function"):
        return program
    decomposed: torch.export.ExportedProgram = program.run_decompositions(table)
    decomposed.graph_module.meta.update(program.graph_module.meta)  # the names the capture gave the dimensions
    return decomposed


def _contiguous(decomposition: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        result = decomposition(*args, **kwargs)
        if isinstance(result, tuple):
            return tuple(r.contiguous() if isinstance(r, torch.Tensor) else r for r in result)
        return result.contiguous()

    return run
