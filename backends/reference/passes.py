"""Optimization passes over a `MethodProgram`, and the final numbering.

* `fold_constants`: run deterministic instructions whose operands are all
  constants now, and keep only the taken block of a ``prim::If`` whose
  condition is constant. Folded instructions leave the program, and with them
  their debug handles: the backend map lists only instructions that run.
* `eliminate_dead_code`: drop instructions whose results nobody reads, unless
  they raise, warn, mutate a list someone reads, or are ops the backend does not
  know (those stay, so that the compiler reports them).
* `functionalize`: rewrite in-place tensor ops (TorchScript's ``relu_``,
  ``add_``, ...) as their functional forms where no stale read is possible.
  Which values share memory comes from the ops' schemas (`_Aliases`); folding
  leaves alone any value that something changes in place.
* `number`: dense value ids and instruction ids in program order, so equal
  programs serialize to equal bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from pipeline.backends.reference import ops
from pipeline.backends.reference.program import (
    Block,
    Instruction,
    MethodProgram,
    Ref,
    encodable,
    is_constant,
    map_refs,
    refs_in,
    walk,
)
from pipeline.core.backend import LoweringError


def fold_constants(method: MethodProgram) -> None:
    method.body = _Folder(_Aliases(method.body)).block(method.body)


def eliminate_dead_code(method: MethodProgram) -> None:
    method.body = _DeadCode(_Aliases(method.body)).live_part(method.body, set())


def functionalize(method: MethodProgram) -> dict[int, str]:
    """Rewrite in-place tensor ops (``relu_``, ``add_``, ``masked_fill_``, ...) as their functional forms,
    where that cannot change what the program computes. Returns, by ``id(instruction)``, why each in-place
    op left in place could not be rewritten (the compiler reports them)."""
    return _Functionalizer(method).run()


def number(method: MethodProgram) -> None:
    ids: dict[int, int] = {}
    instruction_ids = itertools.count()

    def define(value: int) -> int:
        ids[value] = len(ids)
        return ids[value]

    def renumber(operand: Any) -> Any:
        def new_ref(ref: Ref) -> Ref:
            if ref.value not in ids:
                raise LoweringError(
                    f"Reference backend: internal error: method {method.name!r} reads value "
                    f"{ref.value} before defining it."
                )
            return Ref(ids[ref.value])

        return map_refs(operand, new_ref)

    def visit(block: Block) -> None:
        block.inputs = [define(v) for v in block.inputs]
        for instruction in block.instructions:
            instruction.id = next(instruction_ids)
            instruction.args = [renumber(a) for a in instruction.args]
            instruction.kwargs = {k: renumber(v) for k, v in instruction.kwargs.items()}
            for inner in instruction.blocks:
                visit(inner)
            instruction.outputs = [define(v) for v in instruction.outputs]
        block.outputs = [renumber(o) for o in block.outputs]

    for spec in method.inputs:
        spec.value = define(spec.value)
    visit(method.body)


class _Folder:
    def __init__(self, aliases: _Aliases):
        self.aliases = aliases
        self.known: dict[int, Any] = {}  # value id -> the constant or Ref that replaces it

    def substitute(self, operand: Any) -> Any:
        return map_refs(operand, lambda ref: self.known.get(ref.value, ref))

    def block(self, block: Block) -> Block:
        kept: list[Instruction] = []
        for instruction in block.instructions:
            instruction.args = [self.substitute(a) for a in instruction.args]
            instruction.kwargs = {k: self.substitute(v) for k, v in instruction.kwargs.items()}
            if instruction.op == "prim::If" and is_constant(instruction.args[0]):
                taken = self.block(instruction.blocks[0 if instruction.args[0] else 1])
                kept.extend(taken.instructions)
                self.known.update(zip(instruction.outputs, taken.outputs))
                continue
            instruction.blocks = [self.block(inner) for inner in instruction.blocks]
            if instruction.op == "prim::If":
                self.known.update(_outputs_both_branches_agree_on(instruction))
            values = self.evaluate(instruction)
            if values is None:
                kept.append(instruction)
            else:
                self.known.update(zip(instruction.outputs, values))
        return Block(kept, [self.substitute(o) for o in block.outputs], block.inputs)

    def evaluate(self, instruction: Instruction) -> list[Any] | None:
        """The instruction's output values, computed now; None if it must run later."""
        if not _foldable(instruction):
            return None
        try:
            with torch.no_grad():
                result = ops.kernel_for(instruction.op)(*instruction.args, **instruction.kwargs)
            values = ops.result_values(instruction.op, len(instruction.outputs), result)
        except Exception:  # it fails at run time too, where the error carries its debug handle
            return None
        if not all(encodable(v) for v in values):
            return None
        if any(self.aliases.may_be_mutated(out) for out in instruction.outputs):
            return None  # a constant is one object shared by every call: nothing may change it in place
        return values


