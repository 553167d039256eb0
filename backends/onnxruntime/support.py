"""Which exported nodes this backend lowers (`OnnxRuntimeBackend.supports`), for partitioned lowering.

Derived from what the dynamo ONNX exporter handles, not by trying: an ATen op
is supported when the exporter's own translation table (torch.onnx's torchlib
registry) has it, or when the exporter decomposes it first (a
CompositeImplicitAutograd op such as ``fft_fft``, or one in
``torch.export.default_decompositions()``) into ops that table has: the
decomposition is run once on the node's fake example values, recording the ops
it calls. A node that reads or makes a complex tensor is refused: onnxruntime
sessions take and return none, so it could not sit at a group's edge.
`KNOWN_FAILURES` lists ops that
pass that test yet fail in export or in onnxruntime, each with the reason;
it is maintained by hand as failures are found. Without the exporter's registry
(another torch), every ATen op is taken as supported and failures surface in
preprocess, as without partitioning.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch._guards import detect_fake_mode
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.core.backend import quiet

# op (without overload) -> why it fails although the exporter claims it.
KNOWN_FAILURES = {
    "aten::_transformer_encoder_layer_fwd": "is the fast path of nn.TransformerEncoderLayer under torch.no_grad(), "
    "which the ONNX exporter has no translation for",
    "aten::_native_multi_head_attention": "is the fast path of nn.MultiheadAttention under torch.no_grad(), which "
    "the ONNX exporter has no translation for",
}


def node_support(node: Any) -> bool | str:
    if node.op != "call_function":
        return f"is a {node.op} node"
    if node.target is operator.getitem:
        return True
    op = node.target
    if not isinstance(op, torch._ops.OpOverload):
        return "is not an ATen op (higher-order ops such as torch.cond are lowered only as whole programs)"
    reason = KNOWN_FAILURES.get(op._schema.name)
    if reason:
        return reason
    values = pytree.tree_leaves((node.meta.get("val"), [a.meta.get("val") for a in node.all_input_nodes]))
    if any(isinstance(v, torch.Tensor) and v.is_complex() for v in values):
        return (
            "reads or makes a complex tensor, which an onnxruntime session cannot take or return (the "
            "exporter represents complex values only inside one whole program)"
        )
    registry = _registry()
    if registry is None or registry.is_registered(op) or _decomposed_first(op, node, registry):
        return True
    return "has no translation in the ONNX exporter (torch.onnx's torchlib registry) and no decomposition"


@functools.lru_cache(maxsize=1)
def _registry() -> Any | None:
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return None
    with quiet("torch.onnx", level=40):  # it warns about torchvision ops it skips
        return _registration.ONNXRegistry.from_torchlib()


def _decomposed_first(op: torch._ops.OpOverload, node: Any, registry: Any) -> bool:
    """Whether the exporter's decomposition of ``op`` ends in ops it translates (run on fake values)."""
    table = _default_decompositions()
    if op in table:
        decompose = table[op]
    elif torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CompositeImplicitAutograd"):
        decompose = op.decompose
    else:
        return False
    args, kwargs = pytree.tree_map_only(torch.fx.Node, lambda n: n.meta.get("val"), (node.args, node.kwargs))
    mode = detect_fake_mode(pytree.tree_leaves((args, kwargs)))
    recorder = _Recorder()
    try:
        with mode if mode is not None else contextlib.nullcontext(), recorder:
            decompose(*args, **kwargs)
    except Exception:  # a decomposition that cannot run on these values: the exporter's would fail too
        return False
    return all(registry.is_registered(called) or called in table for called in recorder.called)


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.called: set = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.called.add(func)
        return func(*args, **(kwargs or {}))


@functools.lru_cache(maxsize=1)
def _default_decompositions() -> Any:
    return torch.export.default_decompositions()
