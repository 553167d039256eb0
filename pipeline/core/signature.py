"""What a lowered method must look like from outside: its parameters and its output structure.

`MethodSignature` keeps the original method's parameters exactly: names,
positional defaults, keyword-only arguments, ``*args`` and ``**kwargs`` (the
original backend API drops defaults and cannot parse keyword-only arguments).
Its `CapturedCall` records what a program was captured with, argument by
argument, so that a lowered method refuses a call its program was not
specialised for. `OutputStructure` is the method's output pytree
spec plus the kind of each leaf, so the lowered method can rebuild and check
what the backend returns. Both serialize to plain JSON for artifacts, and read
it back as data only (`pipeline.core.literals` for names, defaults and
annotations; a closed set of registered pytree node types for the output
structure, never torch's ``treespec_loads``, whose enum and defaultdict
contexts import any module a file names).
"""

from __future__ import annotations

import collections
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from pipeline.core.bounded_json import expect, member, parse_json
from pipeline.core.errors import LoweringError, MalformedInput
from pipeline.core.literals import check_annotation, check_name, literal_source, read_literal

POSITIONAL = "positional"
KEYWORD_ONLY = "keyword_only"
VAR_POSITIONAL = "var_positional"  # *args
VAR_KEYWORD = "var_keyword"  # **kwargs
_KINDS = {
    POSITIONAL: inspect.Parameter.POSITIONAL_OR_KEYWORD,
    KEYWORD_ONLY: inspect.Parameter.KEYWORD_ONLY,
    VAR_POSITIONAL: inspect.Parameter.VAR_POSITIONAL,
    VAR_KEYWORD: inspect.Parameter.VAR_KEYWORD,
}
_NO_DEFAULT = inspect.Parameter.empty
MAX_PARAMS = 1000
MAX_OUTPUT_DEPTH = 32
MAX_OUTPUT_LEAVES = 100_000
_PARAM_KEYS = frozenset({"name", "kind", "default", "annotation"})

# What a captured program took for one argument.
TENSOR = "tensor"  # a tensor: passed to the backend on every call
CONSTANT = "constant"  # None, a number, a string, ...: the program was specialised on this value
STRUCTURE = "structure"  # a tuple/list/dict of tensors: passed on, its structure fixed

# What the captured program takes as inputs, and so what ``execute`` receives.
EVERY_VALUE = "every_value"  # export: one input per argument, constants included
TENSORS_ONLY = "tensors_only"  # a trace: the tensor arguments only; constants are baked in


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # POSITIONAL, KEYWORD_ONLY, VAR_POSITIONAL or VAR_KEYWORD
    default: Any = _NO_DEFAULT
    annotation: Any = _NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass(frozen=True)
class CapturedValue:
    """One argument value a program was captured with, as the lowered method checks it on every call."""

    name: str  # the parameter, a keyword passed through **kwargs, or `args[i]` for *args
    kind: str  # TENSOR, CONSTANT or STRUCTURE
    value: Any = None  # CONSTANT: the value; STRUCTURE: the pytree spec as text

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == CONSTANT:
            item["value"] = _saved_default(self.value, self.name)
        elif self.kind == STRUCTURE:
            item["value"] = self.value
        return item

    @classmethod
    def from_json(cls, data: Any, where: str) -> CapturedValue:
        _only_keys(data, frozenset({"name", "kind", "value"}), where)
        name = member(data, "name", str, where)
        if len(name) > 256:
            raise MalformedInput(f"{where}.name is longer than 256 characters.")
        kind = member(data, "kind", str, where)
        if kind == CONSTANT:
            return cls(name, kind, read_literal(member(data, "value", str, where), f"captured value at {where}.value"))
        if kind == STRUCTURE:
            text = member(data, "value", str, where)
            try:  # a pytree spec names registered types only: reading it imports and runs nothing
                pytree.treespec_loads(text)
            except Exception as error:
                raise MalformedInput(f"{where}.value is not a pytree spec this process knows: {error}") from None
            return cls(name, kind, text)
        if kind == TENSOR:
            return cls(name, kind)
        raise MalformedInput(f"{where}.kind is {kind!r}; allowed: {[TENSOR, CONSTANT, STRUCTURE]}.")


