"""The reference backend's op table: what it can run, and with which kernel.

``SUPPORTED_OPS`` maps an op name without overload (``aten::add``) to an `OpDef`.
Instructions name the exact overload (``aten::add.Tensor``, ``aten::add.int``);
unless the `OpDef` gives a Python kernel, the kernel is that overload of
``torch.ops`` (``torch.ops.aten.add.Tensor``), so tensor ops and TorchScript's
int/float/bool/str builtins run exactly as PyTorch defines them. Python kernels
are for what ``torch.ops`` cannot take from Python: generic list and tuple
ops, string formatting, raising. The compiler checks graphs against this table
and the interpreter looks kernels up in it: one table for both.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OpDef:
    summary: str
    kernel: Callable | None = None  # None: the instruction's overload of torch.ops
    deterministic: bool = True  # result depends on the arguments only: may be folded at compile time
    side_effects: bool = False  # raises or warns: never removed as dead code
    mutates_first_arg: bool = False  # changes its first argument in place (a list)
    unpacks: bool = False  # its outputs are the items of the sequence the kernel returns
    structured: bool = False  # prim::If / prim::Loop: runs nested blocks, the interpreter handles it
    compile_time: bool = False  # resolved while compiling, never an instruction
    inference_flag: str | None = None  # the argument, a train flag, that must be False (found by schema)
    aliases_inputs: bool = False  # its result may be or hold its arguments' Python objects (lists)
    # Python kernels for single overloads that torch.ops cannot take from Python (TorchScript's generic
    # list overloads, ``.t``), as (overload, kernel) pairs.
    overload_kernels: tuple[tuple[str, Callable], ...] = ()


class ModelRaised(RuntimeError):
    """The program raised, as the model's own code does (a failed check, an ``assert``)."""


def _raise_exception(message: str, cls: str | None = None) -> None:
    raise ModelRaised(f"{cls}: {message}" if cls else message)


def _append(items: list, item: Any) -> list:
    items.append(item)
    return items


def _format(template: str, *args: Any) -> str:
    """TorchScript's ``str.format``: each ``{}`` in turn becomes the next argument, and nothing else is a
    field (``{0}``, ``{x.attr}`` stay as written), so a template from a payload reads no attribute."""
    pieces = template.split("{}")
    if len(pieces) - 1 > len(args):
        raise ValueError(f"Too few arguments for format string: {template}")
    out = [pieces[0]]
    for value, piece in zip(args, pieces[1:]):
        out += [str(value), piece]
    return "".join(out)


def _warn(message: str, stacklevel: int = 2) -> None:
    warnings.warn(message, stacklevel=stacklevel)


def _identity(value: Any) -> Any:
    return value


def _list_slice(items: list, start: int | None = None, end: int | None = None, step: int = 1) -> list:
    return items[start:end:step]


def _no_op(*args: Any, **kwargs: Any) -> None:
    """export's ``_assert_tensor_metadata``: it checks the example inputs' metadata, which the program
    was specialized to already (and which another batch size would fail)."""


def _elementwise(text: str) -> OpDef:
    return OpDef(f"elementwise {text}")


