"""Debug handles: per-lowering sequential numbers, stable handles, and records that tie them to source."""

import pytest
import torch

import pipeline
from pipeline import zoo
from pipeline.core.debug_handles import DebugHandleGenerator
from pipeline.core.source import portable_path


class Branchy(torch.nn.Module):
    def forward(self, x, h):
        if x.sum() > 0:
            y = x + h
        else:
            y = x - h
        return y * 2


def inlined_graph(module):
    graph = torch.jit.script(module).forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def all_ts_nodes(block):
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from all_ts_nodes(inner)


def test_torchscript_graphs_get_a_handle_for_every_node_in_every_block():
    graph = inlined_graph(Branchy())
    handles = pipeline.generate_debug_handles(graph)
    nodes = list(all_ts_nodes(graph))
    assert set(handles) == set(nodes)
    assert sorted(handles.values()) == list(range(len(nodes)))
    kinds = {node.kind() for node in handles}
    assert {"prim::If", "aten::add", "aten::sub", "aten::mul"} <= kinds


def test_fx_graphs_get_a_handle_for_every_operation(xh):
    program = torch.export.export(zoo.BasicModule(), xh)
    handles = pipeline.generate_debug_handles(program.graph)
    assert [n.name for n in handles] == ["add", "sub"]
    assert list(handles.values()) == [0, 1]


@pytest.mark.parametrize("frontend", ["torchscript", "export"])
def test_two_identical_lowerings_in_one_process_get_identical_handles(frontend, xh):
    spec = {"forward": {}, "accum": {}}
    first, second = (
        pipeline.to_backend(
            "test_backend", zoo.BasicModule(), spec, frontend=frontend, example_inputs={m: xh for m in spec}
        ).handle_map.to_json()
        for _ in range(2)
    )
    assert first == second
    assert first["handles"][0]["handle"] == 0


class Block(torch.nn.Module):
    def __init__(self, extra=False):
        super().__init__()
        self.extra = extra

    def forward(self, x):
        y = torch.relu(x) + 1
        if self.extra:
            y = torch.sigmoid(y) * 3
        return y


class TwoBlocks(torch.nn.Module):
    def __init__(self, extra=False):
        super().__init__()
        self.first = Block(extra)
        self.second = Block()

    def forward(self, x):
        return self.second(self.first(x))


def handles_by_place(model):
    program = torch.export.export(model, (torch.randn(3),))
    generator = DebugHandleGenerator("stable", top_type="TwoBlocks")
    handles = generator(program.graph, "forward")
    return {(r.module_hierarchy, r.op, r.node): r.handle for r in generator.handle_map.handles.values()}, handles


def test_stable_handles_survive_runs_and_unrelated_edits_elsewhere():
    before, _ = handles_by_place(TwoBlocks())
    again, _ = handles_by_place(TwoBlocks())
    assert before == again
    after, _ = handles_by_place(TwoBlocks(extra=True))  # an edit inside `first` only
    second_before = {k[:2]: v for k, v in before.items() if ".second(" in k[0]}
    second_after = {k[:2]: v for k, v in after.items() if ".second(" in k[0]}
    assert second_before and second_before == second_after


def test_stable_handles_differ_per_node_and_stay_json_safe():
    _, handles = handles_by_place(TwoBlocks())
    values = list(handles.values())
    assert len(set(values)) == len(values)
    assert all(0 <= v < 2**53 for v in values)


def test_none_strategy_issues_and_records_nothing(xh):
    lowered = pipeline.to_backend(
        "test_backend", zoo.BasicModule(), {"forward": {}}, example_inputs={"forward": xh}, debug_handles="none"
    )
    assert lowered.handle_map.handles == {}
    torch.testing.assert_close(lowered(*xh), zoo.BasicModule()(*xh))


def test_unknown_strategy_lists_the_allowed_ones(xh):
    with pytest.raises(pipeline.LoweringError, match="'sequential', 'stable'"):
        pipeline.to_backend(
            "test_backend", zoo.BasicModule(), {"forward": {}}, example_inputs={"forward": xh}, debug_handles="seq"
        )


class A(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class C(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A0 = A()

    def forward(self, x, y):
        return self.A0(x, y)


@pytest.mark.parametrize("frontend", ["torchscript", "export"])
def test_every_record_has_method_op_node_source_and_hierarchy(frontend, xh):
    lowered = pipeline.to_backend(
        "test_backend", C(), {"forward": {}}, frontend=frontend, example_inputs={"forward": xh}
    )
    records = lowered.handle_map.to_json()["handles"]
    add = next(r for r in records if r["op"].startswith("aten::add"))
    assert add["method"] == "forward"
    assert add["module_hierarchy"] == "top(C)::<unknown>.A0(A)::forward.aten::add"
    assert add["source"]["file"] == portable_path(__file__) == "<project>/tests/core/test_debug_handles.py"
    assert add["source"]["text"] == "return x + y"
    assert add["source"]["line"] == A.forward.__code__.co_firstlineno + 1
    assert add["node"]
    assert add["call_stack"]
