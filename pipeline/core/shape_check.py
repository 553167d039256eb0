"""Every call checked against the shape contract before the backend's runner sees its inputs.

A runtime given a size its program cannot take answers with its own words (``Got invalid dimensions for
input: x ... Got: 5 Expected: 2``, ``set_inputs() failed with error 0x10``), or crashes, or, worst, answers.
`checked_runner` wraps a method's runner so that such a call is a `ShapeError` that names the argument, the
dimension, what is allowed and how to declare it dynamic. The check is a few comparisons a tensor input
(it costs well under a microsecond on the MLP; ``benchmarks/bench_core.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from pipeline.core.backend import MethodRunner
from pipeline.core.shapes import Dynamic, InputShape, MethodShapes, ShapeError
from pipeline.core.signature import CONSTANT, EVERY_VALUE, VAR_KEYWORD, VAR_POSITIONAL, MethodSignature

# per tensor input: (position, its shape, exact sizes or None, the lowest and highest size of each dimension,
# its dynamic dimensions as (dimension, name))
_Plan = tuple[
    tuple[int, InputShape, tuple[int, ...] | None, tuple[int, ...], tuple[int, ...], tuple[tuple[int, str], ...]], ...
]


def runner_positions(signature: MethodSignature) -> dict[str, int]:
    """Where each argument goes in the runner's flat inputs, by the name a contract gives it."""
    captured = signature.captured
    if captured is None:  # a scripted program: the named parameters, in order
        return {
            p.name: i for i, p in enumerate(p for p in signature.params if p.kind not in (VAR_POSITIONAL, VAR_KEYWORD))
        }
    passed = [v for v in captured.values if captured.takes == EVERY_VALUE or v.kind != CONSTANT]
    return {v.name: i for i, v in enumerate(passed)}


def checked_runner(
    runner: MethodRunner, shapes: MethodShapes, positions: Mapping[str, int], method: str, name: str
) -> MethodRunner:
    """``runner`` behind the contract's check; ``name`` is how messages name the lowered method."""
    plan: _Plan = tuple(
        (
            positions[shape.argument],
            shape,
            None if shape.dynamic else tuple(int(s) for s in shape.sizes),  # type: ignore[arg-type]
            tuple(s.min if isinstance(s, Dynamic) else s for s in shape.sizes),
            tuple(s.max if isinstance(s, Dynamic) else s for s in shape.sizes),
            tuple((d, s.name) for d, s in enumerate(shape.sizes) if isinstance(s, Dynamic)),
        )
        for shape in shapes.inputs
        if shape.argument in positions
    )
    shared = len(shapes.dimensions) < sum(len(entry[5]) for entry in plan)  # a name sizes two places

    def check(inputs: list[Any]) -> None:
        # plain loops and comparisons: this runs on every call (about 0.3 us for the MLP's one input)
        for index, shape, exact, lows, highs, _ in plan:
            value = inputs[index]
            if not isinstance(value, Tensor):  # not a tensor: the generated argument check says why
                continue
            size = value.shape
            if exact is not None:
                if size != exact:
                    raise _shape_error(method, name, shape, size)
                continue
            if len(size) != len(lows):
                raise _shape_error(method, name, shape, size)
            for n, low, high in zip(size, lows, highs):
                if n < low or n > high:
                    raise _shape_error(method, name, shape, size)
        if shared:
            _check_shared(plan, inputs, name)

    def run(inputs: list[Any]) -> list[Any]:
        check(inputs)
        return runner(inputs)

    profile = getattr(runner, "profile", None)
    if profile is not None:

        def profiled(inputs: list[Any]) -> Any:
            check(inputs)
            return profile(inputs)

        run.profile = profiled  # type: ignore[attr-defined]
    return run


def _check_shared(plan: _Plan, inputs: list[Any], name: str) -> None:
    seen: dict[str, tuple[str, int, int]] = {}
    for index, shape, _, _, _, dynamic in plan:
        for d, dim_name in dynamic:
            value = inputs[index]
            if not isinstance(value, Tensor):
                continue
            size = value.shape[d]
            first = seen.setdefault(dim_name, (shape.argument, d, size))
            if first[2] != size:
                raise ShapeError(
                    f"{name}: dimension {dim_name!r} is {first[2]} in argument {first[0]!r} (dimension {first[1]}) "
                    f"but {size} in argument {shape.argument!r} (dimension {d}); one name is one size in a call."
                )


def _shape_error(method: str, name: str, shape: InputShape, size: Any) -> ShapeError:
    given = list(size)
    if len(given) != len(shape.sizes):
        return ShapeError(
            f"{name}: argument {shape.argument!r} has {len(given)} dimension(s) (shape {given}); the program "
            f"takes {len(shape.sizes)} ({shape})."
        )
    for dim, (n, s) in enumerate(zip(given, shape.sizes)):
        if isinstance(s, Dynamic) and not s.min <= n <= s.max:
            return ShapeError(
                f"{name}: argument {shape.argument!r} has size {n} in dimension {dim} ({s.name!r}); allowed: "
                f"{s.min}..{s.max}. Widen the bounds in the declaration (dynamic_shapes) to take it."
            )
        if not isinstance(s, Dynamic) and n != s:
            return ShapeError(
                f"{name}: argument {shape.argument!r} has size {n} in dimension {dim}, which the program was "
                f"captured with as {s} (static). To vary it, declare it dynamic when lowering: "
                f"dynamic_shapes={{{method!r}: {{{shape.argument!r}: {{{dim}: {{'name': ..., 'min': ..., "
                f"'max': ...}}}}}}}} (in a config: model.dynamic_shapes)."
            )
    return ShapeError(f"{name}: argument {shape.argument!r} has shape {given}; the program takes {shape}.")
