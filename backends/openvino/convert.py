"""Conversion: one ``torch.export.ExportedProgram`` to an OpenVINO model that remembers its FX nodes.

These are the steps ``openvino.convert_model(exported_program)`` takes, called
one by one so that two things it throws away are kept:

1. ``TorchFXPythonDecoder.from_exported_program`` decomposes the program (with
   OpenVINO's own decomposition table) and wraps its graph. That graph is kept:
   its nodes' ``meta["from_node"]`` lead back to the nodes of the program the
   handles were issued for.
2. The PyTorch frontend converts the graph. Every node it makes is named
   ``<FX node>/<aten op>/<OpenVINO op>``.
3. The MOC transformations (the same call and arguments as ``convert_model``)
   fuse and fold nodes, e.g. BatchNorm into the preceding Convolution. A node
   they make gets a new name (``Multiply_2733``) but keeps the names of the nodes
   it replaced in its ``fused_names`` runtime info. ``convert_model`` then
   deletes that runtime info (``apply_fused_names_cleanup``); here it is read
   first (`mapping`) and deleted after.
4. The decoder makes every input dimension dynamic, without bounds. Static
   shapes save the CPU plugin 20-30% per call on the zoo models at batch 1,
   so each input gets back the program's shape (`restore_shapes`): its static
   dimensions fixed, and each dimension the program keeps dynamic as
   ``Dimension(min, max)`` with the bounds of its declaration
   (`pipeline.core.shapes.input_shapes`), so the compiled model knows them
   (``compiled.inputs[i].get_partial_shape()``). Shape computations that are
   then constant are folded, as the plugin would fold them when compiling.

A program with dynamic dimensions has its attention decomposed first
(`without_fused_attention`): the CPU plugin's fused ScaledDotProductAttention
node (OpenVINO 2026.4) answers wrongly once its first call had a sequence of 1
(the zoo Transformer, dynamic batch and sequence: off by ~5 at 64x32 after a
call at 1x1, right when 64x32 came first), and the matmul-softmax-matmul it
decomposes to is right at every size. Static programs keep the fused node.

A test checks that the result has the same operations as ``convert_model``'s.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.backends.openvino.compile_spec import NAME, require_openvino
from pipeline.core.backend import (
    UNBOUNDED,
    Dynamic,
    InputShape,
    LoweringError,
    decomposed_attention,
    input_shapes,
    quiet_logs_from,
)


@dataclass
class Converted:
    model: Any  # openvino.Model, with fused_names runtime info
    graph: torch.fx.Graph  # the decomposed graph the frontend converted


def convert(program: torch.export.ExportedProgram, method: str) -> Converted:
    require_openvino()
    from openvino._offline_transformations import apply_moc_transformations, compress_quantize_weights_transformation
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.fx_decoder import TorchFXPythonDecoder

    shapes = input_shapes(program)
    if any(shape.dynamic for shape in shapes):
        program = without_fused_attention(program)
    try:
        with _quiet_converter():
            decoder = TorchFXPythonDecoder.from_exported_program(program)
            frontend = FrontEndManager().load_by_framework("pytorch")
            model = frontend.convert(frontend.load(decoder))
            apply_moc_transformations(model, cf=False, smart_reshape=True)
            compress_quantize_weights_transformation(model)
            placeholders = [n for n in decoder.pt_module.graph.nodes if n.op == "placeholder"]
            restore_shapes(model, placeholders, shapes, method)
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(
            f"Backend {NAME!r}: OpenVINO cannot convert method {method!r}: {type(error).__name__}: "
            f"{_first_lines(error)}"
        ) from error
    return Converted(model, decoder.pt_module.graph)


def without_fused_attention(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with its attention decomposed (see the module docstring)."""
    try:
        return decomposed_attention(program)
    except Exception as error:  # torch traces the whole program again, and a view may fail at symbolic sizes
        raise LoweringError(
            f"Backend {NAME!r} cannot keep the dynamic dimensions of this program: OpenVINO's fused attention "
            f"answers wrongly at some sizes, so the backend decomposes attention first, and torch could not: "
            f"{type(error).__name__}: {_first_lines(error, 1)[:200]}. Lower it with static shapes, or on "
            f"onnxruntime or the reference backend."
        ) from error


def _first_lines(error: Exception, count: int = 6) -> str:
    """OpenVINO's conversion errors list every failing op after a long preamble; keep the start."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return "\n".join(lines[:count]) + ("\n..." if len(lines) > count else "")


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """The decoder logs a traceback on the root logger for each op missing from torch's decomposition
    table, and torch warns about its own deprecations: messages about the tools, not the model."""
    with quiet_logs_from("openvino"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def inputs_of(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    """The converted graph's inputs: the method's flattened tensor arguments, in order, as the model's
    parameters are (their names are the frontend's own: ``pair`` for the argument ``pair_0``). Values
    the program was specialised on (``use_cache=False``, None) are placeholders too, but not inputs."""
    return [node for node in graph.nodes if node.op == "placeholder" and _is_tensor(node)]


def _is_tensor(node: torch.fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def restore_shapes(model: Any, placeholders: list[torch.fx.Node], shapes: list[InputShape], method: str) -> None:
    """Give each input the program's shape back (``shapes``: one per tensor input, in order), and drop the
    parameters the frontend made for specialised values: they are unused, and the CPU plugin refuses a
    parameter of dynamic rank."""
    from openvino.passes import ConstantFolding, Manager

    parameters = model.get_parameters()
    if len(parameters) != len(placeholders):
        raise LoweringError(
            f"Backend {NAME!r}: the IR of method {method!r} has {len(parameters)} inputs, but the method's graph "
            f"has {len(placeholders)} ({[node.name for node in placeholders]})."
        )
    tensors = []
    for parameter, node in zip(parameters, placeholders):
        if _is_tensor(node):
            tensors.append((parameter, node))
            continue
        if any(user.target != "_guards_fn" for user in node.users):  # torch.export's input guards only
            raise LoweringError(
                f"Backend {NAME!r}: method {method!r} computes with its non-tensor argument "
                f"{node.name!r}; OpenVINO takes tensor inputs only."
            )
        model.remove_parameter(parameter)
    if len(tensors) != len(shapes):
        raise LoweringError(
            f"Backend {NAME!r}: method {method!r} has {len(shapes)} tensor inputs, but its converted graph has "
            f"{len(tensors)} ({[node.name for _, node in tensors]})."
        )
    model.reshape({parameter.output(0): partial_shape(shape) for (parameter, _), shape in zip(tensors, shapes)})
    folding = Manager()
    folding.register_pass(ConstantFolding())
    folding.run_passes(model)


def partial_shape(shape: InputShape) -> Any:
    """The input's ``openvino.PartialShape``: static sizes fixed, each dynamic one ``Dimension(min, max)``
    (``max`` -1, OpenVINO's "no upper bound", where the program gives none)."""
    import openvino

    return openvino.PartialShape(
        [
            openvino.Dimension(size.min, -1 if size.max >= UNBOUNDED else size.max)
            if isinstance(size, Dynamic)
            else size
            for size in shape.sizes
        ]
    )
