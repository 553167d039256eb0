"""The arithmetic of symbolic sizes: export's Python calls on ``SymInt`` values as scalar builtins.

An exported program whose inputs have dynamic dimensions reads their sizes
with ``aten::sym_size`` and computes further sizes with Python itself:
``operator.mul(batch, 4)``, ``sym_max(seq, 1)``, ``math.ceil(seq / 2)``. Those
nodes name no ATen op. Each becomes the TorchScript builtin that computes the
same on plain numbers (``aten::mul.int``, ``prim::max.int``), its overload
chosen by the operands' types as export recorded them (``SymInt`` -> int,
``SymFloat`` -> float, ``SymBool`` -> bool); ``math.ceil`` and ``math.floor``
become the table's ``math::ceil`` and ``math::floor``, Python's own. So the
instruction list computes every size at run time from the actual inputs and
bakes none in. A static program has none of these nodes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from pipeline.backends.reference import ops

# Python callable -> the builtin (without overload) that computes it on numbers, with the operands' types
_BUILTINS: dict[Callable, str] = {
    operator.add: "aten::add",
    operator.sub: "aten::sub",
    operator.mul: "aten::mul",
    operator.floordiv: "aten::floordiv",
    operator.mod: "aten::remainder",
    operator.truediv: "aten::div",
    operator.pow: "aten::pow",
    operator.neg: "aten::neg",
    operator.eq: "aten::eq",
    operator.ne: "aten::ne",
    operator.lt: "aten::lt",
    operator.le: "aten::le",
    operator.gt: "aten::gt",
    operator.ge: "aten::ge",
    operator.and_: "aten::__and__",
    operator.or_: "aten::__or__",
    torch.sym_not: "aten::__not__",
    torch.sym_max: "prim::max",
    torch.sym_min: "prim::min",
    torch.sym_float: "aten::Float",
    torch.sym_int: "aten::Int",
    math.ceil: "math::ceil",  # Python kernels of the op table: one op, whatever number it rounds
    math.floor: "math::floor",
}

# Overloads named otherwise than by the operands' types: int ** int is an int in Python, and
# aten::pow.int returns a float
_SPECIAL_OVERLOADS: dict[tuple[str, tuple[str, ...]], str] = {("aten::pow", ("int", "int")): "int_to_int"}


def is_symbolic_call(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a Python call on numbers that this module turns into a builtin."""
    return node.op == "call_function" and node.target in _BUILTINS


def builtin_for(node: torch.fx.Node) -> str | None:
    """The builtin with its overload (``aten::mul.int``) that computes ``node``'s Python call, or None
    when no overload takes its operands' types."""
    name = _BUILTINS[cast(Callable, node.target)]
    kinds = [_kind(arg) for arg in node.args]
    if None in kinds or node.kwargs:
        return None
    if name.startswith("math::"):
        return name if len(kinds) == 1 else None
    for overload in _candidate_overloads(name, cast(list[str], kinds)):
        if _takes_numbers(ops.schema(f"{name}.{overload}"), len(kinds)):
            return f"{name}.{overload}"
    return None


def unsupported_reason(node: torch.fx.Node) -> str:
    """Why `builtin_for` has no builtin for ``node``."""
    kinds = ", ".join(_kind(arg) or type(_value(arg)).__name__ for arg in node.args)
    keywords = f" and keywords {', '.join(node.kwargs)}" if node.kwargs else ""
    return (
        f"is Python's {getattr(node.target, '__name__', node.target)} on ({kinds}){keywords}, which the reference "
        "backend has no builtin for (it computes sizes with int, float and bool arithmetic)"
    )


def _candidate_overloads(name: str, kinds: Sequence[str]) -> list[str]:
    special = _SPECIAL_OVERLOADS.get((name, tuple(kinds)))
    if special:
        return [special]
    typed = kinds[0] if len(set(kinds)) == 1 else "_".join(kinds)
    # the Scalar forms (``aten::div(Scalar a, Scalar b)``, ``aten::Int.Scalar``) take any number
    return [typed, "default", "Scalar"]


_NUMBER_TYPES = {"int", "float", "bool", "Scalar", "number"}


def _takes_numbers(schema: torch.FunctionSchema | None, count: int) -> bool:
    """Whether ``schema`` takes exactly ``count`` numbers (``aten::neg.default`` takes a Tensor)."""
    return (
        schema is not None
        and len(schema.arguments) == count
        and all(str(argument.type) in _NUMBER_TYPES for argument in schema.arguments)
    )


def _value(arg: Any) -> Any:
    return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg


def _kind(arg: Any) -> str | None:
    """``int``, ``float`` or ``bool``: the type of an operand as export recorded it."""
    value = _value(arg)
    if isinstance(value, (bool, torch.SymBool)):
        return "bool"
    if isinstance(value, (int, torch.SymInt)):
        return "int"
    if isinstance(value, (float, torch.SymFloat)):
        return "float"
    return None
