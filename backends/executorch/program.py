"""One exported method to an ExecuTorch program: edge dialect, partitioned, emitted as a ``.pte``.

``to_executorch(exported, spec, method)``:
``executorch.exir.to_edge_transform_and_lower({method: exported},
partitioner=[XnnpackPartitioner()])`` (no partitioner for ``partitioner=none``)
and then ``.to_executorch()``, whose ``.buffer`` is the ``.pte`` flatbuffer; a
program with dynamic dimensions is planned for their maximum (`dynamic`).
`partition` reads the emitted graph and instructions from the manager it returns.

A kernel the program calls outside any delegate must be registered in the
installed runtime, or the program fails only when it is loaded (a common
ExecuTorch surprise); `check_kernels` makes that a lowering error that names
the kernels.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.backends.executorch.compile_spec import NAME, ExecuTorchCompileSpec, Partitioner
from pipeline.backends.executorch.dynamic import backend_config
from pipeline.backends.executorch.installed import executorch_module, runtime
from pipeline.core.backend import LoweringError, decomposed_attention, format_choices, progress_step, quiet


def to_executorch(exported: Any, spec: ExecuTorchCompileSpec, method: str) -> Any:
    """The ``ExecutorchProgramManager`` of one method."""
    exir = executorch_module("executorch.exir")
    partitioners = None
    if spec.partitioner is Partitioner.xnnpack:
        xnnpack = executorch_module("executorch.backends.xnnpack.partition.xnnpack_partitioner")
        partitioners = [xnnpack.XnnpackPartitioner()]
    try:
        # ExecuTorch logs every node it visits at INFO; torch's passes warn about their own deprecations.
        with quiet("executorch"):
            try:
                with progress_step("executorch: to_edge_transform_and_lower", method=method):
                    edge = exir.to_edge_transform_and_lower({method: exported}, partitioner=partitioners)
            except ValueError as error:
                if "Cannot view a tensor" not in str(error):
                    raise
                # the edge passes decompose attention into the strides of its last matmul, where a view the
                # capture recorded no longer applies (GPT-2); decomposed in the fused op's layout, it does
                with progress_step("executorch: to_edge_transform_and_lower, attention decomposed", method=method):
                    edge = exir.to_edge_transform_and_lower(
                        {method: decomposed_attention(exported)}, partitioner=partitioners
                    )
            config = backend_config(exported)
            with progress_step("executorch: to_executorch", method=method):
                program = edge.to_executorch() if config is None else edge.to_executorch(config)
    except Exception as error:
        raise LoweringError(
            f"Backend {NAME!r}: ExecuTorch could not lower method {method!r} (partitioner="
            f"{spec.partitioner.value}, quantize={spec.quantize.value}): {type(error).__name__}: {error}"
            + _hint(exported, spec, error)
        ) from error
    check_kernels(program, method)
    return program


def _hint(exported: Any, spec: ExecuTorchCompileSpec, error: Exception) -> str:
    """What to do when XNNPACK kept an op whole for itself but cannot take it: inside torch.cond branches."""
    control_flow = any(isinstance(node.target, torch._ops.HigherOrderOperator) for node in exported.graph.nodes)
    if spec.partitioner is Partitioner.xnnpack and control_flow and "not decomposed or delegated" in str(error):
        return (
            "\n(The method has control flow (torch.cond): XNNPACK does not delegate inside its branches. "
            "Lower it with compile_spec partitioner=none, which runs ExecuTorch's portable kernels.)"
        )
    return ""


def kernel_names(program: Any, method: str) -> list[str]:
    """The portable kernels the method's instructions call, as the runtime names them."""
    plan = execution_plan(program, method)
    return [f"{op.name}.{op.overload}" if op.overload else op.name for op in plan.operators]


def planned_bytes(program: Any, method: str) -> int:
    """The bytes the method's memory plan allocates for its activations, inputs and outputs (every
    ``non_const_buffer_sizes`` entry; the first, the constants', is empty): for a dynamic program, at the
    maximum of every dimension."""
    return int(sum(execution_plan(program, method).non_const_buffer_sizes))


def execution_plan(program: Any, method: str) -> Any:
    for plan in program.executorch_program.execution_plan:
        if plan.name == method:
            return plan
    raise LoweringError(f"Backend {NAME!r}: the emitted program has no method {method!r}.")


def check_kernels(program: Any, method: str) -> None:
    registered = runtime().operator_registry.operator_names
    missing = sorted(set(kernel_names(program, method)) - set(registered))
    if missing:
        raise LoweringError(
            f"Backend {NAME!r}: method {method!r} calls kernels that the installed ExecuTorch runtime does not "
            f"have: {format_choices(missing)}. They stayed outside the delegate; the program would fail when "
            "loaded. Rewrite those ops, or lower this method with another backend."
        )
