"""partition=true from the command line: the report's partition entry, handles.json, the console line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from backend_checks import line_of

import pipeline
from pipeline.app.config import ConfigError, compose_config, validate
from pipeline.zoo.fnet import FourierBlock

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "pipeline" / "app" / "schemas"


def schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def test_fnet_runs_partitioned_from_the_command_line_and_records_where_each_node_went(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            f"hydra.run.dir={tmp_path}",
            "model=fnet",
            "backend=reference",
            "partition=true",
            "profile=true",
            "latency.enabled=false",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path.parent,
        timeout=300,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    handles = json.loads((tmp_path / "handles.json").read_text())
    profile = json.loads((tmp_path / "profile.json").read_text())
    for document, name in ((report, "report"), (handles, "handles"), (profile, "profile")):
        jsonschema.validate(document, schema(name))
    entry = report["partition"]
    line = line_of(FourierBlock.forward, "torch.fft.fft2")
    assert entry["summary"] == (
        f"{entry['on_backend']} of {entry['nodes']} nodes on reference in 3 subgraphs; "
        f"fallback: fft_fft2/real at fnet.py:{line}"
    )
    assert report["verify"]["passed"]
    console = done.stdout + done.stderr
    assert sum(entry["summary"] in text for text in console.splitlines()) == 1  # one line, and only one
    names = {p["name"] for p in entry["partitions"]} | {"fallback"}
    assert {r["partition"] for r in handles["handles"]} == names
    assert set(profile["by_partition"]) == names and set(report["profile"]["by_partition"]) == names
    loaded = pipeline.load_lowered(tmp_path / report["artifact"]["path"])
    assert loaded.partition == entry


def test_partition_true_with_the_torchscript_frontend_is_refused_before_running():
    cfg = compose_config(["frontend=torchscript", "partition=true"])
    with pytest.raises(ConfigError, match="allowed with partition=true: 'export'"):
        validate(cfg)


def test_min_nodes_below_one_is_refused():
    cfg = compose_config(["partition=true", "min_nodes=0"])
    with pytest.raises(ConfigError, match="min_nodes: 0 is not allowed"):
        validate(cfg)
