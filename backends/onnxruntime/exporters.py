"""Preprocess: each lowered method to one ONNX model, and each ONNX node to its debug handles.

Export frontend (`export_program`): the ``torch.export.ExportedProgram`` goes
to the dynamo ONNX exporter as it is. That exporter names every ONNX node
after the FX node it came from and records it in the node's metadata
(``pkg.torch.onnx.fx_node``: ``%linear : ... = call_function[...]``). It
decomposes some ops first, so the FX node may be a new one; its
``meta["from_node"]`` chain leads back to the node of the program the
handles were issued for. So every ONNX node the exporter writes maps to the
handles of exactly the FX nodes it implements. A method whose weights pass
`external_data.EXTERNAL_DATA_ABOVE` is written by the exporter's own writer
(``onnx_ir.save``) as a small model and a weights file in the preprocess's
private directory (`ExportedMethod.weights`), which goes into the payload as
it is; the protobuf alone could hold no more than 2 GiB.

Torchscript frontend (`export_torchscript`): the TorchScript ONNX exporter,
while the installed torch has it. It exports ``forward`` only, so the method
is called from the ``forward`` of a small scripted host module. Export needs
example inputs: a traced module's graph carries their shapes and dtypes, a
scripted one needs ``input_shapes`` (and ``input_dtypes``) in the compile
spec. Nodes are matched through what the exporter writes in verbose mode:
each ONNX node's ``doc_string`` is the source range of the TorchScript node
it came from, and its name is its module scope (``body/0/Gemm``); an ONNX
node maps to the handles of the TorchScript nodes with that source range in
that module. Nodes the exporter makes with no source (constants it creates,
weights it folds, e.g. BatchNorm into Conv) map to nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.backends.onnxruntime import external_data
from pipeline.backends.onnxruntime.compile_spec import NAME, OnnxRuntimeCompileSpec
from pipeline.backends.onnxruntime.dynamic_axes import name_dynamic_axes, symbol_names
from pipeline.core.backend import LoweringError, UnsupportedOpError, describe_node, handles_by_origin, quiet

_FX_NODE = re.compile(r"^%(?P<name>\S+) :")
_UNSUPPORTED = re.compile(r"Exporting the operator '(?P<op>[^']+)' to ONNX opset version \d+ is not supported")
_NO_ONNX_FUNCTION = re.compile(r"No ONNX function found for <OpOverload\(op='(?P<op>[^']+)'")
_HOST_SCOPE = "/inner/"


@dataclass
class ExportedMethod:
    """One method as ONNX, plus what the runtime needs to feed it and to map its nodes back."""

    model: bytes
    # (ONNX graph input name, index of the tensor among the flattened arguments), in graph order
    inputs: list[tuple[str, int]]
    # every argument is one tensor: the runner can index the arguments without flattening them
    flat: bool
    node_handles: dict[str, list[int]] = field(default_factory=dict)
    # ONNX input name -> a tensor of its shape and dtype (for calibration; not in the payload): the
    # example input itself where `examples_are_real` (an ExportedProgram keeps them), else zeros.
    examples: dict[str, torch.Tensor] = field(default_factory=dict)
    examples_are_real: bool = False
    # what the program had to go through before the exporter took it, if anything (for the report)
    retried_on: str | None = None
    # the file of the model's external data (its locations name `external_data.weights_part`), for a
    # model past `external_data.EXTERNAL_DATA_ABOVE`; None when the model holds all its data
    weights: Path | None = None

    def meta(self) -> dict[str, Any]:
        return {"inputs": [list(pair) for pair in self.inputs], "flat": self.flat, "node_handles": self.node_handles}


# -- export frontend ------------------------------------------------------------------------------


def export_program(
    program: torch.export.ExportedProgram,
    method: str,
    spec: OnnxRuntimeCompileSpec,
    generate_debug_handles: Callable,
    scratch: Path,
) -> ExportedMethod:
    """The method as ONNX; a large one's weights are written into ``scratch``, a private directory."""
    handles = generate_debug_handles(program.graph, method=method)
    handle_of = {node.name: handle for node, handle in handles.items()}
    retried_on = None
    try:
        onnx_program = _dynamo_export(program, spec)
    except Exception as error:
        # Some of torch's own decompositions fail inside the exporter (T5: "Cannot view a tensor ...");
        # the program with its decompositions already run exports. Node provenance survives it.
        try:
            onnx_program, retried_on = _dynamo_export(program.run_decompositions(), spec), "run_decompositions()"
        except Exception:
            raise _dynamo_export_error(method, error) from error
    weights = None
    if _initializer_bytes(onnx_program.model) > external_data.EXTERNAL_DATA_ABOVE:
        model, weights = _with_external_data(onnx_program.model, method, scratch)
    else:
        model = onnx_program.model_proto
    name_dynamic_axes(model, symbol_names(program))
    origins = handles_by_origin(onnx_program.exported_program.graph.nodes, handle_of)
    node_handles = {}
    for index, node in enumerate(model.graph.node):
        metadata = {prop.key: prop.value for prop in node.metadata_props}
        match = _FX_NODE.match(metadata.get("pkg.torch.onnx.fx_node", ""))
        found = origins.get(match["name"], []) if match else []
        if found:
            node_handles[node.name or f"#{index}"] = found
    _check_numpy_exchangeable(model, method)
    inputs, flat = _program_inputs(program, [value.name for value in model.graph.input], method)
    examples, real = _program_examples(program, inputs)
    return ExportedMethod(
        model.SerializeToString(deterministic=True), inputs, flat, node_handles, examples, real, retried_on, weights
    )


