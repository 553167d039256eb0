"""Which ATen ops a program read from a file may run, and how large a tensor it may ask for.

A partitioned artifact's fallback (`pipeline.core.partitioning.fallback`) names each op as
``namespace::name.overload`` and the loader finds it in ``torch.ops``. Being in
``torch.ops`` is not enough: ``aten::from_file`` reads any file (and with
``shared=True`` creates or extends one), ``aten::save`` writes one,
``aten::manual_seed`` resets the process's generator, and
``aten::_reshape_alias`` views memory past the end of its tensor. An overload
is on the allow-list when all of these hold (`refusal` names the first that
does not):

1. its namespace is ``aten`` or ``prims``;
2. it is functional: it writes into no argument (no in-place op, no ``out=``
   variant);
3. its arguments and results are data: tensors, numbers, bools, dtypes,
   layouts, devices and memory formats, and lists and optionals of them. A
   ``str`` is data only under the names ATen gives to a choice of mode
   (``approximate="tanh"``, ``rounding_mode``, ``norm``, ...) or to a check's
   message (`STR_ARGUMENTS`); a ``str`` under any other name is a file name
   (``from_file``, ``save``) or text to print (``_print``). No ``Storage``,
   ``Stream``, ``Generator``, ``Any``, dict, generic or class types;
4. it is not a sampler: seeded-random ops (``torch.Tag.nondeterministic_seeded``:
   ``rand``, ``randn``, ``randperm``, ...) read and advance the process's
   generator, state outside the program. Seeded ops that draw only while they
   drop out (a dropout rate or a ``train`` flag: ``dropout``, ``lstm``,
   ``scaled_dot_product_attention``) are allowed: inference programs run them
   at rate 0;
5. it returns a value, unless it is one of the checks export writes into
   programs (`CHECKS`), which only raise: an op that returns nothing acts only
   through its effect (``manual_seed``, ``set_grad_enabled``, ``backward``);
6. it is public (no leading underscore in its name, or an operator's
   ``__and__`` form) or one of the private ops
   that export writes into programs (`PRIVATE_OPS`): private ops are ATen's
   internal entry points, which leave argument checks to their public callers;
7. it computes on dense tensors: no op of sparse, quantized, nested or mkldnn
   tensors (`OTHER_LAYOUTS`), whose constructors take indices they do not check
   (``sparse_coo_tensor(...).to_dense()`` writes wherever they point), and no
   ``resize`` / ``resize_as``, whose results hold memory nothing initialized.

`allowed_overloads` lists what passes in the installed PyTorch (about 1,600
of its 3,900 aten and prims overloads). Partitioned lowering applies the same
rule before it writes a fallback step, so what the writer makes, the reader
accepts; a model whose fallback would need another op is refused with an
`UnsupportedOpError` naming the op.

Sizes: a step that asks for a tensor by its size (``empty``, ``zeros``,
``ones``, ``full``, ``new_*``, ``expand``, ``arange``, ``linspace``, ``eye``,
...) may ask for at most `MAX_TENSOR_BYTES`, a constant that nothing in a file
can raise (`size_problem`). Sizes written in the file are checked when it is
loaded; sizes computed while running are checked before the op runs, and every
tensor a fallback step returns is checked against the same limit before any
later step reads it. Memory from the ``empty`` family is zero-filled
(`FILLS_UNINITIALIZED`), so that no step hands out what the process's heap
held before.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

import torch

NAMESPACES = ("aten", "prims")

# The largest tensor a received program may ask for by size: 8 GiB (2**31 float32 elements).
MAX_TENSOR_BYTES = 8 << 30

# str arguments that choose a mode or carry a check's message, by the name ATen gives them.
STR_ARGUMENTS = frozenset(
    {
        "approximate",
        "rounding_mode",
        "norm",
        "reduce",
        "mode",
        "pad_mode",
        "padding",
        "padding_side",
        "interpolation",
        "driver",
        "UPLO",
        "ord",
        "p",
        "side",
        "indexing",
        "equation",
        "assert_msg",
        "api_name",
    }
)

# Seeded ops with one of these arguments draw random numbers only while they drop out (dropout, the RNNs,
# attention); inference programs run them at rate 0, or with train=False.
DROPOUT_ARGUMENTS = frozenset({"p", "dropout", "dropout_p", "train"})

# Ops that return nothing and only raise: the checks torch.export writes into programs.
CHECKS = frozenset(
    {
        "_assert_async",
        "_assert_scalar",
        "_assert_tensor_metadata",
        "_linalg_check_errors",
        "sym_constrain_range",
        "sym_constrain_range_for_size",
    }
)

# Private ops that torch.export writes into programs (the forms its tracing, functionalization and
# run_decompositions() give public calls), without overloads.
PRIVATE_OPS = CHECKS | frozenset(
    {
        "_to_copy",
        "_unsafe_view",
        "_reshape_copy",
        "_lazy_clone",
        "_conj",
        "_conj_physical",
        "_neg_view",
        "_softmax",
        "_log_softmax",
        "_safe_softmax",
        "_native_batch_norm_legit_no_training",
        "_functional_assert_async",
        "_functional_assert_scalar",
        "_functional_sym_constrain_range",
        "_functional_sym_constrain_range_for_size",
        "_make_dep_token",
        "_local_scalar_dense",
        "_linalg_eigh",
        "_linalg_svd",
        "_linalg_det",
        "_linalg_slogdet",
        "_linalg_solve_ex",
        "_linalg_eigvals",
        "_lu_with_info",
        "_fft_c2c",
        "_fft_r2c",
        "_fft_c2r",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
        "_cdist_forward",
        "_pdist_forward",
        "_euclidean_dist",
        "_embedding_bag",
        "_embedding_bag_forward_only",
        "_prelu_kernel",
        "_weight_norm_interface",
        "_upsample_bilinear2d_aa",
        "_upsample_bicubic2d_aa",
        "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d",
        "_upsample_nearest_exact3d",
        "_unique2",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_addmm_activation",
        "_convolution",
        "_aminmax",
        "_logcumsumexp",
        "_chunk_cat",
        "_trilinear",
        "_int_mm",
        "_weight_int8pack_mm",
        "_fused_rms_norm",
        "_pad_circular",
        "_pad_enum",
        "_grid_sampler_2d_cpu_fallback",
        "_is_all_true",
        "_is_any_true",
        "_dim_arange",
        "_shape_as_tensor",
    }
)

# The names of ops of tensors that are not dense and strided (rule 7): fake_quantize_* is dense math.
OTHER_LAYOUTS = re.compile(r"sparse|quantized|nested|mkldnn|^_?(quantize_per|dequantize|q_|int_repr|make_per)")
UNINITIALIZED_STORAGE = frozenset({"resize", "resize_as"})

# Ops whose results are uninitialized memory: run zero-filled.
FILLS_UNINITIALIZED = frozenset(
    {"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided"}
)

_DATA_TYPE = re.compile(
    r"(Optional\[)?(List\[)?(Optional\[)?(Tensor|int|float|bool|number|complex|ScalarType|"
    r"Layout|Device|MemoryFormat)\]*"
)
_STR_TYPE = re.compile(r"(Optional\[)?str\]?")


def refusal(op: Any) -> str:
    """``""`` if ``op`` (an ``OpOverload``) is on the allow-list; else why not, as a clause."""
    if not isinstance(op, torch._ops.OpOverload):
        return f"is not an ATen op overload but a {type(op).__name__}"
    return _refusal(op)


@functools.cache
def _refusal(op: torch._ops.OpOverload) -> str:
    schema = op._schema
    name = schema.name.split("::", 1)[-1]
    if op.namespace not in NAMESPACES:
        return f"is of namespace {op.namespace!r}; a fallback runs ops of {list(NAMESPACES)}"
    if schema.is_mutable:
        return "writes into its arguments (an in-place op or an out= variant); a fallback runs functional ops only"
    for argument in schema.arguments:
        kind = str(argument.type)
        if _STR_TYPE.fullmatch(kind):
            if argument.name not in STR_ARGUMENTS:
                return (
                    f"takes a str {argument.name!r}, which names a file or text, not a mode; a fallback takes "
                    "str arguments only where ATen names a mode or a check's message "
                    "(pipeline.core.op_policy.STR_ARGUMENTS)"
                )
        elif not _DATA_TYPE.fullmatch(kind):
            return f"takes {argument.name!r} of type {kind}, which is not data (tensors, numbers, dtypes, devices)"
    for value in schema.returns:
        if not _DATA_TYPE.fullmatch(str(value.type)):
            return f"returns a {value.type}, which is not data"
    if torch.Tag.nondeterministic_seeded in op.tags and not any(a.name in DROPOUT_ARGUMENTS for a in schema.arguments):
        return "draws random numbers from the process's generator, state outside the program"
    if not schema.returns and name not in CHECKS:
        return (
            f"returns nothing, so it runs only for an effect; of such ops a fallback runs the checks {sorted(CHECKS)}"
        )
    operator_form = name.startswith("__") and name.endswith("__")  # __and__, __or__: Python's operators
    if name.startswith("_") and not operator_form and name not in PRIVATE_OPS:
        return (
            "is a private ATen op, which leaves argument checks to its public callers; a fallback runs public "
            "ops and the private ones torch.export writes into programs (pipeline.core.op_policy.PRIVATE_OPS)"
        )
    if OTHER_LAYOUTS.search(name):
        return "makes or reads sparse, quantized, nested or mkldnn tensors; a fallback computes on dense tensors"
    if name in UNINITIALIZED_STORAGE:
        return "resizes storage, whose new memory nothing initialized; a fallback computes on tensors it made"
    return ""


def allowed_overloads() -> list[str]:
    """Every overload of this PyTorch on the allow-list, as ``namespace::name.overload``."""
    names = []
    for schema in torch._C._jit_get_all_schemas():
        namespace, _, name = schema.name.partition("::")
        if namespace not in NAMESPACES:
            continue
        op = lookup(namespace, name, schema.overload_name or "default")
        if op is not None and not refusal(op):
            names.append(f"{schema.name}.{schema.overload_name or 'default'}")
    return sorted(set(names))


def lookup(namespace: str, name: str, overload: str) -> torch._ops.OpOverload | None:
    """``torch.ops.<namespace>.<name>.<overload>``, or None when this PyTorch has no such overload."""
    try:
        found = getattr(getattr(getattr(torch.ops, namespace), name), overload)
    except (AttributeError, RuntimeError):
        return None
    return found if isinstance(found, torch._ops.OpOverload) else None


# -- sizes -----------------------------------------------------------------------------------------


class Unknown:
    """An operand whose value is known only when the program runs (a value it computes)."""

    def __repr__(self) -> str:
        return "<computed at run time>"


UNKNOWN = Unknown()


def size_problem(op: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """``""`` unless ``op`` with these operands asks for a tensor past `MAX_TENSOR_BYTES`, judged from what is
    known (`UNKNOWN` operands count as small); else what it asks for, as a clause."""
    if not isinstance(op, torch._ops.OpOverload):
        return ""
    asked = _declared_bytes(op, _bind(op, args, kwargs))
    if asked is None or asked <= MAX_TENSOR_BYTES:
        return ""
    return (
        f"asks for a tensor of {asked} bytes, past the limit of {MAX_TENSOR_BYTES} bytes "
        f"({MAX_TENSOR_BYTES >> 30} GiB) that a program from a file may make"
    )


def sized(op: object) -> TypeGuard[torch._ops.OpOverload]:
    """Whether ``op`` asks for a tensor by size, so that its operands must be judged when it runs."""
    return isinstance(op, torch._ops.OpOverload) and _size_kind(op) is not None


def oversized(value: Any) -> str:
    """``""`` unless ``value`` is or holds a tensor past `MAX_TENSOR_BYTES`; else its shape and size."""
    if isinstance(value, torch.Tensor):
        size = value.numel() * value.element_size()
        return f"a tensor of shape {list(value.shape)} ({size} bytes)" if size > MAX_TENSOR_BYTES else ""
    if isinstance(value, (list, tuple)):
        return next((found for found in map(oversized, value) if found), "")
    return ""


def guarded(op: torch._ops.OpOverload, *, check_results: bool = True) -> Callable[..., Any]:
    """``op`` as a program from a file runs it: sizes judged first (if it asks by size), memory of the
    ``empty`` family zero-filled, and (``check_results``) what it returns checked against `MAX_TENSOR_BYTES`."""
    check_sizes = sized(op)
    fill = op._schema.name.split("::", 1)[-1] in FILLS_UNINITIALIZED

    def run(*args: Any, **kwargs: Any) -> Any:
        if check_sizes:
            problem = size_problem(op, args, kwargs)
            if problem:
                raise ValueError(f"{op_label(op)} {problem}")
        result = op(*args, **kwargs)
        if fill:
            result.zero_()
        found = oversized(result) if check_results else ""
        if found:
            raise ValueError(
                f"{op_label(op)} made {found}, past the limit of {MAX_TENSOR_BYTES} bytes that a "
                "program from a file may make"
            )
        return result

    return run


def op_label(op: torch._ops.OpOverload) -> str:
    """``aten::full.default``."""
    return f"{op._schema.name}.{op._overloadname}"


_SIZE_ARGUMENTS = ("size", "shape")
# Ops that take a tensor and a size, and make a tensor of that size rather than of the tensor's.
_GROWS_INPUT = frozenset({"expand", "expand_copy", "broadcast_to", "broadcast_in_dim"})
_COUNTED = ("arange", "linspace", "logspace", "eye", "iota", "repeat", "tril_indices", "triu_indices")


@functools.cache
def _size_kind(op: torch._ops.OpOverload) -> str | None:
    """How ``op`` says the size of what it makes: ``"size"`` (a size or shape argument of a factory, a
    ``new_*`` or an expand), the name of an op whose operands count elements, or None (its size follows
    its inputs: views, reshapes and every other op)."""
    arguments = op._schema.arguments
    base = op._schema.name.split("::", 1)[-1]
    if base in _COUNTED:
        return base
    if not any(a.name in _SIZE_ARGUMENTS for a in arguments):
        return None
    factory = not any("Tensor" in str(a.type) for a in arguments)
    return "size" if factory or base.startswith("new_") or base in _GROWS_INPUT else None


_NO_DEFAULT = object()


@functools.cache
def _parameters(op: torch._ops.OpOverload) -> tuple[tuple[str, bool, Any], ...]:
    """``(name, keyword only, default)`` per argument, read once: the schema's accessors are slow to call."""
    return tuple(
        (a.name, a.kwarg_only, a.default_value if a.has_default_value() else _NO_DEFAULT) for a in op._schema.arguments
    )


