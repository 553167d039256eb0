"""Splitting exported methods into the subgraphs a backend supports and the rest.

`split_program` splits every lowered method: each is functionalized if it writes in place, its nodes get
debug handles, and `split_method` finds its groups. `split_method` asks the backend about every ``call_function`` node
(``Backend.supports(node)``), lets torch's own
``CapabilityBasedPartitioner`` group the supported nodes into maximal
connected subgraphs that no unsupported node both feeds and consumes (so the
groups can run one after another), keeps the groups of at least ``min_nodes``
nodes and turns each into an ``ExportedProgram`` of its own, which the
backend's ``preprocess`` then lowers as one method. Everything else stays in
the method's *fallback*: the ops PyTorch runs between the groups
(`pipeline.core.partitioning.fallback`).

Each group's program is built from the method's nodes themselves (copied with
their names and metadata), so debug handles issued on the method's graph
resolve the group's nodes too, and their source lines stay the user's.
"""

from __future__ import annotations

import copy
import heapq
import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export.exported_program import ModuleCallEntry, ModuleCallSignature
from torch.export.graph_signature import (
    ExportGraphSignature,
    InputKind,
    InputSpec,
    OutputKind,
    OutputSpec,
    TensorArgument,
)
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase

from pipeline.core.debug_handles import walk_nodes
from pipeline.core.errors import LoweringError
from pipeline.core.frontends import CapturedProgram
from pipeline.core.registry import BackendInfo

FALLBACK = "fallback"  # the partition name of what runs in PyTorch
_LIFTED = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)

Supports = Callable[[torch.fx.Node], bool | str]
# Issues debug handles: generator(graph, method) -> {node: handle}.
HandleIssuer = Callable[..., dict[Any, int]]


@dataclass(eq=False)  # hashed by identity: groups are nodes of the run order
class Group:
    """One supported subgraph: its nodes, what flows in and out, and its own program."""

    name: str  # the method name the backend lowers it under: "forward_p0"
    nodes: list[torch.fx.Node]
    inputs: list[torch.fx.Node]  # values computed outside it, in the order its program takes them
    outputs: list[torch.fx.Node]  # its values read outside it
    program: torch.export.ExportedProgram


@dataclass
class MethodSplit:
    """A method's program, its groups, the order things run in, and why each fallback node fell back."""

    method: str
    program: torch.export.ExportedProgram
    groups: list[Group]
    order: list[torch.fx.Node | Group]  # fallback nodes and groups, in an order that respects data flow
    reasons: dict[torch.fx.Node, str] = field(default_factory=dict)  # fallback node -> why

    @property
    def fallback_nodes(self) -> list[torch.fx.Node]:
        return [unit for unit in self.order if isinstance(unit, torch.fx.Node)]


def counted(node: torch.fx.Node) -> bool:
    """Nodes that count toward ``min_nodes`` and the summary: ops, not the ``getitem`` that unpacks one."""
    return node.op == "call_function" and node.target is not operator.getitem


def ask(supports: Supports, node: torch.fx.Node) -> str:
    """``""`` if the backend supports ``node``, else the reason it gives (or a generic one)."""
    if node.op != "call_function":
        return f"is a {node.op} node"
    if node.target is operator.getitem:  # unpacks a multi-output op: goes where the op goes
        return ask(supports, node.args[0]) if isinstance(node.args[0], torch.fx.Node) else "unpacks a constant"
    try:
        answer = supports(node)
    except Exception as error:  # a backend's check that fails must not hide which node it was
        raise LoweringError(f"supports({node.name}) raised {type(error).__name__}: {error}") from error
    if answer is True:
        return ""
    return answer if isinstance(answer, str) and answer else "is not supported by the backend"


class _Answers(OperatorSupportBase):
    def __init__(self, answers: dict[torch.fx.Node, str]):
        self.answers = answers

    def is_node_supported(self, submodules: Any, node: torch.fx.Node) -> bool:
        return self.answers.get(node) == ""


