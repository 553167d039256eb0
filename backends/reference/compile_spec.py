"""`ReferenceCompileSpec`: the options of one lowered method.

They arrive as a plain dict ``{option: value}`` (``{}`` means all defaults)::

    pipeline.to_backend("reference", model, {"forward": {"check_inputs": True}}, ...)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from pipeline import LoweringError
from pipeline.core.errors import did_you_mean, format_choices


@dataclass(frozen=True)
class ReferenceCompileSpec:
    # Evaluate instructions whose operands are all constants while compiling, and keep
    # only the taken block of a prim::If whose condition is constant (this is what
    # removes training-only branches of scripted modules).
    constant_folding: bool = True
    # Drop instructions whose results are never used and that have no side effects.
    dead_code_elimination: bool = True
    # Before running, check each input against what was known when lowering (count,
    # kind, dtype and shape; values export specialized), instead of failing inside an op.
    check_inputs: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any], method: str) -> "ReferenceCompileSpec":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in options.items():
            if key not in fields:
                raise LoweringError(
                    f"Reference backend: unknown compile-spec option {key!r} for method {method!r}; "
                    f"allowed: {format_choices(fields)}.{did_you_mean(key, fields)}"
                )
            if not isinstance(value, bool):
                raise LoweringError(
                    f"Reference backend: compile-spec option {key!r} for method {method!r} must be a bool, "
                    f"not {value!r}."
                )
        return cls(**options)
