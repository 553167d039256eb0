"""Run directories from elsewhere run nothing unasked; bad values and faults leave a true record."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipeline.app import compare, replay
from pipeline.app import inspect as pipeline_inspect
from pipeline.app.config import ConfigError, compose_config, validate
from pipeline.app.faults import Interrupted
from pipeline.app.run import run
from pipeline.core.files import write_atomic

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "model.example_inputs={forward:[{shape:[1,8]}]}"  # model=custom asks for them
USER = ROOT / "tests" / "user_backends"
QUICK = ["latency.iterations=3", "latency.rounds=2", "latency.warmup=1", "verify.random_trials=0", "threads=1"]
ENV = {**os.environ, "PYTHONPATH": str(USER)}


def composed(*overrides):
    return compose_config(overrides)


def lower(run_dir, *overrides, flags=()):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *flags, f"hydra.run.dir={run_dir}", *QUICK, *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=ENV,
    )


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    done = lower(run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def copy_of(run_dir, tmp_path):
    copied = tmp_path / "received"
    shutil.copytree(run_dir, copied)
    return copied


def edit_config(run_dir, edit):
    path = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))


# ---- replay checks every _target_ before anything is imported and called ---------------------------


def test_replay_refuses_a_config_whose_model_target_runs_a_command(recorded_run, tmp_path):
    received = copy_of(recorded_run, tmp_path)
    canary = tmp_path / "canary"
    edit_config(received, lambda c: c["model"].update(_target_="subprocess.run", args=["touch", str(canary)]))
    with pytest.raises(replay.UntrustedConfigError) as refused:
        replay.replay(received)
    assert "model._target_='subprocess.run': not one of the project's own models (pipeline.zoo.*)" in str(refused.value)
    assert "--trust" in str(refused.value)
    assert not canary.exists() and not list(tmp_path.glob("received.replay*"))


def test_replay_refuses_targets_anywhere_else_and_lists_them_all(recorded_run, tmp_path):
    received = copy_of(recorded_run, tmp_path)
    edit_config(
        received,
        lambda c: (
            c["model"].update(width={"_target_": "os.system", "command": "true"}),
            c["backend"].update(_target_="builtins.eval", name="nope"),
        ),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.replay", str(received)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "model.width._target_='os.system': only model._target_ and backend._target_" in done.stderr
    assert "backend._target_='builtins.eval': not the class of an installed backend" in done.stderr


CANARY_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
import torch
class Net(torch.nn.Module):
    def forward(self, x):
        return x
"""


@pytest.mark.parametrize("where", ["beside the record", "on sys.path"])
def test_replay_judges_a_target_from_its_name_and_never_imports_it(recorded_run, tmp_path, where):
    received = copy_of(recorded_run, tmp_path)
    marker = tmp_path / "imported"
    folder = received if where == "beside the record" else tmp_path / "site"
    folder.mkdir(exist_ok=True)
    (folder / "advcanary.py").write_text(CANARY_MODULE.format(marker=str(marker)))
    edit_config(received, lambda c: c["model"].update(_target_="advcanary.Net"))
    env = {**ENV, "PYTHONPATH": str(folder)} if where == "on sys.path" else ENV
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.replay", "."],
        capture_output=True,
        text=True,
        cwd=received,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model._target_='advcanary.Net'" in done.stderr and "--trust" in done.stderr
    assert not marker.exists()


def test_replay_never_imports_an_installed_module_to_judge_it(recorded_run, tmp_path):
    received = copy_of(recorded_run, tmp_path)
    edit_config(received, lambda c: c["model"].update(_target_="this.Net"))  # importing `this` prints the Zen
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.replay", str(received)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 2 and "model._target_='this.Net'" in done.stderr
    assert "Beautiful is better than ugly" not in done.stdout + done.stderr


def test_a_zoo_target_must_be_a_model_the_zoo_defines(recorded_run, tmp_path):
    received = copy_of(recorded_run, tmp_path)
    edit_config(received, lambda c: c["model"].update(_target_="pipeline.zoo.architectures.torch.load"))
    with pytest.raises(replay.UntrustedConfigError, match="pipeline.zoo.architectures.torch.load"):
        replay.replay(received)


