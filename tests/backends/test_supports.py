"""Backend.supports(node): what each built-in backend says it lowers, for partitioned lowering."""

import pytest
import torch
from torch import nn

from pipeline.backends.onnxruntime.runtime import OnnxRuntimeBackend
from pipeline.backends.reference.interpreter import ReferenceBackend
from pipeline.backends.torchscript.runtime import TorchScriptBackend
from pipeline.core.backend import Backend


class Mixed(nn.Module):
    """Ops every backend runs, an FFT (complex values), an op ONNX has no translation for, a training-mode op."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        h = torch.relu(self.linear(x))
        spectrum = torch.fft.fft(h)
        values = torch.linalg.eigh(h @ h.T)[0]
        dropped = torch.nn.functional.dropout(h, 0.5, training=True)
        return spectrum.real, values, dropped


@pytest.fixture(scope="module")
def nodes():
    program = torch.export.export(Mixed().eval(), (torch.randn(3, 4),)).run_decompositions({})
    return {node.name: node for node in program.graph.nodes if node.op == "call_function"}


def test_a_backend_that_declares_nothing_supports_every_node(nodes):
    assert all(Backend.supports(node) is True for node in nodes.values())
    assert all(TorchScriptBackend.supports(node) is True for node in nodes.values())


def test_the_reference_backend_answers_from_its_op_table_with_a_reason(nodes):
    assert ReferenceBackend.supports(nodes["linear"]) is True
    assert ReferenceBackend.supports(nodes["relu"]) is True
    assert "not in the reference backend's op table" in ReferenceBackend.supports(nodes["fft_fft"])
    dropout = next(n for name, n in nodes.items() if "dropout" in name)
    assert "captured in training mode" in ReferenceBackend.supports(dropout)


def test_onnxruntime_answers_from_what_the_exporter_translates(nodes):
    assert OnnxRuntimeBackend.supports(nodes["linear"]) is True
    assert OnnxRuntimeBackend.supports(nodes["matmul"]) is True
    assert "complex tensor" in OnnxRuntimeBackend.supports(nodes["fft_fft"])
    eigh = next(n for name, n in nodes.items() if "eigh" in name)
    assert "no translation in the ONNX exporter" in OnnxRuntimeBackend.supports(eigh)