SUPPORTED_OPS: dict[str, OpDef] = {
    # Elementwise arithmetic and activations (Tensor, Scalar and TorchScript int/float overloads).
    "aten::add": OpDef(
        "elementwise self + alpha * other (or TorchScript's list concatenation)",
        overload_kernels=(("t", operator.add),),
    ),
    "aten::sub": _elementwise("self - alpha * other"),
    "aten::rsub": _elementwise("other - alpha * self"),
    "aten::mul": OpDef(
        "elementwise self * other (or a TorchScript list repeated)",
        overload_kernels=(("left_t", operator.mul), ("right_", operator.mul)),
    ),
    "aten::div": _elementwise("self / other (rounding_mode)"),
    "aten::neg": _elementwise("-self"),
    "aten::pow": _elementwise("self ** exponent"),
    "aten::exp": _elementwise("exp"),
    "aten::log": _elementwise("natural logarithm"),
    "aten::log1p": _elementwise("log(1 + x)"),
    "aten::abs": _elementwise("|x|"),
    "aten::sqrt": _elementwise("sqrt"),
    "aten::rsqrt": _elementwise("1 / sqrt"),
    "aten::relu": _elementwise("max(x, 0)"),
    "aten::gelu": _elementwise("GELU (approximate='none' or 'tanh')"),
    "aten::silu": _elementwise("x * sigmoid(x)"),
    "aten::hardswish": _elementwise("x * relu6(x + 3) / 6"),
    "aten::hardsigmoid": _elementwise("relu6(x + 3) / 6"),
    "aten::sigmoid": _elementwise("sigmoid"),
    "aten::tanh": _elementwise("tanh"),
    "aten::clamp": _elementwise("clamp(min, max)"),
    "aten::where": _elementwise("condition ? self : other (or the indices where condition holds)"),
    "aten::masked_fill": _elementwise("value where mask, else self"),
    "aten::bitwise_not": _elementwise("~x"),
    "aten::logical_not": _elementwise("not x"),
    # Linear algebra.
    "aten::linear": OpDef("x @ weight.T + bias"),
    "aten::matmul": OpDef("matrix product with broadcasting"),
    "aten::mm": OpDef("2-D matrix product"),
    "aten::bmm": OpDef("batched matrix product"),
    "aten::addmm": OpDef("beta * self + alpha * (mat1 @ mat2)"),
    "aten::baddbmm": OpDef("beta * self + alpha * (batch1 @ batch2), batched"),
    # Convolution and pooling.
    "aten::conv2d": OpDef("2-D convolution"),
    "aten::convolution": OpDef("convolution (export's decomposed form)"),
    "aten::_convolution": OpDef("convolution (traced form)"),
    "aten::max_pool2d": OpDef("2-D max pooling"),
    "aten::avg_pool2d": OpDef("2-D average pooling"),
    "aten::adaptive_avg_pool2d": OpDef("2-D adaptive average pooling"),
    # Normalization, attention, reductions.
    "aten::softmax": OpDef("softmax along dim"),
    "aten::_softmax": OpDef("softmax along dim (half_to_float form)"),
    "aten::log_softmax": OpDef("log-softmax along dim"),
    "aten::layer_norm": OpDef("layer normalization"),
    "aten::group_norm": OpDef("group normalization"),
    "aten::native_group_norm": OpDef("group normalization (export's form: output, mean, rstd)"),
    "aten::batch_norm": OpDef(
        "batch normalization with running statistics (training=False only)", inference_flag="training"
    ),
    "aten::_native_batch_norm_legit_no_training": OpDef(
        "batch normalization with running statistics (export's inference form)"
    ),
    "aten::dropout": OpDef("identity in inference (train=False only)", inference_flag="train"),
    "aten::scaled_dot_product_attention": OpDef("softmax(q @ k.T * scale + mask) @ v"),
    "aten::_native_multi_head_attention": OpDef("fused multi-head attention (TorchScript fast path)"),
    "aten::_transformer_encoder_layer_fwd": OpDef("fused transformer encoder layer (TorchScript fast path)"),
    "aten::mean": OpDef("mean over dims"),
    "aten::sum": OpDef("sum over dims"),
    "aten::cumsum": OpDef("cumulative sum along a dim"),
    "aten::diff": OpDef("n-th differences along a dim"),
    "aten::min": OpDef("minimum: of all, along a dim (values, indices), or elementwise"),
    "aten::max": OpDef("maximum: of all, along a dim (values, indices), or elementwise"),
    "aten::amin": OpDef("minimum over dims"),
    "aten::amax": OpDef("maximum over dims"),
    "aten::argmin": OpDef("index of the minimum"),
    "aten::argmax": OpDef("index of the maximum"),
    # Embeddings and recurrent layers (train=False only: dropout between layers is off).
    "aten::embedding": OpDef("rows of a weight table by index"),
    "aten::lstm": OpDef("multi-layer LSTM (output, h, c)", inference_flag="train"),
    "aten::gru": OpDef("multi-layer GRU (output, h)", inference_flag="train"),
    "aten::rnn_tanh": OpDef("multi-layer Elman RNN, tanh (output, h)", inference_flag="train"),
    "aten::rnn_relu": OpDef("multi-layer Elman RNN, relu (output, h)", inference_flag="train"),
    # Indexing.
    "aten::gather": OpDef("values along a dim at given indices"),
    "aten::index": OpDef("advanced indexing with index tensors (also TorchScript's list.index)"),
    "aten::index_select": OpDef("entries of one dim by index"),
    # Functional writes (what torch's functionalization makes of x[i] = v, x[:, 0] += 1).
    "aten::select_scatter": OpDef("a copy with one index of a dim replaced"),
    "aten::slice_scatter": OpDef("a copy with a slice of a dim replaced"),
    "aten::index_put": OpDef("a copy with entries at index tensors replaced (or accumulated)"),
    "aten::copy": OpDef(
        "src broadcast into self's shape and dtype, as a new tensor (or a list or dict copied)",
        overload_kernels=(
            ("t", list),
            *((f"Dict_{kind}", dict) for kind in ("str", "int", "bool", "float", "complex", "Tensor")),
        ),
    ),
    "aten::fill": OpDef("a tensor shaped like self, filled with one value"),
    # New tensors (folded into constants when their operands are known).
    "aten::arange": OpDef("evenly spaced values"),
    "aten::zeros": OpDef("a tensor of zeros"),
    "aten::ones": OpDef("a tensor of ones"),
    "aten::full": OpDef("a tensor of one value"),
    "aten::zeros_like": OpDef("zeros shaped like a tensor"),
    "aten::ones_like": OpDef("ones shaped like a tensor"),
    "aten::full_like": OpDef("one value, shaped like a tensor"),
    "aten::new_zeros": OpDef("zeros with a tensor's dtype and device"),
    "aten::new_ones": OpDef("ones with a tensor's dtype and device"),
    "aten::new_full": OpDef("one value with a tensor's dtype and device"),
    # Shapes, views and copies.
    "aten::size": OpDef("size of one dim, or all sizes"),
    "aten::sym_size": OpDef("size of one dim (export)"),
    "aten::sym_numel": OpDef("number of elements (export, of a tensor with symbolic sizes)"),
    "aten::dim": OpDef("number of dims"),
    "aten::numel": OpDef("number of elements"),
    "aten::reshape": OpDef("reshape"),
    "aten::view": OpDef("view with a new shape"),
    "aten::flatten": OpDef("flatten dims start..end"),
    "aten::unflatten": OpDef("split one dim into sizes"),
    "aten::transpose": OpDef("swap two dims"),
    "aten::permute": OpDef("reorder dims"),
    "aten::t": OpDef("transpose a 2-D tensor"),
    "aten::contiguous": OpDef("contiguous copy when needed"),
    "aten::clone": OpDef("copy"),
    "aten::alias": OpDef("the same data"),
    "aten::lift_fresh_copy": OpDef("a copy of a constant tensor (export's torch.tensor(...))"),
    "aten::detach": OpDef("the same data, without autograd history"),
    "aten::to": OpDef("convert dtype or device (the same tensor when nothing changes)"),
    "aten::_to_copy": OpDef("a converted copy (export's form of to)"),
    "aten::type_as": OpDef("convert to another tensor's dtype"),
    "aten::_unsafe_view": OpDef("view with a new shape (export's form of reshape)"),
    "aten::_assert_tensor_metadata": OpDef("export's check of the example's metadata: a no-op", kernel=_no_op),
    "aten::_assert_scalar": OpDef("export's run-time check of a size: raises when it is false", side_effects=True),
    "aten::sym_constrain_range_for_size": OpDef(
        "export's run-time check that a number read from a tensor is a valid size", side_effects=True
    ),
    "aten::item": OpDef("a one-element tensor as a number"),
    "aten::unsqueeze": OpDef("insert a dim of size 1"),
    "aten::squeeze": OpDef("remove dims of size 1"),
    "aten::select": OpDef("index one dim (or a list)", overload_kernels=(("t", operator.getitem),)),
    "aten::slice": OpDef("slice one dim (or a list)", overload_kernels=(("t", _list_slice),)),
    "aten::expand": OpDef("broadcast to a shape"),
    "aten::cat": OpDef("concatenate along a dim"),
    "aten::split": OpDef("split into chunks of given sizes"),
    "aten::split_with_sizes": OpDef("split into chunks of given sizes (export's form)"),
    "aten::unbind": OpDef("the slices along a dim"),
    "aten::chunk": OpDef("split into a number of chunks"),
    # TorchScript scalar builtins: int/float/bool/str arithmetic, comparison, conversion.
    "aten::eq": OpDef("=="),
    "aten::ne": OpDef("!="),
    "aten::lt": OpDef("<"),
    "aten::le": OpDef("<="),
    "aten::gt": OpDef(">"),
    "aten::ge": OpDef(">="),
    "aten::__not__": OpDef("not"),
    "aten::__and__": OpDef("and"),
    "aten::__or__": OpDef("or"),
    "aten::floordiv": OpDef("//"),
    "aten::remainder": OpDef("%"),
    "aten::Int": OpDef("int(x)"),
    "aten::Float": OpDef("float(x)"),
    "aten::Bool": OpDef("bool(x)"),
    "aten::ScalarImplicit": OpDef("a 0-dim tensor as a number"),
    "aten::any": OpDef("any(list)"),
    "aten::all": OpDef("all(list)"),
    "prim::min": OpDef("min of numbers"),
    "prim::max": OpDef("max of numbers"),
    # Python's rounding of a number, which export's arithmetic on symbolic sizes calls (ATen's ceil and floor
    # of tensors are not in the table).
    "math::ceil": OpDef("math.ceil of a number", kernel=math.ceil),
    "math::floor": OpDef("math.floor of a number", kernel=math.floor),
    # TorchScript list, tuple and string builtins.
    "aten::len": OpDef("len(x)", kernel=len),
    "aten::list": OpDef("a copy of a list", kernel=list, aliases_inputs=True),
    "aten::__getitem__": OpDef("x[i]", kernel=operator.getitem, aliases_inputs=True),
    "aten::__contains__": OpDef("item in x", kernel=lambda container, item: item in container),
    "aten::__is__": OpDef("x is y", kernel=operator.is_),
    "aten::__isnot__": OpDef("x is not y", kernel=operator.is_not),
    "aten::append": OpDef("list.append (in place)", kernel=_append, mutates_first_arg=True, aliases_inputs=True),
    "aten::format": OpDef("str.format, TorchScript's: {} fields only", kernel=_format),
    "aten::warn": OpDef("warnings.warn", kernel=_warn, side_effects=True),
    "prim::ListConstruct": OpDef("a new list", kernel=lambda *items: list(items), aliases_inputs=True),
    "prim::TupleConstruct": OpDef("a new tuple", kernel=lambda *items: tuple(items), aliases_inputs=True),
    "prim::DictConstruct": OpDef(
        "a new dict from key, value, key, value, ...",
        kernel=lambda *items: dict(zip(items[::2], items[1::2])),
        aliases_inputs=True,
    ),
    "prim::ListUnpack": OpDef("the items of a list", kernel=_identity, unpacks=True, aliases_inputs=True),
    "prim::TupleUnpack": OpDef("the items of a tuple", kernel=_identity, unpacks=True, aliases_inputs=True),
    "prim::TupleIndex": OpDef("tuple[i] (also export's getitem)", kernel=operator.getitem, aliases_inputs=True),
    "prim::unchecked_cast": OpDef("a refined type; the value itself", kernel=_identity, aliases_inputs=True),
    "prim::Uninitialized": OpDef("a placeholder on paths that raise", kernel=lambda: None),
    "prim::NumToTensor": OpDef("a number as a 0-dim tensor"),
    # Tensor properties and runtime state.
    "prim::device": OpDef("x.device"),
    "prim::dtype": OpDef("x.dtype (as TorchScript's int)"),
    "prim::type": OpDef("device.type"),
    "prim::is_nested": OpDef("x.is_nested"),
    "prim::requires_grad": OpDef("x.requires_grad"),
    "aten::is_floating_point": OpDef("x.is_floating_point()"),
    "aten::is_grad_enabled": OpDef("torch.is_grad_enabled() when the program runs", deterministic=False),
    "aten::is_autocast_enabled": OpDef("torch.is_autocast_enabled() when the program runs", deterministic=False),
    # Control flow and the rest of the program's structure.
    "prim::If": OpDef("run one of two blocks on a bool", structured=True),
    "prim::Loop": OpDef("run a block while a condition holds, up to a trip count", structured=True),
    "prim::RaiseException": OpDef("raise the model's error", kernel=_raise_exception, side_effects=True),
    "prim::Constant": OpDef("a constant (folded into operands)", compile_time=True),
    "prim::GetAttr": OpDef("a module attribute (resolved to a constant)", compile_time=True),
}