def _outputs_both_branches_agree_on(instruction: Instruction) -> dict[int, Any]:
    """If outputs that are the same scalar constant whichever branch runs (e.g. ``None``)."""
    then_block, else_block = instruction.blocks
    agreed = {}
    for value, a, b in zip(instruction.outputs, then_block.outputs, else_block.outputs):
        if is_plain_constant(a) and type(a) is type(b) and a == b:
            agreed[value] = a
    return agreed


def is_plain_constant(operand: Any) -> bool:
    return operand is None or isinstance(operand, (bool, int, float, str))


def _foldable(instruction: Instruction) -> bool:
    if not ops.is_supported(instruction.op):
        return False
    op = ops.definition(instruction.op)
    if op.structured or op.compile_time or op.side_effects or op.mutates_first_arg or not op.deterministic:
        return False
    return is_constant(instruction.args) and is_constant(instruction.kwargs)


def shared_operands(instruction: Instruction) -> list[Any]:
    """The operands whose memory (tensor storage, or the Python list) an instruction's results may share.

    From `OpDef.aliases_inputs` (list and tuple construction, indexing, casts: every operand), else
    from the op's schema (``Tensor(a) self -> Tensor(a)``: views and in-place results); every operand
    of an op the backend does not know. Control flow (If, Loop) is the callers' to follow.
    """
    operands = [*instruction.args, *instruction.kwargs.values()]
    if not ops.is_supported(instruction.op) and ops.schema(instruction.op) is None:
        return operands
    if ops.is_supported(instruction.op) and ops.definition(instruction.op).aliases_inputs:
        return operands
    return [
        ops.argument(instruction.op, instruction.args, instruction.kwargs, name)
        for name in ops.aliased_arguments(instruction.op)
    ]


class _Aliases:
    """Which values may be the same object or share memory (a coarse partition), and which of them
    something changes in place: the folder leaves those alone, as a constant is one object shared
    by every call.

    Values join when an instruction's results may share its operands (`shared_operands`) or
    when control flow joins them (an If's output and its blocks' outputs; a Loop's carried values).
    """

    def __init__(self, block: Block):
        self.parent: dict[int, int] = {}
        targets: list[int] = []
        for instruction in walk(block):
            outputs = list(instruction.outputs)
            if instruction.op == "prim::If":
                for position, value in enumerate(outputs):
                    self.join([value, *(r for inner in instruction.blocks for r in refs_in(inner.outputs[position]))])
            elif instruction.op == "prim::Loop":
                (body,) = instruction.blocks
                for value, initial, entering, leaving in zip(
                    outputs, instruction.args[2:], body.inputs[1:], body.outputs[1:]
                ):
                    self.join([value, entering, *refs_in(initial), *refs_in(leaving)])
            else:
                self.join([*outputs, *refs_in(shared_operands(instruction))])
            targets += refs_in(written_operands(instruction))
        self.mutated_roots = {self.root(v) for v in targets}

    def root(self, value: int) -> int:
        while self.parent.setdefault(value, value) != value:
            self.parent[value] = self.parent[self.parent[value]]
            value = self.parent[value]
        return value

    def join(self, values: Iterable[int]) -> None:
        roots = [self.root(v) for v in values]
        for root in roots[1:]:
            self.parent[root] = roots[0]

    def may_be_mutated(self, value: int) -> bool:
        return self.root(value) in self.mutated_roots


Origin = tuple[str, Any]  # ("new", value id) made by the instruction defining it; ("input", name); OUTSIDE
OUTSIDE: Origin = ("constant", None)  # parameters, buffers, folded values: memory every call shares


