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

from pipeline.core.errors import ShapeDeclarationError as ShapeDeclarationError  # the errors of this subject
from pipeline.core.errors import ShapeError as ShapeError
from pipeline.core.errors import did_you_mean, format_choices

# graph_module.meta key: {symbol: declared name}, written by the capture, read by `input_shapes`
DIMENSION_NAMES = "pipeline.dimension_names"
# torch.export's largest bound for "no upper bound" is int_oo; a contract records this instead
UNBOUNDED = 2**31 - 1


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
    return [
        InputShape(name, tuple(_size(size, program, names) for size in value.shape))
        for name, value in _user_tensors(program)
    ]


def _user_tensors(program: torch.export.ExportedProgram) -> list[tuple[str, torch.Tensor]]:
    """``(placeholder name, fake tensor)`` of each user tensor input, in placeholder order."""
    user_inputs = {
        spec.arg.name
        for spec in program.graph_signature.input_specs
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT and hasattr(spec.arg, "name")
    }
    return [
        (node.name, node.meta["val"])
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs and isinstance(node.meta.get("val"), torch.Tensor)
    ]


def narrowed_dimensions(program: torch.export.ExportedProgram) -> list[tuple[str, int, Dynamic, Dynamic]]:
    """``(argument, dimension, declared, kept)`` for each dynamic dimension whose range a compiler narrowed.

    A compiler that traces the program again (AOTInductor) adds its guards to the shape environment that the
    program's fake tensors share, not to ``range_constraints``; the two differ where a guard narrowed a range.
    """
    narrowed: list[tuple[str, int, Dynamic, Dynamic]] = []
    for shape, (_, value) in zip(input_shapes(program), _user_tensors(program)):
        for dim, (size, traced) in enumerate(zip(shape.sizes, value.shape)):
            if not isinstance(size, Dynamic) or not isinstance(traced, torch.SymInt):
                continue
            kept = traced.node.shape_env.bound_sympy(traced.node.expr)
            # every backed size starts at 2 in the environment (torch's 0/1 specialization): not a narrowing
            low = size.min if _finite(kept.lower, 0) <= max(size.min, 2) else _finite(kept.lower, 0)
            high = min(size.max, _finite(kept.upper, UNBOUNDED))
            if (low, high) != (size.min, size.max):
                narrowed.append((shape.argument, dim, size, Dynamic(size.name, low, high)))
    return narrowed


def is_dynamic(program: torch.export.ExportedProgram) -> bool:
    """Whether any user input of ``program`` has a dynamic dimension."""
    return any(shape.dynamic for shape in input_shapes(program))


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
        found: dict[str, Dynamic] = {}
        for shape in self.inputs:
            for size in shape.sizes:
                if isinstance(size, Dynamic):
                    found.setdefault(size.name, size)
        return found

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


# -- the declaration ----------------------------------------------------------------------------------

AUTO = "auto"  # export finds what may vary (torch.export.Dim.AUTO), and the contract records what it found


