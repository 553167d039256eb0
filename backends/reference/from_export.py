"""Export frontend: one ``torch.export.ExportedProgram`` -> `MethodProgram`.

Export's graph keeps the model's in-place ops (``relu_``, ``add_``); the
compiler's `passes.functionalize` rewrites them as functional ones, which keeps
shape-generic ops such as ``flatten`` (so the program runs other batch sizes).
When an in-place op writes through a view in a way that pass will not rewrite,
the compiler converts the program `functionalize` returns instead: torch's own
functionalization (``run_decompositions({})``), which turns such writes into
``*_scatter`` ops but bakes the example's static sizes into views (a
symbolic size stays symbolic: `symbolic` computes it). Either way the
nodes keep their stack traces and module stacks: `assign_handles` issues debug
handles on the graphs the program was converted from, so they point at the
user's source lines.

Parameters, buffers and constant tensors are placeholders of the graph; they
become constants of the program (``graph_signature.input_specs`` says which
is which). User-input placeholders are the method's flattened inputs, in
order. Each ``call_function`` node becomes one instruction naming its exact
overload; ``operator.getitem`` on a multi-output op becomes ``prim::TupleIndex``.
``torch.cond`` becomes a ``prim::If`` whose two blocks are the branch graphs,
their placeholders bound to the operands ``cond`` passes: the same instruction
TorchScript's ``if`` gives, run and folded the same way.
"""

from __future__ import annotations

import itertools
import operator
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch.export.graph_signature import InputKind, OutputKind

from pipeline.backends.reference import symbolic
from pipeline.backends.reference.program import NO_HANDLE, Block, InputSpec, Instruction, MethodProgram, Ref
from pipeline.core.backend import LoweringError, describe_node


def convert_method(program: torch.export.ExportedProgram, method: str) -> tuple[MethodProgram, list[torch.fx.Graph]]:
    """The method's program, its instructions without debug handles yet, and the graphs it came from
    (the program's, then each ``torch.cond`` branch's) for `assign_handles`."""
    converter = _Converter(program, method)
    body = converter.graph(program.graph_module, bound=None)
    return MethodProgram(method, converter.inputs, body, flatten_inputs=True, flatten_outputs=False), converter.graphs


def assign_handles(method: MethodProgram, graphs: list[torch.fx.Graph], generate_debug_handles: Callable) -> None:
    """Issue debug handles for every node of ``graphs`` and give each instruction its node's handle."""
    handles: dict[torch.fx.Node, int] = {}
    for graph in graphs:
        handles.update(generate_debug_handles(graph, method=method.name))
    for instruction in method.instructions():
        instruction.handle = handles.get(instruction.node, NO_HANDLE)