def op_name(op: str) -> str:
    """``aten::add`` for ``aten::add.Tensor``."""
    return op.split(".", 1)[0]


def is_supported(op: str) -> bool:
    return op_name(op) in SUPPORTED_OPS


def definition(op: str) -> OpDef:
    return SUPPORTED_OPS[op_name(op)]


def callable_from_python(op: str) -> bool:
    """Whether the interpreter can run ``op``: a Python kernel of ours, or a torch.ops overload whose
    schema has no type variable (torch.ops cannot convert a Python list to TorchScript's generic ``t[]``)."""
    name, _, overload = op.partition(".")
    op_def = SUPPORTED_OPS[name]
    if op_def.kernel is not None or overload in dict(op_def.overload_kernels):
        return True
    found = schema(op)
    generic = re.compile(r"\bt\b")
    return found is None or not any(generic.search(str(a.type)) for a in [*found.arguments, *found.returns])


def kernel_for(op: str) -> Callable:
    """The callable that runs ``op`` (an op with its exact overload)."""
    name, _, overload = op.partition(".")
    op_def = SUPPORTED_OPS[name]
    if op_def.kernel is not None:
        return op_def.kernel
    if overload in dict(op_def.overload_kernels):
        return dict(op_def.overload_kernels)[overload]
    namespace, packet = name.split("::", 1)
    return getattr(getattr(getattr(torch.ops, namespace), packet), overload or "default")


