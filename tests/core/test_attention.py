"""Attention decomposed in the fused op's layout (`pipeline.core.attention`): a view the capture recorded after
attention still applies, where torch's own decomposition breaks it (GPT-2's ``x.view(-1, x.size(-1))``)."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.attention import decomposed_attention
from pipeline.core.shapes import DIMENSION_NAMES


class HeadsThenView(torch.nn.Module):
    """Attention over (batch, heads, seq, dim), heads merged with a reshape, then a view as GPT-2's Conv1D."""

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, q, q).transpose(1, 2)
        out = out.reshape(q.shape[0], q.shape[2], -1)
        return out.view(-1, out.size(-1))


def exported() -> torch.export.ExportedProgram:
    batch, seq = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("seq", min=1, max=16)
    program = torch.export.export(HeadsThenView(), (torch.randn(2, 2, 4, 8),), dynamic_shapes=({0: batch, 2: seq},))
    program.graph_module.meta[DIMENSION_NAMES] = {"s0": "batch"}
    return program


def test_torchs_own_decomposition_breaks_the_view():
    from torch._decomp import core_aten_decompositions

    table = {op: fn for op, fn in core_aten_decompositions().items() if "scaled_dot_product" in str(op)}
    with pytest.raises(Exception, match="Cannot view a tensor"):
        exported().run_decompositions(table)


def test_decomposed_attention_keeps_the_view_the_answer_and_the_dimension_names():
    program = decomposed_attention(exported())
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("scaled_dot_product" in t for t in targets)
    assert program.graph_module.meta[DIMENSION_NAMES] == {"s0": "batch"}
    for shape in [(1, 2, 1, 8), (8, 2, 16, 8), (3, 2, 5, 8)]:
        q = torch.randn(shape)
        torch.testing.assert_close(program.module()(q), HeadsThenView()(q))


def test_a_program_without_attention_is_returned_as_it_is():
    program = torch.export.export(torch.nn.Linear(4, 4), (torch.randn(2, 4),))
    assert decomposed_attention(program) is program
