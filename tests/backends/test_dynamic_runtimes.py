"""onnxruntime, openvino and inductor keep the dynamic dimensions of an exported program (issue 19).

Each model is exported once with a dynamic batch (and, for sequences, a dynamic sequence length), named as
the capture names them (``graph_module.meta["pipeline.dimension_names"]``), lowered once, and called at the
minimum, the maximum and a size in between, before and after a save and load. The ONNX model's axes carry
the declared names, and OpenVINO's inputs the declared bounds. HF models and inductor are slow tests.
"""

import inspect
import re

import pytest
import torch

import pipeline
from pipeline import zoo
from pipeline.core.payload import unpack_parts
from pipeline.core.shapes import DIMENSION_NAMES
from tests.backend_checks import assert_same_outputs, tolerance

BATCH = (1, 64)  # min, max
SEQ = (1, 16)
POINTS = ({"batch": 1, "seq": 1}, {"batch": 64, "seq": 16}, {"batch": 5, "seq": 3})  # min, max, between

# zoo model -> {dim: (name, (min, max))} of its one input
ZOO_DIMENSIONS = {
    "mlp": {0: ("batch", BATCH)},
    "cnn": {0: ("batch", BATCH)},
    "transformer": {0: ("batch", BATCH), 1: ("seq", SEQ)},
}


def export_dynamic(model, args: tuple, kwargs: dict, dims: dict) -> torch.export.ExportedProgram:
    """``model`` exported with ``dims`` ({argument index or keyword: {dim: (name, bounds)}}), its symbols
    named as the capture names them."""
    made: dict = {}

    def dim(name, bounds):
        return made.setdefault(name, torch.export.Dim(name, min=bounds[0], max=bounds[1]))

    positional = tuple({d: dim(*spec) for d, spec in dims.get(i, {}).items()} or None for i in range(len(args)))
    keywords = {k: {d: dim(*spec) for d, spec in dims.get(k, {}).items()} or None for k in kwargs}
    parameters = list(inspect.signature(model.forward).parameters)
    shapes = {**dict(zip(parameters, positional)), **keywords} if kwargs else positional
    program = torch.export.export(model, args, kwargs or None, dynamic_shapes=shapes)
    user = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    values = {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}
    names = {}
    for input_name, key in zip(user, [*range(len(args)), *kwargs]):
        for d, (name, _) in dims.get(key, {}).items():
            names[str(values[input_name].shape[d].node.expr)] = name
    program.graph_module.meta[DIMENSION_NAMES] = names
    return program


def at_point(args: tuple, kwargs: dict, dims: dict, point: dict) -> tuple[tuple, dict]:
    from pipeline.core.shapes import resize

    def resized(key, value):
        for d, (name, _) in dims.get(key, {}).items():
            value = resize(value, d, point[name])
        return value

    return tuple(resized(i, a) for i, a in enumerate(args)), {k: resized(k, v) for k, v in kwargs.items()}


def check_points(model, lowered, args, kwargs, dims, atol, rtol, loaded=None, points=POINTS) -> None:
    generator = torch.Generator().manual_seed(1)
    for point in points:
        call_args, call_kwargs = at_point(args, kwargs, dims, point)
        call_args = tuple(
            torch.randn(a.shape, generator=generator) if a.dtype.is_floating_point else a for a in call_args
        )
        with torch.no_grad():
            expected = model(*call_args, **call_kwargs)
        actual = lowered(*call_args, **call_kwargs)
        assert_same_outputs(expected, actual, atol=atol, rtol=rtol)
        if loaded is not None:
            assert_same_outputs(actual, loaded(*call_args, **call_kwargs), atol=0, rtol=0)


def lower_zoo(backend: str, name: str, spec: dict | None = None, dimensions: dict | None = None):
    model = zoo.build(name)
    (x,) = zoo.example_inputs(name)["forward"]
    dims = {0: dimensions or ZOO_DIMENSIONS[name]}
    program = export_dynamic(model, (x,), {}, dims)
    lowered = pipeline.codegen_backend_module(backend, {"forward": program}, {"forward": spec or {}})
    return model, (x,), dims, lowered


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_zoo_at_the_bounds_and_between(backend, name, tmp_path):
    model, args, dims, lowered = lower_zoo(backend, name)
    path = pipeline.save_lowered(lowered, tmp_path / "lowered.pt2l")
    loaded = pipeline.load_lowered(path)
    check_points(model, lowered, args, {}, dims, **tolerance(backend), loaded=loaded)


