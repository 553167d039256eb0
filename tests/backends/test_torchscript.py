"""The torchscript backend: the scripted or traced module, frozen and optimized for inference.

Every test lowers a real model through ``pipeline.to_backend`` (or checks one
piece of the backend directly) and compares with eager PyTorch.

What every backend is held to (registration, spec validation, the zoo against
eager, save and load, handles, errors, profiles, bad inputs) is in
tests/backends/conformance.py; this file keeps what is this backend's own.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Dict

import backend_checks
import pytest
import torch
from backend_checks import compile_specs, run_app
from torch import nn

import pipeline
from pipeline import zoo
from pipeline.backends.torchscript.runtime import BACKEND_MAP_FILE, TorchScriptBackend

TOLERANCE = backend_checks.tolerance("torchscript")


def assert_same_outputs(expected, actual, **tolerance) -> None:
    backend_checks.assert_same_outputs(expected, actual, **(tolerance or TOLERANCE))


MODES = ("script", "trace")


def lower(model: nn.Module, inputs: dict, mode: str = "script", spec: dict = None, **options):
    return pipeline.to_backend(
        "torchscript",
        model,
        {m: dict(spec or {}) for m in inputs},
        example_inputs=inputs,
        frontend="torchscript",
        torchscript_mode=mode,
        **options,
    )


# -- other batch sizes and grad mode --------------------------------------------------------------


def test_scripted_model_runs_other_batch_sizes_than_the_example():
    model, inputs = zoo.build("cnn"), zoo.example_inputs("cnn")
    lowered = lower(model, inputs)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert_same_outputs(model(x), lowered(x))


def test_outputs_do_not_require_grad_even_when_grad_is_enabled():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs, spec={"freeze": False, "optimize_for_inference": False})
    assert torch.is_grad_enabled()
    assert not lowered(*inputs["forward"]).requires_grad
    assert torch.is_grad_enabled()


# -- output structures and arguments --------------------------------------------------------------


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        hidden = self.body(x)
        return {"logits": hidden.relu(), "hidden": hidden}

    @torch.jit.export
    def scaled(self, x, *, scale: float):  # TorchScript takes keyword-only arguments without defaults only
        return self.body(x) * scale


def test_dict_outputs_and_keyword_only_arguments_come_through(tmp_path):
    torch.manual_seed(0)
    model, x = Heads().eval(), torch.randn(3, 6)
    # no example inputs for `scaled`: the torchscript frontend would pass them positionally
    lowered = pipeline.to_backend(
        "torchscript", model, {"forward": {}, "scaled": {}}, frontend="torchscript", example_inputs={"forward": (x,)}
    )
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "heads.lowered"), trust_code=True)
    for module in (lowered, loaded):
        with torch.no_grad():
            assert_same_outputs(model(x), module(x))
            assert_same_outputs(model.scaled(x, scale=3.0), module.scaled(x, scale=3.0))


# -- compile spec ---------------------------------------------------------------------------------


def test_without_freezing_the_payload_runs_the_module_as_scripted():
    model, inputs = zoo.build("cnn"), zoo.example_inputs("cnn")
    lowered = lower(model, inputs, spec={"freeze": False, "optimize_for_inference": False})
    module = lowered.compiled("forward").module
    assert module._c._has_method("forward") and hasattr(module, "features")  # submodules still there
    with torch.no_grad():
        assert_same_outputs(model(*inputs["forward"]), lowered(*inputs["forward"]))


def test_optimize_for_inference_folds_batch_norm_and_freezing_drops_submodules():
    model, inputs = zoo.build("cnn"), zoo.example_inputs("cnn")
    lowered = lower(model, inputs)
    graph = str(lowered.compiled("forward").module.forward.graph)
    assert "batch_norm" not in graph and "prim::CallMethod" not in graph


def test_methods_asking_for_different_module_options_are_rejected():
    model, inputs = zoo.build("basic"), zoo.example_inputs("basic")
    spec = {"forward": {}, "accum": {"optimize_for_inference": False}, "sub_accum": {}}
    with pytest.raises(
        pipeline.LoweringError,
        match=r"'forward' and 'accum' ask for different "
        r"\['optimize_for_inference'\]",
    ):
        pipeline.to_backend("torchscript", model, spec, frontend="torchscript", example_inputs=inputs)


# -- payload --------------------------------------------------------------------------------------


def test_payload_is_a_torchscript_archive_with_the_backend_map_inside():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs)
    extra = {BACKEND_MAP_FILE: ""}
    module = torch.jit.load(io.BytesIO(lowered.payload), _extra_files=extra)
    torch.testing.assert_close(module(*inputs["forward"]), model(*inputs["forward"]))
    nodes = json.loads(extra[BACKEND_MAP_FILE])["methods"]["forward"]["nodes"]
    assert {f"forward/{index}": handles for index, handles in nodes.items()} == lowered.handle_map.backend_map
    assert not any(
        name.endswith(".pkl") and "data" not in name and "constants" not in name
        for name in zipfile.ZipFile(io.BytesIO(lowered.payload)).namelist()
        if not name.endswith(("data.pkl", "constants.pkl", ".debug_pkl"))
    )


def test_payload_that_is_not_an_archive_is_rejected_with_lowering_error():
    with pytest.raises(pipeline.LoweringError, match="not a loadable TorchScript archive"):
        TorchScriptBackend().compile(b"not a zip file", compile_specs("torchscript", {"forward": {}}))


# -- debug handles, errors, profiles ---------------------------------------------------------------


def test_every_op_of_the_optimized_mlp_maps_to_the_linear_or_gelu_it_came_from():
    from pipeline.backends.torchscript.mapping import walk

    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs)
    nodes = list(walk(lowered.compiled("forward").module.forward.graph))
    ops = [(index, node.kind()) for index, node in enumerate(nodes) if node.kind().startswith("aten::")]
    assert [kind for _, kind in ops] == ["aten::matmul", "aten::add", "aten::gelu"] * 2 + ["aten::matmul", "aten::add"]
    backend_map, records = lowered.handle_map.backend_map, lowered.handle_map.handles
    assert sorted(backend_map) == sorted(f"forward/{index}" for index, _ in ops)
    origins = [[records[h].module_hierarchy for h in backend_map[f"forward/{index}"]] for index, _ in ops]
    top = "top(MLP)::<unknown>."
    linear = [f"{top}body(Sequential)::forward.{i}(Linear)::forward.aten::linear" for i in (0, 2)]
    gelu = [f"{top}body(Sequential)::forward.{i}(GELU)::forward.aten::gelu" for i in (1, 3)]
    head = f"{top}head(Linear)::forward.aten::linear"
    assert origins == [[linear[0]], [linear[0]], [gelu[0]], [linear[1]], [linear[1]], [gelu[1]], [head], [head]]


def test_profile_reports_each_op_the_interpreter_ran_with_its_handles():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs)
    events = lowered.profile("forward", *inputs["forward"])
    assert [e.name.split()[1] for e in events] == ["aten::matmul", "aten::add", "aten::gelu"] * 2 + [
        "aten::matmul",
        "aten::add",
    ]
    assert all(e.seconds >= 0 for e in events)
    assert [list(e.debug_handles) for e in events] == [
        lowered.handle_map.backend_map[e.name.split()[0]] for e in events
    ]


# -- registration, documentation, config ----------------------------------------------------------


def test_app_lowers_a_scripted_model_to_torchscript(tmp_path):
    report = run_app(tmp_path, "backend=torchscript", "frontend=torchscript", "model=cnn")
    assert report["status"] == "ok" and report["verify"]["passed"]
    assert report["compile_spec"]["forward"] == {"freeze": True, "optimize_for_inference": True}