@dataclass(frozen=True)
class Declaration:
    """One method's declared dynamic dimensions: ``{argument: {dimension index: Dynamic}}``, or `AUTO`."""

    dims: Mapping[str, Mapping[int, Dynamic]]
    auto: bool = False

    def export_specs(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """torch.export's ``dynamic_shapes`` entry of each argument (None: static)."""
        # one Dim object per name: torch.export ties the inputs that share it
        shared = {
            size.name: torch.export.Dim(size.name, min=size.min, max=size.max)
            for per_dim in self.dims.values()
            for size in per_dim.values()
        }
        specs: dict[str, Any] = {}
        for argument, value in arguments.items():
            if not isinstance(value, torch.Tensor):
                specs[argument] = None
            elif self.auto:
                specs[argument] = {dim: torch.export.Dim.AUTO for dim in range(value.dim())} or None
            else:
                declared = self.dims.get(argument, {})
                specs[argument] = {dim: shared[size.name] for dim, size in declared.items()} or None
        return specs


def parse_declaration(
    declaration: Any, method: str, arguments: Mapping[str, Any], where: str = "dynamic_shapes"
) -> Declaration:
    """One method's declaration, checked against the call it is captured with.

    ``arguments`` maps each argument the method is captured with (parameter name, or ``**kwargs`` key) to its
    example value. A dimension is ``{name, min, max}``, a name declared with bounds elsewhere in the method,
    or a ``torch.export.Dim``. ``where`` is the key path errors start with (``model.dynamic_shapes.forward``).
    """
    if declaration is None:
        return Declaration({})
    if isinstance(declaration, str):
        if declaration != AUTO:
            raise ShapeDeclarationError(
                f"{where}: expected {AUTO!r} or a mapping {{argument: {{dimension: ...}}}}, got {declaration!r}."
            )
        return Declaration({}, auto=True)
    if not isinstance(declaration, Mapping):
        raise ShapeDeclarationError(
            f"{where}: expected {AUTO!r} or a mapping {{argument: {{dimension: ...}}}}, "
            f"got a {type(declaration).__name__}."
        )
    tensors = {name: value for name, value in arguments.items() if isinstance(value, torch.Tensor)}
    bounded: dict[str, Dynamic] = {}
    pending: list[tuple[str, str, int, str]] = []  # (path, argument, dim, name) of dims given by name alone
    dims: dict[str, dict[int, Dynamic]] = {}
    for argument, per_dim in declaration.items():
        path = f"{where}.{argument}"
        if argument not in tensors:
            if argument in arguments:
                raise ShapeDeclarationError(
                    f"{path}: argument {argument!r} of method {method!r} is not a tensor "
                    f"({type(arguments[argument]).__name__}); dynamic dimensions are declared on tensor arguments."
                )
            raise ShapeDeclarationError(
                f"{path}: method {method!r} has no tensor argument {argument!r}; its tensor arguments: "
                f"{format_choices(tensors)}.{did_you_mean(str(argument), tensors)}"
            )
        if not isinstance(per_dim, Mapping):
            raise ShapeDeclarationError(
                f"{path}: expected a mapping {{dimension index: {{name, min, max}} or a name}}, "
                f"got a {type(per_dim).__name__}."
            )
        rank = tensors[argument].dim()
        dims[argument] = {}
        for key, given in per_dim.items():
            dim = _dimension_index(key, rank, f"{path}.{key}", argument)
            dim_path = f"{path}.{dim}"
            size = _declared_size(given, dim_path)
            if isinstance(size, str):
                pending.append((dim_path, argument, dim, size))
                continue
            earlier = bounded.setdefault(size.name, size)
            if earlier != size:
                raise ShapeDeclarationError(
                    f"{dim_path}: dimension {size.name!r} is declared twice with other bounds "
                    f"([{earlier.min}, {earlier.max}] and [{size.min}, {size.max}]); declare it once and "
                    f"refer to it by name elsewhere."
                )
            dims[argument][dim] = size
    for dim_path, argument, dim, name in pending:
        if name not in bounded:
            raise ShapeDeclarationError(
                f"{dim_path}: dimension {name!r} has no bounds; declare it once as "
                f"{{name: {name}, min: ..., max: ...}}.{did_you_mean(name, bounded)}"
            )
        dims[argument][dim] = bounded[name]
    _check_examples(dims, tensors, where)
    return Declaration(dims)


def _dimension_index(key: Any, rank: int, path: str, argument: str) -> int:
    if isinstance(key, str) and key.lstrip("-").isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int):
        raise ShapeDeclarationError(f"{path}: a dimension is given by its index (0, 1, ...), not {key!r}.")
    if not 0 <= key < rank:
        raise ShapeDeclarationError(
            f"{path}: dimension {key} is out of range: the example of {argument!r} has {rank} dimension(s) "
            f"(allowed: 0..{rank - 1})."
        )
    return key


