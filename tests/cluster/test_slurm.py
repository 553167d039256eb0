"""Sweeps and searches under hydra/launcher=slurm, on a real one-node SLURM cluster (conftest.py starts it).

The sweeps run through the CLI in a subprocess, as tests/app does for the other
launchers, and with its helpers; each job runs as a SLURM job of its own.
"""

import subprocess
import threading
import time

import pytest
from app.test_search import ORT_THREADS, results_of, search
from app.test_sweeps import ROOT, multirun, summary_of
from slurm_helpers import slurm_job_id

pytestmark = pytest.mark.cluster


def test_a_sweep_runs_each_job_as_a_slurm_job_and_summarizes_them(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = multirun(sweep_dir, *slurm_cluster.launcher(), "model=mlp,cnn", "backend=reference,onnxruntime")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = summary_of(sweep_dir)
    assert [(job["status"], job["overrides"][-2:]) for job in summary["jobs"]] == [
        ("ok", ["model=mlp", "backend=reference"]),
        ("ok", ["model=mlp", "backend=onnxruntime"]),
        ("ok", ["model=cnn", "backend=reference"]),
        ("ok", ["model=cnn", "backend=onnxruntime"]),
    ]
    job_ids = [slurm_job_id(sweep_dir / str(num)) for num in range(4)]
    assert len({job_id.split("_")[0] for job_id in job_ids}) == 1  # one job array, a task per job
    for record in slurm_cluster.sacct(job_ids).values():
        assert record == {"state": "COMPLETED", "partition": slurm_cluster.partition, "cpus": "1"}


def test_a_job_cancelled_with_scancel_is_recorded_with_its_stage_and_the_others_finish(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    finished = []
    sweep = threading.Thread(
        daemon=True,
        target=lambda: finished.append(
            multirun(
                sweep_dir,
                *slurm_cluster.launcher(),
                "model=mlp,waits,cnn",
                flags=["--config-dir", str(ROOT / "tests" / "user_backends" / "conf")],
            )
        ),
    )
    sweep.start()
    building = sweep_dir / "1" / "building"  # model=waits writes it as its build starts, then waits 10 minutes
    deadline = time.monotonic() + 300
    while not building.exists() and sweep.is_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert building.exists(), finished[0].stderr[-3000:] if finished else "job 1 did not start in 5 minutes"
    cancelled_id = slurm_job_id(sweep_dir / "1")
    assert cancelled_id in slurm_cluster.running()
    subprocess.run(["scancel", cancelled_id], check=True, timeout=60)
    sweep.join()
    done = finished[0]
    assert done.returncode == 1, done.stderr[-3000:]  # a job failed: the sweep says so
    summary = summary_of(sweep_dir)
    assert [job["status"] for job in summary["jobs"]] == ["ok", "interrupted", "ok"] and summary["failed"] == 1
    cancelled = summary["jobs"][1]
    assert cancelled["stage"] == "build" and cancelled["overrides"][-1] == "model=waits"
    assert cancelled["error"] == (
        f"interrupted by SIGTERM (SLURM job {cancelled_id} ended CANCELLED by 0 without returning its result)"
    )
    states = {
        job_id: record["state"]
        for job_id, record in slurm_cluster.sacct([slurm_job_id(sweep_dir / str(num)) for num in range(3)]).items()
    }
    assert list(states.values()) == ["COMPLETED", "CANCELLED by 0", "COMPLETED"], states


def test_a_search_runs_its_trials_as_slurm_jobs_and_a_second_invocation_resumes_it(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "search"
    space = [
        "backend=choice(reference,onnxruntime)",
        f"{ORT_THREADS}=range(1,4)",  # 4 configurations
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
    ]
    done = search(sweep_dir, *slurm_cluster.launcher(), *space)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitting 2 SLURM jobs" in done.stdout + done.stderr  # one batch of two trials
    first = [t for t in results_of(sweep_dir)["search"]["trials"] if t["job"] is not None]  # the grid's rest waits
    assert [(t["job"], t["feasible"]) for t in first] == [(0, True), (1, True)]
    again = search(sweep_dir, *slurm_cluster.launcher(), *space)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = results_of(sweep_dir)
    search_ = summary["search"]
    assert search_["jobs_run"] == 4 and search_["trials"][:2] == first
    assert [job["num"] for job in summary["jobs"]] == [0, 1, 2, 3]
    assert [(t["job"], t["feasible"]) for t in search_["trials"]] == [(n, True) for n in range(4)]
    assert len({tuple(sorted(t["params"].items())) for t in search_["trials"]}) == 4  # every configuration, once
    assert (sweep_dir / "best.yaml").exists()
    job_ids = [slurm_job_id(sweep_dir / str(num)) for num in range(4)]
    assert len({job_id.split("_")[0] for job_id in job_ids}) == 2  # a job array per invocation
    assert {record["state"] for record in slurm_cluster.sacct(job_ids).values()} == {"COMPLETED"}
