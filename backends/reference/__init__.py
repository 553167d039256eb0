"""The reference backend: a small compiler to an instruction list, and its interpreter.

It accepts both frontends and runs on CPU with PyTorch's own kernels, so any
other backend can be checked against it::

    import pipeline
    lowered = pipeline.to_backend("reference", model, {"forward": {}},
                                  example_inputs={"forward": (x,)})

It is found by name through the ``pipeline.backends`` entry point, which names the class.

How it compiles (`compiler.preprocess`): a TorchScript method is inlined and
its ``prim::GetAttr`` chains resolved to constants (the module is put in eval
mode); an exported method's parameters and buffers become constants. Each
remaining node becomes one instruction naming its exact overload. Constant
folding then evaluates what depends only on constants and keeps the taken
branch of each constant ``prim::If``; dead-code elimination drops unread
results. Ops left that the backend cannot run are reported all at once, with
their source lines, as `pipeline.UnsupportedOpError`. The payload is the
instruction list as canonical JSON plus raw tensor bytes (`program`): no
pickle, and the same model gives the same bytes. To read what was compiled::

    from pipeline.backends.reference.program import parse, to_text
    print(to_text(parse(lowered.payload).methods["forward"]))

How it runs (`interpreter.ReferenceBackend`): instructions run in order under
``torch.no_grad()``; ``prim::If`` and ``prim::Loop`` run their blocks. A failing
instruction raises `pipeline.BackendRuntimeError` with its debug handle.

Compile-spec options (`ReferenceCompileSpec`, per method): ``constant_folding``,
``dead_code_elimination`` (both on by default) and ``check_inputs`` (off).

Supported ops (the table is ``ops.SUPPORTED_OPS``; every overload of each is supported):

* elementwise: ``aten::add``, ``sub``, ``rsub``, ``mul``, ``div`` (Tensor and
  Scalar overloads, ``alpha``, ``rounding_mode``), ``neg``, ``pow``, ``exp``,
  ``sqrt``, ``rsqrt``, ``relu``, ``gelu`` (``approximate``), ``silu``,
  ``sigmoid``, ``tanh``, ``clamp``;
* linear algebra: ``aten::linear``, ``matmul``, ``mm``, ``bmm``, ``addmm``;
* convolution and pooling: ``aten::conv2d``, ``convolution``, ``_convolution``
  (traces), ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``;
* normalization, attention, reductions: ``aten::softmax``, ``_softmax``,
  ``log_softmax``, ``layer_norm``, ``batch_norm`` (``training=False``),
  ``dropout`` (``train=False``: the identity), ``scaled_dot_product_attention``,
  ``_native_multi_head_attention`` and ``_transformer_encoder_layer_fwd`` (the
  fast paths of scripted ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``),
  ``mean``, ``sum``;
* shapes and views: ``aten::size``, ``sym_size``, ``dim``, ``numel``,
  ``reshape``, ``view``, ``flatten``, ``unflatten``, ``transpose``, ``permute``,
  ``t``, ``contiguous``, ``clone``, ``detach``, ``unsqueeze``, ``squeeze``,
  ``select``, ``slice``, ``expand``, ``cat``, ``split``, ``chunk``;
* TorchScript scalar builtins: ``aten::eq``, ``ne``, ``lt``, ``le``, ``gt``,
  ``ge``, ``__not__``, ``__and__``, ``__or__``, ``floordiv``, ``remainder``,
  ``Int``, ``Float``, ``Bool``, ``ScalarImplicit``, ``any``, ``all``,
  ``prim::min``, ``prim::max``;
* TorchScript lists, tuples, strings: ``aten::len``, ``__getitem__``,
  ``__contains__``, ``__is__``, ``__isnot__``, ``append``, ``format``, ``warn``,
  ``prim::ListConstruct``, ``ListUnpack``, ``TupleConstruct``, ``TupleUnpack``, ``DictConstruct``,
  ``TupleIndex`` (also export's ``operator.getitem``), ``unchecked_cast``,
  ``Uninitialized``, ``NumToTensor``;
* tensor properties and runtime state: ``prim::device``, ``dtype``, ``type``,
  ``is_nested``, ``requires_grad``, ``aten::is_floating_point``,
  ``is_grad_enabled``, ``is_autocast_enabled``;
* structure: ``prim::If``, ``prim::Loop``, ``prim::RaiseException``, and
  ``prim::Constant`` / ``prim::GetAttr`` (resolved while compiling).
"""

from __future__ import annotations

from pipeline.backends.reference.compile_spec import ReferenceCompileSpec
from pipeline.backends.reference.compiler import preprocess
from pipeline.backends.reference.interpreter import ReferenceBackend
from pipeline.backends.reference.ops import SUPPORTED_OPS

__all__ = ["ReferenceBackend", "ReferenceCompileSpec", "SUPPORTED_OPS", "preprocess"]
