"""The real-model matrix: every model lowers on every backend within tolerance,
comes back as the same output class, and round-trips through its artifact. The README's table is made
from the same list (benchmarks/bench_real_models.py)."""

import pytest
import torch
import torch.utils._pytree as pytree

import pipeline
from pipeline.app.config import compose_config, validate
from pipeline.app.dynamic_config import declared_names
from pipeline.app.inputs import make_method_calls
from pipeline.app.real_models import BACKENDS, EXPECTED_FAILURES, QUICK, REAL_MODELS, lower
from pipeline.app.run import build_model

SLOW = ("inductor", "executorch")  # they compile each model for ~10 s; the matrix takes minutes
CELLS = [
    pytest.param(model, backend, marks=[pytest.mark.slow] if backend in SLOW else [])
    for model in REAL_MODELS
    for backend in BACKENDS
]


def request_for(model, backend):
    return validate(compose_config([f"model={model}", *BACKENDS[backend], *QUICK]))


@pytest.mark.parametrize("model, backend", CELLS)
def test_the_model_lowers_verifies_and_round_trips(model, backend, tmp_path):
    report = lower(model, backend, tmp_path)
    if (model, backend) in EXPECTED_FAILURES:  # the matrix shows why; the error says what to do instead
        stage, reason, advice = EXPECTED_FAILURES[model, backend]
        assert report["status"] == "failed" and report["stage"] == stage and reason in report["error"]
        assert advice is None or advice in report["error"]
        return
    assert report["status"] == "ok", (report["stage"], report["error"])
    verified = report["verify"]
    assert verified["passed"] and verified["shapes"][0]["label"] == "example" and verified["shapes"][0]["trials"] == 3
    declared = request_for(model, backend).dynamic_shapes  # each dimension at its minimum, maximum and between
    names = declared_names((declared or {}).get("forward", {}))
    assert {s["label"] for s in verified["shapes"][1:]} == {
        f"{n}={at}" for n in names for at in ("min", "max", "between")
    }
    request = request_for(model, backend)
    eager = build_model(request)
    loaded = pipeline.load_lowered(tmp_path / "model.lowered", trust_code=backend in ("torchscript", "inductor"))
    args, kwargs = make_method_calls(request.example_inputs, request.seed)["forward"]
    with torch.no_grad():
        expected, actual = eager(*args, **kwargs), loaded(*args, **kwargs)
    assert type(actual) is type(expected)  # a ModelOutput comes back as the same ModelOutput class
    for e, a in zip(pytree.tree_leaves(expected), pytree.tree_leaves(actual)):
        torch.testing.assert_close(a, e, atol=request.tolerance.atol, rtol=request.tolerance.rtol)
