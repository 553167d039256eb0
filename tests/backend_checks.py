"""Checks shared by the backend tests: fresh inputs, output comparison, source lines, registration, config,
the frontends a test lowers with, and a run of the app."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree
import yaml

import pipeline
from pipeline.core import registry, spec

FRONTEND_OPTIONS = {  # a test's name for a frontend -> the to_backend keywords that select it
    "export": {"frontend": "export"},
    "script": {"frontend": "torchscript", "torchscript_mode": "script"},
    "trace": {"frontend": "torchscript", "torchscript_mode": "trace"},
}


def compile_specs(backend: str, method_compile_spec: dict) -> dict:
    """``{method: CompileSpec instance}``: what the pipeline hands a backend's ``compile``, checked."""
    from pipeline.core.lowering import resolve_specs

    return resolve_specs(pipeline.get_backend(backend), method_compile_spec)[0]


def fresh_like(args: tuple, seed: int) -> tuple:
    """Random inputs of the example inputs' shapes and dtypes, not seen while lowering: floats from a
    normal distribution, integers (token ids) from the example's own range, so they stay valid ids."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(_fresh(a, generator) for a in args)


def _fresh(example: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if example.dtype.is_floating_point or example.dtype.is_complex:
        return torch.randn(example.shape, generator=generator, dtype=example.dtype)
    if example.dtype == torch.bool:
        return torch.randint(0, 2, example.shape, generator=generator).bool()
    low, high = int(example.min()), int(example.max())
    return torch.randint(low, high + 1, example.shape, generator=generator, dtype=example.dtype)


def assert_same_outputs(expected, actual, atol: float, rtol: float) -> None:
    """Same output structure (types included) and values within tolerance."""
    assert type(actual) is type(expected)
    assert pytree.tree_structure(actual) == pytree.tree_structure(expected)
    for e, a in zip(pytree.tree_leaves(expected), pytree.tree_leaves(actual)):
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol)


def line_of(function, text: str) -> int:
    """The line number of the first line of ``function`` that contains ``text``."""
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


def check_against_eager(model, inputs: dict, lowered, atol: float, rtol: float, loaded=None) -> None:
    """Every method on its example inputs and two fresh ones: lowered equals eager within
    tolerance, and a reloaded artifact (if given) equals the lowered module exactly."""
    for method, args in inputs.items():
        for trial_args in (args, fresh_like(args, seed=1), fresh_like(args, seed=2)):
            with torch.no_grad():
                expected = getattr(model, method)(*trial_args)
            actual = getattr(lowered, method)(*trial_args)
            assert_same_outputs(expected, actual, atol=atol, rtol=rtol)
            if loaded is not None:
                assert_same_outputs(actual, getattr(loaded, method)(*trial_args), atol=0, rtol=0)


ROOT = Path(__file__).resolve().parents[1]


def tolerance(backend: str, key: str = "tolerance") -> dict:
    """The tolerance a backend's YAML declares (conf/backend/<backend>.yaml; ``key="quantized_tolerance"``
    for quantized runs), as assert_close keywords."""
    config = yaml.safe_load((ROOT / "conf" / "backend" / f"{backend}.yaml").read_text())
    return {"atol": float(config[key]["atol"]), "rtol": float(config[key]["rtol"])}


def composed_backend(backend: str) -> dict:
    """The ``backend`` node of the composed config for ``backend=<backend>``, as plain values."""
    from omegaconf import OmegaConf

    from pipeline.app.config import compose_config

    return OmegaConf.to_container(compose_config([f"backend={backend}"]).backend, resolve=True)


def check_registration(name: str, backend_cls: type, **declared) -> None:
    """The backend is found by name through its entry point, as its class declares it; registering the
    same name again is refused (the original's contract); the composed config shows every compile-spec
    option at its default and names the class."""
    registry.unregister_backend(name)  # so that the lookup below loads the entry point
    info = pipeline.get_backend(name)
    assert info.backend_cls is backend_cls and info.compile_spec is backend_cls.CompileSpec
    assert name in pipeline.list_backends()
    for key, value in declared.items():
        assert getattr(info, key) == value, key
    with pytest.raises(pipeline.LoweringError, match=f"{name!r} is already registered"):
        pipeline.register_backend(backend_cls)
    config = composed_backend(name)
    assert config["_target_"] == f"pipeline.backends.{name}.{backend_cls.__name__}"
    assert config["compile_spec"]["forward"] == spec.options_of(backend_cls.CompileSpec())


def run_app(tmp_path: Path, *overrides: str, timeout: float = 600) -> dict:
    """``python -m pipeline OVERRIDES`` into ``tmp_path``, as a user runs it; it must succeed. Its report."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text())


class FftInTheMiddle(torch.nn.Module):
    """A Linear and a ReLU around an FFT, which the backends that declare ``supports`` refuse: partitioning
    splits it there."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.linear(x))
        mixed: torch.Tensor = torch.fft.fft(h).real * 2 + h
        return mixed
