"""The shapes verify checks besides the example's: each dynamic dimension at its minimum, its maximum and
one size in between, the other dimensions at their example sizes.

A point's inputs are the example call resized (`MethodShapes.inputs_at`), so token ids stay valid ids.
``max_elements`` caps the largest input of a point: a size whose input would be bigger is lowered to the
biggest that fits (``max: 512`` on a big model stays cheap), and the point records where it capped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import LoweringError, did_you_mean, format_choices
from pipeline.core.shapes import Dynamic, MethodShapes

Call = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Capped:
    """A point checked below the size asked for, because its largest input would exceed max_elements."""

    dimension: str
    requested: int
    checked: int

    def to_json(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "requested": self.requested, "checked": self.checked}


@dataclass(frozen=True)
class ShapePoint:
    """One shape to check: ``point`` gives the dimension sizes that differ from the example's."""

    label: str  # "batch=min", "batch=max", "batch=between"
    point: dict[str, int]
    call: Call
    capped: Capped | None = None


@dataclass(frozen=True)
class MethodPoints:
    """One method's shapes: the example's dimension sizes (empty for a static method) and the other points."""

    example: dict[str, int] = field(default_factory=dict)
    points: tuple[ShapePoint, ...] = ()


def bound_points(shapes: MethodShapes | None, call: Call, names: Sequence[str], max_elements: int) -> MethodPoints:
    """The example's sizes of each dynamic dimension, and a point per bound and one between, each once.

    ``names`` are the method's parameter names, to which the positional arguments of ``call`` bind."""
    if shapes is None or not shapes.dynamic:
        return MethodPoints()
    example = example_sizes(shapes, call, names)
    seen = [example]
    points = []
    for name, dimension in shapes.dimensions.items():
        for label, size in _sizes(dimension, example[name]):
            checked = _largest_fitting(shapes, example, name, size, dimension.min, max_elements)
            point = {name: checked}
            if {**example, **point} in seen:
                continue  # the example, or another bound capped to the same size: checked already
            seen.append({**example, **point})
            capped = Capped(name, size, checked) if checked != size else None
            points.append(ShapePoint(f"{name}={label}", point, shapes.inputs_at(*call, point, names), capped))
    return MethodPoints(example, tuple(points))


def call_at(
    shapes: MethodShapes | None, call: Call, names: Sequence[str], point: Mapping[str, int], where: str
) -> Call:
    """The example call resized to ``point``; a name that is not one of the method's dynamic dimensions is an
    error naming ``where`` and the dimensions there are."""
    dimensions = shapes.dimensions if shapes is not None else {}
    for name in point:
        if name not in dimensions:
            raise LoweringError(
                f"{where}.{name}: {name!r} is not a dynamic dimension of this lowering; "
                + (
                    f"it has: {format_choices(dimensions)}.{did_you_mean(name, list(dimensions))}"
                    if dimensions
                    else "it has none (declare some with model.dynamic_shapes)."
                )
            )
    assert shapes is not None  # a point names at least one dimension, so the loop found them
    return shapes.inputs_at(*call, point, names)


def example_sizes(shapes: MethodShapes, call: Call, names: Sequence[str]) -> dict[str, int]:
    """Each dynamic dimension's size in the example call, by name (the first input that has it says)."""
    args, kwargs = call
    bound = {**dict(zip(names, args)), **kwargs}
    sizes: dict[str, int] = {}
    for shape in shapes.inputs:
        value = bound.get(shape.argument)
        for index, size in enumerate(shape.sizes):
            if isinstance(size, Dynamic) and value is not None and hasattr(value, "shape"):
                sizes.setdefault(size.name, int(value.shape[index]))
    for name, dimension in shapes.dimensions.items():
        sizes.setdefault(name, dimension.min)  # a dimension of an input the call leaves out: any size in range
    return sizes


def _sizes(dimension: Dynamic, example: int) -> list[tuple[str, int]]:
    sizes = [("min", dimension.min), ("max", dimension.max)]
    between = [
        size for size in ((dimension.min + dimension.max) // 2, example + 1, example - 1) if _inside(size, dimension)
    ]
    between = [size for size in between if size != example]
    return sizes + [("between", between[0])] if between else sizes


def _inside(size: int, dimension: Dynamic) -> bool:
    return dimension.min < size < dimension.max


def _largest_fitting(
    shapes: MethodShapes, example: Mapping[str, int], name: str, size: int, least: int, max_elements: int
) -> int:
    """``size``, or the biggest size from ``least`` up whose largest input has at most max_elements; ``least``
    when none fits (a bound is checked even when the cap is below it)."""
    if _largest_input(shapes, {**example, name: size}) <= max_elements:
        return size
    low, high = least, size  # the answer is in [low, high); low is returned when nothing fits
    while high - low > 1:
        middle = (low + high) // 2
        if _largest_input(shapes, {**example, name: middle}) <= max_elements:
            low = middle
        else:
            high = middle
    return low


def _largest_input(shapes: MethodShapes, sizes: Mapping[str, int]) -> int:
    return max(
        (
            math.prod(sizes[size.name] if isinstance(size, Dynamic) else size for size in shape.sizes)
            for shape in shapes.inputs
        ),
        default=0,
    )
