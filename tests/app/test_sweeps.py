"""Sweeps under the basic, joblib and submitit launchers; replay and compare of recorded runs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from pipeline.app import compare, replay

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "num",
    "overrides",
    "status",
    "stage",
    "error",
    "max_abs_err",
    "eager_us",
    "lowered_us",
    "speedup",
    "artifact_sha256",
    "lowering_s",
    "dir",
}
QUICK = ["latency.iterations=5", "latency.rounds=2", "verify.random_trials=1", "threads=1"]


def multirun(sweep_dir, *overrides, flags=()):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "-m", *flags, f"hydra.sweep.dir={sweep_dir}", *QUICK, *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=sweep_dir.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests" / "user_backends")},
    )


def summary_of(sweep_dir):
    summary = json.loads((sweep_dir / "summary.json").read_text())
    for job in summary["jobs"]:
        assert SUMMARY_KEYS <= set(job)
    with open(sweep_dir / "summary.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(summary["jobs"])
    assert (sweep_dir / "summary.md").read_text().startswith("# Sweep summary")
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return summary


@pytest.mark.parametrize("launcher", ["joblib_local", "submitit_local"])
def test_a_sweep_runs_one_job_per_combination_and_summarizes_them(tmp_path, launcher):
    sweep_dir = tmp_path / "sweep"
    done = multirun(
        sweep_dir, f"hydra/launcher={launcher}", "model=mlp", "backend.compile_spec.forward.constant_folding=true,false"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = summary_of(sweep_dir)
    assert [job["status"] for job in summary["jobs"]] == ["ok", "ok"]
    assert [job["num"] for job in summary["jobs"]] == [0, 1]
    assert [job["overrides"][-1] for job in summary["jobs"]] == [
        "backend.compile_spec.forward.constant_folding=True",
        "backend.compile_spec.forward.constant_folding=False",
    ]
    # constant folding changes the program, so the two artifacts differ
    assert summary["jobs"][0]["artifact_sha256"] != summary["jobs"][1]["artifact_sha256"]
    report = json.loads((sweep_dir / "1" / "report.json").read_text())
    jsonschema.validate(report, json.loads((ROOT / "pipeline/app/schemas/report.schema.json").read_text()))
    jobs_before = [json.loads((sweep_dir / n / "report.json").read_text())["process"]["jobs_before"] for n in "01"]
    assert all(isinstance(n, int) and n >= 0 for n in jobs_before)  # the jobs its worker process ran before it


def test_a_failing_job_does_not_stop_the_others_and_the_sweep_exits_non_zero(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = multirun(
        sweep_dir, "model=mlp,sort,cnn", flags=["--config-dir", str(ROOT / "tests" / "user_backends" / "conf")]
    )
    assert done.returncode == 1
    summary = summary_of(sweep_dir)
    assert [job["status"] for job in summary["jobs"]] == ["ok", "failed", "ok"]
    failed = summary["jobs"][1]
    assert failed["stage"] == "lower" and "aten::sort" in failed["error"]
    assert summary["failed"] == 1
    assert "[job 2/3] - FAILED in stage lower" in done.stderr + done.stdout


def test_the_sweep_shows_progress_per_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = multirun(sweep_dir, "debug_handles=sequential,stable")
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr + done.stdout
    assert "sweep of 2 jobs" in log
    assert "[job 1/2] - started: " in log and "debug_handles=sequential" in log
    assert "[job 2/2] - ok" in log


@pytest.fixture
def recorded_run(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"hydra.run.dir={run_dir}", *QUICK, "model=cnn"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return run_dir


def test_replay_of_a_recorded_run_matches_byte_for_byte(recorded_run):
    result = replay.replay(recorded_run)
    assert result["match"], result
    assert result["checks"]["artifact"]["match"] and result["checks"]["handles"]["match"]
    assert Path(result["replay_dir"]) != recorded_run and (Path(result["replay_dir"]) / "report.json").exists()


def test_replay_of_an_altered_artifact_is_a_mismatch_and_exits_non_zero(recorded_run, capsys):
    artifact = recorded_run / "model.lowered"
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    assert replay.main([str(recorded_run)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out
    result = replay.replay(recorded_run)
    assert result["checks"]["artifact"]["altered_since_recorded"]
    assert result["checks"]["handles"]["match"]


def test_replay_says_which_part_differs_and_the_first_field(recorded_run, capsys):
    handles = recorded_run / "handles.json"
    record = json.loads(handles.read_text())
    record["handles"][0]["source"]["line"] += 1
    handles.write_text(json.dumps(record, sort_keys=True, indent=2) + "\n")
    result = replay.replay(recorded_run)
    assert not result["match"] and result["mode"] == "bytes"
    assert result["checks"]["handles"]["why"].startswith("/handles[0]/source/line: ")


@pytest.mark.parametrize("backend", ["torchscript", pytest.param("inductor", marks=pytest.mark.slow)])
def test_a_backend_that_is_not_byte_reproducible_replays_by_numerics(tmp_path, backend, capsys):
    run_dir = tmp_path / "run"
    frontend = "frontend=torchscript" if backend == "torchscript" else "frontend=export"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"hydra.run.dir={run_dir}", *QUICK, f"backend={backend}", frontend],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert replay.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "mode: numerics" in out and "MATCH" in out
    result = replay.replay(run_dir)
    assert result["checks"]["handles"]["match"] and result["checks"]["outputs"]["match"]


def test_compare_puts_runs_side_by_side(recorded_run, capsys):
    replayed = Path(replay.replay(recorded_run)["replay_dir"])
    assert compare.main([str(recorded_run), str(replayed)]) == 0
    out = capsys.readouterr().out
    assert str(recorded_run) in out and str(replayed) in out
    assert compare.main([str(recorded_run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["status"] == "ok" and rows[0]["backend"] == "reference"


def test_the_same_config_twice_gives_identical_artifact_and_handles(tmp_path):
    shas = []
    for name in ("a", "b"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                f"hydra.run.dir={tmp_path / name}",
                *QUICK,
                "model=transformer",
                "debug_handles=stable",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads((tmp_path / name / "report.json").read_text())
        shas.append((report["artifact"]["sha256"], report["handles"]["sha256"]))
        assert report["reproducible"] == {"artifact": True, "handles": True}
    assert shas[0] == shas[1]


SWEEP_PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("sweep_*.yaml"))


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_every_job_of_a_sweep_preset_is_a_valid_config(preset):
    import itertools

    from hydra import compose, initialize_config_module

    from pipeline.app.config import validate

    with initialize_config_module("pipeline.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # runnable without -m
        params = {key: str(value).split(",") for key, value in cfg.hydra.sweeper.params.items()}
        assert len(params) >= 2
        for values in itertools.product(*params.values()):
            job = compose("config", overrides=[f"experiment={preset}"] + [f"{k}={v}" for k, v in zip(params, values)])
            validate(job)
