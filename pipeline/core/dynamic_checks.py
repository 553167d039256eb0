"""Whether a declaration of dynamic dimensions can be kept: one check and one message for the API and configs.

The Python API checks while it lowers (`capture`, `to_backend`); the app checks the same things before any
work, so that a config mistake exits 2 instead of failing a run. Each function here returns the problem as
text starting with the key path it is given (``dynamic_shapes`` for the API, ``model.dynamic_shapes`` for a
config), or None; ``static`` is how that caller says "no declaration" (``dynamic_shapes=None``,
``model.dynamic_shapes=null``). The caller raises the text as its own error type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.core.errors import did_you_mean, format_choices

AUTO = "auto"


def unlowered_method(declared: Iterable[str], lowered: Sequence[str], where: str) -> str | None:
    """The first method a declaration names that is not lowered."""
    for method in declared:
        if method not in lowered:
            return (
                f"{where}.{method}: method {method!r} is not lowered; lowered methods: {format_choices(lowered)}."
                + did_you_mean(str(method), lowered)
            )
    return None


def capture_refusal(mode: str, declared: Mapping[str, Any], where: str, static: str) -> str | None:
    """Why the TorchScript frontend in ``mode`` cannot keep the methods' declarations (``{method: value}``)."""
    if not declared:
        return None
    if mode == "trace":
        return (
            f"{where}.{next(iter(declared))}: a trace records the example's sizes as constants, so it cannot keep "
            f"a dynamic dimension. Script the model instead (frontend.mode=script: scripting is shape-generic), "
            f"use frontend=export, or declare none ({static}: static shapes)."
        )
    auto = [method for method, value in declared.items() if value == AUTO]
    if auto:
        return (
            f"{where}.{auto[0]}: {AUTO!r} asks torch.export to find what may vary; a scripted program takes any "
            f"shape already. Declare the dimensions with their bounds to have calls checked, or use frontend=export."
        )
    return None


def backend_refusal(
    backend: Any, frontend: str, method: str, spec: Any, where: str, static: str, dimension: str = ""
) -> str | None:
    """Why ``backend`` (a registry `BackendInfo`) cannot keep ``method``'s dynamic dimensions, captured by
    ``frontend`` and lowered with ``spec``; ``dimension`` names the first of them where it is known."""
    keeps = backend.dynamic_shapes
    if frontend not in keeps:
        kept = f"it keeps them on frontend {format_choices(keeps)}" if keeps else "it takes static shapes only"
        reason = f"it keeps no dynamic dimensions on frontend {frontend!r} ({kept})"
    else:
        reason = backend.backend_cls.dynamic_refusal(method, spec) or ""
        if reason:
            reason += f"; other options in the compile spec of {method!r} may keep them"
    if not reason:
        return None
    what = f"dynamic dimension {dimension}" if dimension else "dynamic dimensions"
    return (
        f"{where}.{method}: backend {backend.name!r} cannot keep {what} of method {method!r}: {reason}. Lower "
        f"with static shapes ({static}), or on a backend that keeps them (python -m pipeline.backends lists them)."
    )
