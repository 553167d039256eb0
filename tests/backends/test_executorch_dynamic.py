"""The executorch backend with dynamic dimensions: upper-bounded, memory planned for each dimension's maximum.

Each model is exported once with its declared dimensions (as the pipeline's
capture will), lowered once, and called at each dimension's minimum, maximum
and a size in between, before and after a save and load. Lowering takes
seconds, so each lowering is shared by the tests of this module.
"""

from __future__ import annotations

import backend_checks
import pytest
import torch
import torch.utils._pytree as pytree

import pipeline
from pipeline import zoo
from pipeline.backends.executorch import ExecuTorchCompileSpec, Quantize
from pipeline.backends.executorch.runtime import ExecuTorchBackend
from pipeline.core.shapes import DIMENSION_NAMES, resize

TOLERANCE = backend_checks.tolerance("executorch")
Dim = torch.export.Dim

# model -> ({dim index of the input: (name, min, max)}, the sizes to call at: min, between, max)
ZOO = {
    "mlp": ({0: ("batch", 1, 64)}, [{"batch": 1}, {"batch": 23}, {"batch": 64}]),
    "cnn": ({0: ("batch", 1, 64)}, [{"batch": 1}, {"batch": 23}, {"batch": 64}]),
    "transformer": (
        {0: ("batch", 1, 16), 1: ("seq", 1, 32)},
        [{"batch": 1, "seq": 1}, {"batch": 5, "seq": 13}, {"batch": 16, "seq": 32}, {"batch": 1, "seq": 32}],
    ),
}


def export_dynamic(model, args, kwargs, dims):
    """``torch.export`` with ``dims`` ({argument: {index: Dim}}), each symbol named as the capture names it."""
    program = torch.export.export(model, args, kwargs, dynamic_shapes=dims)
    names = {}
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if node.op == "placeholder" and isinstance(value, torch.Tensor):
            for index, dim in (dims.get(node.name) or {}).items():
                if isinstance(value.shape[index], torch.SymInt):
                    names[str(value.shape[index].node.expr)] = dim.__name__
    program.graph_module.meta[DIMENSION_NAMES] = names
    return program


def lower_dynamic(model, args, kwargs, dims) -> pipeline.LoweredModule:
    return pipeline.codegen_backend_module(
        "executorch", {"forward": export_dynamic(model, args, kwargs, dims)}, {"forward": {}}
    )


