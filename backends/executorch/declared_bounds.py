"""The symbolic-shape evaluation pass that plans a dynamic program for the bounds it was exported with.

Imported only when ExecuTorch is installed (`dynamic.backend_config` imports it
through `installed.executorch_module`): it subclasses ExecuTorch's pass base.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from executorch.exir.pass_base import PassBase, PassResult  # type: ignore[import-untyped]
from executorch.exir.tensor import TensorSpec  # type: ignore[import-untyped]
from torch.utils._sympy.value_ranges import bound_sympy

from pipeline.backends.executorch.compile_spec import NAME
from pipeline.core.backend import LoweringError


class DeclaredBoundsShapeEval(PassBase):
    """ExecuTorch's symbolic-shape evaluation pass, bounding each symbol by the exported program's own
    range constraints instead of the shape environment the lowering passes narrowed: every tensor spec's
    symbolic sizes and strides become their upper bounds, which memory planning then allocates."""

    def __init__(self, declared: Mapping[Any, Any]):
        super().__init__()
        self.declared = dict(declared)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        for module in graph_module.modules():
            if not isinstance(module, torch.fx.GraphModule):
                continue
            for node in module.graph.nodes:
                for spec in pytree.tree_flatten(node.meta.get("spec", []))[0]:
                    if isinstance(spec, TensorSpec):
                        spec.shape = [self.upper_bound(size, node) for size in spec.shape]
                        spec.stride = [self.upper_bound(size, node) for size in spec.stride]
        return PassResult(graph_module, True)

    def upper_bound(self, size: Any, node: torch.fx.Node) -> int:
        if isinstance(size, int):
            return size
        expr = size.node.expr
        ranges = {**size.node.shape_env.var_to_range, **self.declared}
        upper = bound_sympy(expr, ranges).upper
        try:
            return int(upper)
        except (TypeError, ValueError, OverflowError):  # torch's int_oo: no upper bound
            raise LoweringError(
                f"Backend {NAME!r}: the size {expr} of node {node.name!r} has no upper bound "
                f"({', '.join(f'{s}: {ranges.get(s)}' for s in sorted(expr.free_symbols, key=str))}); "
                "ExecuTorch plans memory for each dynamic size's maximum: declare a max for every dimension."
            ) from None
