"""Typed compile specs: one parser for validate, preprocess and compile.

A backend declares the options of one method as a dataclass (its
``CompileSpec``); each default is written there once. Options arrive as a plain
mapping (``{}`` means all defaults)::

    spec = parse_compile_spec(OnnxRuntimeCompileSpec, {"intra_op_num_threads": 2}, path="compile_spec.forward")

Every key and value is checked against the field types (bool, int, float, str,
enums by name, ``Optional``, ``List``, ``Dict``, nested dataclasses, ``Any``),
then the dataclass is built, so its ``__post_init__`` runs the cross-field
rules. Any problem is a `SpecError` whose message starts with the key path and
says what is allowed. `options_of` turns a spec back into plain JSON values, as
artifacts and reports record it.

A received artifact's manifest carries every option, so every number in a spec
has a bound that nothing in a file can raise, documented beside its field and
checked in ``__post_init__`` with `out_of_range`. Bounds several specs share
are here: `MAX_THREADS` and `MAX_CALIBRATION_SAMPLES`.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, cast

from pipeline.core.errors import FieldError as FieldError  # re-exported: importable from here, as before
from pipeline.core.errors import LoweringError, did_you_mean, format_choices
from pipeline.core.errors import SpecError as SpecError

_MISSING = dataclasses.MISSING

# Threads (or streams) of one runtime pool, and of torch in a run. Beyond the cores a count only costs
# start-up: onnxruntime took 1.3 s to start 256 intra-op threads on 2 cores, 7.5 s for 1024, and over two
# minutes for 1024 intra- and inter-op threads; a count from a file must not choose that.
MAX_THREADS = 256
# Random inputs a quantizer calibrates on, besides the examples: each is one run of the model when lowering.
MAX_CALIBRATION_SAMPLES = 10_000


def out_of_range(value: int, low: int, high: int, meaning: str = "") -> str:
    """``""`` if ``low <= value <= high``; else ``must be in low..high (meaning), not value``."""
    if low <= value <= high:
        return ""
    return f"must be in {low}..{high}{f' ({meaning})' if meaning else ''}, not {value}"


def parse_compile_spec(schema: type, options: Any, path: str = "compile_spec") -> Any:
    """An instance of the dataclass ``schema`` from ``options`` (a mapping, or an instance of it)."""
    if isinstance(options, schema):
        options = options_of(options)
    if options is None:
        options = {}
    values = _parse_dataclass(schema, options, path)
    try:
        return schema(**values)
    except FieldError as error:  # __post_init__, about one field
        raise SpecError(f"{_join(path, error.field)}: {error.message}") from None
    except (LoweringError, ValueError, TypeError) as error:  # __post_init__: a rule across fields
        raise SpecError(f"{path}: {_message(error)}" if path else _message(error)) from None


def parse_method_specs(schema: type, method_compile_spec: Mapping[str, Any]) -> dict[str, Any]:
    """``{method: schema instance}`` for a whole method compile spec, as preprocess and compile read it."""
    return {
        method: parse_compile_spec(schema, options, f"compile_spec.{method}")
        for method, options in method_compile_spec.items()
    }


def options_of(spec: Any) -> dict[str, Any]:
    """A spec instance as plain JSON values (enums by value), every field present."""
    return {f.name: _plain(getattr(spec, f.name)) for f in dataclasses.fields(spec)}


def default_options(schema: type) -> dict[str, Any]:
    """The defaults of every field as plain JSON values, without building the dataclass
    (its ``__post_init__`` may import a runtime, which showing defaults must not need)."""
    defaults = {}
    for f in dataclasses.fields(schema):
        if f.default is not _MISSING:
            defaults[f.name] = _plain(f.default)
        elif f.default_factory is not _MISSING:
            defaults[f.name] = _plain(f.default_factory())
        elif dataclasses.is_dataclass(_field_types(schema)[f.name]):
            defaults[f.name] = default_options(_field_types(schema)[f.name])
    return defaults


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return options_of(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _field_types(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _parse_dataclass(schema: type, options: Any, path: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    if not isinstance(options, Mapping):
        raise SpecError(f"{path or 'config'}: expected a mapping with keys {format_choices(fields)}, got {options!r}.")
    types = _field_types(schema)
    values = {}
    for key, value in options.items():
        if key not in fields:
            raise SpecError(
                f"{_join(path, key)}: unknown key; allowed: {format_choices(fields)}." + did_you_mean(key, fields)
            )
        values[key] = _parse_value(types[key], value, _join(path, key))
    missing = [
        name
        for name, f in fields.items()
        if name not in values and f.default is _MISSING and f.default_factory is _MISSING
    ]
    if missing:
        raise SpecError(f"{path or 'config'}: missing required key(s) {format_choices(missing)}.")
    return values


def _parse_value(kind: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):  # Optional[X] and X | None
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _parse_value(inner[0], value, path)
        raise SpecError(f"{path}: unions other than Optional are not supported in specs.")
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _parse_enum(kind, value, path)
    if dataclasses.is_dataclass(kind):
        return parse_compile_spec(cast(type, kind), value, path)  # a field's type, never an instance
    if origin in (list, tuple) or kind in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{path}: expected a list, got {value!r}.")
        item = args[0] if args else Any
        return [_parse_value(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if not isinstance(value, Mapping):
            raise SpecError(f"{path}: expected a mapping, got {value!r}.")
        item = args[1] if len(args) == 2 else Any
        return {str(k): _parse_value(item, v, _join(path, k)) for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{path}: expected true or false, got {value!r}.")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}: expected an integer, got {value!r}.")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{path}: expected a number, got {value!r}.")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise SpecError(f"{path}: expected a string, got {value!r}.")
        return value
    raise SpecError(f"{path}: fields of type {kind!r} are not supported in specs.")


def _parse_enum(kind: type[enum.Enum], value: Any, path: str) -> enum.Enum:
    if isinstance(value, kind):
        return value
    for member in kind:  # by name or by value: configs say `all`, code may pass the value
        if value == member.name or value == member.value:
            return member
    names = [m.name for m in kind]
    raise SpecError(f"{path}: {value!r} is not allowed; allowed: {format_choices(names)}.{did_you_mean(value, names)}")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _message(error: BaseException) -> str:
    return str(error.args[0]) if error.args else type(error).__name__


def spec_fields(schema: type) -> tuple[tuple[str, str, Any], ...]:
    """``(name, type, default)`` per field, for listings such as ``python -m pipeline.backends``."""
    types, defaults = _field_types(schema), default_options(schema)
    return tuple((f.name, _type_text(types[f.name]), defaults.get(f.name)) for f in dataclasses.fields(schema))


def _type_text(kind: Any) -> str:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return " | ".join(m.name for m in kind)
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")
