"""`TorchScriptCompileSpec`: the options of one lowered method.

The user writes them as a plain dict ``{option: value}`` (``{}`` means all defaults)::

    pipeline.to_backend("torchscript", scripted, {"forward": {"optimize_for_inference": False}})

Freezing and ``optimize_for_inference`` act on the whole module, so every
lowered method must ask for the same; the spec of a method is per method only
because the pipeline's compile specs are.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.core.backend import LoweringError

NAME = "torchscript"


@dataclass
class TorchScriptCompileSpec:
    # torch.jit.freeze when lowering: parameters, buffers and attributes become constants,
    # branches on `training` fold away, calls into submodules are inlined.
    freeze: bool = True
    # torch.jit.optimize_for_inference when loading: conv/batch-norm folding, linear/conv
    # prepacking for MKLDNN. Its MKLDNN weights cannot be saved, so it runs at every load.
    optimize_for_inference: bool = True

    def __post_init__(self) -> None:
        if self.optimize_for_inference and not self.freeze:
            raise LoweringError(
                "optimize_for_inference=True needs freeze=True (torch.jit.optimize_for_inference works on frozen "
                "modules); set both, or optimize_for_inference=False."
            )


def module_spec(specs: Mapping[str, TorchScriptCompileSpec]) -> TorchScriptCompileSpec:
    """The one spec all methods share (the pipeline has checked, with `check_same_spec`, that they agree)."""
    return next(iter(specs.values()), TorchScriptCompileSpec())


def check_same_spec(specs: dict[str, TorchScriptCompileSpec]) -> None:
    """A `LoweringError` naming the methods whose specs differ."""
    if not specs:
        return
    first_method, first = next(iter(specs.items()))
    for method, spec in specs.items():
        if spec != first:
            differ = [f.name for f in dataclasses.fields(spec) if getattr(spec, f.name) != getattr(first, f.name)]
            raise LoweringError(
                f"methods {first_method!r} and {method!r} ask for different {differ}; freezing "
                "and optimize_for_inference apply to the whole module, so all lowered methods must agree."
            )
