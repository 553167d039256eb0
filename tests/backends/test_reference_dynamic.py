"""The reference backend keeps dynamic dimensions (issue 19): one lowering runs at every size in range.

Each program is exported with ``torch.export.Dim`` and its dimensions named as the capture names them
(``pipeline.dimension_names``), lowered once, and compared with eager PyTorch at each dimension's minimum,
its maximum and a size in between that is not the example's, before and after ``save_lowered`` /
``load_lowered``. What export computes from the sizes (``operator.mul(batch, 4)``, ``math.ceil``) becomes
instructions that compute it from the actual inputs (`pipeline.backends.reference.symbolic`).
"""

from __future__ import annotations

import inspect
import math
import operator

import backend_checks
import pytest
import torch
from backend_checks import fresh_like
from torch import nn
from torch.export import Dim

import pipeline
from pipeline import zoo
from pipeline.backends.reference import symbolic
from pipeline.backends.reference.interpreter import ReferenceBackend
from pipeline.backends.reference.program import parse, to_text
from pipeline.core.shapes import DIMENSION_NAMES, Dynamic, MethodShapes, input_shapes

TOLERANCE = backend_checks.tolerance("reference")
BATCH = {"min": 1, "max": 64}
SEQ = {"min": 1, "max": 64}


def export_dynamic(model: nn.Module, args: tuple, kwargs: dict, dims: dict) -> torch.export.ExportedProgram:
    """``model`` exported with ``dims`` ({argument: {axis: (name, bounds)}}; other arguments static), its
    dimensions named as the capture names them."""
    made = {name: Dim(name, **bounds) for axes in dims.values() for name, bounds in axes.values()}
    dynamic_shapes = {
        argument: {axis: made[name] for axis, (name, _) in dims[argument].items()} if argument in dims else None
        for argument in [*positional_names(model, args), *kwargs]
    }
    program = torch.export.export(model.eval(), args, kwargs, dynamic_shapes=dynamic_shapes)
    names = {}
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in dims:
            for axis, (name, _) in dims[node.name].items():
                names[str(node.meta["val"].shape[axis].node.expr)] = name
    program.graph_module.meta[DIMENSION_NAMES] = names
    return program


def positional_names(model: nn.Module, args: tuple) -> list[str]:
    return list(inspect.signature(model.forward).parameters)[: len(args)]


def lower(program: torch.export.ExportedProgram) -> pipeline.LoweredModule:
    return pipeline.codegen_backend_module("reference", {"forward": program}, {"forward": {}})


def points(shapes: MethodShapes, between: dict[str, int]) -> list[dict[str, int]]:
    """Every dimension at its minimum, at its maximum, and at ``between``."""
    dimensions = shapes.dimensions.values()
    return [{d.name: d.min for d in dimensions}, {d.name: d.max for d in dimensions}, between]


def check_at_every_point(model, args, kwargs, program, between, tmp_path) -> None:
    """The lowered module and its reloaded artifact answer as eager does at every point, on fresh inputs."""
    lowered = lower(program)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "dynamic.lowered"))
    shapes = MethodShapes(tuple(input_shapes(program)))
    for seed, point in enumerate(points(shapes, between)):
        sized_args, sized_kwargs = shapes.inputs_at(args, kwargs, point, positional_names(model, args))
        call_args = fresh_like(sized_args, seed)
        call_kwargs = {
            key: fresh_like((value,), seed)[0] if isinstance(value, torch.Tensor) else value
            for key, value in sized_kwargs.items()
        }
        with torch.no_grad():
            expected = model(*call_args, **call_kwargs)
        backend_checks.assert_same_outputs(expected, lowered(*call_args, **call_kwargs), **TOLERANCE)
        backend_checks.assert_same_outputs(expected, loaded(*call_args, **call_kwargs), **TOLERANCE)


# -- the zoo ---------------------------------------------------------------------------------------

ZOO_DIMS = {
    "mlp": ({0: ("batch", BATCH)}, {"batch": 23}),
    "cnn": ({0: ("batch", BATCH)}, {"batch": 23}),
    "transformer": ({0: ("batch", BATCH), 1: ("seq", SEQ)}, {"batch": 23, "seq": 13}),
}


