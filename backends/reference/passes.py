"""Optimization passes over a `MethodProgram`, and the final numbering.

* `fold_constants`: run deterministic instructions whose operands are all
  constants now, and keep only the taken block of a ``prim::If`` whose
  condition is constant. Folded instructions leave the program, and with them
  their debug handles: the backend map lists only instructions that run.
* `eliminate_dead_code`: drop instructions whose results nobody reads, unless
  they raise, warn, mutate a list someone reads, or are ops the backend does not
  know (those stay, so that the compiler reports them).
* `number`: dense value ids and instruction ids in program order, so equal
  programs serialize to equal bytes.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, Iterable, List, Optional, Set

import torch

from pipeline.core.backend import LoweringError

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


def fold_constants(method: MethodProgram) -> None:
    method.body = _Folder(_Aliases(method.body)).block(method.body)


def eliminate_dead_code(method: MethodProgram) -> None:
    method.body = _DeadCode(_Aliases(method.body)).live_part(method.body, set())


def number(method: MethodProgram) -> None:
    ids: Dict[int, int] = {}
    instruction_ids = itertools.count()

    def define(value: int) -> int:
        ids[value] = len(ids)
        return ids[value]

    def renumber(operand: Any) -> Any:
        def new_ref(ref: Ref) -> Ref:
            if ref.value not in ids:
                raise LoweringError(f"Reference backend: internal error: method {method.name!r} reads value "
                                    f"{ref.value} before defining it.")
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
    def __init__(self, aliases: "_Aliases"):
        # A list folded into a constant is one object shared by every call: it must not be
        # one that aten::append may change.
        self.aliases = aliases
        self.known: Dict[int, Any] = {}  # value id -> the constant or Ref that replaces it

    def substitute(self, operand: Any) -> Any:
        return map_refs(operand, lambda ref: self.known.get(ref.value, ref))

    def block(self, block: Block) -> Block:
        kept: List[Instruction] = []
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

    def evaluate(self, instruction: Instruction) -> Optional[List[Any]]:
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
        if any(_holds_list(v) and self.aliases.may_be_mutated(out) for v, out in zip(values, instruction.outputs)):
            return None
        return values


def _outputs_both_branches_agree_on(instruction: Instruction) -> Dict[int, Any]:
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


class _Aliases:
    """Which values may be the same Python list, and which of those lists an op changes in place.

    Values alias when an op may pass a Python object through (`OpDef.aliases_inputs`:
    list and tuple construction, indexing, casts) or when control flow joins them (an
    If's output and its blocks' outputs; a Loop's carried values). Other ops hand
    lists to torch.ops, which copies them, and never return their arguments' lists.
    """

    def __init__(self, block: Block):
        self.parent: Dict[int, int] = {}
        targets: List[int] = []
        for instruction in walk(block):
            outputs = list(instruction.outputs)
            if instruction.op == "prim::If":
                for position, value in enumerate(outputs):
                    self.join([value, *(r for inner in instruction.blocks for r in refs_in(inner.outputs[position]))])
            elif instruction.op == "prim::Loop":
                (body,) = instruction.blocks
                for value, initial, entering, leaving in zip(outputs, instruction.args[2:], body.inputs[1:],
                                                             body.outputs[1:]):
                    self.join([value, entering, *refs_in(initial), *refs_in(leaving)])
            elif not ops.is_supported(instruction.op) or ops.definition(instruction.op).aliases_inputs:
                self.join([*outputs, *refs_in(instruction.args), *refs_in(instruction.kwargs)])
            if _mutates(instruction):
                targets += refs_in(instruction.args[:1])
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


def _holds_list(value: Any) -> bool:
    return isinstance(value, list) or (isinstance(value, tuple) and any(_holds_list(v) for v in value))


class _DeadCode:
    """Backward liveness: an instruction stays if a later instruction or the output reads it."""

    def __init__(self, aliases: _Aliases):
        self.aliases = aliases
        self.read_lists: Set[int] = set()  # alias roots of values read later: an append to them matters

    def live_part(self, block: Block, live: Set[int]) -> Block:
        """The block without dead instructions; ``live`` (values read later) grows with what it reads."""
        self.read(live, _refs(block.outputs))
        kept: List[Instruction] = []
        for instruction in reversed(block.instructions):
            if not self.needed(instruction, live):
                continue
            instruction.blocks = [self.live_part(inner, live) for inner in instruction.blocks]
            self.read(live, _refs(instruction.args) | _refs(instruction.kwargs.values()))
            kept.append(instruction)
        kept.reverse()
        return Block(kept, block.outputs, block.inputs)

    def read(self, live: Set[int], values: Set[int]) -> None:
        live.update(values)
        self.read_lists.update(self.aliases.root(v) for v in values)

    def needed(self, instruction: Instruction, live: Set[int]) -> bool:
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


def _mutates(instruction: Instruction) -> bool:
    return ops.is_supported(instruction.op) and ops.definition(instruction.op).mutates_first_arg


def _refs(operands: Iterable[Any]) -> Set[int]:
    return set(refs_in(list(operands)))
