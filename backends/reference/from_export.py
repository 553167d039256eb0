"""Export frontend: one ``torch.export.ExportedProgram`` -> `MethodProgram`.

Parameters, buffers and constant tensors are placeholders of the graph; they
become constants of the program (``graph_signature.input_specs`` says which
is which). User-input placeholders are the method's flattened inputs, in
order. Each ``call_function`` node becomes one instruction naming its exact
overload; ``operator.getitem`` on a multi-output op becomes ``prim::TupleIndex``.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any, Callable, Dict, List

import torch
from torch.export.graph_signature import InputKind, OutputKind

from pipeline.core.backend import LoweringError, describe_node

from pipeline.backends.reference.program import NO_HANDLE, Block, InputSpec, Instruction, MethodProgram, Ref


def convert_method(program: torch.export.ExportedProgram, method: str,
                   generate_debug_handles: Callable) -> MethodProgram:
    handles = generate_debug_handles(program.graph, method=method)
    input_specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
    env: Dict[torch.fx.Node, Any] = {}  # node -> Ref, or the constant a lifted placeholder holds
    value_ids = itertools.count()
    inputs: List[InputSpec] = []
    instructions: List[Instruction] = []
    outputs: List[Any] = []

    def operand(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return env[arg]
        if isinstance(arg, (list, tuple)):
            items = [operand(a) for a in arg]
            return items if isinstance(arg, list) else tuple(items)
        if isinstance(arg, dict):
            return {key: operand(value) for key, value in arg.items()}
        return arg

    for node in program.graph.nodes:
        if node.op == "placeholder":
            spec = input_specs[node.name]
            if spec.kind == InputKind.USER_INPUT:
                env[node] = Ref(next(value_ids))
                inputs.append(_input_spec(env[node].value, node))
            else:
                env[node] = _lifted_constant(program, spec, method)
        elif node.op == "call_function":
            env[node] = Ref(next(value_ids))
            op = "prim::TupleIndex" if node.target is operator.getitem else describe_node(node).op
            args = [operand(a) for a in node.args]
            kwargs = {key: operand(value) for key, value in node.kwargs.items()}
            instructions.append(Instruction(op, args, kwargs, [env[node].value], handles.get(node, NO_HANDLE),
                                            origin=describe_node(node)))
        elif node.op == "output":
            outputs = _user_outputs(program, node, operand, method)
        else:  # get_attr, call_module, call_method: none in a plain exported program
            env[node] = Ref(next(value_ids))
            instructions.append(Instruction(describe_node(node).op, [], {}, [env[node].value],
                                            handles.get(node, NO_HANDLE), origin=describe_node(node)))
    return MethodProgram(method, inputs, Block(instructions, outputs),
                         flatten_inputs=True, flatten_outputs=False)


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


def _user_outputs(program: torch.export.ExportedProgram, node: torch.fx.Node, operand: Callable,
                  method: str) -> List[Any]:
    values = list(node.args[0])
    specs = program.graph_signature.output_specs
    effects = [spec for spec in specs if spec.kind != OutputKind.USER_OUTPUT]
    if effects:
        described = ", ".join(f"{spec.kind.name} {spec.target!r}" for spec in effects)
        raise LoweringError(
            f"Reference backend: method {method!r} has side effects ({described}); the reference backend runs "
            "inference programs without state. Lower the model in eval mode."
        )
    return [operand(value) for value in values]