def split_method(
    program: torch.export.ExportedProgram, method: str, supports: Supports, min_nodes: int, backend: str
) -> MethodSplit:
    """The groups of ``program`` that ``backend`` supports, each with at least ``min_nodes`` ops."""
    _check_stateless(program, method)
    graph_module = program.graph_module
    answers = {node: ask(supports, node) for node in graph_module.graph.nodes if node.op == "call_function"}
    partitioner = CapabilityBasedPartitioner(graph_module, _Answers(answers), allows_single_node_partition=True)
    position = {node: i for i, node in enumerate(graph_module.graph.nodes)}
    proposed = sorted(
        (sorted(p.nodes, key=position.__getitem__) for p in partitioner.propose_partitions()),
        key=lambda nodes: position[nodes[0]],
    )
    groups: list[Group] = []
    reasons: dict[torch.fx.Node, str] = {n: why for n, why in answers.items() if why}
    for nodes in proposed:
        size = sum(counted(n) for n in nodes)
        if size < min_nodes:
            for node in nodes:
                reasons[node] = (
                    f"is supported, but its group has {size} node{'s' * (size != 1)}, fewer than min_nodes={min_nodes}"
                )
            continue
        inputs, outputs = _boundary(nodes, position)
        groups.append(make_group(program, f"{method}_p{len(groups)}", nodes, inputs, outputs, method, backend))
    return MethodSplit(method, program, groups, _run_order(graph_module.graph, groups, position), reasons)


@dataclass
class ProgramSplit:
    """All methods split: the groups' programs and compile specs for the backend, and a generator that
    gives the groups' nodes the handles issued on their methods."""

    methods: dict[str, MethodSplit]
    programs: dict[str, torch.export.ExportedProgram]
    spec: dict[str, Any]
    generator: HandleIssuer
    handles: dict[str, dict[torch.fx.Node, int]]


def split_program(
    backend: BackendInfo, captured: CapturedProgram, spec: dict[str, Any], generator: HandleIssuer, min_nodes: int
) -> ProgramSplit:
    """Each method of ``spec`` functionalized, given its handles and split into the groups ``backend`` supports."""
    if captured.frontend != "export":
        raise LoweringError(
            f"Partitioned lowering splits exported programs; this one was captured with the {captured.frontend!r} "
            "frontend. Use frontend='export' (allowed with partition=True: 'export')."
        )
    if isinstance(min_nodes, bool) or not isinstance(min_nodes, int) or min_nodes < 1:
        raise LoweringError(f"min_nodes must be an int of at least 1, not {min_nodes!r}.")
    if "partition" in spec:
        raise LoweringError(
            "A partitioned module has an attribute 'partition' of its own; a method of that name "
            "cannot be lowered with partition=True."
        )
    methods: dict[str, MethodSplit] = {}
    handles: dict[str, dict[torch.fx.Node, int]] = {}
    for method in spec:
        program = functionalize(captured.program[method], method)
        handles[method] = generator(program.graph, method)
        methods[method] = split_method(program, method, backend.backend_cls.supports, min_nodes, backend.name)
    by_name = {method: {node.name: h for node, h in issued.items()} for method, issued in handles.items()}
    owner = {group.name: method for method, split in methods.items() for group in split.groups}

    def group_handles(graph: Any, method: str = "forward") -> dict[Any, int]:
        issued = by_name.get(owner.get(method, method), {})
        return {node: issued[node.name] for node in walk_nodes(graph) if getattr(node, "name", None) in issued}

    programs = {g.name: g.program for split in methods.values() for g in split.groups}
    return ProgramSplit(methods, programs, {g: spec[owner[g]] for g in programs}, group_handles, handles)


def functionalize(program: torch.export.ExportedProgram, method: str) -> torch.export.ExportedProgram:
    """No in-place op may write across a group's edge: a program with an op that writes into its arguments
    is functionalized (``run_decompositions({})``, which also normalizes some ops: ``batch_norm`` to
    ``_native_batch_norm_legit_no_training``, ``flatten`` to ``view``); any other is kept as exported."""
    if not any(
        isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable
        for node in program.graph.nodes
        if node.op == "call_function"
    ):
        return program
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, inside deepcopy
            functional: torch.export.ExportedProgram = program.run_decompositions({})
            return functional
    except Exception as error:
        raise LoweringError(
            f"Partitioned lowering: functionalizing method {method!r} failed: {type(error).__name__}: {error}"
        ) from error


def _check_stateless(program: torch.export.ExportedProgram, method: str) -> None:
    for spec in program.graph_signature.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            raise LoweringError(
                f"Partitioned lowering: method {method!r} has a side effect ({spec.kind.name} {spec.target!r}); "
                "partitions run programs without state. Lower the model in eval mode, and without in-place "
                "writes to its inputs."
            )


def _boundary(
    nodes: Sequence[torch.fx.Node], position: dict[torch.fx.Node, int]
) -> tuple[list[torch.fx.Node], list[torch.fx.Node]]:
    members = set(nodes)
    inputs: dict[torch.fx.Node, None] = {}
    for node in nodes:
        for arg in node.all_input_nodes:
            if arg not in members:
                inputs[arg] = None
    outputs = [node for node in nodes if any(user not in members for user in node.users)]
    return sorted(inputs, key=position.__getitem__), outputs


