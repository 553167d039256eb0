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
def inductor_mlp(tmp_path_factory):
    """The MLP lowered once per session on inductor (an AOTInductor compile takes tens of seconds), with
    kernel profiling compiled in, and saved: ``(model, inputs, lowered, path)``. Shared by the inductor
    backend's tests and the trust tests."""
    import pipeline

    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = pipeline.to_backend(
        "inductor", model, {m: {"cpp_enable_kernel_profile": True} for m in inputs}, example_inputs=inputs
    )
    path = pipeline.save_lowered(lowered, tmp_path_factory.mktemp("inductor") / "mlp.lowered")
    return model, inputs, lowered, path
