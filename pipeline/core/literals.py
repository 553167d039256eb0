"""The closed set of text that generated code may hold from a signature: names, literals, annotations.

A lowered module's methods are Python source generated from the original
method's signature, which an artifact carries in its manifest. So that no text
from a file becomes code, each piece is checked against a closed set and
rendered by us:

* names (`check_name`): Python identifiers that are not keywords, not
  ``__dunder__`` names, and not one of the names the generated code itself uses;
* defaults (`literal_source`, `read_literal`): ``None``, bools, ints, finite
  floats, strings, and tuples, lists and dicts of them, written with ``repr``
  and read back with ``ast.literal_eval``; the text must be exactly the
  ``repr`` of what it reads as;
* annotations (`check_annotation`): type names from an allow-list (``int``,
  ``torch.Tensor``, ``Optional``, ...) combined with ``[...]``, ``,`` and ``|``,
  and ``None`` and ``...``; they only ever appear inside a ``repr``'d docstring.
"""

from __future__ import annotations

import ast
import keyword
import math
import unicodedata
from typing import Any

from pipeline.core.errors import LoweringError

# The globals the generated code reads (pipeline.core.codegen binds them): a parameter of the
# same name would shadow them.
# The globals and locals generated methods use besides their parameters (pipeline.core.codegen).
GENERATED_GLOBALS: frozenset[str] = frozenset(
    {"Tensor", "BackendRuntimeError", "tree_unflatten", "tree_structure", "same_value", "outputs"}
)
MAX_LITERAL_CHARS = 10_000
MAX_ANNOTATION_CHARS = 300
_MAX_LITERAL_DEPTH = 32

_TYPING = (
    "Any",
    "Optional",
    "Union",
    "List",
    "Tuple",
    "Dict",
    "Set",
    "FrozenSet",
    "Sequence",
    "Mapping",
    "Iterable",
    "Callable",
    "Type",
)
ANNOTATION_NAMES: frozenset[str] = frozenset(
    (
        "None",
        "NoneType",
        "bool",
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "object",
        "Tensor",
        "torch.Tensor",
        "torch.dtype",
        "torch.device",
        "torch.Size",
        # TorchScript's own type names, as str(schema type) writes them
        "number",
        "Scalar",
        "Device",
        "ScalarType",
        "Layout",
        "MemoryFormat",
        "Generator",
        "Storage",
    )
    + _TYPING
    + tuple(f"typing.{name}" for name in _TYPING)
)


def check_name(name: Any, what: str, *, reserved: frozenset[str] = frozenset()) -> str:
    """``name`` if generated code may use it as ``what`` (a method or parameter name); else `LoweringError`."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise LoweringError(f"The {what} {name!r} is not a Python identifier (or is a keyword).")
    if unicodedata.normalize("NFKC", name) != name:  # Python reads 'ﬁ' as 'fi' in source: two names, one variable
        raise LoweringError(f"The {what} {name!r} is not in NFKC normal form, as Python reads identifiers.")
    if name.startswith("__") and name.endswith("__"):
        raise LoweringError(f"The {what} {name!r} is a __dunder__ name, which generated code does not define.")
    if name in GENERATED_GLOBALS or name in reserved:
        taken = sorted(GENERATED_GLOBALS | reserved)
        raise LoweringError(f"The {what} {name!r} clashes with a name the generated code uses ({', '.join(taken)}).")
    return name


def literal_source(value: Any) -> str | None:
    """``repr(value)`` if ``value`` is in the closed literal set (so that `read_literal` reads it back), else None."""
    if not _is_literal(value, 0):
        return None
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return None
    return text if len(text) <= MAX_LITERAL_CHARS else None


def read_literal(text: Any, what: str) -> Any:
    """The value a literal's text stands for; `LoweringError` unless the text is exactly `literal_source` of it."""
    if not isinstance(text, str) or len(text) > MAX_LITERAL_CHARS:
        raise LoweringError(f"The {what} must be a Python literal of at most {MAX_LITERAL_CHARS} characters.")
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = _NOT_A_LITERAL
    if value is _NOT_A_LITERAL or literal_source(value) != text:
        raise LoweringError(
            f"The {what} {_clip(text)} is not a literal written as this pipeline writes them; allowed: "
            "None, bool, int, finite float, str, and tuples, lists and dicts of them."
        )
    return value


def check_annotation(text: Any, what: str) -> str:
    """``text`` if it is an annotation built from `ANNOTATION_NAMES`; else `LoweringError`."""
    problem = None
    if not isinstance(text, str) or len(text) > MAX_ANNOTATION_CHARS:
        problem = f"must be text of at most {MAX_ANNOTATION_CHARS} characters"
    else:
        try:
            problem = _annotation_problem(ast.parse(text, mode="eval").body)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            problem = "is not a Python expression"
    if problem is None and isinstance(text, str):
        return text
    raise LoweringError(
        f"The {what} {_clip(text)} {problem}; annotations are built from the names "
        f"{', '.join(sorted(ANNOTATION_NAMES))} with [...], ',' and '|', None and '...'."
    )


_NOT_A_LITERAL = object()


def _is_literal(value: Any, depth: int) -> bool:
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return True
    if kind is float:
        return math.isfinite(value)
    if depth >= _MAX_LITERAL_DEPTH:
        return False
    if kind in (tuple, list):
        return all(_is_literal(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(key) in (str, int, bool) and _is_literal(item, depth + 1) for key, item in value.items())
    return False


def _annotation_problem(node: ast.AST) -> str | None:
    """Why ``node`` is not in the closed annotation grammar, or None (iterative: no recursion to exhaust)."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Name, ast.Attribute)):
            dotted = _dotted(node)
            if dotted not in ANNOTATION_NAMES:
                return f"names {dotted or 'an expression'!r}, which is not an allowed type name"
        elif isinstance(node, ast.Subscript):
            stack += [node.value, node.slice]
        elif isinstance(node, (ast.Tuple, ast.List)):
            stack += node.elts
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            stack += [node.left, node.right]
        elif isinstance(node, ast.Constant) and (node.value is None or node.value is Ellipsis):
            continue
        else:
            return f"holds {type(node).__name__}, which an annotation may not"
    return None


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _clip(text: Any) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
