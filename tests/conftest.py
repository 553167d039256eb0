import os
import sys
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "user_backends"))  # a user's own backends and models
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

from backend_for_tests import register  # noqa: E402

from pipeline import zoo  # noqa: E402

register()


@pytest.fixture
def basic():
    return zoo.BasicModule()


@pytest.fixture
def xh():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(5, generator=generator), torch.randn(5, generator=generator)


@pytest.fixture(scope="session")
def lowered_zoo():
    """``lowered_zoo(backend, name, frontend, spec)``: the zoo model ``name`` lowered with ``{method: options}``
    once per session, so that the conformance suite and a backend's own tests share one lowering (the cases
    only read it). ``frontend`` is a key of backend_checks.FRONTEND_OPTIONS."""
    import json

    from backend_checks import FRONTEND_OPTIONS

    import pipeline

    cache = {}

    def get(backend: str, name: str, frontend: str = "export", spec: dict = None):
        inputs = zoo.example_inputs(name)
        spec = spec if spec is not None else {m: {} for m in inputs}
        key = backend, name, frontend, json.dumps(spec, sort_keys=True)
        if key not in cache:
            options = FRONTEND_OPTIONS[frontend]
            model = zoo.build(name)
            cache[key] = pipeline.to_backend(backend, model, spec, example_inputs=inputs, **options)
            # preprocess shares the model's weights (it gets a copy of the graph only): none may change
            fresh = zoo.build(name).state_dict()
            get.changed_weights[id(cache[key])] = [
                weight for weight, value in model.state_dict().items() if not torch.equal(value, fresh[weight])
            ]
        return cache[key]

    get.changed_weights = {}  # id(lowered) -> the names of the model's weights that lowering changed
    return get


@pytest.fixture(scope="session")
def inductor_mlp(tmp_path_factory, lowered_zoo):
    """The MLP lowered once per session on inductor (an AOTInductor compile takes tens of seconds), with
    kernel profiling compiled in, and saved: ``(model, inputs, lowered, path)``. Shared by the inductor
    backend's tests, the conformance suite and the trust tests."""
    import pipeline

    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lowered_zoo("inductor", "mlp", "export", {m: {"cpp_enable_kernel_profile": True} for m in inputs})
    path = pipeline.save_lowered(lowered, tmp_path_factory.mktemp("inductor") / "mlp.lowered")
    return model, inputs, lowered, path


@pytest.fixture
def unchecked_shapes(monkeypatch):
    """Lowered modules without the shape contract's check, for cases about what a backend says when a
    program meets sizes it cannot take; the check would refuse such a call first (tests/core/test_shapes.py)."""
    from pipeline.core.lowered_module import LoweredModule

    monkeypatch.setattr(LoweredModule, "_checked", lambda self, method, runner: runner)