class _Memory:
    """Points-to sets: for each value, the allocations whose memory it may use.

    Finer than `_Aliases`: the output of an If points to what either branch returns, but the two
    branches' values do not become aliases of each other. An allocation is named by the value an
    instruction defined (``("new", id)``), a method input (``("input", name)``) or `OUTSIDE`.
    """

    def __init__(self, method: MethodProgram):
        self.points_to: dict[int, frozenset[Origin]] = {s.value: frozenset({("input", s.name)}) for s in method.inputs}
        while self._visit(method.body):  # loops carry values around: repeat until nothing grows
            pass

    def origins(self, operand: Any) -> frozenset[Origin]:
        if isinstance(operand, Ref):
            return self.points_to.get(operand.value, frozenset())
        if isinstance(operand, torch.Tensor):
            return frozenset({OUTSIDE})
        if isinstance(operand, (list, tuple)):
            return frozenset().union(*(self.origins(o) for o in operand))
        return frozenset()

    def _set(self, value: int, origins: frozenset[Origin]) -> bool:
        grown = origins | self.points_to.get(value, frozenset())
        changed = grown != self.points_to.get(value)
        self.points_to[value] = grown
        return changed

    def _visit(self, block: Block) -> bool:
        changed = False
        for instruction in block.instructions:
            for inner in instruction.blocks:
                changed |= self._visit(inner)
            if instruction.op == "prim::If":
                for position, value in enumerate(instruction.outputs):
                    origins = frozenset().union(
                        *(self.origins(inner.outputs[position]) for inner in instruction.blocks)
                    )
                    changed |= self._set(value, origins)
            elif instruction.op == "prim::Loop":
                (body,) = instruction.blocks
                for value, initial, entering, leaving in zip(
                    instruction.outputs, instruction.args[2:], body.inputs[1:], body.outputs[1:]
                ):
                    origins = self.origins(initial) | self.origins(leaving)
                    changed |= self._set(value, origins) | self._set(entering, origins)
            else:
                shared = self.origins(shared_operands(instruction))
                for value in instruction.outputs:
                    changed |= self._set(value, shared | {("new", value)})
        return changed


class _Functionalizer:
    """``y = relu_(x)`` becomes ``y = relu(x)``, and later reads of ``x`` read ``y``.

    That is exact when nothing else can observe the write: ``x`` is defined in the block of the
    in-place op (not a method input, a constant, or a value of an enclosing block or of an earlier
    loop iteration), and no other value that may share its memory (a view of it, or what it is a
    view of) was made before the write and is read after it. Anything else is left in place and
    reported, never guessed at.
    """

    def __init__(self, method: MethodProgram):
        self.method = method
        self.memory = _Memory(method)
        self.owner: dict[int, int] = {}  # value -> id of the block whose instructions define it
        self.parent: dict[int, int | None] = {}  # block id -> enclosing block id
        self._index(method.body, None)
        self.problems: dict[int, str] = {}

    def _index(self, block: Block, parent: int | None) -> None:
        self.parent[id(block)] = parent
        for instruction in block.instructions:
            for inner in instruction.blocks:
                self._index(inner, id(block))
                for value in inner.inputs:  # a nested block's parameters belong to the nesting block
                    self.owner[value] = id(block)
            for value in instruction.outputs:
                self.owner[value] = id(block)

    def run(self) -> dict[int, str]:
        self.block(self.method.body)
        return self.problems

    def block(self, block: Block) -> None:
        for index, instruction in enumerate(block.instructions):
            for inner in instruction.blocks:
                self.block(inner)
            if ops.written_arguments(instruction.op) and not _mutates(instruction):
                reason = self.rewrite(block, index)
                if reason:
                    self.problems[id(instruction)] = reason

    def rewrite(self, block: Block, index: int) -> str:
        instruction = block.instructions[index]
        functional = ops.functional_form(instruction.op)
        written = ops.written_arguments(instruction.op)
        schema = ops.schema(instruction.op)
        if functional is None or schema is None or written != [schema.arguments[0].name]:
            return f"writes into its argument {written[0]!r} in place and has no functional form"
        target = instruction.args[0] if instruction.args else None
        if not isinstance(target, Ref) or len(instruction.outputs) != 1:
            return "changes a constant (a parameter, buffer or folded value) in place"
        origins = self.memory.origins(target)
        inputs = sorted(name for kind, name in origins if kind == "input")
        if inputs:
            return f"changes the method's input {inputs[0]!r} (or a view of it) in place, which the caller would see"
        if OUTSIDE in origins:
            return "changes a parameter, buffer or constant (or a view of one) in place"
        if any(kind == "new" and not self.inside(value, block) for kind, value in origins):
            return "changes a value of an enclosing block or loop iteration in place"
        made_before = {v for earlier in block.instructions[:index] for v in _defined(earlier)} | set(block.inputs)
        read_after = _refs(
            [*(o for later in block.instructions[index + 1 :] for o in _operands(later)), *block.outputs]
        )
        if any(self.memory.origins(Ref(v)) & origins for v in made_before & read_after if v != target.value):
            return (
                "changes a tensor in place that shares memory with a value read after the change "
                "(a view of it, or what it views)"
            )
        instruction.op = functional
        # The result keeps the points-to set of the written tensor (the schema's alias), so values later
        # derived from it still overlap with the views made before: the analysis stays conservative.
        result = Ref(instruction.outputs[0])
        swap = lambda ref: result if ref == target else ref  # noqa: E731 - later reads see the new value
        for later in block.instructions[index + 1 :]:
            _replace_reads(later, swap)
        block.outputs = [map_refs(o, swap) for o in block.outputs]
        return ""

    def inside(self, value: int, block: Block) -> bool:
        """Whether ``value`` is defined by ``block``'s instructions, at any depth."""
        owner = self.owner.get(value)
        while owner is not None:
            if owner == id(block):
                return True
            owner = self.parent[owner]
        return False


