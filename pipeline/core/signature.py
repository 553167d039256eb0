"""What a lowered method must look like from outside: its parameters and its output structure.

`MethodSignature` keeps the original method's parameters exactly: names,
positional defaults, keyword-only arguments, ``*args`` and ``**kwargs`` (the
original backend API drops defaults and cannot parse keyword-only arguments).
Its `CapturedCall` records what a program was captured with, argument by
argument, so that a lowered method refuses a call its program was not
specialised for. `OutputStructure` is the method's output pytree
spec plus the kind of each leaf, so the lowered method can rebuild and check
what the backend returns. Both serialize to plain JSON for artifacts.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.utils._pytree as pytree

from pipeline.core.errors import LoweringError

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

    def to_json(self) -> dict:
        item: Dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == CONSTANT:
            item["value"] = _literal(self.value, self.name)
        elif self.kind == STRUCTURE:
            item["value"] = self.value
        return item

    @classmethod
    def from_json(cls, data: dict) -> "CapturedValue":
        value = data.get("value")
        return cls(data["name"], data["kind"], ast.literal_eval(value) if data["kind"] == CONSTANT else value)


@dataclass(frozen=True)
class CapturedCall:
    """What a program was captured with, argument by argument, in the order ``execute`` receives them.

    A program captured by export or by tracing is specialised on every value
    that is not a tensor, and on the choice of tensor or ``None``. The lowered
    method checks each call against this record, so a call that differs (another
    ``scale``, a ``bias`` where ``None`` was captured, a keyword that was not
    passed) is an error that names the argument, never a silent wrong answer.
    """

    values: Tuple[CapturedValue, ...]
    var_positional: int = 0  # how many *args the program was captured with
    keywords: Tuple[str, ...] = ()  # the **kwargs keys it was captured with, in order
    takes: str = EVERY_VALUE

    @classmethod
    def of(cls, signature: "MethodSignature", args: Tuple[Any, ...], kwargs: Dict[str, Any],
           method: str, takes: str = EVERY_VALUE) -> "CapturedCall":
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

    def flatten(self, signature: "MethodSignature", bound: inspect.BoundArguments) -> List[Any]:
        """The values of a bound call in ``execute`` order (defaults applied)."""
        flat: List[Any] = []
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

    def export_arguments(self, signature: "MethodSignature", flat: List[Any]) -> Tuple[tuple, Dict[str, Any]]:
        """``(args, kwargs)`` for ``torch.export.export`` from values in ``execute`` order."""
        args: List[Any] = []
        kwargs: Dict[str, Any] = {}
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

    def to_json(self) -> dict:
        return {"values": [v.to_json() for v in self.values], "var_positional": self.var_positional,
                "keywords": list(self.keywords), "takes": self.takes}

    @classmethod
    def from_json(cls, data: dict) -> "CapturedCall":
        return cls(tuple(CapturedValue.from_json(v) for v in data["values"]), int(data["var_positional"]),
                   tuple(data["keywords"]), data["takes"])


def _captured(name: str, value: Any) -> CapturedValue:
    if isinstance(value, torch.Tensor):
        return CapturedValue(name, TENSOR)
    leaves, spec = pytree.tree_flatten(value)
    if leaves and all(isinstance(leaf, torch.Tensor) for leaf in leaves) and not spec.is_leaf():
        return CapturedValue(name, STRUCTURE, pytree.treespec_dumps(spec))
    _literal(value, name)  # a value the program was specialised on must be recordable
    return CapturedValue(name, CONSTANT, value)


@dataclass(frozen=True)
class MethodSignature:
    params: Tuple[Param, ...]
    return_annotation: Any = _NO_DEFAULT
    captured: Optional[CapturedCall] = None  # None: the program takes every value as it comes (scripted)

    @classmethod
    def of(cls, fn: Any, method: str = "forward") -> "MethodSignature":
        """The signature of a bound method (eager, or scripted from Python source)."""
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return cls.from_schema(fn.schema)
        kinds = {kind: name for name, kind in _KINDS.items()}
        params = []
        for p in signature.parameters.values():
            if p.kind is p.POSITIONAL_ONLY:
                raise LoweringError(f"Method {method!r} has positional-only parameter {p.name!r}; lowered methods "
                                    "take their arguments by position or by name.")
            params.append(Param(p.name, kinds[p.kind], p.default, p.annotation))
        return cls(tuple(params), signature.return_annotation)

    @classmethod
    def from_schema(cls, schema: Any) -> "MethodSignature":
        params = []
        for arg in schema.arguments[1:]:  # skip self
            default = arg.default_value if arg.has_default_value() else _NO_DEFAULT
            params.append(Param(arg.name, KEYWORD_ONLY if arg.kwarg_only else POSITIONAL, default, str(arg.type)))
        return cls(tuple(params))

    def with_capture(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], method: str,
                     takes: str = EVERY_VALUE) -> "MethodSignature":
        """This signature with the record of a call the program is captured with."""
        return dataclasses.replace(self, captured=CapturedCall.of(self, args, kwargs, method, takes))

    @property
    def names(self) -> List[str]:
        return [p.name for p in self.params]

    def bind_call(self, args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]] = None,
                  method: str = "forward") -> inspect.BoundArguments:
        try:
            bound = self.to_inspect().bind(*args, **(kwargs or {}))
        except TypeError as error:
            raise LoweringError(f"Arguments for method {method!r} do not fit its signature {self}: {error}") from None
        bound.apply_defaults()
        return bound

    def bind(self, args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]] = None, method: str = "forward") -> List[Any]:
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
        params += [inspect.Parameter(p.name, _KINDS[p.kind], default=p.default, annotation=p.annotation)
                   for p in self.params]
        return inspect.Signature(params, return_annotation=self.return_annotation)

    def __str__(self) -> str:
        return str(self.to_inspect())

    def to_json(self) -> dict:
        params = []
        for p in self.params:
            item: Dict[str, Any] = {"name": p.name, "kind": p.kind}
            if p.has_default:
                item["default"] = _literal(p.default, p.name)
            if p.annotation is not _NO_DEFAULT:
                item["annotation"] = _annotation_text(p.annotation)
            params.append(item)
        out: Dict[str, Any] = {"params": params}
        if self.return_annotation is not _NO_DEFAULT:
            out["returns"] = _annotation_text(self.return_annotation)
        if self.captured is not None:
            out["captured"] = self.captured.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict) -> "MethodSignature":
        params = tuple(
            Param(item["name"], item["kind"],
                  ast.literal_eval(item["default"]) if "default" in item else _NO_DEFAULT,
                  item.get("annotation", _NO_DEFAULT))
            for item in data["params"]
        )
        captured = CapturedCall.from_json(data["captured"]) if data.get("captured") is not None else None
        return cls(params, data.get("returns", _NO_DEFAULT), captured)


def _annotation_text(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _literal(value: Any, name: str) -> str:
    """A default as a Python literal that `ast.literal_eval` reads back: no code runs on load."""
    text = repr(value)
    try:
        if ast.literal_eval(text) == value:
            return text
    except (ValueError, SyntaxError):
        pass
    raise LoweringError(
        f"Default of argument {name!r} ({text}) is not a Python literal, so it cannot be saved in an artifact; "
        "allowed defaults: None, bool, int, float, str and tuples/lists/dicts of them."
    )


LEAF_TENSOR = "Tensor"


@dataclass(frozen=True)
class OutputStructure:
    """The output pytree of a method and the kind of each leaf (``Tensor``, ``int``, ...)."""

    spec: pytree.TreeSpec
    leaf_kinds: Tuple[str, ...] = field(default=())

    @classmethod
    def of_value(cls, value: Any) -> "OutputStructure":
        leaves, spec = pytree.tree_flatten(value)
        return cls(spec, tuple(_leaf_kind(leaf) for leaf in leaves))

    @classmethod
    def of_exported(cls, program: "torch.export.ExportedProgram") -> "OutputStructure":
        output_node = next(n for n in program.graph.nodes if n.op == "output")
        user_outputs = len(program.graph_signature.user_outputs)
        values = list(output_node.args[0])[-user_outputs:] if user_outputs else []
        kinds = tuple(
            LEAF_TENSOR if isinstance(v, torch.fx.Node) and isinstance(v.meta.get("val"), torch.Tensor)
            else (_leaf_kind(v.meta.get("val")) if isinstance(v, torch.fx.Node) else _leaf_kind(v))
            for v in values
        )
        return cls(program.call_spec.out_spec, kinds)

    @classmethod
    def of_schema(cls, return_type: Any, method: str) -> "OutputStructure":
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

    def to_json(self) -> dict:
        return {"spec": pytree.treespec_dumps(self.spec), "leaf_kinds": list(self.leaf_kinds)}

    @classmethod
    def from_json(cls, data: dict) -> "OutputStructure":
        return cls(pytree.treespec_loads(data["spec"]), tuple(data["leaf_kinds"]))


_KIND_EXAMPLE = {"Tensor": torch.empty(0), "int": 0, "float": 0.0, "bool": False}


def _leaf_kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return LEAF_TENSOR
    return type(value).__name__