def torch_overload(op: str) -> torch._ops.OpOverload | None:
    """The ``torch.ops`` overload an instruction runs, or None: a Python kernel of ours, a structured or
    compile-time op, or an overload this PyTorch does not have."""
    name, _, overload = op.partition(".")
    op_def = SUPPORTED_OPS[name]
    if (
        op_def.kernel is not None
        or op_def.structured
        or op_def.compile_time
        or overload in dict(op_def.overload_kernels)
    ):
        return None
    try:
        found = kernel_for(op)
    except (AttributeError, RuntimeError):
        return None
    return found if isinstance(found, torch._ops.OpOverload) else None


def supported_op_names() -> str:
    return ", ".join(sorted(SUPPORTED_OPS))


def result_values(op: str, count: int, result: Any) -> list:
    """The values an instruction with ``count`` outputs defines from its kernel's result."""
    if count == 1 and not definition(op).unpacks:
        return [result]
    values = list(result) if count or definition(op).unpacks else []
    if len(values) != count:
        raise ValueError(f"{op} produced {len(values)} values where the program expects {count}")
    return values


# -- what the schemas say ------------------------------------------------------------------------
# Mutation and aliasing come from the ops' own schemas (``Tensor(a!) self`` is written in place,
# ``Tensor(a) self -> Tensor(a)`` returns a view), so the passes need no hand-kept list of views.