@pytest.mark.parametrize("name", list(ZOO_DIMS))
def test_zoo_model_lowered_once_answers_at_min_max_and_between_before_and_after_reload(name, tmp_path):
    model = zoo.build(name).eval()
    (x,) = zoo.example_inputs(name)["forward"]
    axes, between = ZOO_DIMS[name]
    program = export_dynamic(model, (x,), {}, {"x": axes})
    assert [size for size in input_shapes(program)[0].sizes if isinstance(size, Dynamic)] == [
        Dynamic(dim, bounds["min"], bounds["max"]) for dim, bounds in axes.values()
    ]
    check_at_every_point(model, (x,), {}, program, between, tmp_path)


def test_transformer_computes_its_sizes_from_the_inputs_and_bakes_none_in():
    model = zoo.build("transformer").eval()
    (x,) = zoo.example_inputs("transformer", batch=3)["forward"]
    dynamic = parse(lower(export_dynamic(model, (x,), {}, {"x": {0: ("batch", BATCH), 1: ("seq", SEQ)}})).payload)
    static = parse(lower(torch.export.export(model, (x,))).payload)
    # the attention's views: [seq, batch * heads, head_dim], [batch, heads, seq, head_dim], [batch * seq, d_model]
    example_sizes = ["[8, 12, 8]", "[3, 4, 8, 8]", "[24, 32]"]
    assert all(sizes in to_text(static.methods["forward"]) for sizes in example_sizes)
    listing = to_text(dynamic.methods["forward"])
    assert not any(sizes in listing for sizes in example_sizes)
    assert "aten::sym_size.int(%0, 0)" in listing and "aten::mul.int(" in listing
    assert dynamic.methods["forward"].inputs[0].shape is None  # check_inputs compares only a dynamic input's dtype


class SizeArithmetic(nn.Module):
    """Every kind of Python arithmetic on sizes that export records as a call of its own."""

    def forward(self, x):
        b, s = x.shape[0], x.shape[1]
        flat = x.reshape(b * s, -1)
        zeros = x.new_zeros(b, s * 2 + 1)
        ramp = torch.arange(s * 3 - b // 2, dtype=torch.float32)
        wide = x[:, :, :1].expand(b, s, 4)
        scalars = (s - b) * 1.5 + s / b + (b * s) // 4 + max(s, b) + min(s, b) + math.ceil(s / 2) + math.floor(s / 3)
        strided = x.transpose(0, 1).contiguous().stride(1) + x.reshape(x.numel()).sum()
        return flat.sum() + zeros.sum() + ramp.sum() + wide.sum() + scalars + s**2 + (s * b) % 5 + strided


def test_pythons_arithmetic_on_sizes_becomes_builtins_that_run_at_every_size():
    x = torch.randn(3, 6, 4)
    program = torch.export.export(SizeArithmetic(), (x,), dynamic_shapes={"x": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}})
    lowered = lower(program)
    listing = to_text(parse(lowered.payload).methods["forward"])
    builtins = "mul.int( floordiv.int( div.int( Float.int( mul.float( prim::max.int( prim::min.int( math::ceil( "
    builtins += "math::floor( pow.int_to_int( remainder.int( sym_numel("
    for builtin in builtins.split():
        assert builtin in listing
    for shape in [(2, 2, 4), (9, 3, 4), (5, 17, 4)]:
        y = torch.randn(shape)
        backend_checks.assert_same_outputs(SizeArithmetic()(y), lowered(y), **TOLERANCE)


class WriteThroughAView(nn.Module):
    def forward(self, x):
        y = x * 2
        y.view(y.shape[0] * 5, 1)[1:] += 1.0
        return y.flatten()


def test_a_write_through_a_view_compiles_from_torchs_functionalization_with_its_sizes_still_computed():
    program = export_dynamic(WriteThroughAView(), (torch.randn(4, 5),), {}, {"x": {0: ("batch", BATCH)}})
    lowered = lower(program)
    listing = to_text(parse(lowered.payload).methods["forward"])
    assert "aten::slice_scatter" in listing and "aten::view(%2, [%3, 1])" in listing and "[20, 1]" not in listing
    for batch in (1, 7, 64):
        x = torch.randn(batch, 5)
        backend_checks.assert_same_outputs(WriteThroughAView()(x), lowered(x), **TOLERANCE)