def test_onnx_axes_are_named_as_declared():
    import onnx

    _, _, _, lowered = lower_zoo("onnxruntime", "transformer")
    model = onnx.load_from_string(unpack_parts(lowered.payload, "onnxruntime")[1]["forward"])

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [dims(v) for v in model.graph.input] == [["batch", "seq", 32]]
    assert [dims(v) for v in model.graph.output] == [["batch", "seq", 32]]
    symbols = {d.dim_param for v in model.graph.value_info for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert symbols and not any(re.search(r"\bs\d+\b", p) for p in symbols), symbols  # no torch.export symbol left


@pytest.mark.parametrize("how", ["int8_dynamic", "int8_static"])
def test_onnxruntime_quantized_keeps_the_batch(how):
    model, args, dims, lowered = lower_zoo("onnxruntime", "cnn", {"quantize": how})
    check_points(model, lowered, args, {}, dims, **tolerance("onnxruntime", "quantized_tolerance"))


def test_onnxruntime_static_program_is_unchanged():
    """No dynamic machinery in a static lowering: the same bytes twice, and fixed axes."""
    import onnx

    model = zoo.build("mlp")
    inputs = zoo.example_inputs("mlp")
    first = pipeline.to_backend("onnxruntime", model, {"forward": {}}, example_inputs=inputs)
    again = pipeline.to_backend("onnxruntime", model, {"forward": {}}, example_inputs=inputs)
    assert first.payload == again.payload
    onnx_model = onnx.load_from_string(unpack_parts(first.payload, "onnxruntime")[1]["forward"])
    assert [d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim] == [2, 64]


def test_openvino_inputs_carry_the_bounds():
    import openvino

    _, _, _, lowered = lower_zoo("openvino", "transformer")
    runner = lowered.compiled("forward")
    expected = openvino.PartialShape([openvino.Dimension(*BATCH), openvino.Dimension(*SEQ), 32])
    assert runner.model.inputs[0].get_partial_shape() == expected
    assert runner.compiled.inputs[0].get_partial_shape() == expected


def test_openvino_static_program_keeps_static_shapes():
    import openvino

    model = zoo.build("cnn")
    inputs = zoo.example_inputs("cnn")
    lowered = pipeline.to_backend("openvino", model, {"forward": {}}, example_inputs=inputs)
    runner = lowered.compiled("forward")
    assert runner.model.inputs[0].get_partial_shape() == openvino.PartialShape([2, 3, 16, 16])


def test_backends_declare_the_export_frontend():
    for backend in ("onnxruntime", "openvino", "inductor"):
        assert pipeline.get_backend(backend).backend_cls.dynamic_shapes == ("export",)


# -- slow: Hugging Face models, inductor ------------------------------------------------------------------


def hf_model(name: str):
    """A tiny seeded HF model, its example call and its dynamic dimensions."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 1000, (2, 8), generator=generator)
    text = {0: ("batch", (1, 8)), 1: ("seq", (1, 16))}
    if name == "bert":
        config = transformers.BertConfig(
            vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64,
        )  # fmt: skip
        model = transformers.BertModel(config).eval()
        return model, (ids,), {"attention_mask": torch.ones_like(ids)}, {0: text, "attention_mask": text}
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=2, n_positions=64)
        model = transformers.GPT2LMHeadModel(config).eval()
        return _NoCache(model), (ids,), {}, {0: text}
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128,
    )  # fmt: skip
    model = transformers.ViTModel(config).eval()
    return model, (torch.rand(2, 3, 32, 32, generator=generator),), {}, {0: {0: ("batch", (1, 8))}}


class _NoCache(torch.nn.Module):
    """GPT-2's logits alone (``use_cache=False``): a key/value cache is not what is compared here."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids, use_cache=False).logits


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "inductor"])
@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_hf_models_at_the_bounds_and_between(backend, name, tmp_path):
    model, args, kwargs, dims = hf_model(name)
    program = export_dynamic(model, args, kwargs, dims)
    lowered = pipeline.codegen_backend_module(backend, {"forward": program}, {"forward": {}})
    saved = pipeline.save_lowered(lowered, tmp_path / "lowered.pt2l")
    loaded = pipeline.load_lowered(saved, trust_code=backend == "inductor")
    points = [{"batch": 1, "seq": 1}, {"batch": 8, "seq": 16}, {"batch": 3, "seq": 5}]
    for point in points:
        call_args, call_kwargs = at_point(args, kwargs, dims, point)
        with torch.no_grad():
            expected = model(*call_args, **call_kwargs)
        actual = lowered(*call_args, **call_kwargs)
        leaves = torch.utils._pytree.tree_leaves
        for e, a in zip(leaves(expected), leaves(actual)):
            torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)
        assert_same_outputs(actual, loaded(*call_args, **call_kwargs), atol=0, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_inductor_keeps_the_dimensions_from_one(name, tmp_path):
    """AOTInductor's runtime checks a dynamic size >= 2 by default (inductor's 0/1 specialization); the
    backend switches that check off for a declared minimum of 1, and the answer at 1 is right."""
    dimensions = {0: ("batch", CNN_BATCH_ON_INDUCTOR)} if name == "cnn" else None
    model, args, dims, lowered = lower_zoo("inductor", name, dimensions=dimensions)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "lowered.pt2l"), trust_code=True)
    points = ({"batch": 1}, {"batch": 15}, {"batch": 6}) if name == "cnn" else POINTS
    check_points(model, lowered, args, {}, dims, **tolerance("inductor"), loaded=loaded, points=points)


CNN_BATCH_ON_INDUCTOR = (1, 15)


@pytest.mark.slow
def test_inductor_refuses_a_range_its_compiler_narrows():
    """torch's convolution picks its kernel by batch size while inductor compiles, which narrows the CNN's
    batch to [1..15] in the package; the backend says so instead of handing back a module that fails at 16."""
    with pytest.raises(pipeline.LoweringError, match=r"batch\[1\.\.64\].*AOTInductor narrowed it to \[1\.\.15\]"):
        lower_zoo("inductor", "cnn")