@pytest.fixture(scope="module")
def dynamic_zoo():
    """The zoo's MLP, CNN and Transformer, each lowered once with its ZOO dimensions (built on first use)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            model, (example,) = zoo.build(name), zoo.example_inputs(name)["forward"]
            declared, _ = ZOO[name]
            dims = {index: Dim(dim, min=low, max=high) for index, (dim, low, high) in declared.items()}
            cache[name] = (model, example, lower_dynamic(model, (example,), {}, {"x": dims}))
        return cache[name]

    return get


def at(example: torch.Tensor, declared: dict, point: dict, seed: int) -> torch.Tensor:
    """A fresh input like ``example`` with each declared dimension at its size in ``point``."""
    for index, (name, _, _) in declared.items():
        example = resize(example, index, point[name])
    return backend_checks.fresh_like((example,), seed=seed)[0]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_a_zoo_model_lowered_once_answers_at_min_max_and_between_before_and_after_save_and_load(
    name, dynamic_zoo, tmp_path
):
    model, example, lowered = dynamic_zoo(name)
    declared, points = ZOO[name]
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / f"{name}.lowered"))
    for seed, point in enumerate(points):
        x = at(example, declared, point, seed)
        with torch.no_grad():
            expected = model(x)
        actual = lowered(x)
        backend_checks.assert_same_outputs(expected, actual, **TOLERANCE)
        backend_checks.assert_same_outputs(actual, loaded(x), atol=0, rtol=0)


def test_memory_is_planned_for_the_maximum(dynamic_zoo):
    """The memory plan holds the MLP's input and output at the largest batch (the default evaluation
    planned the CNN for a batch of 15, what the lowering passes narrowed the batch to)."""
    for name, floats_at_max in (("mlp", 64 * (64 + 10)), ("cnn", 64 * (3 * 16 * 16 + 10))):
        _, _, lowered = dynamic_zoo(name)
        assert lowered.notes["forward"]["planned_bytes"] >= 4 * floats_at_max


def test_the_partition_of_a_dynamic_program_names_its_views_and_delegates(dynamic_zoo):
    """A view of a dynamic size is an instruction of its own (``et_view``); the table keeps each
    instruction with the node that emitted it, so every delegate still lists its XNNPACK nodes."""
    _, _, lowered = dynamic_zoo("transformer")
    partition = lowered.notes["forward"]["partition"]
    assert partition["delegates"] and all(delegate["nodes"] for delegate in partition["delegates"])
    views = [k for k in partition["portable_kernels"] if k["kernel"] == "executorch_prim::et_view.default"]
    assert views and all(view["debug_handles"] for view in views)


def test_the_backend_keeps_dynamic_dimensions_on_export_and_refuses_them_when_quantized():
    assert ExecuTorchBackend.dynamic_shapes == ("export",)
    assert ExecuTorchBackend.dynamic_refusal("forward", ExecuTorchCompileSpec()) is None
    for mode in (Quantize.int8_dynamic, Quantize.int8_static):
        reason = ExecuTorchBackend.dynamic_refusal("forward", ExecuTorchCompileSpec(quantize=mode))
        assert reason and f"quantize={mode.value}" in reason and "static" in reason


# -- Hugging Face models, from small configs with seeded random weights -------------------------------


def hf_model(name: str):
    """(model, args, kwargs, dims, points) of a small Hugging Face model with a dynamic batch (and sequence)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    batch = Dim("batch", min=1, max=8)
    if name == "vit":
        config = transformers.ViTConfig(
            image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=128,
        )  # fmt: skip
        model = transformers.ViTModel(config).eval()
        return model, (torch.randn(2, 3, 32, 32),), {}, {"pixel_values": {0: batch}}, [{0: 1}, {0: 3}, {0: 8}]
    seq = Dim("seq", min=2, max=64)
    ids = torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(0))
    points = [{0: 1, 1: 2}, {0: 3, 1: 17}, {0: 8, 1: 64}]
    if name == "bert":
        config = transformers.BertConfig(
            vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64,
        )  # fmt: skip
        dims = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        return transformers.BertModel(config).eval(), (ids,), {"attention_mask": torch.ones_like(ids)}, dims, points
    config = transformers.GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=2, n_positions=64)
    dims = {"input_ids": {0: batch, 1: seq}, "use_cache": None}
    return transformers.GPT2LMHeadModel(config).eval(), (ids,), {"use_cache": False}, dims, points


def resized(args: tuple, kwargs: dict, point: dict, seed: int) -> tuple[tuple, dict]:
    """Every tensor of the call at ``point`` ({dim index: size}), fresh values of the example's kind."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    for index, size in point.items():
        tensors = [resize(t, index, size) for t in tensors]
    fresh = iter(backend_checks.fresh_like(tuple(tensors), seed=seed))
    new_args, new_kwargs = pytree.tree_unflatten(
        [next(fresh) if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves], spec
    )
    return tuple(new_args), new_kwargs


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "bert",
        # Static too (real_models.EXPECTED_FAILURES): ExecuTorch's edge passes meet `x.view(-1, n)` on a
        # transposed tensor, an upstream limitation.
        pytest.param("gpt2", marks=pytest.mark.xfail(raises=pipeline.LoweringError, strict=True)),
        "vit",
    ],
)
def test_a_hugging_face_model_lowered_once_answers_at_min_max_and_between(name, tmp_path):
    model, args, kwargs, dims, points = hf_model(name)
    lowered = lower_dynamic(model, args, kwargs, dims)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / f"{name}.lowered"))
    for seed, point in enumerate(points):
        call_args, call_kwargs = resized(args, kwargs, point, seed)
        with torch.no_grad():
            expected = pytree.tree_leaves(model(*call_args, **call_kwargs))
        actual = pytree.tree_leaves(lowered(*call_args, **call_kwargs))
        assert len(actual) == len(expected)
        for e, a in zip(expected, actual):
            torch.testing.assert_close(a, e, **TOLERANCE)
        for a, b in zip(actual, pytree.tree_leaves(loaded(*call_args, **call_kwargs))):
            torch.testing.assert_close(b, a, atol=0, rtol=0)
