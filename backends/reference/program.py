"""The reference backend's program: an instruction list per method, and its payload format.

A `Program` holds one `MethodProgram` per lowered method. A method's body is a
`Block`: instructions in order, then the operands the block returns. An
instruction names an op of `ops.SUPPORTED_OPS` with its exact overload
(``aten::add.Tensor``), its operands, the value ids it defines and the debug
handle of the graph node it came from. ``prim::If`` and ``prim::Loop`` carry
nested blocks, so control flow stays structured.

Operands are constants or `Ref`\\ s to values. Constants are ``None``, bools,
ints, floats, strings, dtypes, devices, layouts, memory formats, tensors, and
lists and tuples of operands.

Payload layout (little-endian; equal programs give equal bytes)::

    magic  b"PLREFBE\\0"   8 bytes
    format version        uint32
    JSON length           uint64
    JSON                  the program, keys sorted, tensors as {"tensor": index}
    tensor data           each tensor's raw bytes, at the offset its JSON entry names

Nothing is pickled: reading a payload runs no code.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.core.backend import LoweringError, TensorTable, read_tensor, read_torch_constant, torch_constant

MAGIC = b"PLREFBE\0"
FORMAT_VERSION = 1
NO_HANDLE = -1  # an instruction that no graph node stands for (or debug handles are off)
_HEADER = struct.Struct("<8sIQ")


@dataclass(frozen=True)
class Ref:
    """An operand that reads the value with this id."""

    value: int


@dataclass
class Instruction:
    op: str  # "aten::add.Tensor": the op and its exact overload
    args: list[Any]
    kwargs: dict[str, Any]
    outputs: list[int]
    handle: int = NO_HANDLE
    blocks: list[Block] = field(default_factory=list)
    id: int = -1  # numbered once the program is final; "forward/3" in the backend map
    origin: Any = None  # pipeline.core.source.NodeSource of the node, for compile-time errors; not saved
    node: Any = None  # the graph node itself, while compiling (export's handles are issued last); not saved

    @property
    def op_name(self) -> str:
        """The op without its overload: the key into SUPPORTED_OPS."""
        return self.op.split(".", 1)[0]


@dataclass
class Block:
    instructions: list[Instruction]
    outputs: list[Any]  # operands
    inputs: list[int] = field(default_factory=list)  # block parameters (prim::Loop: iteration, carried values)


@dataclass
class InputSpec:
    """One flattened input leaf: the value it binds and what preprocess knew of it."""

    value: int
    name: str
    kind: str  # "Tensor", "int", "float", "bool", "str" or "Any"
    dtype: torch.dtype | None = None
    shape: tuple[int, ...] | None = None
    constant: Any = None  # export specializes non-tensor inputs: the value it was specialized to
    has_constant: bool = False


@dataclass
class MethodProgram:
    name: str
    inputs: list[InputSpec]
    body: Block
    flatten_inputs: bool  # inputs bind the arguments' pytree leaves (export), or the arguments (TorchScript)
    flatten_outputs: bool  # the outputs' pytree leaves are returned (TorchScript returns one value)

    def instructions(self) -> Iterator[Instruction]:
        """Every instruction, nested blocks included, in program order."""
        yield from walk(self.body)


@dataclass
class Program:
    methods: dict[str, MethodProgram]


def walk(block: Block) -> Iterator[Instruction]:
    for instruction in block.instructions:
        yield instruction
        for inner in instruction.blocks:
            yield from walk(inner)


def refs_in(operand: Any) -> Iterator[int]:
    """Value ids an operand reads."""
    if isinstance(operand, Ref):
        yield operand.value
    elif isinstance(operand, (list, tuple)):
        for item in operand:
            yield from refs_in(item)
    elif isinstance(operand, dict):
        for item in operand.values():
            yield from refs_in(item)


def is_constant(operand: Any) -> bool:
    return next(refs_in(operand), None) is None


def map_refs(operand: Any, fn: Callable[[Ref], Any]) -> Any:
    """The operand with each `Ref` replaced by ``fn(ref)``."""
    if isinstance(operand, Ref):
        return fn(operand)
    if isinstance(operand, list):
        return [map_refs(item, fn) for item in operand]
    if isinstance(operand, tuple):
        return tuple(map_refs(item, fn) for item in operand)
    if isinstance(operand, dict):
        return {key: map_refs(item, fn) for key, item in operand.items()}
    return operand


# -- payload -------------------------------------------------------------------------------------


_STORE = "a reference-backend payload"


def serialize(program: Program) -> bytes:
    tensors = TensorTable(_STORE, by_content=True)
    methods = {name: _method_to_json(method, tensors) for name, method in program.methods.items()}
    data = [tensors.data(index) for index in range(len(tensors.tensors))]
    offsets = itertools.accumulate((len(raw) for raw in data[:-1]), initial=0)
    entries = [
        {**tensors.entry(index), "offset": offset, "nbytes": len(raw)}
        for index, (offset, raw) in enumerate(zip(offsets, data))
    ]
    document = {"format": "reference-backend-program", "methods": methods, "tensors": entries}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(text)) + text + b"".join(data)


def parse(payload: bytes) -> Program:
    """The program in a payload; `LoweringError` naming what is wrong if it is not one."""
    if len(payload) < _HEADER.size:
        raise LoweringError("Reference backend: corrupt payload: too short to hold a program header.")
    magic, version, json_length = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise LoweringError(f"Reference backend: corrupt payload: bad magic {magic!r} (expected {MAGIC!r}).")
    if version != FORMAT_VERSION:
        raise LoweringError(
            f"Reference backend: payload format version {version} is not supported; this backend reads "
            f"version {FORMAT_VERSION}. Lower the model again."
        )
    start = _HEADER.size
    if start + json_length > len(payload):
        raise LoweringError("Reference backend: corrupt payload: truncated program section.")
    try:
        document = json.loads(payload[start : start + json_length])
        tensors = [
            _read_tensor(entry, payload, start + json_length, f"tensors[{index}]")
            for index, entry in enumerate(document["tensors"])
        ]
        methods = {name: _method_from_json(name, data, tensors) for name, data in document["methods"].items()}
    except LoweringError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as error:
        raise LoweringError(f"Reference backend: corrupt payload: {type(error).__name__}: {error}") from error
    return Program(methods)


def encodable(value: Any) -> bool:
    """Whether a constant can be written into a payload."""
    try:
        _encode(value, TensorTable(_STORE))  # by object: no bytes are copied to find out
    except TypeError:
        return False
    return True


def _method_to_json(method: MethodProgram, tensors: TensorTable) -> dict:
    return {
        "inputs": [_input_to_json(spec, tensors) for spec in method.inputs],
        "body": _block_to_json(method.body, tensors),
        "flatten_inputs": method.flatten_inputs,
        "flatten_outputs": method.flatten_outputs,
    }


def _method_from_json(name: str, data: dict, tensors: list[torch.Tensor]) -> MethodProgram:
    return MethodProgram(
        name=name,
        inputs=[_input_from_json(item, tensors) for item in data["inputs"]],
        body=_block_from_json(data["body"], tensors),
        flatten_inputs=bool(data["flatten_inputs"]),
        flatten_outputs=bool(data["flatten_outputs"]),
    )


def _input_to_json(spec: InputSpec, tensors: TensorTable) -> dict:
    data: dict[str, Any] = {"value": spec.value, "name": spec.name, "kind": spec.kind}
    if spec.dtype is not None:
        data["dtype"] = _encode(spec.dtype, tensors)
    if spec.shape is not None:
        data["shape"] = list(spec.shape)
    if spec.has_constant:
        data["constant"] = _encode(spec.constant, tensors)
    return data


def _input_from_json(data: dict, tensors: list[torch.Tensor]) -> InputSpec:
    return InputSpec(
        value=int(data["value"]),
        name=str(data["name"]),
        kind=str(data["kind"]),
        dtype=_decode(data["dtype"], tensors) if "dtype" in data else None,
        shape=tuple(int(s) for s in data["shape"]) if "shape" in data else None,
        constant=_decode(data["constant"], tensors) if "constant" in data else None,
        has_constant="constant" in data,
    )


def _block_to_json(block: Block, tensors: TensorTable) -> dict:
    data: dict[str, Any] = {
        "instructions": [_instruction_to_json(i, tensors) for i in block.instructions],
        "outputs": [_encode(o, tensors) for o in block.outputs],
    }
    if block.inputs:
        data["inputs"] = list(block.inputs)
    return data


def _block_from_json(data: dict, tensors: list[torch.Tensor]) -> Block:
    return Block(
        instructions=[_instruction_from_json(item, tensors) for item in data["instructions"]],
        outputs=[_decode(o, tensors) for o in data["outputs"]],
        inputs=[int(v) for v in data.get("inputs", [])],
    )


def _instruction_to_json(instruction: Instruction, tensors: TensorTable) -> dict:
    data: dict[str, Any] = {
        "id": instruction.id,
        "op": instruction.op,
        "args": [_encode(a, tensors) for a in instruction.args],
        "outputs": list(instruction.outputs),
        "handle": instruction.handle,
    }
    if instruction.kwargs:
        data["kwargs"] = {k: _encode(v, tensors) for k, v in instruction.kwargs.items()}
    if instruction.blocks:
        data["blocks"] = [_block_to_json(b, tensors) for b in instruction.blocks]
    return data


def _instruction_from_json(data: dict, tensors: list[torch.Tensor]) -> Instruction:
    return Instruction(
        op=str(data["op"]),
        args=[_decode(a, tensors) for a in data["args"]],
        kwargs={str(k): _decode(v, tensors) for k, v in data.get("kwargs", {}).items()},
        outputs=[int(v) for v in data["outputs"]],
        handle=int(data["handle"]),
        blocks=[_block_from_json(b, tensors) for b in data.get("blocks", [])],
        id=int(data["id"]),
    )


# -- constants -----------------------------------------------------------------------------------
# JSON holds None, bools, ints, floats, strings and lists natively; everything else is a
# one-key object whose key says what it is (torch's own constants: `pipeline.core.operands`).


def _encode(value: Any, tensors: TensorTable) -> Any:
    if isinstance(value, Ref):
        return {"ref": value.value}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return {"tensor": tensors.add(value)}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if isinstance(value, tuple):
        return {"tuple": [_encode(item, tensors) for item in value]}
    constant = torch_constant(value)
    if constant is not None:
        return constant
    raise TypeError(f"a {type(value).__name__} ({value!r}) cannot be stored in {_STORE}")


def _decode(data: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(data, list):
        return [_decode(item, tensors) for item in data]
    if not isinstance(data, dict):
        return data
    ((tag, content),) = data.items()
    if tag == "ref":
        return Ref(int(content))
    if tag == "tensor":
        return tensors[int(content)]
    if tag == "tuple":
        return tuple(_decode(item, tensors) for item in content)
    return read_torch_constant(tag, content)


def _read_tensor(entry: dict, payload: bytes, data_start: int, where: str) -> torch.Tensor:
    start, nbytes = data_start + int(entry["offset"]), int(entry["nbytes"])
    if start + nbytes > len(payload) or nbytes < 0:
        raise LoweringError("Reference backend: corrupt payload: tensor data lies outside the payload.")
    return read_tensor(entry, payload[start : start + nbytes], where)


def to_text(method: MethodProgram) -> str:
    """A readable listing of a method, one instruction a line (for people and debugging)."""
    lines = [f"method {method.name}(" + ", ".join(f"%{s.value}: {s.kind}" for s in method.inputs) + "):"]

    def operand(value: Any) -> str:
        if isinstance(value, Ref):
            return f"%{value.value}"
        if isinstance(value, torch.Tensor):
            return f"<{str(value.dtype).removeprefix('torch.')} tensor {tuple(value.shape)}>"
        if isinstance(value, (list, tuple)):
            inner = ", ".join(operand(v) for v in value)
            return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
        return repr(value)

    def block(body: Block, indent: str) -> None:
        if body.inputs:
            lines.append(f"{indent}block(" + ", ".join(f"%{v}" for v in body.inputs) + "):")
        for instruction in body.instructions:
            outputs = ", ".join(f"%{v}" for v in instruction.outputs)
            args = [operand(a) for a in instruction.args] + [f"{k}={operand(v)}" for k, v in instruction.kwargs.items()]
            lines.append(
                f"{indent}{outputs + ' = ' if outputs else ''}{instruction.op}({', '.join(args)})"
                f"  # {instruction.id}, handle {instruction.handle}"
            )
            for inner in instruction.blocks:
                block(inner, indent + "    ")
        lines.append(f"{indent}-> (" + ", ".join(operand(o) for o in body.outputs) + ")")

    block(method.body, "  ")
    return "\n".join(lines)
