"""The reference backend on the architectures people lower (`pipeline.zoo.architectures`).

Each model is lowered as it comes (in-place ops, ``torch.cond``, recurrent layers,
attention with a padding mask) through every frontend that can capture it, and
compared with eager PyTorch on its example inputs and on fresh ones.
"""

from __future__ import annotations

import backend_checks
import pytest
import torch
from backend_checks import line_of
from torch import nn
from torch.nn import functional as F

import pipeline
from pipeline.backends.reference.program import parse, to_text
from pipeline.core.source import portable_path
from pipeline.zoo import architectures
from pipeline.zoo.architectures import ARCHITECTURES, BasicBlock, ResNetLike

FRONTENDS = {
    "export": dict(frontend="export"),
    "script": dict(frontend="torchscript", torchscript_mode="script"),
    "trace": dict(frontend="torchscript", torchscript_mode="trace"),
}
TOLERANCE = backend_checks.tolerance("reference")
pytestmark = [  # tracing warns about what it does; the tests check the results instead
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning"),
]


def lower(model: nn.Module, inputs: dict, frontend: str = "export", **options) -> pipeline.LoweredModule:
    return pipeline.to_backend(
        "reference", model, {m: {} for m in inputs}, example_inputs=inputs, **FRONTENDS[frontend], **options
    )


def listing(lowered: pipeline.LoweredModule) -> str:
    return to_text(parse(lowered.payload).methods["forward"])


# -- every architecture, on every frontend that captures it ---------------------------------------

# MobileNet and EfficientNet through TorchScript repeat what ResNet shows there (in-place ops of a CNN).
SLOW = {("mobilenet_v3", "script"), ("mobilenet_v3", "trace"), ("efficientnet", "script"), ("efficientnet", "trace")}
CASES = [
    pytest.param(name, frontend, marks=[pytest.mark.slow] if (name, frontend) in SLOW else [])
    for name, arch in ARCHITECTURES.items()
    for frontend in arch.frontends
]


@pytest.mark.parametrize("name, frontend", CASES)
def test_architecture_matches_eager_and_its_artifact_loads_back_the_same(name, frontend, tmp_path):
    model, inputs = architectures.build(name), architectures.example_inputs(name)
    lowered = lower(model, inputs, frontend)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / f"{name}.lowered"))
    backend_checks.check_against_eager(model, inputs, lowered, **TOLERANCE, loaded=loaded)


# -- in-place ops --------------------------------------------------------------------------------


@pytest.mark.parametrize("frontend", ["export", "trace"])
def test_in_place_ops_run_functionally_and_keep_the_users_source_lines(frontend):
    model, inputs = architectures.build("resnet"), architectures.example_inputs("resnet")
    lowered = lower(model, inputs, frontend)
    text = listing(lowered)
    assert "aten::relu(" in text and "aten::relu_" not in text and "aten::add_" not in text
    lines = {}
    for instruction in parse(lowered.payload).methods["forward"].instructions():
        record = lowered.handle_map.handles[instruction.handle]
        lines.setdefault(instruction.op_name, set()).add((record.source.file, record.source.line))
    file = portable_path(architectures.__file__)
    assert lines["aten::relu"] == {
        (file, line_of(ResNetLike.forward, "self.maxpool(self.relu")),
        (file, line_of(BasicBlock.forward, "out = self.relu(self.bn1")),
        (file, line_of(BasicBlock.forward, "out = self.relu(out)")),
    }
    assert lines["aten::add"] == {(file, line_of(BasicBlock.forward, "out += identity"))}


class ReadBeforeWrite(nn.Module):
    def forward(self, x):
        y = x * 2
        before = y + 1  # read before the write: keeps the old values
        y.relu_()
        y += before
        return y, before


class ViewReadAfterWrite(nn.Module):
    def forward(self, x):
        y = x * 1
        flat = y.view(-1)
        y.relu_()  # flat sees the change: a functional relu would leave it stale
        return flat + 0


class WritesIntoInput(nn.Module):
    def forward(self, x):
        x.relu_()
        return x


class WritesInDataDependentBranch(nn.Module):
    def forward(self, x):
        y = x * 1
        if bool(x.sum() > 0):
            y.relu_()
        return y


