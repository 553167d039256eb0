"""`ReferenceCompileSpec`: the options of one lowered method.

They arrive as a plain dict ``{option: value}`` (``{}`` means all defaults)::

    pipeline.to_backend("reference", model, {"forward": {"check_inputs": True}}, ...)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
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