@functools.cache
def schema(op: str) -> torch.FunctionSchema | None:
    """The schema of ``op`` (with its overload) in ``torch.ops``, or None if it has none there."""
    name, _, overload = op.partition(".")
    namespace, _, packet = name.partition("::")
    try:
        return getattr(getattr(getattr(torch.ops, namespace), packet), overload or "default")._schema
    except Exception:  # prim ops without an overload packet, names this PyTorch does not have
        return None


def argument(op: str, args: Sequence[Any], kwargs: Mapping[str, Any], name: str) -> Any:
    """The operand an instruction passes for the schema argument ``name`` (its default if omitted)."""
    found = schema(op)
    declared = [a.name for a in found.arguments] if found is not None else []
    if name in kwargs:
        return kwargs[name]
    if name in declared and declared.index(name) < len(args):
        return args[declared.index(name)]
    if found is not None and name in declared and found.arguments[declared.index(name)].has_default_value():
        return found.arguments[declared.index(name)].default_value
    return None


def written_arguments(op: str) -> list[str]:
    """The arguments ``op`` changes in place (``self`` of ``relu_``, ``out`` of ``add.out``)."""
    found = schema(op)
    if found is None:
        return []
    return [a.name for a in found.arguments if a.alias_info is not None and a.alias_info.is_write]


def aliased_arguments(op: str) -> list[str]:
    """The arguments whose memory ``op``'s results may share (views, in-place results, lists of them)."""
    found = schema(op)
    if found is None:
        return []
    return [a.name for a in found.arguments if a.alias_info is not None]


def functional_form(op: str) -> str | None:
    """``aten::relu`` for ``aten::relu_``: the same overload without the in-place write, if torch has it
    with the same arguments (``bernoulli_.float`` has no ``bernoulli.float``)."""
    name, dot, overload = op.partition(".")
    if not name.endswith("_") or name.endswith("__"):
        return None
    functional = name[:-1] + dot + overload
    inplace, pure = schema(op), schema(functional)
    if inplace is None or pure is None:
        return None

    def signature(found: torch.FunctionSchema) -> list:  # positional names may differ (self / input)
        return [(str(a.type), a.kwarg_only, a.name if a.kwarg_only else "") for a in found.arguments]

    if signature(inplace) != signature(pure):
        return None
    return functional
