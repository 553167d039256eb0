"""The record stage writes what verify already computed, and the report follows the run's memory.

outputs.bin holds the lowered module's outputs on the example call: verify has them (its first input set
is that call), so record does not run the module again; the report keeps the process's peak RSS after
each stage (`pipeline.app.memory`)."""

import json
from pathlib import Path

import jsonschema
import pytest
import torch

import pipeline
from pipeline.app import outputs_record
from pipeline.app import run as run_module
from pipeline.app.config import compose_config, validate
from pipeline.app.run import run
from pipeline.app.verify import verify

SCHEMAS = Path(__file__).resolve().parents[2] / "pipeline" / "app" / "schemas"


def counted_run(tmp_path, monkeypatch, *overrides):
    """A run of the default model (static: verify checks the example shapes only) in this process, counting
    the calls of the lowered forward."""
    calls = []
    lower = run_module.lower

    def counting_lower(*args, **kwargs):
        lowering = lower(*args, **kwargs)
        forward = lowering.module.forward

        def counted(*call_args, **call_kwargs):
            calls.append(call_args)
            return forward(*call_args, **call_kwargs)

        lowering.module.__dict__["forward"] = counted
        return lowering

    monkeypatch.setattr(run_module, "lower", counting_lower)
    report = run(validate(compose_config(["latency.enabled=false", "model.dynamic_shapes=null", *overrides])), tmp_path)
    assert report["status"] == "ok", report["error"]
    return report, calls


@pytest.mark.parametrize("trials", [0, 2])
def test_record_writes_the_outputs_verify_computed_without_running_the_module_again(tmp_path, monkeypatch, trials):
    report, calls = counted_run(tmp_path, monkeypatch, f"verify.random_trials={trials}")
    assert len(calls) == 1 + trials  # verify's calls, and none more
    _, recorded = outputs_record.read(tmp_path / "outputs.bin")
    lowered = pipeline.load_lowered(tmp_path / report["artifact"]["path"])
    (example,) = calls[0]
    assert torch.equal(recorded["forward"][0], lowered(example))


def test_without_verify_record_runs_the_module_once(tmp_path, monkeypatch):
    report, calls = counted_run(tmp_path, monkeypatch, "verify.enabled=false")
    assert len(calls) == 1 and report["outputs"]["path"] == "outputs.bin"


def test_verify_keeps_a_copy_of_the_example_outputs_that_a_runtime_cannot_overwrite():
    class ReusesItsBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.zeros(3)

        def forward(self, x):
            return self.out.copy_(x * 2)  # the same tensor on every call, as some runtimes hand out

    example, other = ((torch.ones(3),), {}), ((torch.full((3,), 5.0),), {})
    result = verify(ReusesItsBuffer(), ReusesItsBuffer(), {"forward": [example, other]}, 1e-5, 1e-5)
    assert torch.equal(result.example_outputs["forward"], torch.full((3,), 2.0))
    assert "example_outputs" not in result.to_json()


def test_the_report_records_the_peak_rss_after_each_stage_and_its_growth(tmp_path, monkeypatch):
    report, _ = counted_run(tmp_path, monkeypatch)
    jsonschema.validate(report, json.loads((SCHEMAS / "report.schema.json").read_text()))
    memory = report["memory"]
    stages = [name for name in report["timings"] if "." not in name]
    assert list(memory["stages"]) == stages
    peaks = [memory["start_peak_rss_mb"]] + [memory["stages"][name]["peak_rss_mb"] for name in stages]
    assert peaks == sorted(peaks) and peaks[-1] == memory["peak_rss_mb"] > 0
    growth = sum(memory["stages"][name]["growth_mb"] for name in stages)
    assert growth == pytest.approx(memory["peak_rss_mb"] - memory["start_peak_rss_mb"], abs=0.1 * len(stages))
