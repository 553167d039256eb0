"""The reference backend: a small compiler to an instruction list, and its interpreter.

It accepts both frontends and runs on CPU with PyTorch's own kernels, so any
other backend can be checked against it::

    import pipeline
    lowered = pipeline.to_backend("reference", model, {"forward": {}},
                                  example_inputs={"forward": (x,)})

It is found by name through the ``pipeline.backends`` entry point, which names the class.

How it compiles (`compiler.preprocess`): a TorchScript method is inlined and
its ``prim::GetAttr`` chains resolved to constants (the module is put in eval
mode); an exported method's parameters and buffers become constants, and each
``torch.cond`` becomes a ``prim::If`` whose blocks are its two branch graphs.
Each remaining node becomes one instruction naming its exact overload.
Constant folding then evaluates what depends only on constants and keeps the
taken branch of each constant ``prim::If`` (TorchScript's ``if`` and export's
``torch.cond`` alike); dead-code elimination drops unread results. In-place
ops (``relu_``, ``add_``, ``hardswish_``, ``dropout_``, ``masked_fill_``, any
``op_`` whose ``op`` is supported) become their functional forms where no
stale read is possible: the ops' schemas say which values share memory, and a
write into a method input, a parameter, or a tensor whose view is read
afterwards is never rewritten. Exported programs where that is not enough
(``x[:, 0] = v``) are compiled from torch's own functionalization
(``run_decompositions({})``) instead. Debug handles are issued on the graphs
the program was compiled from, so they point at the user's source lines.

Dynamic dimensions stay dynamic: an exported program with symbolic sizes
reads them with ``aten::sym_size`` and computes further sizes with Python's
arithmetic (``operator.mul(batch, 4)``); each such call becomes the scalar
builtin that computes it on numbers (`symbolic`), so the instruction list
computes every size from the actual inputs at run time and bakes in none
(``dynamic_shapes = ("export", "torchscript")``: a scripted program never
knew its sizes). A static program has no such nodes and compiles as before.

Ops left that the backend cannot run are reported all at once as
`pipeline.UnsupportedOpError`: one line per op with its count, its first
source line and module path, and why (with the way out), at most eight ops
listed and the rest named on one line. The payload is the instruction list as
canonical JSON plus raw tensor bytes (`program`): no pickle, and the same model
gives the same bytes. To read what was compiled::

    from pipeline.backends.reference.program import parse, to_text
    print(to_text(parse(lowered.payload).methods["forward"]))

How it runs (`interpreter.ReferenceBackend`): instructions run in order under
``torch.no_grad()``; ``prim::If`` and ``prim::Loop`` run their blocks. A failing
instruction raises `pipeline.BackendRuntimeError` with its debug handle.

Compile-spec options (`ReferenceCompileSpec`, per method): ``constant_folding``,
``dead_code_elimination`` (both on by default) and ``check_inputs`` (off).

Supported ops (the table is ``ops.SUPPORTED_OPS``; every overload of each is
supported, except overloads that write into an argument such as ``out=``).
Loading a payload checks every instruction as preprocess does
(`compiler.why_not_runnable`), so a forged one may name only these ops; a
new tensor may be at most ``MAX_TENSOR_BYTES`` (8 GiB, `pipeline.core.op_policy`),
judged when the payload loads for sizes it holds and before the op runs for
sizes the program computes; ``format`` fills ``{}`` fields only, as
TorchScript's does, so a template reads no attribute:

* elementwise: ``aten::add``, ``sub``, ``rsub``, ``mul``, ``div`` (Tensor and
  Scalar overloads, ``alpha``, ``rounding_mode``), ``neg``, ``pow``, ``exp``,
  ``log``, ``log1p``, ``abs``, ``sqrt``, ``rsqrt``, ``relu``, ``gelu``
  (``approximate``), ``silu``, ``hardswish``, ``hardsigmoid``, ``sigmoid``,
  ``tanh``, ``clamp``, ``where``, ``masked_fill``, ``bitwise_not``,
  ``logical_not``;
* linear algebra: ``aten::linear``, ``matmul``, ``mm``, ``bmm``, ``addmm``,
  ``baddbmm``;
* convolution and pooling: ``aten::conv2d``, ``convolution``, ``_convolution``
  (traces), ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``;
* normalization, attention: ``aten::softmax``, ``_softmax``, ``log_softmax``,
  ``layer_norm``, ``group_norm``, ``native_group_norm``, ``batch_norm``
  (``training=False``), ``_native_batch_norm_legit_no_training``, ``dropout``
  (``train=False``: the identity), ``scaled_dot_product_attention``,
  ``_native_multi_head_attention`` and ``_transformer_encoder_layer_fwd`` (the
  fast paths of scripted ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``);
* reductions: ``aten::mean``, ``sum``, ``cumsum``, ``diff``, ``min``, ``max``
  (of all, along a dim, elementwise), ``amin``, ``amax``, ``argmin``, ``argmax``;
* embeddings and recurrent layers (``train=False``): ``aten::embedding``,
  ``lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``;
* indexing: ``aten::gather``, ``index`` (index tensors; also TorchScript's
  ``list.index``), ``index_select``;
* new tensors: ``aten::arange``, ``zeros``, ``ones``, ``full``, ``zeros_like``,
  ``ones_like``, ``full_like``, ``new_zeros``, ``new_ones``, ``new_full``;
* functional writes (torch's functionalization of ``x[i] = v``):
  ``aten::select_scatter``, ``slice_scatter``, ``index_put``, ``copy``, ``fill``;
* shapes, views, copies, conversions: ``aten::size``, ``sym_size``, ``dim``,
  ``numel``, ``sym_numel``, ``reshape``, ``view``, ``_unsafe_view``,
  ``flatten``, ``unflatten``, ``transpose``, ``permute``, ``t``,
  ``contiguous``, ``clone``, ``alias``, ``lift_fresh_copy``, ``detach``,
  ``to``, ``_to_copy``, ``type_as``, ``unsqueeze``, ``squeeze``, ``select``,
  ``slice``, ``expand``, ``cat``, ``split``, ``split_with_sizes``, ``unbind``,
  ``chunk``, ``item``, and export's ``_assert_tensor_metadata`` (a no-op: the
  program is specialized already), ``_assert_scalar`` and
  ``sym_constrain_range_for_size`` (its run-time checks, which raise when
  they fail);
* TorchScript scalar builtins: ``aten::eq``, ``ne``, ``lt``, ``le``, ``gt``,
  ``ge``, ``__not__``, ``__and__``, ``__or__``, ``floordiv``, ``remainder``,
  ``Int``, ``Float``, ``Bool``, ``ScalarImplicit``, ``any``, ``all``,
  ``prim::min``, ``prim::max``, and Python's ``math::ceil`` and
  ``math::floor`` of a number (what export's arithmetic on symbolic sizes
  becomes: ``operator.mul``, ``sym_max``, ``math.ceil``, ...);
* TorchScript lists, tuples, strings: ``aten::len``, ``list``, ``__getitem__``,
  ``__contains__``, ``__is__``, ``__isnot__``, ``append``, ``format``, ``warn``,
  ``prim::ListConstruct``, ``ListUnpack``, ``TupleConstruct``, ``TupleUnpack``, ``DictConstruct``,
  ``TupleIndex`` (also export's ``operator.getitem``), ``unchecked_cast``,
  ``Uninitialized``, ``NumToTensor``;
* tensor properties and runtime state: ``prim::device``, ``dtype``, ``type``,
  ``is_nested``, ``requires_grad``, ``aten::is_floating_point``,
  ``is_grad_enabled``, ``is_autocast_enabled``;
* structure: ``prim::If`` (also export's ``torch.cond``), ``prim::Loop``,
  ``prim::RaiseException``, and ``prim::Constant`` / ``prim::GetAttr``
  (resolved while compiling).
"""

from __future__ import annotations

from pipeline.backends.reference.compile_spec import ReferenceCompileSpec
from pipeline.backends.reference.compiler import preprocess
from pipeline.backends.reference.interpreter import ReferenceBackend
from pipeline.backends.reference.ops import SUPPORTED_OPS

__all__ = ["ReferenceBackend", "ReferenceCompileSpec", "SUPPORTED_OPS", "preprocess"]
