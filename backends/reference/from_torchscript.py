"""TorchScript frontend: a method of a ``torch.jit.ScriptModule`` -> `MethodProgram`.

The method's graph is copied and inlined (calls into submodules and other
methods become the callees' nodes, which keep their source ranges and module
hierarchy). ``prim::Constant`` and ``prim::GetAttr`` chains starting at
``self`` are resolved here, so parameters, buffers and attributes such as
``training`` become constants of the program; the constant folding pass then
removes the branches they decide. Every other node becomes one instruction,
supported or not: the compiler rejects unsupported ones only if they survive
folding and dead-code elimination.

The program takes the method's arguments as they are (a tuple or ``None``
is one input) and returns its one result, which the interpreter flattens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from pipeline.backends.reference.program import NO_HANDLE, Block, InputSpec, Instruction, MethodProgram, Ref
from pipeline.core.backend import describe_node

_NO_SCHEMA = "(no schema)"


def convert_method(module: torch.jit.ScriptModule, method: str, generate_debug_handles: Callable) -> MethodProgram:
    graph = getattr(module, method).graph.copy()
    torch._C._jit_pass_inline(graph)
    handles = generate_debug_handles(graph, method=method)  # on the graph compiled, so handles match nodes
    return _Converter(module, method, handles).convert(graph)


class _Opaque:
    """A compile-time value the program cannot hold (a function, a class instance)."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


class _Converter:
    def __init__(self, module: torch.jit.ScriptModule, method: str, handles: dict[Any, int]):
        self.module = module
        self.method = method
        self.handles = handles
        self.env: dict[int, Any] = {}  # torch Value.unique() -> Ref, constant, or module object
        self.next_value = 0
        self.schemas: dict[str, Any] = {}

    def convert(self, graph: torch.Graph) -> MethodProgram:
        self_value, *arguments = graph.inputs()
        self.env[self_value.unique()] = self.module
        specs = [self._bind_argument(value) for value in arguments]
        body = self._block(graph.nodes(), graph.outputs())
        # One input per argument, as the method takes them (tuples and None included); the
        # one returned value is flattened into output leaves.
        return MethodProgram(self.method, specs, body, flatten_inputs=False, flatten_outputs=True)

    def _bind_argument(self, value: Any) -> InputSpec:
        (value_id,) = self._define([value])
        name, kind = value.debugName().split(".")[0], value.type()
        if isinstance(kind, torch.TensorType):
            sizes = kind.sizes()  # known in traces
            return InputSpec(value_id, name, "Tensor", kind.dtype(), tuple(sizes) if sizes is not None else None)
        return InputSpec(value_id, name, str(kind))

    def _block(self, nodes: Iterable[Any], outputs: Iterable[Any], inputs: tuple[int, ...] = ()) -> Block:
        instructions: list[Instruction] = []
        for node in nodes:
            self._node(node, instructions)
        return Block(instructions, [self._operand(v) for v in outputs], list(inputs))

    def _node(self, node: Any, out: list[Instruction]) -> None:
        kind = node.kind()
        if kind == "prim::Constant":
            self.env[node.output().unique()] = _constant(node.output())
            return
        if kind == "prim::GetAttr" and _is_object(self._operand(node.input())):
            self.env[node.output().unique()] = _attribute(self._operand(node.input()), node.s("name"))
            return
        handle = self.handles.get(node, NO_HANDLE)
        origin = describe_node(node)
        if kind == "prim::If":
            blocks = [self._block(b.nodes(), b.outputs()) for b in node.blocks()]
            out.append(
                Instruction(
                    kind, [self._operand(node.input())], {}, self._define(node.outputs()), handle, blocks, origin=origin
                )
            )
        elif kind == "prim::Loop":
            (body,) = node.blocks()
            block = self._block(body.nodes(), body.outputs(), tuple(self._define(body.inputs())))
            args = [self._operand(v) for v in node.inputs()]
            out.append(Instruction(kind, args, {}, self._define(node.outputs()), handle, [block], origin=origin))
        else:
            op, args, kwargs = self._call(node)
            out.append(Instruction(op, args, kwargs, self._define(node.outputs()), handle, origin=origin))

    def _call(self, node: Any) -> tuple[str, list[Any], dict[str, Any]]:
        """The exact overload and the operands, keyword-only arguments by name, as torch.ops takes them."""
        inputs = [self._operand(v) for v in node.inputs()]
        text = node.schema()
        if text == _NO_SCHEMA:
            return node.kind(), inputs, {}
        if text not in self.schemas:
            self.schemas[text] = torch._C.parse_schema(text)
        schema = self.schemas[text]
        op = f"{node.kind()}.{schema.overload_name}" if schema.overload_name else node.kind()
        args, kwargs = [], {}
        for i, operand in enumerate(inputs):
            declared = schema.arguments[i] if i < len(schema.arguments) else None  # beyond: varargs
            if declared is not None and declared.kwarg_only:
                kwargs[declared.name] = operand
            else:
                args.append(operand)
        return op, args, kwargs

    def _operand(self, value: Any) -> Any:
        return self.env[value.unique()]

    def _define(self, values: Iterable[Any]) -> list[int]:
        """Fresh value ids for graph values; later operands that read them become Refs."""
        ids = []
        for value in values:
            ids.append(self.next_value)
            self.env[value.unique()] = Ref(self.next_value)
            self.next_value += 1
        return ids


def _constant(value: Any) -> Any:
    try:
        constant = value.toIValue()
    except RuntimeError:
        return _Opaque(f"constant of type {value.type()}")
    return constant.detach() if isinstance(constant, torch.Tensor) else constant


def _is_object(value: Any) -> bool:
    return isinstance(value, (torch.jit.ScriptModule, torch._C.ScriptObject))


def _attribute(owner: Any, name: str) -> Any:
    value = getattr(owner, name)
    return value.detach() if isinstance(value, torch.Tensor) else value