def test_replay_resolves_no_interpolation_in_a_received_config(recorded_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_TEST_SECRET", "hunter2")
    received = copy_of(recorded_run, tmp_path)
    edit_config(received, lambda c: c.update(seed="${oc.decode:${oc.env:PIPELINE_TEST_SECRET}}"))
    with pytest.raises(replay.UntrustedConfigError) as refused:
        replay.replay(received)
    assert "seed holds an interpolation" in str(refused.value) and "hunter2" not in str(refused.value)
    assert not list(tmp_path.glob("received.replay*"))


def test_with_trust_replay_runs_a_target_the_check_would_refuse(recorded_run, tmp_path):
    received = copy_of(recorded_run, tmp_path)
    edit_config(
        received,
        lambda c: c.update(model={"_target_": "models.make_identity", "example_inputs": c["model"]["example_inputs"]}),
    )
    sys.path.insert(0, str(USER))
    try:
        with pytest.raises(replay.UntrustedConfigError, match="models.make_identity"):
            replay.replay(received)
        result = replay.replay(received, trust=True)
    finally:
        sys.path.remove(str(USER))
    assert result["status"] == "ok"


# ---- inspect, compare and replay answer a malformed file with one line naming it ------------------

MALFORMED_REPORTS = {
    "not JSON": b"{not json",
    "a list": b"[1, 2, 3]",
    "a string where an object belongs": json.dumps(
        {"status": "ok", "stage": None, "error": None, "verify": "passed"}
    ).encode(),
    "nested deeply": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("kind", sorted(MALFORMED_REPORTS))
def test_every_reader_answers_a_malformed_report_with_one_line_naming_it(recorded_run, tmp_path, kind):
    received = copy_of(recorded_run, tmp_path)
    (received / "report.json").write_bytes(MALFORMED_REPORTS[kind])
    for command in ("inspect", "compare", "replay"):
        done = subprocess.run(
            [sys.executable, "-m", f"pipeline.{command}", str(received)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert done.returncode == 2, (command, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, (command, done.stderr)
        assert str(received / "report.json") in done.stderr, (command, done.stderr)


@pytest.mark.parametrize("text", ["- a\n- yaml list\n", "model: [unclosed\n", "!!python/object:os.system {}\n"])
def test_replay_answers_a_malformed_config_with_one_line_naming_it(recorded_run, tmp_path, text):
    received = copy_of(recorded_run, tmp_path)
    (received / ".hydra" / "config.yaml").write_text(text)
    assert replay.main([str(received)]) == 2


def test_inspect_never_follows_the_artifact_path_out_of_the_run_directory(recorded_run, tmp_path, capsys):
    received = copy_of(recorded_run, tmp_path)
    report = json.loads((received / "report.json").read_text())
    for outside in [str(recorded_run / "model.lowered"), "../run/model.lowered"]:
        report["artifact"]["path"] = outside
        (received / "report.json").write_text(json.dumps(report))
        assert pipeline_inspect.main([str(received)]) == 2
        assert "never followed out of it" in capsys.readouterr().err


def test_compare_names_the_file_it_cannot_read(recorded_run, tmp_path, capsys):
    received = copy_of(recorded_run, tmp_path)
    (received / "report.json").write_text("[]")
    assert compare.main([str(recorded_run), str(received)]) == 2
    assert str(received / "report.json") in capsys.readouterr().err


# ---- meaningless config values are rejected before any work ----------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("latency.iterations=-5", "latency.iterations: must be >= 1, not -5."),
        ("latency.iterations=0", "latency.iterations: must be >= 1, not 0."),
        ("latency.rounds=0", "latency.rounds: must be >= 1, not 0."),
        ("latency.warmup=-1", "latency.warmup: must be >= 0, not -1."),
        ("verify.random_trials=-1", "verify.random_trials: must be >= 0, not -1."),
        ("backend.tolerance.atol=-1e-3", "backend.tolerance.atol: must be >= 0, not -0.001."),
        ("verify.tolerance={atol:1e-3,rtol:-1}", "verify.tolerance.rtol: must be >= 0, not -1.0."),
        ("threads=1000000", "threads: 1000000 is not allowed; allowed: null (torch's default) or 1..256."),
        ("+verfy.enabled=false", "verfy: unknown top-level key; allowed: "),
        ("artifact_name=../x.lowered", "artifact_name: '../x.lowered' is not a plain file name"),
        ("artifact_name=/tmp/x.lowered", "artifact_name: '/tmp/x.lowered' is not a plain file name"),
        ("artifact_name=report.json", "artifact_name: 'report.json' would overwrite the run's own records"),
    ],
)
def test_meaningless_values_are_rejected_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        validate(composed(override))
    assert str(error.value).startswith(message)
    if override.startswith("+verfy"):
        assert "Did you mean 'verify'?" in str(error.value)


def test_a_rejected_value_exits_2_with_a_failed_report_at_stage_config(tmp_path):
    done = lower(tmp_path, "latency.iterations=0")
    assert done.returncode == 2 and "latency.iterations: must be >= 1" in done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["stage"] == "config"


# ---- faults leave a true record ---------------------------------------------------------------------


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_run_records_where_it_stopped_and_exits_128_plus_the_signal(tmp_path, signum, code):
    marker = tmp_path / "building"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            f"hydra.run.dir={tmp_path / 'run'}",
            "model=custom",
            EXAMPLE,
            "model._target_=models.WaitsToBeStopped",
            f"+model.marker={marker}",
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Signalled only once the child is in the stage (the model writes the marker as it is built): a hang
        # guard, as long as every other subprocess's here, for a start that a busy machine makes slow.
        deadline = time.monotonic() + 600
        while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        if not marker.exists():
            process.kill()
            raise AssertionError(f"the run never reached the build stage: {process.communicate()[1][-2000:]}")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:  # the test failed: leave no child behind
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "interrupted" and report["stage"] == "build"
    assert report["signal"] == signal.Signals(signum).name
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_a_machine_out_of_threads_still_runs_every_stage_without_the_heartbeat(tmp_path, monkeypatch, caplog):
    # A busy machine can refuse a new thread ("can't start new thread"); each stage's heartbeat, a log
    # line every 10 s, needs one, and must not be what fails the run.
    def no_thread_to_spare(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread_to_spare)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        report = run(validate(composed(*QUICK)), tmp_path)
    assert report["status"] == "ok", report["error"]
    assert {"register", "build", "capture", "lower", "verify", "latency", "record"} <= set(report["timings"])
    assert "no heartbeat for this stage: RuntimeError: can't start new thread" in caplog.text


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted_fsync(fd):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(Interrupted):
        write_atomic(tmp_path / "model.lowered", b"x" * (4 << 20))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_in_a_used_directory_leaves_no_stale_artifact(tmp_path):
    assert lower(tmp_path).returncode == 0 and (tmp_path / "model.lowered").exists()
    done = lower(tmp_path, "model=sort", flags=["--config-dir", str(USER / "conf")])
    assert done.returncode == 1
    assert json.loads((tmp_path / "report.json").read_text())["stage"] == "lower"
    assert not (tmp_path / "model.lowered").exists() and not (tmp_path / "handles.json").exists()


@pytest.mark.parametrize(
    "invalid",
    [
        ["model=cnn", "model.example_inputs={forward:[{shape:[-1,3,8,8]}]}"],  # fails validation
        ["seeed=3"],  # fails composition, before Hydra runs the app
    ],
    ids=["validation", "composition"],
)
def test_a_config_error_in_a_used_directory_leaves_no_earlier_record_beside_its_report(tmp_path, invalid):
    assert lower(tmp_path, "artifact_name=mine.lowered").returncode == 0
    assert {"mine.lowered", "handles.json", "outputs.bin"} <= {p.name for p in tmp_path.iterdir()}
    done = lower(tmp_path, *invalid)
    assert done.returncode == 2, done.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["stage"] == "config"
    assert not {"mine.lowered", "model.lowered", "handles.json", "outputs.bin"} & {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("launcher", ["joblib_local", pytest.param("basic", marks=pytest.mark.slow)])
def test_a_sweep_job_whose_process_is_killed_is_recorded_as_crashed_and_the_others_run(tmp_path, launcher):
    sweep_dir = tmp_path / "sweep"
    flags = [f"hydra/launcher={launcher}"] if launcher != "basic" else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            *flags,
            f"hydra.sweep.dir={sweep_dir}",
            *QUICK,
            "model=custom",
            EXAMPLE,
            "model._target_=torch.nn.ReLU,models.KillsItsProcess,torch.nn.Tanh",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=ENV,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [job["status"] for job in summary["jobs"]] == ["ok", "crashed", "ok"]
    crashed = summary["jobs"][1]
    assert crashed["stage"] == "build" and "killed by signal 9 (SIGKILL)" in crashed["error"]
    assert "TerminatedWorkerError" not in done.stderr


# ---- one run per directory ----------------------------------------------------------------------


def test_a_second_run_into_a_held_directory_exits_2_naming_the_holder_and_leaves_its_records(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "building"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            f"hydra.run.dir={run_dir}",
            *QUICK,
            "model=custom",
            EXAMPLE,
            "model._target_=models.WaitsToBeStopped",
            f"+model.marker={marker}",
            "+model.seconds=3",
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), first.communicate()[1][-2000:]
    recorded_config = (run_dir / ".hydra" / "config.yaml").read_text()
    second = lower(run_dir, "seed=7")
    assert second.returncode == 2 and f"in use by another run (pid {first.pid})" in second.stderr
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == recorded_config  # the second run wrote nothing
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "ok" and report["seed"] == 0 and report["lock_takeover"] is None


def test_a_lock_left_by_a_run_that_died_is_taken_over_and_the_takeover_recorded(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / ".lock").write_text(f"{dead.pid}\n")  # what a killed holder leaves: the kernel released its flock
    done = lower(run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "report.json").read_text())["lock_takeover"] == {"pid": dead.pid}