def _initializer_bytes(model: Any) -> int:
    """The bytes of an ``onnx_ir`` model's initializers: what its protobuf would have to hold."""
    return sum(value.const_value.nbytes for value in model.graph.initializers.values() if value.const_value)


def _with_external_data(model: Any, method: str, scratch: Path) -> tuple[Any, Path]:
    """The model as a ``ModelProto`` whose initializers point into one weights file, and that file.

    ``onnx_ir.save`` writes each tensor to the file as it goes (never the whole model in memory) and names
    the file, relative to the model, in every location: `external_data.weights_part`, the payload part
    it becomes. The model is read back without its data."""
    import onnx
    import onnx_ir

    folder = scratch / method
    folder.mkdir()
    onnx_ir.save(model, folder / "model.onnx", external_data=external_data.weights_part(method))
    return onnx.load(folder / "model.onnx", load_external_data=False), folder / external_data.weights_part(method)


def _check_numpy_exchangeable(model: Any, method: str) -> None:
    """onnxruntime's Python API passes inputs and outputs as numpy arrays, and numpy has no bfloat16:
    such a method would lower and then fail on every call."""
    import onnx

    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            if value.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
                raise LoweringError(
                    f"Backend {NAME!r}: method {method!r} has a bfloat16 {kind} ({value.name!r}); onnxruntime's "
                    "Python API exchanges tensors as numpy arrays, which have no bfloat16. Cast it to float32 or "
                    "float16 in the model, or lower on a backend that returns bfloat16 (reference, openvino, "
                    "executorch, torchscript)."
                )


def _dynamo_export(program: torch.export.ExportedProgram, spec: OnnxRuntimeCompileSpec) -> Any:
    with _quiet_exporter():
        return torch.onnx.export(
            program, (), dynamo=True, opset_version=spec.opset, optimize=spec.export_optimize, verbose=False
        )


def _dynamo_export_error(method: str, error: Exception) -> LoweringError:
    """The exporter's root cause: its outer errors only say which step failed."""
    causes: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in causes:
        causes.append(link)
        link = link.__cause__
    for cause in causes:
        match = _NO_ONNX_FUNCTION.search(str(cause))
        if match:
            return UnsupportedOpError(
                f"Backend {NAME!r}: method {method!r} uses {match['op']}, which the ONNX exporter has no "
                "translation for. (Fast-path kernels such as aten._transformer_encoder_layer_fwd and "
                "aten._native_multi_head_attention are what nn.TransformerEncoderLayer and nn.MultiheadAttention "
                "run when the model is captured under torch.no_grad(); capture it with grad enabled.)"
            )
    root = causes[-1]
    return LoweringError(
        f"Backend {NAME!r}: the ONNX exporter failed for method {method!r}: {type(root).__name__}: {_first_line(root)}"
    )


def _program_inputs(
    program: torch.export.ExportedProgram, onnx_inputs: list[str], method: str
) -> tuple[list[tuple[str, int]], bool]:
    from torch.export.graph_signature import InputKind

    user = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    position = {name: index for index, name in enumerate(user)}
    missing = [name for name in onnx_inputs if name not in position]
    if missing:
        raise LoweringError(
            f"Backend {NAME!r}: the ONNX model of method {method!r} has inputs {missing} that are not arguments "
            f"of the method (its flattened arguments: {user})."
        )
    in_spec = program.call_spec.in_spec
    args_spec = in_spec.child(0) if in_spec is not None and in_spec.num_children else None
    flat = (
        args_spec is not None
        and in_spec.child(1).num_children == 0
        and all(args_spec.child(i).is_leaf() for i in range(args_spec.num_children))
        and all(isinstance(placeholders[name].meta.get("val"), torch.Tensor) for name in user)
    )
    return [(name, position[name]) for name in onnx_inputs], flat


