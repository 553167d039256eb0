"""What a lowered method must look like from outside: its parameters and its output structure.

`MethodSignature` keeps the original method's parameter names, positional
defaults and keyword-only arguments (the original backend API drops the first
and cannot parse the second). `OutputStructure` is the method's output pytree
spec plus the kind of each leaf, so the lowered method can rebuild and check
what the backend returns. Both serialize to plain JSON for artifacts.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.utils._pytree as pytree

from pipeline.core.errors import LoweringError

POSITIONAL = "positional"
KEYWORD_ONLY = "keyword_only"
_NO_DEFAULT = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # POSITIONAL or KEYWORD_ONLY
    default: Any = _NO_DEFAULT
    annotation: Any = _NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass(frozen=True)
class MethodSignature:
    params: Tuple[Param, ...]
    return_annotation: Any = _NO_DEFAULT

    @classmethod
    def of(cls, fn: Any, method: str = "forward") -> "MethodSignature":
        """The signature of a bound method (eager, or scripted from Python source)."""
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return cls.from_schema(fn.schema)
        params = []
        for p in signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise LoweringError(
                    f"Method {method!r} takes *{p.name}: lowered methods need a fixed list of arguments."
                )
            kind = KEYWORD_ONLY if p.kind is p.KEYWORD_ONLY else POSITIONAL
            params.append(Param(p.name, kind, p.default, p.annotation))
        return cls(tuple(params), signature.return_annotation)

    @classmethod
    def from_schema(cls, schema: Any) -> "MethodSignature":
        params = []
        for arg in schema.arguments[1:]:  # skip self
            default = arg.default_value if arg.has_default_value() else _NO_DEFAULT
            params.append(Param(arg.name, KEYWORD_ONLY if arg.kwarg_only else POSITIONAL, default, str(arg.type)))
        return cls(tuple(params))

    @property
    def names(self) -> List[str]:
        return [p.name for p in self.params]

    def bind(self, args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]] = None, method: str = "forward") -> List[Any]:
        """All argument values in order (positional, then keyword-only), defaults filled in."""
        try:
            bound = self.to_inspect().bind(*args, **(kwargs or {}))
        except TypeError as error:
            raise LoweringError(f"Example inputs for method {method!r} do not fit its signature {self}: {error}") from None
        bound.apply_defaults()
        return [bound.arguments[p.name] for p in self.params]

    def to_inspect(self, with_self: bool = False) -> inspect.Signature:
        kinds = {POSITIONAL: inspect.Parameter.POSITIONAL_OR_KEYWORD, KEYWORD_ONLY: inspect.Parameter.KEYWORD_ONLY}
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] if with_self else []
        params += [inspect.Parameter(p.name, kinds[p.kind], default=p.default, annotation=p.annotation)
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
        return out

    @classmethod
    def from_json(cls, data: dict) -> "MethodSignature":
        params = tuple(
            Param(item["name"], item["kind"],
                  ast.literal_eval(item["default"]) if "default" in item else _NO_DEFAULT,
                  item.get("annotation", _NO_DEFAULT))
            for item in data["params"]
        )
        return cls(params, data.get("returns", _NO_DEFAULT))


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