def functionalize(program: torch.export.ExportedProgram, method: str) -> torch.export.ExportedProgram:
    """The program with every in-place op replaced by functional ones (writes into views become
    ``*_scatter`` ops), no op decomposed beyond what functionalization needs (the empty table)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, inside deepcopy
            return program.run_decompositions({})
    except Exception as error:
        raise LoweringError(
            f"Reference backend: functionalizing the exported program of method {method!r} failed: "
            f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        ) from error


class _Branch:
    """A ``get_attr`` of a ``torch.cond`` branch: a graph to compile as a block, not a value."""

    def __init__(self, module: torch.fx.GraphModule):
        self.module = module


class _Converter:
    def __init__(self, program: torch.export.ExportedProgram, method: str):
        self.program = program
        self.method = method
        self.graphs: list[torch.fx.Graph] = []
        self.input_specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
        self.value_ids = itertools.count()
        self.inputs: list[InputSpec] = []

    def graph(self, module: torch.fx.GraphModule, bound: Sequence[Any] | None) -> Block:
        """The block of one graph: the method's own (``bound`` None) or a branch, whose placeholders
        take the ``bound`` operands in order."""
        self.graphs.append(module.graph)
        env: dict[torch.fx.Node, Any] = {}  # node -> Ref, constant, list of Refs (cond) or _Branch
        instructions: list[Instruction] = []
        outputs: list[Any] = []
        placeholders = iter(bound or ())

        def operand(arg: Any) -> Any:
            if isinstance(arg, torch.fx.Node):
                return env[arg]
            if isinstance(arg, (list, tuple)):
                items = [operand(a) for a in arg]
                return items if isinstance(arg, list) else tuple(items)
            if isinstance(arg, dict):
                return {key: operand(value) for key, value in arg.items()}
            return arg

        for node in module.graph.nodes:
            if node.op == "placeholder":
                env[node] = self.placeholder(node) if bound is None else next(placeholders)
            elif node.op == "get_attr" and isinstance(getattr(module, node.target, None), torch.fx.GraphModule):
                env[node] = _Branch(getattr(module, node.target))
            elif node.op == "call_function" and node.target is torch.ops.higher_order.cond:
                env[node] = self.cond(node, operand, instructions)
            elif node.op == "call_function" and node.target is operator.getitem and isinstance(env[node.args[0]], list):
                env[node] = env[node.args[0]][node.args[1]]  # one result of a cond
            elif node.op == "call_function":
                env[node] = Ref(next(self.value_ids))
                op = _op_name(node)
                args = [operand(a) for a in node.args]
                kwargs = {key: operand(value) for key, value in node.kwargs.items()}
                instructions.append(
                    Instruction(op, args, kwargs, [env[node].value], origin=describe_node(node), node=node)
                )
            elif node.op == "output":
                outputs = (
                    self.user_outputs(node, operand) if bound is None else [operand(value) for value in node.args[0]]
                )
            else:  # other get_attr, call_module, call_method: none in a plain exported program
                env[node] = Ref(next(self.value_ids))
                instructions.append(
                    Instruction(
                        describe_node(node).op, [], {}, [env[node].value], origin=describe_node(node), node=node
                    )
                )
        return Block(instructions, outputs)

    def placeholder(self, node: torch.fx.Node) -> Any:
        spec = self.input_specs[node.name]
        if spec.kind != InputKind.USER_INPUT:
            return _lifted_constant(self.program, spec, self.method)
        ref = Ref(next(self.value_ids))
        self.inputs.append(_input_spec(ref.value, node))
        return ref

    def cond(self, node: torch.fx.Node, operand: Callable, out: list[Instruction]) -> list[Ref]:
        """``cond(pred, true_graph, false_graph, operands)`` -> ``prim::If``; its results, one Ref each."""
        predicate, true_branch, false_branch, operands = cast(tuple[Any, ...], node.args)
        bound = [operand(o) for o in operands]
        blocks = [self.graph(operand(branch).module, bound) for branch in (true_branch, false_branch)]
        results = [next(self.value_ids) for _ in blocks[0].outputs]
        out.append(
            Instruction(
                "prim::If", [operand(predicate)], {}, results, blocks=blocks, origin=describe_node(node), node=node
            )
        )
        return [Ref(value) for value in results]

    def user_outputs(self, node: torch.fx.Node, operand: Callable) -> list[Any]:
        for spec in self.program.graph_signature.output_specs:
            if spec.kind == OutputKind.USER_INPUT_MUTATION:
                raise LoweringError(
                    f"Reference backend: method {self.method!r} changes its input {spec.target!r} in place, which "
                    "the caller would see; the reference backend does not write into inputs (copy the input "
                    "first, or use the out-of-place op)."
                )
            if spec.kind != OutputKind.USER_OUTPUT:
                raise LoweringError(
                    f"Reference backend: method {self.method!r} has side effects ({spec.kind.name} {spec.target!r}); "
                    "the reference backend runs inference programs without state. Lower the model in eval mode "
                    "(training-mode BatchNorm changes its buffers)."
                )
        return [operand(value) for value in cast(Sequence[Any], node.args[0])]


def _op_name(node: torch.fx.Node) -> str:
    """The instruction's op: the node's overload, or for Python's own calls on sizes the builtin that
    computes them (a call without one keeps its Python name, which the compiler rejects)."""
    if node.target is operator.getitem:
        return "prim::TupleIndex"
    if symbolic.is_symbolic_call(node):
        return symbolic.builtin_for(node) or describe_node(node).op
    return describe_node(node).op


def _input_spec(value: int, node: torch.fx.Node) -> InputSpec:
    example = node.meta.get("val")
    if isinstance(example, torch.Tensor):
        shape = tuple(example.shape)
        static = all(isinstance(s, int) for s in shape)
        return InputSpec(value, node.name, "Tensor", example.dtype, shape if static else None)
    if isinstance(example, (bool, int, float, str)):
        # export specialized the program to this value: other values would be computed wrongly
        return InputSpec(value, node.name, type(example).__name__, constant=example, has_constant=True)
    return InputSpec(value, node.name, "Any")


def _lifted_constant(program: torch.export.ExportedProgram, spec: Any, method: str) -> torch.Tensor:
    if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
        if spec.target in program.state_dict:
            return program.state_dict[spec.target].detach()
        if spec.target in program.constants and isinstance(program.constants[spec.target], torch.Tensor):
            return program.constants[spec.target].detach()
    raise LoweringError(
        f"Reference backend: method {method!r} takes {spec.kind.name} {spec.target!r}, which the reference backend "
        "cannot hold; it holds parameters, buffers and constant tensors."
    )
