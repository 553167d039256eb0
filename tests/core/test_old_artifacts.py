"""Artifacts written by earlier versions of the pipeline still load and give the outputs they gave then.

The files are real ones (tests/data/artifacts/README.md says which commit wrote each and how), not files
written today and relabelled: a change that breaks the format for old files fails here.
"""

import json
from pathlib import Path

import pytest
import torch

import pipeline

ARTIFACTS = Path(__file__).resolve().parent.parent / "data" / "artifacts"


def _tensor(record: dict) -> torch.Tensor:
    return torch.tensor(record["values"], dtype=getattr(torch, record["dtype"])).reshape(record["shape"])


@pytest.mark.parametrize("name", ["mlp-v2", "basic-v2", "mlp-v3", "basic-v3"])
def test_an_old_artifact_loads_and_gives_its_recorded_outputs(name):
    manifest = pipeline.read_artifact(ARTIFACTS / f"{name}.lowered")["manifest"]
    assert manifest["format_version"] == int(name[-1])
    lowered = pipeline.load_lowered(ARTIFACTS / f"{name}.lowered")
    record = json.loads((ARTIFACTS / f"{name}.io.json").read_text())
    assert sorted(lowered.methods) == sorted(record)
    for method, calls in record.items():
        outputs = getattr(lowered, method)(*[_tensor(t) for t in calls["inputs"]])
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        assert len(outputs) == len(calls["outputs"])
        for got, expected in zip(outputs, calls["outputs"]):
            assert torch.equal(got, _tensor(expected))