def _program_examples(
    program: torch.export.ExportedProgram, inputs: list[tuple[str, int]]
) -> tuple[dict[str, torch.Tensor], bool]:
    """Each ONNX input's example value, from the program's example inputs; zeros of the shape and dtype
    its placeholder records where the program keeps none."""
    import torch.utils._pytree as pytree
    from torch.export.graph_signature import InputKind

    if program.example_inputs is not None:
        leaves = pytree.tree_leaves(program.example_inputs)
        return {name: leaves[index].detach() for name, index in inputs}, True
    user = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    values = {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}
    return {
        name: torch.zeros([_example_size(size) for size in values[user[index]].shape], dtype=values[user[index]].dtype)
        for name, index in inputs
    }, False


def _example_size(size: int | torch.SymInt) -> int:
    """A dynamic size's example value (the size it was captured at); 1 where export kept none."""
    if isinstance(size, int):
        return size
    hint = size.node.hint
    return int(hint) if hint is not None else 1


# -- torchscript frontend -------------------------------------------------------------------------


def export_torchscript(
    module: torch.jit.ScriptModule, method: str, spec: OnnxRuntimeCompileSpec, generate_debug_handles: Callable
) -> ExportedMethod:
    import onnx

    arguments = _example_arguments(module, method, spec)  # a traced graph's shapes do not survive the copy
    module = _with_classes_of_its_own(module)
    graph = getattr(module, method).graph.copy()
    torch._C._jit_pass_inline(graph)
    handles = generate_debug_handles(graph, method=method)
    buffer = io.BytesIO()
    try:
        with _quiet_exporter(), _stdout_to_devnull():
            # verbose: the exporter then keeps each node's source range as its doc_string
            # The TorchScript exporter writes to a file object too; torch's annotation names paths only.
            torch.onnx.export(
                _host(module, method),
                arguments,
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                verbose=True,
                opset_version=spec.opset,
            )
    except (ImportError, AttributeError, TypeError) as error:
        if not _has_torchscript_exporter():
            raise LoweringError(
                f"Backend {NAME!r}: this torch ({torch.__version__}) has no TorchScript ONNX exporter, so "
                "TorchScript modules cannot be lowered to onnxruntime; use the export frontend "
                "(frontend='export')."
            ) from error
        raise _export_error(method, error) from error
    except Exception as error:
        raise _export_error(method, error) from error
    model = onnx.load_from_string(buffer.getvalue())
    for node in model.graph.node:  # "/inner/body/0/Gemm" -> "body/0/Gemm": the scope in the lowered module
        node.name = node.name[len(_HOST_SCOPE) :] if node.name.startswith(_HOST_SCOPE) else node.name.lstrip("/")
    node_handles = _match_source_ranges(model, handles)
    for node in model.graph.node:
        node.doc_string = ""  # a copy of the source text: not needed at run time
    tensors = [i for i, value in enumerate(_flat(arguments)) if isinstance(value, torch.Tensor)]
    _check_numpy_exchangeable(model, method)
    names = [value.name for value in model.graph.input]
    if len(names) != len(tensors):
        raise LoweringError(
            f"Backend {NAME!r}: the ONNX model of method {method!r} takes {len(names)} inputs, but the method "
            f"has {len(tensors)} tensor arguments."
        )
    flat = all(isinstance(value, torch.Tensor) for value in arguments)
    examples = dict(zip(names, (_flat(arguments)[index] for index in tensors)))
    return ExportedMethod(
        model.SerializeToString(deterministic=True),
        list(zip(names, tensors)),
        flat,
        node_handles,
        examples,
        examples_are_real=False,
    )


def _example_arguments(module: torch.jit.ScriptModule, method: str, spec: OnnxRuntimeCompileSpec) -> tuple:
    """Zeros of the shapes and dtypes the spec gives or, for a traced module, its graph records."""
    arguments = list(getattr(module, method).graph.inputs())[1:]
    if spec.input_shapes is not None:
        if len(spec.input_shapes) != len(arguments):
            raise LoweringError(
                f"Backend {NAME!r}: compile_spec.{method}.input_shapes gives {len(spec.input_shapes)} shapes; "
                f"method {method!r} takes {len(arguments)} arguments."
            )
        dtypes = spec.input_dtypes or ["float32"] * len(spec.input_shapes)
        return tuple(torch.zeros(shape, dtype=getattr(torch, dtype)) for shape, dtype in zip(spec.input_shapes, dtypes))
    example = []
    for value in arguments:
        kind = value.type()
        sizes = kind.sizes() if isinstance(kind, torch.TensorType) else None
        if sizes is None or kind.scalarType() is None:
            raise LoweringError(
                f"Backend {NAME!r}: exporting method {method!r} of a scripted module to ONNX needs the shapes of "
                f"its arguments, which a scripted graph does not record (argument {value.debugName()!r}: {kind}). "
                f"Give them as compile_spec.{method}.input_shapes (e.g. [[2, 64]]), lower a traced module "
                "(torchscript_mode='trace'), or use the export frontend."
            )
        example.append(torch.zeros(sizes, dtype=getattr(torch, _DTYPE_NAMES[kind.scalarType()])))
    return tuple(example)