def _defined(instruction: Instruction) -> Iterator[int]:
    """Values an instruction defines, its nested blocks' included."""
    yield from instruction.outputs
    for inner in instruction.blocks:
        yield from inner.inputs
        for nested in inner.instructions:
            yield from _defined(nested)


def _operands(instruction: Instruction) -> Iterator[Any]:
    """Every operand an instruction reads, its nested blocks' included."""
    yield from instruction.args
    yield from instruction.kwargs.values()
    for inner in instruction.blocks:
        yield from inner.outputs
        for nested in inner.instructions:
            yield from _operands(nested)


def _replace_reads(instruction: Instruction, fn: Callable[[Ref], Any]) -> None:
    instruction.args = [map_refs(a, fn) for a in instruction.args]
    instruction.kwargs = {k: map_refs(v, fn) for k, v in instruction.kwargs.items()}
    for inner in instruction.blocks:
        inner.outputs = [map_refs(o, fn) for o in inner.outputs]
        for nested in inner.instructions:
            _replace_reads(nested, fn)


class _DeadCode:
    """Backward liveness: an instruction stays if a later instruction or the output reads it."""

    def __init__(self, aliases: _Aliases):
        self.aliases = aliases
        self.read_lists: set[int] = set()  # alias roots of values read later: an append to them matters

    def live_part(self, block: Block, live: set[int]) -> Block:
        """The block without dead instructions; ``live`` (values read later) grows with what it reads."""
        self.read(live, _refs(block.outputs))
        kept: list[Instruction] = []
        for instruction in reversed(block.instructions):
            if not self.needed(instruction, live):
                continue
            instruction.blocks = [self.live_part(inner, live) for inner in instruction.blocks]
            self.read(live, _refs(instruction.args) | _refs(instruction.kwargs.values()))
            kept.append(instruction)
        kept.reverse()
        return Block(kept, block.outputs, block.inputs)

    def read(self, live: set[int], values: set[int]) -> None:
        live.update(values)
        self.read_lists.update(self.aliases.root(v) for v in values)

    def needed(self, instruction: Instruction, live: set[int]) -> bool:
        if any(value in live for value in instruction.outputs) or _always_kept(instruction):
            return True
        if _mutates(instruction):  # appending to a list that is read later, under any name
            return any(self.aliases.root(v) in self.read_lists for v in refs_in(instruction.args[:1]))
        if ops.definition(instruction.op).structured:  # a block that raises, or changes a list
            return any(_always_kept(inner) or _mutates(inner) for block in instruction.blocks for inner in walk(block))
        return False


def _always_kept(instruction: Instruction) -> bool:
    """Raises, warns, or is an op the backend does not know (kept, so that it is reported)."""
    return not ops.is_supported(instruction.op) or ops.definition(instruction.op).side_effects


def written_operands(instruction: Instruction) -> list[Any]:
    """The operands an instruction changes in place: the list ``aten::append`` extends, the tensors
    its schema writes (``self`` of ``relu_``)."""
    if _mutates(instruction):
        return list(instruction.args[:1])
    return [
        ops.argument(instruction.op, instruction.args, instruction.kwargs, name)
        for name in ops.written_arguments(instruction.op)
    ]


def _mutates(instruction: Instruction) -> bool:
    return ops.is_supported(instruction.op) and ops.definition(instruction.op).mutates_first_arg


def _refs(operands: Iterable[Any]) -> set[int]:
    return set(refs_in(list(operands)))