def _run_order(
    graph: torch.fx.Graph, groups: list[Group], position: dict[torch.fx.Node, int]
) -> list[torch.fx.Node | Group]:
    """Fallback nodes and groups, each after everything it reads (earliest original position first)."""
    owner = {node: group for group in groups for node in group.nodes}
    units: dict[Any, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_function" or node.op == "get_attr":
            units.setdefault(owner.get(node, node), []).append(node)
    depends = {
        unit: {owner.get(arg, arg) for n in nodes for arg in n.all_input_nodes} & units.keys() - {unit}
        for unit, nodes in units.items()
    }
    first = {unit: min(position[n] for n in nodes) for unit, nodes in units.items()}  # unique per unit
    readers: dict[Any, list[Any]] = {unit: [] for unit in units}
    for unit, deps in depends.items():
        for dep in deps:
            readers[dep].append(unit)
    waiting = {unit: len(deps) for unit, deps in depends.items()}
    ready = [(first[unit], unit) for unit, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[Any] = []
    while ready:  # Kahn's sort, earliest original position first: the program's order where it can be kept
        _, unit = heapq.heappop(ready)
        order.append(unit)
        for reader in readers[unit]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, (first[reader], reader))
    if len(order) != len(units):  # the partitioner keeps groups convex, so this would be its bug
        raise LoweringError("Partitioned lowering: the groups depend on each other in a cycle.")
    return order


def make_group(
    program: torch.export.ExportedProgram,
    name: str,
    nodes: list[torch.fx.Node],
    inputs: list[torch.fx.Node],
    outputs: list[torch.fx.Node],
    method: str,
    backend: str,
) -> Group:
    """``nodes`` as a group with an ExportedProgram of its own: its parameters, buffers and constants lifted
    as the method's are, everything else it reads a user input, its values read outside it the user outputs."""
    specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
    lifted = [n for n in inputs if n.op == "placeholder" and specs[n.name].kind in _LIFTED]
    users = [n for n in inputs if n not in lifted]
    for node in users:
        if not isinstance(node.meta.get("val"), torch.Tensor):
            raise LoweringError(
                f"Partitioned lowering: group {name} of method {method!r} reads {node.name}, a "
                f"{type(node.meta.get('val')).__name__} value; a group's inputs must be tensors."
            )
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in lifted + users:  # the order the program's placeholders take them
        env[node] = graph.placeholder(node.name)
        env[node].meta = copy.copy(node.meta)
    for node in nodes:
        env[node] = graph.node_copy(node, env.__getitem__)
    graph.output(tuple(env[node] for node in outputs))
    state_dict, constants = {}, {}
    input_specs = []
    for node in lifted:
        spec = specs[node.name]
        if spec.target in program.state_dict:
            state_dict[spec.target] = program.state_dict[spec.target]
        else:
            constants[spec.target] = program.constants[spec.target]
        input_specs.append(
            InputSpec(spec.kind, TensorArgument(node.name), spec.target, getattr(spec, "persistent", None))
        )
    input_specs += [InputSpec(InputKind.USER_INPUT, TensorArgument(node.name), None) for node in users]
    output_specs = [OutputSpec(OutputKind.USER_OUTPUT, TensorArgument(env[node].name), None) for node in outputs]
    examples = tuple(_example(node) for node in users)
    module_call = ModuleCallSignature(
        inputs=[TensorArgument(node.name) for node in users],
        outputs=[TensorArgument(env[node].name) for node in outputs],
        in_spec=pytree.tree_structure((examples, {})),
        out_spec=pytree.tree_structure(tuple(range(len(outputs)))),
        forward_arg_names=[node.name for node in users],
    )
    try:
        exported = torch.export.ExportedProgram(
            root=torch.fx.GraphModule(program.graph_module, graph),
            graph=graph,
            graph_signature=ExportGraphSignature(input_specs, output_specs),
            state_dict=state_dict,
            range_constraints=copy.copy(program.range_constraints),
            module_call_graph=[ModuleCallEntry("", module_call)],
            example_inputs=(examples, {}),
            constants=constants,
        )
    except Exception as error:
        raise LoweringError(
            f"Partitioned lowering: group {name} of method {method!r} does not form a "
            f"program for backend {backend!r}: {type(error).__name__}: {error}"
        ) from error
    return Group(name, nodes, lifted + users, outputs, exported)


def _example(node: torch.fx.Node) -> torch.Tensor:
    from torch.fx.experimental.symbolic_shapes import guarding_hint_or_throw

    fake = node.meta["val"]
    return torch.zeros(
        [guarding_hint_or_throw(size) for size in fake.shape], dtype=fake.dtype
    )  # a dynamic size: its example