_DTYPE_NAMES = {
    "Float": "float32",
    "Double": "float64",
    "Half": "float16",
    "BFloat16": "bfloat16",
    "Long": "int64",
    "Int": "int32",
    "Short": "int16",
    "Char": "int8",
    "Byte": "uint8",
    "Bool": "bool",
}


def _host(module: torch.jit.ScriptModule, method: str) -> torch.jit.ScriptModule:
    """A scripted module whose ``forward`` calls ``module.<method>``: the exporter exports ``forward`` only."""

    class Host(torch.nn.Module):  # a new class per call, so that TorchScript makes a new type
        def __init__(self, inner: torch.jit.ScriptModule):
            super().__init__()
            self.inner = inner

    arguments = getattr(module, method).schema.arguments[1:]
    parameters = ", ".join(f"{a.name}: {a.type.annotation_str}" for a in arguments)
    names = ", ".join(a.name for a in arguments)
    host = torch.jit.script(Host(module))
    host.define(f"def forward(self, {parameters}):\n    return self.inner.{method}({names})\n")
    return host.eval()


def _with_classes_of_its_own(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """A copy of ``module`` whose classes, and so whose graphs, are its own.

    The exporter inlines calls into the graphs of the classes it reaches, in place. A module's graphs belong to
    its class, which ``copy.deepcopy`` shares, so exporting the copy preprocess gets would change what later
    captures of the class record. A save and load makes new classes and keeps the source ranges (freezing would
    too, but it drops the module scopes the ONNX node names carry).
    """
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _match_source_ranges(model: Any, handles: dict[Any, int]) -> dict[str, list[int]]:
    """ONNX node -> handles of the TorchScript ops with its source range, in its module if that decides."""
    by_source: dict[str, list[tuple[str, int]]] = {}
    for node, handle in handles.items():
        text = node.sourceRange()
        if text and not node.kind().startswith("prim::"):  # constants, lists: they share their user's range
            path = ".".join(
                level for level in describe_node(node).module_path.split(".") if level and level != "UNKNOWN_INSTANCE"
            )
            by_source.setdefault(text, []).append((path, handle))
    node_handles = {}
    for node in model.graph.node:
        candidates = by_source.get(node.doc_string, [])
        scope = ".".join(node.name.split("/")[:-1])
        in_scope = [handle for path, handle in candidates if path == scope or path.startswith(scope + ".")]
        found = sorted(set(in_scope or [handle for _, handle in candidates]))
        if found:
            node_handles[node.name] = found
    return node_handles


def _export_error(method: str, error: Exception) -> LoweringError:
    match = _UNSUPPORTED.search(str(error))
    hint = (
        "The TorchScript ONNX exporter is limited (control flow on runtime state, ops without ONNX "
        "symbolics); the export frontend (frontend='export') uses the dynamo exporter."
    )
    if match:
        return UnsupportedOpError(
            f"Backend {NAME!r}: method {method!r} uses {match['op']}, which the TorchScript ONNX exporter cannot "
            f"export. {hint}"
        )
    return LoweringError(
        f"Backend {NAME!r}: the TorchScript ONNX exporter failed for method {method!r}: "
        f"{type(error).__name__}: {_first_line(error)} {hint}"
    )


def _has_torchscript_exporter() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch.onnx._internal.torchscript_exporter") is not None


def _flat(arguments: tuple) -> list[Any]:
    import torch.utils._pytree as pytree

    return pytree.tree_leaves(list(arguments))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _quiet_exporter() -> contextlib.AbstractContextManager[None]:
    """The exporters' warnings and log lines are about the exporters, not the model: keep them out."""
    return quiet("torch.onnx", level=logging.ERROR)


@contextlib.contextmanager
def _stdout_to_devnull() -> Iterator[None]:
    """The TorchScript exporter prints its graph to the process's stdout in verbose mode."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
