"""The shape contract: which dimensions of a method's tensor inputs vary, within which bounds.

A lowering keeps one contract per method. Each tensor input has one `InputShape`: per dimension either its
captured size (an ``int``: static) or a `Dynamic` dimension with a name and inclusive bounds. The same name on
two inputs is one dimension (torch.export's shared ``Dim``). The contract is data: the artifact's manifest
records it, ``inspect`` prints it, and every call is checked against it before the backend sees the inputs
(`check_call`), so that a size the program cannot take is a `ShapeError` naming the argument, never a
runtime's raw message.

How a backend receives it: an exported program arrives as torch.export makes it with ``dynamic_shapes``,
its dynamic sizes symbolic (``SymInt``, bounds in ``range_constraints``). `input_shapes` reads them back as
`InputShape` values with the declared names, which the capture records in the graph module's meta.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core.errors import PipelineError

# graph_module.meta key: {symbol: declared name}, written by the capture, read by `input_shapes`
DIMENSION_NAMES = "pipeline.dimension_names"
# torch.export's largest bound for "no upper bound" is int_oo; a contract records this instead
UNBOUNDED = 2**31 - 1


class ShapeError(PipelineError, ValueError):
    """A call whose tensor sizes the lowered program cannot take: outside a dynamic dimension's bounds, or
    another size than the captured one on a static dimension."""


@dataclass(frozen=True)
class Dynamic:
    """A dimension that varies from ``min`` to ``max`` (inclusive)."""

    name: str
    min: int
    max: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "min": self.min, "max": self.max}

    def __str__(self) -> str:
        return f"{self.name}[{self.min}..{self.max}]"


Size = int | Dynamic


@dataclass(frozen=True)
class InputShape:
    """One tensor input's dimensions: each a captured size (static) or `Dynamic`."""

    argument: str  # the name a message uses: the parameter, or ``args[1]`` / ``kwargs['mask']``
    sizes: tuple[Size, ...]

    @property
    def dynamic(self) -> bool:
        return any(isinstance(size, Dynamic) for size in self.sizes)

    def __str__(self) -> str:
        return f"{self.argument}: [{', '.join(str(size) for size in self.sizes)}]"


def input_shapes(program: torch.export.ExportedProgram) -> list[InputShape]:
    """The shape of each user tensor input of an exported program, in the order of its placeholders.

    A symbolic size is `Dynamic` with the name the declaration gave it (or the symbol's own, ``s0``, for a
    program exported elsewhere) and the bounds of ``range_constraints``.
    """
    names: Mapping[str, str] = program.graph_module.meta.get(DIMENSION_NAMES, {})
    user_inputs = {
        spec.arg.name: spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT and hasattr(spec.arg, "name")
    }
    shapes = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            continue
        shapes.append(InputShape(node.name, tuple(_size(size, program, names) for size in value.shape)))
    return shapes


def is_dynamic(program: torch.export.ExportedProgram) -> bool:
    """Whether any user input of ``program`` has a dynamic dimension."""
    return any(shape.dynamic for shape in input_shapes(program))


def dynamic_dimensions(shapes: Sequence[InputShape | None]) -> dict[str, Dynamic]:
    """The dynamic dimensions of a method by name, each once."""
    found: dict[str, Dynamic] = {}
    for shape in shapes:
        for size in shape.sizes if shape is not None else ():
            if isinstance(size, Dynamic):
                found.setdefault(size.name, size)
    return found


def _size(size: Any, program: torch.export.ExportedProgram, names: Mapping[str, str]) -> Size:
    if isinstance(size, int):
        return size
    expr = size.node.expr
    if expr.is_number:
        return int(expr)
    low, high = _bounds(expr, program)
    return Dynamic(names.get(str(expr), str(expr)), low, high)


def _bounds(expr: Any, program: torch.export.ExportedProgram) -> tuple[int, int]:
    from torch.utils._sympy.value_ranges import bound_sympy

    ranges = bound_sympy(expr, dict(program.range_constraints))
    return _finite(ranges.lower, 0), min(_finite(ranges.upper, UNBOUNDED), UNBOUNDED)


def _finite(bound: Any, otherwise: int) -> int:
    try:
        return int(bound)
    except (TypeError, ValueError, AttributeError, OverflowError):  # torch's int_oo and -int_oo
        return otherwise


@dataclass(frozen=True)
class MethodShapes:
    """One method's contract: the shape of each tensor argument, by the argument's name.

    ``inputs`` are in the order of the method's flat tensor inputs; an argument the contract does not know
    (a scripted program captured without examples) is absent, and nothing is checked for it.
    """

    inputs: tuple[InputShape, ...]

    @property
    def dimensions(self) -> dict[str, Dynamic]:
        """The dynamic dimensions by name, each once, in the order they first appear."""
        return dynamic_dimensions(self.inputs)

    @property
    def dynamic(self) -> bool:
        return any(shape.dynamic for shape in self.inputs)

    def inputs_at(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], point: Mapping[str, int], names: Sequence[str]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The example call ``(args, kwargs)`` with each dynamic dimension named in ``point`` at that size.

        ``names`` are the method's parameter names in order (positional ``args`` bind to them). A tensor is
        repeated along a dimension that grows and cut where it shrinks, so its values stay the example's
        kind of values (token ids stay valid ids)."""
        by_argument = {shape.argument: shape for shape in self.inputs}
        positional = [_resized(value, by_argument.get(name), point) for name, value in zip(names, args)] + list(
            args[len(names) :]
        )
        keywords = {name: _resized(value, by_argument.get(name), point) for name, value in kwargs.items()}
        return tuple(positional), keywords


def _resized(value: Any, shape: InputShape | None, point: Mapping[str, int]) -> Any:
    if shape is None or not isinstance(value, torch.Tensor):
        return value
    for dim, size in enumerate(shape.sizes):
        if isinstance(size, Dynamic) and size.name in point:
            value = resize(value, dim, point[size.name])
    return value


def resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``tensor`` with ``size`` along ``dim``: repeated to grow, cut to shrink."""
    have = tensor.shape[dim]
    if have == 0:
        shape = list(tensor.shape)
        shape[dim] = size
        return torch.zeros(shape, dtype=tensor.dtype)
    copies = -(-size // have)
    grown = torch.cat([tensor] * copies, dim) if copies > 1 else tensor
    return grown.narrow(dim, 0, size).contiguous()