def _bind(op: torch._ops.OpOverload, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bound = {}
    for position, (name, kwarg_only, default) in enumerate(_parameters(op)):
        if name in kwargs:
            bound[name] = kwargs[name]
        elif position < len(args) and not kwarg_only:
            bound[name] = args[position]
        elif default is not _NO_DEFAULT:
            bound[name] = default
    return bound


def _declared_bytes(op: torch._ops.OpOverload, bound: dict[str, Any]) -> int | None:
    kind = _size_kind(op)
    if kind is None:
        return None
    if kind == "size":
        shape = next((bound[n] for n in _SIZE_ARGUMENTS if n in bound), None)
        elements = _extent(shape, bound.get("stride"))
    elif kind == "arange":
        elements = _arange_length(bound)
    elif kind in ("linspace", "logspace"):
        elements = _number(bound.get("steps"))
    elif kind == "eye":
        n = _number(bound.get("n"))
        m = _number(bound.get("m", bound.get("n")))
        elements = None if n is None or m is None else n * m
    elif kind == "iota":
        elements = _number(bound.get("length"))
    elif kind in ("tril_indices", "triu_indices"):
        row, col = _number(bound.get("row")), _number(bound.get("col"))
        elements = None if row is None or col is None else 2 * row * col
    else:  # repeat: the input's elements times the repeats
        repeats = _extent(bound.get("repeats"), None)
        self = bound.get("self")
        elements = None if repeats is None else repeats * (self.numel() if isinstance(self, torch.Tensor) else 1)
    if elements is None:
        return None
    return elements * _itemsize(bound)


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return max(int(value), 0)


def _extent(shape: Any, stride: Any) -> int | None:
    """Elements a tensor of ``shape`` (and ``stride``, if given) spans; -1 and unknown sizes count as 1."""
    if not isinstance(shape, (list, tuple)):
        return None
    sizes = [s if isinstance(s, int) and not isinstance(s, bool) and s >= 0 else 1 for s in shape]
    if 0 in sizes:
        return 0
    if (
        isinstance(stride, (list, tuple))
        and len(stride) == len(sizes)
        and all(isinstance(s, int) and not isinstance(s, bool) for s in stride)
    ):
        return 1 + sum((size - 1) * abs(int(step)) for size, step in zip(sizes, stride))
    return math.prod(sizes)


def _arange_length(bound: dict[str, Any]) -> int | None:
    start, end, step = _real(bound.get("start", 0)), _real(bound.get("end")), _real(bound.get("step", 1))
    if start is None or end is None or step is None or step == 0:
        return None
    return max(math.ceil((end - start) / step), 0)


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _itemsize(bound: dict[str, Any]) -> int:
    dtype = bound.get("dtype")
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    if "end" in bound and all(isinstance(bound.get(n, 0), int) for n in ("start", "end", "step")):
        return torch.int64.itemsize  # arange of ints
    self = bound.get("self")
    if isinstance(self, torch.Tensor):
        return self.element_size()
    if "self" in bound:  # computed at run time: judged again then
        return 1
    return torch.get_default_dtype().itemsize