@pytest.mark.parametrize("frontend", ["export", "script", "trace"])
def test_in_place_op_whose_input_is_read_before_the_write_matches_eager(frontend):
    x = torch.randn(6)
    lowered = lower(ReadBeforeWrite(), {"forward": (x,)}, frontend)
    assert "aten::relu_" not in listing(lowered) and "aten::add_" not in listing(lowered)
    backend_checks.assert_same_outputs(ReadBeforeWrite()(x.clone()), lowered(x), **TOLERANCE)


@pytest.mark.parametrize(
    "model, reason",
    [
        (
            ViewReadAfterWrite(),
            "aten::relu_ changes a tensor in place that shares memory with a value read after the change",
        ),
        (WritesIntoInput(), "aten::relu_ changes the method's input 'x' (or a view of it) in place"),
        (WritesInDataDependentBranch(), "aten::relu_ changes a value of an enclosing block or loop iteration"),
    ],
)
def test_in_place_op_that_cannot_be_made_functional_exactly_is_rejected_in_torchscript(model, reason):
    with pytest.raises(pipeline.UnsupportedOpError, match="cannot compile 1 node of 1 op") as info:
        lower(model, {"forward": (torch.randn(6),)}, "script")
    assert reason in str(info.value)
    assert f"{portable_path(__file__)}:{line_of(type(model).forward, '.relu_()')}" in str(info.value)


def test_export_writes_through_views_use_torchs_functionalization_and_point_at_the_assignment():
    class SliceAssign(nn.Module):
        def forward(self, x):
            y = x * 1
            y[:, 0] = 0.0
            y[0] += 1
            return y, y.view(-1)

    x = torch.randn(2, 3)
    lowered = lower(SliceAssign(), {"forward": (x,)})
    backend_checks.assert_same_outputs(SliceAssign()(x), lowered(x), **TOLERANCE)
    program = parse(lowered.payload).methods["forward"]
    scatters = [i for i in program.instructions() if i.op_name == "aten::select_scatter"]
    assert scatters and "aten::fill_" not in to_text(program)
    lines = {lowered.handle_map.handles[i.handle].source.line for i in scatters}
    assert line_of(SliceAssign.forward, "y[:, 0] = 0.0") in lines


def test_export_writing_into_its_input_is_rejected_naming_the_input():
    with pytest.raises(pipeline.LoweringError, match="changes its input 'x' in place, which the caller would see"):
        lower(WritesIntoInput(), {"forward": (torch.randn(6),)})


def test_exported_program_without_writes_through_views_still_runs_other_batch_sizes():
    model, inputs = architectures.build("resnet"), architectures.example_inputs("resnet")
    lowered = lower(model, inputs, dynamic_shapes={"forward": {"x": {0: {"name": "batch", "min": 1, "max": 64}}}})
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        backend_checks.assert_same_outputs(model(x), lowered(x), **TOLERANCE)


# -- the ops of the list, in one model -----------------------------------------------------------


class OpCoverage(nn.Module):
    """The ops of the reference backend's list that the architectures above do not use."""

    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x, index):
        z = self.norm(x).permute(0, 2, 3, 1)
        steps = torch.diff(z, dim=-1).cumsum(-1)
        logs = z.to(torch.float64).abs().log().exp().float()
        kept = torch.where(z > 0, z, torch.zeros_like(z)).amax(-1)
        values, positions = z.max(-1)
        gathered = torch.gather(z, -1, positions.unsqueeze(-1)) + z.min() + z.min(-1, keepdim=True).values
        picked = z.index_select(1, index) + z[:, index]
        sizes = z.new_ones(3).sum() + torch.full((2,), 3.0).sum() + torch.ones_like(z).sum() + z.new_zeros(2).sum()
        first, rest = torch.split(z, [1, 3], -1)
        square = z[0] @ z[0].transpose(-1, -2)
        attention = torch.baddbmm(square, z[0], z[0].transpose(-1, -2), beta=0.5)
        gates = F.hardswish(z) * F.hardsigmoid(z) * F.silu(z)
        return (
            steps,
            logs,
            kept,
            values,
            gathered,
            picked,
            sizes + torch.arange(0, 4, 2).sum(),
            z.argmin(-1),
            z.argmax(-1),
            attention,
            rest - first,
            z.masked_fill(z < 0, 1.0),
            gates,
        )


