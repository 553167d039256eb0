"""The inductor backend: each exported method compiled ahead of time by AOTInductor.

An AOTInductor compile takes tens of seconds on a small CPU, so exactly one
lowering runs unmarked: the MLP, shared by the tests that look at its result,
by the conformance suite (which saves, loads and runs it) and by the trust
tests: the ``inductor_mlp`` fixture in tests/conftest.py. Every other lowering
is marked slow.

What every backend is held to (registration, spec validation, the zoo against
eager, save and load, handles, errors, profiles, bad inputs) is in
tests/backends/conformance.py; this file keeps what is this backend's own.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from typing import Dict

import backend_checks
import pytest
import torch
import torch.utils._pytree as pytree
from backend_checks import compile_specs, run_app
from torch import nn

import pipeline
from pipeline import zoo
from pipeline.backends.inductor.compile_spec import INDUCTOR_OPTIONS, InductorCompileSpec
from pipeline.backends.inductor.runtime import InductorBackend
from pipeline.core.payload import pack_parts, unpack_parts
from pipeline.core.spec import parse_compile_spec

TOLERANCE = backend_checks.tolerance("inductor")


def assert_same_outputs(expected, actual, **tolerance) -> None:
    backend_checks.assert_same_outputs(expected, actual, **(tolerance or TOLERANCE))


def lower(model: nn.Module, inputs: dict, spec: dict = None) -> pipeline.LoweredModule:
    return pipeline.to_backend("inductor", model, {m: dict(spec or {}) for m in inputs}, example_inputs=inputs)


def check_against_eager(model: nn.Module, inputs: dict, lowered: nn.Module, loaded: nn.Module) -> None:
    backend_checks.check_against_eager(model, inputs, lowered, **TOLERANCE, loaded=loaded)


# -- the one unmarked lowering: the MLP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp(inductor_mlp):
    """The session's MLP lowering (tests/conftest.py); the conformance suite loads it back and checks it."""
    model, inputs, lowered, _ = inductor_mlp
    return model, inputs, lowered


def test_payload_holds_one_aoti_package_per_method(mlp):
    _, _, lowered = mlp
    meta, packages = unpack_parts(lowered.payload, "inductor")
    assert list(packages) == ["forward"] and meta["methods"]["forward"]["flat"]
    names = zipfile.ZipFile(io.BytesIO(packages["forward"])).namelist()
    assert any(name.endswith(".so") for name in names)  # native code: see the package docstring


def test_each_kernel_call_maps_to_the_handles_of_the_nodes_it_computes(mlp):
    _, _, lowered = mlp
    records = lowered.handle_map.handles
    ops = {key: [records[h].op for h in handles] for key, handles in lowered.handle_map.backend_map.items()}
    assert list(ops.values()) == [["aten::linear"], ["aten::gelu"], ["aten::linear"], ["aten::gelu"], ["aten::linear"]]
    assert [key.rsplit(":", 1)[1] for key in ops] == ["1", "2", "3", "4", "5"]
    assert all(key.startswith("forward/") for key in ops)


def test_profile_names_each_kernel_with_its_handles(mlp):
    _, inputs, lowered = mlp
    events = lowered.profile("forward", *inputs["forward"])
    assert [e.name for e in events] == list(lowered.handle_map.backend_map)
    assert [list(e.debug_handles) for e in events] == list(lowered.handle_map.backend_map.values())
    assert all(e.seconds >= 0 for e in events)


def test_runner_failure_is_a_backend_runtime_error(mlp):
    _, _, lowered = mlp
    with pytest.raises(pipeline.BackendRuntimeError) as raised:
        lowered.compiled("forward")([])
    assert raised.value.debug_handles == [-1]


# -- compile spec (no compiling) ------------------------------------------------------------------


def test_compile_spec_maps_fields_and_options_to_inductor_configs():
    spec = parse_compile_spec(
        InductorCompileSpec,
        {
            "max_autotune": True,
            "cpp_threads": 2,
            "options": {
                "epilogue_fusion": False,
                "cpp": {"enable_tiling_heuristics": False},
                "aot_inductor.debug_compile": True,
            },
        },
    )
    configs = spec.inductor_configs()
    assert configs["max_autotune"] is True and configs["cpp.threads"] == 2 and configs["freezing"] is True
    assert configs["epilogue_fusion"] is False and configs["cpp.enable_tiling_heuristics"] is False
    assert configs["aot_inductor.debug_compile"] is True
    import torch._inductor.config as inductor_config

    known = inductor_config.get_config_copy()
    assert all(option in known for option in INDUCTOR_OPTIONS.values())


@pytest.mark.parametrize("payload", [b"", b"PLPARTS1" + b"\xff" * 20, pack_parts("onnxruntime", {}, {})])
def test_corrupt_payload_is_rejected_with_lowering_error(payload):
    with pytest.raises(pipeline.LoweringError, match="inductor"):
        InductorBackend().compile(payload, compile_specs("inductor", {"forward": {}}))


# -- slow: every other lowering -------------------------------------------------------------------


@dataclasses.dataclass
class ModelOutput:
    logits: torch.Tensor
    hidden: torch.Tensor


pytree.register_dataclass(ModelOutput, serialized_type_name="tests.backends.test_inductor.ModelOutput")


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)

    def forward(self, x, pair) -> Dict[str, torch.Tensor]:
        hidden = self.body(x) + pair[0] * pair[1]
        return {"logits": hidden.relu(), "pair": (hidden, hidden * 2)}

    def as_dataclass(self, x):
        hidden = self.body(x)
        return ModelOutput(hidden.relu(), hidden)


@pytest.mark.slow
def test_dict_and_dataclass_outputs_and_tuple_arguments_come_through(tmp_path):
    torch.manual_seed(0)
    model, x = Heads().eval(), torch.randn(3, 6)
    pair = (torch.randn(3, 4), torch.randn(3, 4))
    inputs = {"forward": (x, pair), "as_dataclass": (x,)}
    lowered = lower(model, inputs)
    assert not lowered.compiled("forward").flat
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "heads.lowered"), trust_code=True)
    check_against_eager(model, {"as_dataclass": (x,)}, lowered, loaded)
    for module in (lowered, loaded):
        with torch.no_grad():
            assert_same_outputs(model(x, pair), module(x, pair))
    assert isinstance(loaded.as_dataclass(x), ModelOutput)


@pytest.mark.slow
def test_inductor_options_reach_the_compile():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(
        model,
        inputs,
        {"freezing": False, "options": {"aot_inductor.package_cpp_only": False, "epilogue_fusion": False}},
    )
    with torch.no_grad():
        assert_same_outputs(model(*inputs["forward"]), lowered(*inputs["forward"]))


@pytest.mark.slow
def test_app_lowers_the_default_model_with_inductor(tmp_path):
    report = run_app(
        tmp_path,
        "backend=inductor",
        "frontend=export",
        "backend.compile_spec.forward.options.epilogue_fusion=false",
        timeout=1200,
    )
    assert report["status"] == "ok" and report["verify"]["passed"]
    assert report["compile_spec"]["forward"]["options"] == {"epilogue_fusion": False}
