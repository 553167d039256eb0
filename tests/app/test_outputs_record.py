"""Every output a backend returns is recorded in outputs.bin and compared by replay: 0-dim and empty
tensors, views, bool, int64, float16 and bfloat16."""

import json

import pytest
import torch
from output_kinds import KINDS, Returns
from test_app import run_cli

from pipeline.app import outputs_record, replay
from pipeline.core.payload import pack_parts

EXAMPLE = "model.example_inputs={forward:[{shape:[2,4]}]}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_records_the_output_and_replay_matches_it(tmp_path, kind):
    run_dir = tmp_path / "run"
    done = run_cli(
        run_dir,
        "model=custom",
        "model._target_=output_kinds.Returns",
        f"+model.kind={kind}",
        EXAMPLE,
        "latency.rounds=1",
        "latency.iterations=2",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "report.json").read_text())["status"] == "ok"

    _, recorded = outputs_record.read(run_dir / "outputs.bin")
    expected = Returns(kind)(torch.zeros(2, 4))
    (output,) = recorded["forward"]
    assert output.dtype == expected.dtype and output.shape == expected.shape

    result = replay.replay(run_dir, trust=True)  # output_kinds is a test module, not a built-in target
    assert result["match"], result["checks"]
    assert result["checks"]["outputs"]["match"]


def test_replay_tells_a_changed_output_apart(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli(
        run_dir,
        "model=custom",
        "model._target_=output_kinds.Returns",
        "+model.kind=scalar",
        EXAMPLE,
        "latency.enabled=false",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    inputs_sha256, recorded = outputs_record.read(run_dir / "outputs.bin")
    other = tmp_path / "other.bin"
    meta = {"inputs_sha256": inputs_sha256, "methods": {"forward": [{"dtype": "float32", "shape": []}]}}
    other.write_bytes(
        pack_parts(outputs_record.KIND, meta, {"forward/0": (recorded["forward"][0] + 1).numpy().tobytes()})
    )
    compared = outputs_record.compare(run_dir / "outputs.bin", other, atol=1e-5, rtol=1e-5)
    assert not compared["match"] and "max abs difference 1" in compared["why"]
