"""int8 quantization of an exported ONNX model with ``onnxruntime.quantization``, keeping its node map.

``quantize: int8_dynamic`` (``quantize_dynamic``): weights are stored as int8;
activations are quantized per call from their own range (MatMul, Gemm, Conv
become ``MatMulInteger``/``ConvInteger`` with ``DynamicQuantizeLinear`` in
front). Nothing to calibrate.

``quantize: int8_static`` (``quantize_static``, QDQ format, int8 activations and
weights, MinMax calibration): every quantizable tensor gets a fixed scale from
calibration runs, written as QuantizeLinear/DequantizeLinear pairs. The
calibration data are the method's example inputs (an ExportedProgram keeps
them) plus ``calibration_samples`` random ones drawn, from a fixed seed, with
each example's mean and spread; integer inputs (indices, ids) repeat the
example. Where a program has no example values (the torchscript route),
random samples have the inputs' shapes and a standard normal spread.

Node map: the quantizer keeps the names of nodes it leaves alone and names the
nodes it makes after the node (``node_linear_MatMul_quant``) or the tensor
(``linear_QuantizeLinear``) they belong to. A quantized node maps to the
handles of the exported node whose name it keeps or starts with; any other
(QuantizeLinear, DequantizeLinear, Cast, ...) to the handles of the nearest
nodes it feeds, or, at the end of the graph, of those that feed it. A node that
computes a value an exported node computed (a Conv the quantizer fused a Relu
into now outputs ``relu``) maps to that node's handles too (`node_handles`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pipeline.backends.onnxruntime.compile_spec import NAME, OnnxRuntimeCompileSpec, Quantize
from pipeline.backends.onnxruntime.exporters import ExportedMethod
from pipeline.core.backend import LoweringError, quiet_logs_from

CALIBRATION_SEED = 0


def quantize(exported: ExportedMethod, spec: OnnxRuntimeCompileSpec, method: str) -> ExportedMethod:
    """The method with its model quantized as ``spec.quantize`` says, and its node map redone."""
    import onnx

    if exported.weights is not None:
        raise LoweringError(
            f"Backend {NAME!r}, method {method!r}: quantize={spec.quantize.value} needs the model's weights in "
            "the model, and this one's pass EXTERNAL_DATA_ABOVE (they are kept as external data); lower it "
            "with quantize=none."
        )
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    source = onnx.load_from_string(exported.model)
    try:
        # The quantizer's advice to run its pre-processing is not taken: that optimizes the graph and
        # renames the nodes the handles map through.
        with (
            tempfile.TemporaryDirectory(prefix="pipeline-ort-quantize-") as directory,
            quiet_logs_from("onnxruntime.quantization"),
        ):
            path = os.path.join(directory, "quantized.onnx")
            if spec.quantize is Quantize.int8_dynamic:
                quantize_dynamic(source, path, weight_type=QuantType.QInt8)
            else:
                samples = calibration_data(exported.examples, exported.examples_are_real, spec.calibration_samples)
                if not samples:
                    raise LoweringError(
                        f"Backend {NAME!r}, method {method!r}: quantize=int8_static has nothing to calibrate on: the "
                        "program keeps no example inputs and compile_spec calibration_samples is 0."
                    )
                quantize_static(
                    source,
                    path,
                    _Reader(samples),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            quantized = onnx.load(path)
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(
            f"Backend {NAME!r}: onnxruntime.quantization failed on method {method!r} (quantize="
            f"{spec.quantize.value}): {type(error).__name__}: {error}"
        ) from error
    return dataclasses.replace(
        exported,
        model=quantized.SerializeToString(deterministic=True),
        node_handles=node_handles(quantized, source, exported.node_handles),
    )


def calibration_data(inputs: Mapping[str, torch.Tensor], have_examples: bool, count: int) -> list[dict[str, Any]]:
    """The example inputs (if the program has them), then ``count`` seeded random samples like them."""
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    samples = [{name: value.numpy() for name, value in inputs.items()}] if have_examples else []
    for _ in range(count):
        samples.append({name: _like(value, have_examples, generator).numpy() for name, value in inputs.items()})
    return samples


def _like(example: torch.Tensor, is_example: bool, generator: torch.Generator) -> torch.Tensor:
    if not example.dtype.is_floating_point:
        return example  # indices and ids: random ones could be out of range
    noise = torch.randn(example.shape, generator=generator, dtype=example.dtype)
    if not is_example or example.numel() < 2:
        return noise
    return noise * example.std() + example.mean()


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader``: the samples, one per ``get_next``."""

    def __init__(self, samples: Sequence[dict[str, Any]]):
        self._samples = iter(samples)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._samples, None)


def node_handles(quantized: Any, exported: Any, exported_handles: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """Node of the quantized model -> handles (see the module docstring). Unnamed nodes the quantizer
    made are named ``<op type>_<index>`` here first, so that every node has a key."""
    nodes = list(quantized.graph.node)
    for index, node in enumerate(nodes):
        node.name = node.name or f"{node.op_type}_{index}"
    produced_by = {value: exported_handles.get(node.name, []) for node in exported.graph.node for value in node.output}
    consumers: dict[str, list[Any]] = {}
    producer: dict[str, Any] = {}
    for node in nodes:
        for value in node.input:
            consumers.setdefault(value, []).append(node)
        for value in node.output:
            producer[value] = node
    # by name, and by the values it computes: a Conv the quantizer fused a Relu into now produces `relu`
    own = {
        node.name: sorted(
            set(_by_name(node.name, exported_handles))
            | {h for value in node.output for h in produced_by.get(value, [])}
        )
        for node in nodes
    }

    def neighbours(node: Any, downstream: bool) -> list[int]:
        """Handles of the first nodes with their own, downstream (the nodes it feeds) or upstream."""
        found: set = set()
        seen = {node.name}
        frontier = [node]
        while frontier and not found:
            step = []
            for current in frontier:
                linked = (
                    [c for value in current.output for c in consumers.get(value, [])]
                    if downstream
                    else [producer[value] for value in current.input if value in producer]
                )
                for other in linked:
                    if other.name not in seen:
                        seen.add(other.name)
                        found.update(own[other.name])
                        step.append(other)
            frontier = step
        return sorted(found)

    result = {}
    for node in nodes:
        found = own[node.name] or neighbours(node, downstream=True) or neighbours(node, downstream=False)
        if found:
            result[node.name] = found
    return result


def _by_name(name: str, exported: Mapping[str, list[int]]) -> list[int]:
    """Handles of the exported node this one is, or is named after (the longest name it starts with)."""
    if name in exported:
        return list(exported[name])
    owners = [node for node in exported if name.startswith(node + "_") or name.startswith(node + "/")]
    return list(exported[max(owners, key=len)]) if owners else []
