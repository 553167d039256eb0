"""Reading JSON that came from elsewhere: bounded in size and depth, each field checked for its type.

``json.loads`` alone lets a file decide how deep Python recurses (a
``RecursionError`` at about a thousand levels) and hands back whatever types
the file holds, so that the first ``data.get`` on a list fails with an
``AttributeError``. Here every problem is a `MalformedInput` whose message
names the part and the field (``manifest.json: signatures.forward.params[0].name
must be a string, not a list``).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.errors import MalformedInput

MAX_DEPTH = 64  # our own files nest about 8 levels; torch's treespec strings nest 2 levels per output level
_REQUIRED = object()
_KIND_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def parse_json(data: bytes | str, what: str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in ``data``, or `MalformedInput` naming ``what`` and the problem."""
    if len(data) > max_bytes:
        raise MalformedInput(f"{what}: {len(data)} bytes, more than the limit of {max_bytes}.")
    try:
        value = json.loads(data)
    except RecursionError:
        raise MalformedInput(f"{what}: JSON nested deeper than {max_depth} levels.") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise MalformedInput(f"{what}: not valid JSON: {error}") from None
    check_depth(value, what, max_depth)
    return value


def check_depth(value: Any, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Without recursion, so that the check itself cannot overflow the stack."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > max_depth:
            raise MalformedInput(f"{what}: JSON nested deeper than {max_depth} levels.")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def expect(value: Any, kinds: type | tuple[type, ...], where: str) -> Any:
    """``value`` if it has one of ``kinds`` (JSON's: no bool where an int is asked, ints count as numbers)."""
    kind = type(value)  # exact types: True is not an int here; an int is a number (float)
    if kind is kinds or (kinds is float and kind is int):
        return value
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if kind not in kinds and not (kind is int and float in kinds):
        wanted = " or ".join(_KIND_NAMES.get(kind, kind.__name__) for kind in kinds)
        raise MalformedInput(f"{where} must be {wanted}, not {_describe(value)}.")
    return value


def member(data: Any, key: str, kinds: type | tuple[type, ...], where: str, default: Any = _REQUIRED) -> Any:
    """``data[key]`` checked for its type; ``default`` if the key is absent and a default is given."""
    expect(data, dict, where)
    if key not in data:
        if default is _REQUIRED:
            raise MalformedInput(f"{where} has no {key!r}.")
        return default
    return expect(data[key], kinds, f"{where}.{key}")


def _describe(value: Any) -> str:
    name = _KIND_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return name
    text = repr(value)
    return f"{name} {text if len(text) <= 40 else text[:37] + '...'}"