class CheckedSlice(nn.Module):
    def forward(self, x, n):
        k = n.item()
        torch._check(k >= 1)
        torch._check(k <= x.shape[0])
        return x[:k] * 2


def test_exports_run_time_size_checks_run_and_a_failing_one_raises():
    x = torch.randn(6, 3)
    program = torch.export.export(CheckedSlice(), (x, torch.tensor(2)), dynamic_shapes={"x": {0: Dim.AUTO}, "n": None})
    lowered = lower(program)
    assert lowered(torch.randn(4, 3), torch.tensor(4)).shape == (4, 3)
    with pytest.raises(pipeline.BackendRuntimeError, match=r"aten::_assert_scalar failed.*u0 <= s\d+"):
        lowered(torch.randn(4, 3), torch.tensor(5))


# -- partitioning asks supports(node) --------------------------------------------------------------


def test_supports_accepts_the_size_nodes_it_compiles_and_names_what_it_cannot():
    (x,) = zoo.example_inputs("transformer")["forward"]
    program = export_dynamic(zoo.build("transformer"), (x,), {}, {"x": {0: ("batch", BATCH), 1: ("seq", SEQ)}})
    size_nodes = [
        node
        for node in program.graph.nodes
        if node.op == "call_function" and (symbolic.is_symbolic_call(node) or "sym_size" in str(node.target))
    ]
    assert size_nodes and all(ReferenceBackend.supports(node) is True for node in size_nodes)

    graph = torch.fx.Graph()
    text = graph.placeholder("text")
    text.meta["val"] = "abc"
    repeated = graph.call_function(operator.mul, (text, 2))
    reason = ReferenceBackend.supports(repeated)
    assert isinstance(reason, str) and "Python's mul on (str, int)" in reason and "no builtin" in reason


# -- the torchscript route -------------------------------------------------------------------------


def test_a_scripted_program_runs_at_every_size_so_the_backend_keeps_dimensions_on_both_frontends(tmp_path):
    assert ReferenceBackend.dynamic_shapes == ("export", "torchscript")
    model, inputs = zoo.build("transformer").eval(), zoo.example_inputs("transformer")
    lowered = pipeline.to_backend(
        "reference", model, {"forward": {}}, example_inputs=inputs, frontend="torchscript", torchscript_mode="script"
    )
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "scripted.lowered"))
    for seed, (batch, seq) in enumerate([(1, 1), (64, 64), (23, 13)]):
        (x,) = fresh_like((torch.empty(batch, seq, 32),), seed)
        with torch.no_grad():
            expected = model(x)
        backend_checks.assert_same_outputs(expected, lowered(x), **TOLERANCE)
        backend_checks.assert_same_outputs(expected, loaded(x), **TOLERANCE)


# -- Hugging Face models (slow) --------------------------------------------------------------------


def _hf_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=64,
    )  # fmt: skip
    text = {0: ("batch", BATCH), 1: ("seq", SEQ)}
    ids, mask = torch.randint(0, 1000, (2, 8)), torch.ones(2, 8, dtype=torch.int64)
    dims = {"input_ids": text, "attention_mask": text}
    return transformers.BertModel(config), (ids,), {"attention_mask": mask}, dims, {"batch": 5, "seq": 13}


def _hf_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=2, n_positions=64)
    dims = {"input_ids": {0: ("batch", BATCH), 1: ("seq", SEQ)}}
    model = transformers.GPT2LMHeadModel(config)
    return model, (torch.randint(0, 1000, (2, 8)),), {"use_cache": False}, dims, {"batch": 5, "seq": 13}


def _hf_vit():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128,
    )  # fmt: skip
    dims = {"pixel_values": {0: ("batch", BATCH)}}
    return transformers.ViTModel(config), (torch.randn(2, 3, 32, 32),), {}, dims, {"batch": 5}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("build", [_hf_bert, _hf_gpt2, _hf_vit], ids=["hf_bert", "hf_gpt2", "hf_vit"])
def test_hugging_face_model_lowered_once_answers_at_min_max_and_between(build, tmp_path):
    torch.manual_seed(0)
    model, args, kwargs, dims, between = build()
    model.eval()
    program = export_dynamic(model, args, kwargs, dims)
    check_at_every_point(model, args, kwargs, program, between, tmp_path)