def _declared_size(given: Any, path: str) -> Dynamic | str:
    if isinstance(given, str):
        _check_dimension_name(given, path)
        return given
    if isinstance(given, Mapping):
        unknown = sorted(set(map(str, given)) - {"name", "min", "max"})
        if unknown:
            raise ShapeDeclarationError(
                f"{path}: unknown key {unknown[0]!r}; allowed: 'max', 'min', 'name'."
                f"{did_you_mean(unknown[0], ('name', 'min', 'max'))}"
            )
        if "name" not in given or "max" not in given:
            missing = "name" if "name" not in given else "max"
            raise ShapeDeclarationError(f"{path}: {missing!r} is missing; a dimension is {{name, min, max}}.")
        name, low, high = given["name"], given.get("min", 1), given["max"]
    elif type(given).__name__ in ("Dim", "_Dim") or hasattr(given, "__name__") and hasattr(given, "max"):
        name, low, high = given.__name__, getattr(given, "min", 1), getattr(given, "max", UNBOUNDED)
        high = min(_finite(high, UNBOUNDED), UNBOUNDED)
    else:
        raise ShapeDeclarationError(
            f"{path}: expected {{name, min, max}}, a dimension's name, or a torch.export.Dim; "
            f"got a {type(given).__name__}."
        )
    _check_dimension_name(name, f"{path}.name")
    for key, value in (("min", low), ("max", high)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UNBOUNDED:
            raise ShapeDeclarationError(f"{path}.{key}: expected an integer in 0..{UNBOUNDED}, got {value!r}.")
    if low > high:
        raise ShapeDeclarationError(f"{path}: min ({low}) is greater than max ({high}).")
    return Dynamic(name, low, high)


def _check_dimension_name(name: Any, path: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ShapeDeclarationError(f"{path}: a dimension's name is an identifier (batch, seq), not {name!r}.")


def _check_examples(dims: Mapping[str, Mapping[int, Dynamic]], tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Each example size inside its bounds, and one size for each name."""
    seen: dict[str, tuple[str, int]] = {}
    for argument, per_dim in dims.items():
        for dim, size in per_dim.items():
            example = tensors[argument].shape[dim]
            path = f"{where}.{argument}.{dim}"
            if not size.min <= example <= size.max:
                raise ShapeDeclarationError(
                    f"{path}: the example input has size {example} here, outside the bounds of {size.name!r} "
                    f"[{size.min}, {size.max}]; widen the bounds or change the example."
                )
            first = seen.setdefault(size.name, (f"{argument}.{dim}", example))
            if first[1] != example:
                raise ShapeDeclarationError(
                    f"{path}: dimension {size.name!r} has size {example} here but {first[1]} at {first[0]} in the "
                    "example inputs; one name is one dimension."
                )


# -- the contract of a captured method --------------------------------------------------------------------


def exported_contract(
    program: torch.export.ExportedProgram, signature: Any, captured: Any, declaration: Declaration
) -> MethodShapes:
    """The contract of one exported method, each tensor argument by its captured name.

    Names the program's symbols after the declaration (``graph_module.meta``, which `input_shapes` reads);
    with `AUTO`, a symbol is named after the first argument and dimension it sizes (``input_ids_1``). A
    declared dimension the program holds as a constant is an error: export fixed it without saying so.
    """
    import torch.utils._pytree as pytree

    user_inputs = [
        spec.arg
        for spec in program.graph_signature.input_specs
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    in_spec = program.call_spec.in_spec
    if in_spec is None:
        return MethodShapes(())
    tree_args, tree_kwargs = pytree.tree_unflatten(user_inputs, in_spec)
    names_args, names_kwargs = captured.export_arguments(signature, [v.name for v in captured.values])
    by_argument = dict(zip(names_args, tree_args))
    by_argument.update((names_kwargs[key], tree_kwargs[key]) for key in names_kwargs if key in tree_kwargs)
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    symbol_names: dict[str, str] = {}
    raw: list[tuple[str, list[Any]]] = []
    for value in captured.values:
        node = nodes.get(getattr(by_argument.get(value.name), "name", ""))
        fake = node.meta.get("val") if node is not None else None
        if not isinstance(fake, torch.Tensor):
            continue
        sizes = list(fake.shape)
        for dim, size in enumerate(sizes):
            declared = declaration.dims.get(value.name, {}).get(dim)
            if isinstance(size, int) or size.node.expr.is_number:
                if declared is not None:
                    raise ShapeDeclarationError(
                        f"dynamic_shapes.{value.name}.{dim}: export fixed dimension {declared.name!r} to "
                        f"{int(size)}; the model's code takes only that size there."
                    )
                continue
            symbol = str(size.node.expr)
            symbol_names.setdefault(symbol, declared.name if declared is not None else f"{value.name}_{dim}")
        raw.append((value.name, sizes))
    program.graph_module.meta[DIMENSION_NAMES] = symbol_names
    return MethodShapes(
        tuple(InputShape(name, tuple(_size(size, program, symbol_names) for size in sizes)) for name, sizes in raw)
    )


def scripted_contract(arguments: Mapping[str, Any], declaration: Declaration) -> MethodShapes:
    """A scripted method takes any shape: the contract checks the declared arguments only, their other
    dimensions at the example's sizes."""
    inputs = []
    for name, per_dim in declaration.dims.items():
        example = arguments[name]
        sizes = tuple(per_dim.get(dim, int(size)) for dim, size in enumerate(example.shape))
        inputs.append(InputShape(name, sizes))
    return MethodShapes(tuple(inputs))


# -- the record in an artifact ----------------------------------------------------------------------------

MAX_RANK = 64  # dimensions of one tensor a record may describe


def contract_to_json(shapes: MethodShapes) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "argument": s.argument,
                "sizes": [size.to_json() if isinstance(size, Dynamic) else size for size in s.sizes],
            }
            for s in shapes.inputs
        ]
    }