@dataclass(frozen=True)
class CapturedCall:
    """What a program was captured with, argument by argument, in the order ``execute`` receives them.

    A program captured by export or by tracing is specialised on every value
    that is not a tensor, and on the choice of tensor or ``None``. The lowered
    method checks each call against this record, so a call that differs (another
    ``scale``, a ``bias`` where ``None`` was captured, a keyword that was not
    passed) is an error that names the argument, never a silent wrong answer.
    """

    values: tuple[CapturedValue, ...]
    var_positional: int = 0  # how many *args the program was captured with
    keywords: tuple[str, ...] = ()  # the **kwargs keys it was captured with, in order
    takes: str = EVERY_VALUE

    @classmethod
    def of(
        cls,
        signature: MethodSignature,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        method: str,
        takes: str = EVERY_VALUE,
    ) -> CapturedCall:
        bound = signature.bind_call(args, kwargs, method)
        values, var_positional, keywords = [], 0, ()
        for p in signature.params:
            value = bound.arguments.get(p.name, () if p.kind == VAR_POSITIONAL else {})
            if p.kind == VAR_POSITIONAL:
                var_positional = len(value)
                values += [_captured(f"{p.name}[{i}]", v) for i, v in enumerate(value)]
            elif p.kind == VAR_KEYWORD:
                keywords = tuple(value)
                values += [_captured(k, v) for k, v in value.items()]
            else:
                values.append(_captured(p.name, value))
        return cls(tuple(values), var_positional, keywords, takes)

    def flatten(self, signature: MethodSignature, bound: inspect.BoundArguments) -> list[Any]:
        """The values of a bound call in ``execute`` order (defaults applied)."""
        flat: list[Any] = []
        for p in signature.params:
            if p.kind == VAR_POSITIONAL:
                flat += list(bound.arguments.get(p.name, ()))
            elif p.kind == VAR_KEYWORD:
                extra = bound.arguments.get(p.name, {})
                flat += [extra[k] for k in self.keywords if k in extra]
            else:
                flat.append(bound.arguments[p.name])
        if self.takes == TENSORS_ONLY:
            return [value for value, captured in zip(flat, self.values) if captured.kind != CONSTANT]
        return flat

    def export_arguments(self, signature: MethodSignature, flat: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` for ``torch.export.export`` from values in ``execute`` order."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        values = iter(flat)
        for p in signature.params:
            if p.kind == POSITIONAL:
                args.append(next(values))
            elif p.kind == VAR_POSITIONAL:
                args += [next(values) for _ in range(self.var_positional)]
            elif p.kind == KEYWORD_ONLY:
                kwargs[p.name] = next(values)
            else:
                kwargs.update((k, next(values)) for k in self.keywords)
        return tuple(args), kwargs

    def to_json(self) -> dict[str, Any]:
        return {
            "values": [v.to_json() for v in self.values],
            "var_positional": self.var_positional,
            "keywords": list(self.keywords),
            "takes": self.takes,
        }

    @classmethod
    def from_json(cls, data: Any, params: list[Param], where: str) -> CapturedCall:
        """The record an artifact holds, checked against the signature's parameters it describes."""
        _only_keys(data, frozenset({"values", "var_positional", "keywords", "takes"}), where)
        items = member(data, "values", list, where)
        var_positional = member(data, "var_positional", int, where)
        keywords = member(data, "keywords", list, where)
        takes = member(data, "takes", str, where)
        if takes not in (EVERY_VALUE, TENSORS_ONLY):
            raise MalformedInput(f"{where}.takes is {takes!r}; allowed: {EVERY_VALUE!r}, {TENSORS_ONLY!r}.")
        kinds = {p.kind for p in params}
        named = sum(p.kind in (POSITIONAL, KEYWORD_ONLY) for p in params)
        if (
            (var_positional and VAR_POSITIONAL not in kinds)
            or (keywords and VAR_KEYWORD not in kinds)
            or not 0 <= var_positional <= MAX_PARAMS
            or len(keywords) > MAX_PARAMS
            or len(items) != named + var_positional + len(keywords)
        ):
            raise MalformedInput(
                f"{where}: {len(items)} captured values do not fit the parameters "
                f"({named} named, {var_positional} *args, {len(keywords)} **kwargs)."
            )
        for i, keyword in enumerate(keywords):
            expect(keyword, str, f"{where}.keywords[{i}]")
        values = tuple(CapturedValue.from_json(v, f"{where}.values[{i}]") for i, v in enumerate(items))
        return cls(values, var_positional, tuple(keywords), takes)


def _captured(name: str, value: Any) -> CapturedValue:
    if isinstance(value, torch.Tensor):
        return CapturedValue(name, TENSOR)
    leaves, spec = pytree.tree_flatten(value)
    if leaves and all(isinstance(leaf, torch.Tensor) for leaf in leaves) and not spec.is_leaf():
        return CapturedValue(name, STRUCTURE, pytree.treespec_dumps(spec))
    _saved_default(value, name)  # a value the program was specialised on must be recordable
    return CapturedValue(name, CONSTANT, value)


@dataclass(frozen=True)
class MethodSignature:
    params: tuple[Param, ...]
    return_annotation: Any = _NO_DEFAULT
    captured: CapturedCall | None = None  # None: the program takes every value as it comes (scripted)

    @classmethod
    def of(cls, fn: Any, method: str = "forward") -> MethodSignature:
        """The signature of a bound method (eager, or scripted from Python source)."""
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return cls.from_schema(fn.schema)
        kinds = {kind: name for name, kind in _KINDS.items()}
        params = []
        for p in signature.parameters.values():
            if p.kind is p.POSITIONAL_ONLY:
                raise LoweringError(
                    f"Method {method!r} has positional-only parameter {p.name!r}; lowered methods "
                    "take their arguments by position or by name."
                )
            params.append(Param(p.name, kinds[p.kind], p.default, p.annotation))
        return cls(tuple(params), signature.return_annotation)

    @classmethod
    def from_schema(cls, schema: Any) -> MethodSignature:
        params = []
        for arg in schema.arguments[1:]:  # skip self
            default = arg.default_value if arg.has_default_value() else _NO_DEFAULT
            params.append(Param(arg.name, KEYWORD_ONLY if arg.kwarg_only else POSITIONAL, default, str(arg.type)))
        return cls(tuple(params))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def bind_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None, method: str = "forward"
    ) -> inspect.BoundArguments:
        try:
            bound = self.to_inspect().bind(*args, **(kwargs or {}))
        except TypeError as error:
            raise LoweringError(f"Arguments for method {method!r} do not fit its signature {self}: {error}") from None
        bound.apply_defaults()
        return bound

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None, method: str = "forward") -> list[Any]:
        """All argument values in ``execute`` order (positional, *args, keyword-only, **kwargs), defaults filled in."""
        bound = self.bind_call(args, kwargs, method)
        if self.captured is not None:
            return self.captured.flatten(self, bound)
        return CapturedCall((), 0, tuple(bound.arguments.get(self._var_keyword, {}))).flatten(self, bound)

    @property
    def _var_keyword(self) -> str:
        return next((p.name for p in self.params if p.kind == VAR_KEYWORD), "")

    def to_inspect(self, with_self: bool = False) -> inspect.Signature:
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] if with_self else []
        params += [
            inspect.Parameter(p.name, _KINDS[p.kind], default=p.default, annotation=p.annotation) for p in self.params
        ]
        return inspect.Signature(params, return_annotation=self.return_annotation)

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """``(x: torch.Tensor, k=1, *, scale: float = 2.0) -> torch.Tensor``, the same before saving and after
        loading: annotations shown by name, those outside `pipeline.core.literals.ANNOTATION_NAMES` left out
        (as in an artifact, see `to_json`)."""
        pieces: list[str] = []
        star = False
        for p in self.params:
            if p.kind == KEYWORD_ONLY and not star:
                pieces.append("*")
                star = True
            annotation = _saved_annotation(p.annotation)
            piece = p.name if annotation is None else f"{p.name}: {annotation}"
            if p.has_default:
                shown = literal_source(p.default) or f"<{type(p.default).__name__}>"
                piece += f"={shown}" if annotation is None else f" = {shown}"
            pieces.append(piece)
        returns = _saved_annotation(self.return_annotation)
        return f"({', '.join(pieces)})" + ("" if returns is None else f" -> {returns}")

    def to_json(self) -> dict[str, Any]:
        """Names, kinds, defaults as literals (a default that is not one cannot be saved: `LoweringError`),
        and the annotations built from allowed type names; an annotation that names another type (a class
        of the user's) is documentation only, and is left out rather than let a file name code."""
        params = []
        for p in self.params:
            item: dict[str, Any] = {"name": p.name, "kind": p.kind}
            if p.has_default:
                item["default"] = _saved_default(p.default, p.name)
            annotation = _saved_annotation(p.annotation)
            if annotation is not None:
                item["annotation"] = annotation
            params.append(item)
        out: dict[str, Any] = {"params": params}
        returns = _saved_annotation(self.return_annotation)
        if returns is not None:
            out["returns"] = returns
        if self.captured is not None:
            out["captured"] = self.captured.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "signature") -> MethodSignature:
        """The signature an artifact describes; `MalformedInput` or `LoweringError` naming the field otherwise."""
        _only_keys(data, frozenset({"params", "returns", "captured"}), where)
        items = member(data, "params", list, where)
        if len(items) > MAX_PARAMS:
            raise MalformedInput(f"{where}.params: {len(items)} parameters, more than the limit of {MAX_PARAMS}.")
        params: list[Param] = []
        for i, item in enumerate(items):
            at = f"{where}.params[{i}]"
            _only_keys(item, _PARAM_KEYS, at)
            name = check_name(
                member(item, "name", str, at), f"parameter name at {at}.name", reserved=frozenset({"self"})
            )
            kind = member(item, "kind", str, at)
            if kind not in _KINDS:
                raise MalformedInput(f"{at}.kind is {kind!r}; allowed: {sorted(_KINDS)}.")
            default = read_literal(item["default"], f"default at {at}.default") if "default" in item else _NO_DEFAULT
            annotation = (
                check_annotation(item["annotation"], f"annotation at {at}.annotation")
                if "annotation" in item
                else _NO_DEFAULT
            )
            params.append(Param(name, kind, default, annotation))
        _check_order(params, where)
        returns = (
            check_annotation(data["returns"], f"annotation at {where}.returns") if "returns" in data else _NO_DEFAULT
        )
        captured = (
            CapturedCall.from_json(data["captured"], params, f"{where}.captured")
            if data.get("captured") is not None
            else None
        )
        return cls(tuple(params), returns, captured)


def _check_order(params: list[Param], where: str) -> None:
    """What Python's own def would refuse: a name twice, positional after keyword-only, no default after one."""
    order = {POSITIONAL: 0, VAR_POSITIONAL: 1, KEYWORD_ONLY: 2, VAR_KEYWORD: 3}
    seen, previous, defaulted = set(), POSITIONAL, False
    for p in params:
        if p.name in seen:
            raise MalformedInput(f"{where}: the parameter name {p.name!r} occurs twice.")
        seen.add(p.name)
        if order[p.kind] < order[previous] or (p.kind == previous and p.kind in (VAR_POSITIONAL, VAR_KEYWORD)):
            raise MalformedInput(
                f"{where}: {p.kind.replace('_', '-')} parameter {p.name!r} follows a {previous.replace('_', '-')} one."
            )
        previous = p.kind
        if p.kind in (VAR_POSITIONAL, VAR_KEYWORD) and p.has_default:
            raise MalformedInput(f"{where}: *{p.name} cannot have a default.")
        if p.kind == POSITIONAL:
            if p.has_default:
                defaulted = True
            elif defaulted:
                raise MalformedInput(f"{where}: parameter {p.name!r} without a default follows one with a default.")


def _only_keys(data: Any, allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(expect(data, dict, where)) - allowed)
    if unknown:
        raise MalformedInput(f"{where} has unknown field(s) {unknown}; allowed: {sorted(allowed)}.")


def _saved_annotation(annotation: Any) -> str | None:
    """The annotation's text if an artifact may hold it, else None."""
    if annotation is _NO_DEFAULT:
        return None
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    try:
        return check_annotation(text, "annotation")
    except LoweringError:
        return None


def _saved_default(value: Any, name: str) -> str:
    """A default as the literal `read_literal` reads back: no code runs on load."""
    text = literal_source(value)
    if text is None:
        raise LoweringError(
            f"Default of argument {name!r} ({value!r}) is not a Python literal, so it cannot be saved in an "
            "artifact; allowed defaults: None, bool, int, finite float, str and tuples/lists/dicts of them."
        )
    return text


LEAF_TENSOR = "Tensor"


@dataclass(frozen=True)
class OutputStructure:
    """The output pytree of a method and the kind of each leaf (``Tensor``, ``int``, ...)."""

    spec: pytree.TreeSpec
    leaf_kinds: tuple[str, ...] = field(default=())

    @classmethod
    def of_value(cls, value: Any) -> OutputStructure:
        leaves, spec = pytree.tree_flatten(value)
        return cls(spec, tuple(_leaf_kind(leaf) for leaf in leaves))

    @classmethod
    def of_exported(cls, program: torch.export.ExportedProgram) -> OutputStructure:
        output_node = next(n for n in program.graph.nodes if n.op == "output")
        user_outputs = len(program.graph_signature.user_outputs)
        values = list(output_node.args[0])[-user_outputs:] if user_outputs else []
        kinds = tuple(
            LEAF_TENSOR
            if isinstance(v, torch.fx.Node) and isinstance(v.meta.get("val"), torch.Tensor)
            else (_leaf_kind(v.meta.get("val")) if isinstance(v, torch.fx.Node) else _leaf_kind(v))
            for v in values
        )
        return cls(program.call_spec.out_spec, kinds)

    @classmethod
    def of_schema(cls, return_type: Any, method: str) -> OutputStructure:
        """From a TorchScript return type, where the type fixes the structure."""

        def build(t: Any) -> Any:
            if isinstance(t, torch.TupleType):
                return tuple(build(e) for e in t.elements())
            if isinstance(t, torch.NoneType):
                return None
            if isinstance(t, (torch.TensorType, torch.IntType, torch.FloatType, torch.BoolType)):
                return _KIND_EXAMPLE[str(t)]
            raise LoweringError(
                f"Method {method!r} returns {t}, whose structure its type does not fix; "
                "pass example_inputs so that the output structure can be recorded."
            )

        return cls.of_value(build(return_type))

    @property
    def num_leaves(self) -> int:
        return self.spec.num_leaves

    def to_json(self) -> dict[str, Any]:
        return {"spec": pytree.treespec_dumps(self.spec), "leaf_kinds": list(self.leaf_kinds)}

    @classmethod
    def from_json(cls, data: Any, where: str = "outputs") -> OutputStructure:
        """The structure an artifact describes, built from a closed set of node types (see the module docstring)."""
        _only_keys(data, frozenset({"spec", "leaf_kinds"}), where)
        text = member(data, "spec", str, where)
        document = parse_json(text, f"{where}.spec", max_bytes=1 << 22, max_depth=2 * MAX_OUTPUT_DEPTH + 2)
        if not (isinstance(document, list) and len(document) == 2 and document[0] == 1):
            raise MalformedInput(f"{where}.spec must be [1, <node>] (pytree protocol 1).")
        spec = _spec_from_json(document[1], f"{where}.spec", 0)
        kinds = member(data, "leaf_kinds", list, where)
        for i, kind in enumerate(kinds):
            if not (isinstance(kind, str) and kind.isidentifier() and len(kind) <= 64):
                raise MalformedInput(f"{where}.leaf_kinds[{i}] must be a type name, not {kind!r}.")
        if spec.num_leaves > MAX_OUTPUT_LEAVES or len(kinds) != spec.num_leaves:
            raise MalformedInput(f"{where}: {len(kinds)} leaf kinds for a structure of {spec.num_leaves} leaves.")
        return cls(spec, tuple(kinds))


_NODE_KEYS = frozenset({"type", "context", "children_spec"})
_KEYED_TYPES = (dict, collections.OrderedDict)


def _spec_from_json(node: Any, where: str, depth: int) -> pytree.TreeSpec:
    """One pytree node: a leaf, or a registered type whose context is plain data (never an import)."""
    _only_keys(node, _NODE_KEYS, where)
    if depth > MAX_OUTPUT_DEPTH:
        raise MalformedInput(f"{where}: outputs nested deeper than {MAX_OUTPUT_DEPTH} levels.")
    name = member(node, "type", (str, type(None)), where)
    children_data = member(node, "children_spec", list, where)
    if name is None:
        if node.get("context") is not None or children_data:
            raise MalformedInput(f"{where}: a leaf has no context or children.")
        return pytree.treespec_leaf()
    typ = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE.get(name)
    definition = pytree.SUPPORTED_SERIALIZED_TYPES.get(typ) if typ is not None else None
    if typ is None or definition is None:
        raise MalformedInput(
            f"{where}: output type {name!r} is not a registered pytree node type "
            "(import the module that registers it before loading)."
        )
    if name == "collections.namedtuple":
        context = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE.get(member(node, "context", str, where))
        # builtins.tuple and torch.Size are registered tuple types too, but without the _fields of a namedtuple.
        fields = getattr(context, "_fields", None) if isinstance(context, type) and issubclass(context, tuple) else None
        if not isinstance(fields, tuple):
            raise MalformedInput(f"{where}: namedtuple {node['context']!r} is not registered.")
        expected: int | None = len(fields)
    elif definition.from_dumpable_context is None:
        context = parse_json(member(node, "context", str, where), f"{where}.context", max_bytes=1 << 20, max_depth=8)
        expected = _expected_children(typ, context, where)
    else:  # e.g. defaultdict, whose context names a module to import
        raise MalformedInput(f"{where}: output type {name!r} is not supported in artifacts.")
    children = [
        _spec_from_json(child, f"{where}.children_spec[{i}]", depth + 1) for i, child in enumerate(children_data)
    ]
    if expected is not None and expected != len(children):
        raise MalformedInput(f"{where}: {len(children)} children where the context says {expected}.")
    return pytree.TreeSpec(typ, context, children)


def _expected_children(typ: type, context: Any, where: str) -> int | None:
    """The number of children a built-in container's context implies (None: the type's own business)."""
    if typ in (tuple, list):
        if context is not None:
            raise MalformedInput(f"{where}.context of a {typ.__name__} must be null.")
        return None
    if typ in _KEYED_TYPES:
        keys = expect(context, list, f"{where}.context")
        if any(type(key) not in (str, int, bool) for key in keys) or len(set(map(repr, keys))) != len(keys):
            raise MalformedInput(f"{where}.context must list distinct str or int keys.")
        return len(keys)
    return None


_KIND_EXAMPLE = {"Tensor": torch.empty(0), "int": 0, "float": 0.0, "bool": False}


def _leaf_kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return LEAF_TENSOR
    return type(value).__name__


_LEAF_TYPES = frozenset({torch.Tensor, type(None), bool, int, float, str})


def argument_leaves(inputs: Any) -> list[Any]:
    """The leaves of a method's arguments in order, as ``pytree.tree_leaves(list(inputs))`` gives them.

    Arguments that are tensors and plain values (None is a leaf too) are their
    own leaves: that common case is a new list without walking a tree, which
    for a Hugging Face model's nine arguments is ~0.3 us instead of ~3 us.
    """
    for value in inputs:
        if type(value) not in _LEAF_TYPES:
            return pytree.tree_leaves(list(inputs))
    return list(inputs)
