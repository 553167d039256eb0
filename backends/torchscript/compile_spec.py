"""`TorchScriptCompileSpec`: the options of one lowered method.

They arrive as a plain dict ``{option: value}`` (``{}`` means all defaults)::

    pipeline.to_backend("torchscript", scripted, {"forward": {"optimize_for_inference": False}})

Freezing and ``optimize_for_inference`` act on the whole module, so every
lowered method must ask for the same; the spec of a method is per method only
because the pipeline's compile specs are.
"""

# No `from __future__ import annotations`: the config validator reads the field types as types.
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping

from pipeline import LoweringError
from pipeline.app.config import compile_spec_from_options  # the one validator of dataclass-shaped options

NAME = "torchscript"


@dataclass(frozen=True)
class TorchScriptCompileSpec:
    # torch.jit.freeze when lowering: parameters, buffers and attributes become constants,
    # branches on `training` fold away, calls into submodules are inlined.
    freeze: bool = True
    # torch.jit.optimize_for_inference when loading: conv/batch-norm folding, linear/conv
    # prepacking for MKLDNN. Its MKLDNN weights cannot be saved, so it runs at every load.
    optimize_for_inference: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any], method: str) -> "TorchScriptCompileSpec":
        spec = compile_spec_from_options(cls, options, NAME, method)
        if spec.optimize_for_inference and not spec.freeze:
            raise LoweringError(
                f"Backend {NAME!r}, method {method!r}: optimize_for_inference=True needs freeze=True "
                "(torch.jit.optimize_for_inference works on frozen modules); set both, or "
                "optimize_for_inference=False."
            )
        return spec


def module_spec(method_compile_spec: Mapping[str, Mapping[str, Any]]) -> TorchScriptCompileSpec:
    """The one spec all methods share; a `LoweringError` names the methods that differ."""
    specs: Dict[str, TorchScriptCompileSpec] = {
        method: TorchScriptCompileSpec.from_options(options, method) for method, options in method_compile_spec.items()
    }
    if not specs:
        return TorchScriptCompileSpec()
    first_method, first = next(iter(specs.items()))
    for method, spec in specs.items():
        if spec != first:
            differ = [f.name for f in dataclasses.fields(spec) if getattr(spec, f.name) != getattr(first, f.name)]
            raise LoweringError(
                f"Backend {NAME!r}: methods {first_method!r} and {method!r} ask for different {differ}; freezing "
                "and optimize_for_inference apply to the whole module, so all lowered methods must agree."
            )
    return first