def contract_from_json(data: Any, arguments: Sequence[str], where: str) -> MethodShapes:
    """A method's contract as a manifest records it, checked as data: every argument one the method has,
    every size a bounded integer, every name an identifier with one set of bounds."""
    from pipeline.core.bounded_json import expect, member
    from pipeline.core.errors import MalformedInput

    expect(data, dict, where)
    if set(data) != {"inputs"}:
        raise MalformedInput(f"{where}: expected exactly the key 'inputs', got {sorted(map(str, data))}.")
    items = member(data, "inputs", list, where)
    if len(items) > len(arguments):
        raise MalformedInput(f"{where}.inputs: {len(items)} entries for {len(arguments)} arguments.")
    inputs: list[InputShape] = []
    bounds: dict[str, Dynamic] = {}
    for i, item in enumerate(items):
        path = f"{where}.inputs[{i}]"
        expect(item, dict, path)
        if set(item) != {"argument", "sizes"}:
            raise MalformedInput(f"{path}: expected the keys 'argument' and 'sizes', got {sorted(map(str, item))}.")
        argument = member(item, "argument", str, path)
        if argument not in arguments or any(s.argument == argument for s in inputs):
            raise MalformedInput(
                f"{path}.argument: {argument!r} is not an argument of the method, or is listed twice; "
                f"its arguments: {format_choices(arguments)}."
            )
        raw_sizes = member(item, "sizes", list, path)
        if len(raw_sizes) > MAX_RANK:
            raise MalformedInput(f"{path}.sizes: {len(raw_sizes)} dimensions; at most {MAX_RANK}.")
        sizes: list[Size] = []
        for d, raw in enumerate(raw_sizes):
            size = _size_from_json(raw, f"{path}.sizes[{d}]")
            if isinstance(size, Dynamic) and bounds.setdefault(size.name, size) != size:
                raise MalformedInput(f"{path}.sizes[{d}]: dimension {size.name!r} has two sets of bounds.")
            sizes.append(size)
        inputs.append(InputShape(argument, tuple(sizes)))
    return MethodShapes(tuple(inputs))


def _size_from_json(raw: Any, where: str) -> Size:
    from pipeline.core.bounded_json import member
    from pipeline.core.errors import MalformedInput

    def bounded(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UNBOUNDED:
            raise MalformedInput(f"{path}: expected an integer in 0..{UNBOUNDED}, got {value!r}.")
        return value

    if not isinstance(raw, dict):
        return bounded(raw, where)
    if set(raw) != {"name", "min", "max"}:
        raise MalformedInput(f"{where}: expected the keys 'max', 'min', 'name', got {sorted(map(str, raw))}.")
    name = member(raw, "name", str, where)
    if not name.isidentifier() or len(name) > 200:
        raise MalformedInput(f"{where}.name: {name[:200]!r} is not an identifier.")
    low, high = bounded(raw["min"], f"{where}.min"), bounded(raw["max"], f"{where}.max")
    if low > high:
        raise MalformedInput(f"{where}: min ({low}) is greater than max ({high}).")
    return Dynamic(name, low, high)