@pytest.mark.parametrize("frontend", ["export", "script", "trace"])
def test_ops_of_the_list_match_eager(frontend):
    torch.manual_seed(0)
    model = OpCoverage().eval()
    inputs = {"forward": (torch.randn(2, 4, 3, 3), torch.tensor([0, 2]))}
    declared = (
        {"dynamic_shapes": {"forward": {"x": {0: {"name": "batch", "min": 1, "max": 64}}}}}
        if frontend == "export"
        else {}
    )
    lowered = lower(model, inputs, frontend, **declared)
    x = torch.randn(3, 4, 3, 3)  # another batch size, same index
    with torch.no_grad():
        for args in (inputs["forward"], (x, inputs["forward"][1])):
            backend_checks.assert_same_outputs(model(*args), lowered(*args), **TOLERANCE)


# -- torch.cond ----------------------------------------------------------------------------------


def test_torch_cond_compiles_both_branches_and_runs_the_one_the_predicate_picks():
    model, inputs = architectures.build("cond_gate"), architectures.example_inputs("cond_gate")
    lowered = lower(model, inputs)
    text = listing(lowered)
    assert "prim::If(" in text and "aten::relu(" in text and "aten::tanh(" in text and "get_attr" not in text
    positive, negative = torch.rand(2, 8) + 0.1, -torch.rand(2, 8) - 0.1
    with torch.no_grad():
        for x in (positive, negative):
            backend_checks.assert_same_outputs(model(x), lowered(x), **TOLERANCE)
    assert not torch.allclose(lowered(positive), model.down(positive).tanh() - 1.0)  # the branches differ
    sources = {
        i.op_name: lowered.handle_map.handles[i.handle].source
        for i in parse(lowered.payload).methods["forward"].instructions()
    }
    assert sources["aten::relu"].line == line_of(architectures.CondGate.forward, "self.up(x).relu()")
    assert sources["aten::tanh"].line == line_of(architectures.CondGate.forward, "self.down(x).tanh()")


class FixedGate(nn.Module):
    """``torch.cond`` on a buffer: the predicate is a constant of the program."""

    def __init__(self, use_up: bool):
        super().__init__()
        self.up, self.down = nn.Linear(8, 8), nn.Linear(8, 8)
        self.register_buffer("use_up", torch.tensor(use_up))

    def forward(self, x):
        return torch.cond(self.use_up, lambda x: self.up(x).relu(), lambda x: self.down(x).tanh(), (x,))


@pytest.mark.parametrize(
    "use_up, kept, dropped", [(True, "aten::relu(", "aten::tanh("), (False, "aten::tanh(", "aten::relu(")]
)
def test_torch_cond_on_a_constant_predicate_folds_to_the_taken_branch(use_up, kept, dropped):
    torch.manual_seed(0)
    model, x = FixedGate(use_up).eval(), torch.randn(2, 8)
    lowered = lower(model, {"forward": (x,)})
    text = listing(lowered)
    assert "prim::If" not in text and kept in text and dropped not in text
    with torch.no_grad():
        backend_checks.assert_same_outputs(model(x), lowered(x), **TOLERANCE)


# -- what the backend cannot run, grouped by op --------------------------------------------------


class ManyUnsupportedOps(nn.Module):
    def forward(self, x):
        a = torch.sort(x, -1).values + torch.sort(x, 0).values
        b = torch.sin(a) + torch.cos(a) + torch.floor(a) + torch.ceil(a) + torch.round(a) + torch.sign(a)
        c = torch.erf(b) + torch.trunc(b) + torch.reciprocal(b) + torch.tril(b) + torch.triu(b)
        return torch.flip(c, [0]) + torch.roll(c, 1, 0) + torch.cumprod(c, -1) + torch.topk(c, 4).values


@pytest.mark.parametrize("frontend", ["export", "script"])
def test_unsupported_ops_are_grouped_by_op_in_a_short_message(frontend):
    with pytest.raises(pipeline.UnsupportedOpError) as info:
        lower(ManyUnsupportedOps(), {"forward": (torch.randn(4, 4),)}, frontend)
    lines = str(info.value).splitlines()
    assert len(lines) <= 15
    assert lines[0] == "The reference backend cannot compile 17 nodes of 16 ops:"
    sort_line = f"{portable_path(__file__)}:{line_of(ManyUnsupportedOps.forward, 'torch.sort')}"
    assert lines[1].startswith("  - aten::sort (2 nodes; the first) is not in the reference backend's op table")
    assert sort_line in lines[1]
    assert len([line for line in lines if line.startswith("  - aten::")]) == 8
    assert lines[9].startswith("  - and 8 more ops: ") and "aten::topk (1)" in lines[9]
