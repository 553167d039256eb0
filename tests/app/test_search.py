"""The search sweeper (hydra/sweeper=search): the space, the objective, and searches end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from pipeline.app import replay
from pipeline.app.search.config import SearchConfigError, check_options
from pipeline.app.search.objective import outcome_of
from pipeline.app.search.results import pareto_front
from pipeline.app.search.space import build_space

ROOT = Path(__file__).resolve().parents[2]
USER = ROOT / "tests" / "user_backends"
QUICK = [
    "model=mlp",
    "latency.iterations=5",
    "latency.rounds=2",
    "latency.warmup=1",
    "verify.random_trials=0",
    "threads=1",
]
ORT_THREADS = "backend.compile_spec.forward.intra_op_num_threads"


def parse(*lines):
    return OverridesParser.create().parse_overrides(list(lines))


def search(sweep_dir, *overrides):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            "hydra/sweeper=search",
            f"hydra.sweep.dir={sweep_dir}",
            *QUICK,
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(USER)},
    )


def results_of(sweep_dir):
    summary = json.loads((sweep_dir / "summary.json").read_text())
    for name in ("summary.png", "search.png"):
        assert (sweep_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep_dir / "summary.md").read_text().startswith("# Sweep summary")
    return summary


# The space, from the override grammar


def test_choice_range_and_interval_become_optuna_distributions():
    has_key = lambda backend, key: True  # noqa: E731
    space = build_space(
        parse(
            "model=mlp",
            "seed=choice(1,2,3)",
            "latency.iterations=range(2,11,4)",
            "verify.atol=tag(log,interval(1e-6,1e-3))",
            "threads=tag(int,interval(1,4))",
        ),
        {},
        has_key,
    )
    assert space.fixed == ["model=mlp"]
    by_name = {p.name: p.distribution for p in space.common}
    assert by_name["seed"] == CategoricalDistribution([1, 2, 3])
    assert by_name["latency.iterations"] == IntDistribution(2, 10, step=4)  # range() excludes its end, as in Hydra
    assert by_name["verify.atol"] == FloatDistribution(1e-6, 1e-3, log=True)
    assert by_name["threads"] == IntDistribution(1, 3)
    assert space.size() is None  # a continuous interval has no grid


def test_a_backend_option_is_searched_only_for_the_backends_that_have_it():
    owners = {
        "onnxruntime": {ORT_THREADS, "backend.compile_spec.forward.quantize"},
        "executorch": {"backend.compile_spec.forward.quantize"},
        "reference": set(),
    }
    space = build_space(
        parse(
            "backend=choice(reference,onnxruntime,executorch)",
            f"{ORT_THREADS}=range(1,3)",
            "backend.compile_spec.forward.quantize=choice(none,int8_dynamic)",
        ),
        {"onnxruntime": parse("backend.tolerance.atol=0")},
        lambda b, key: key in owners[b],
    )
    assert [p.name for p in space.common] == ["backend"]
    assert [p.name for p in space.by_backend["onnxruntime"]] == [
        f"onnxruntime:{ORT_THREADS}",
        "onnxruntime:backend.compile_spec.forward.quantize",
    ]
    assert [p.name for p in space.by_backend["executorch"]] == ["executorch:backend.compile_spec.forward.quantize"]
    assert space.size() == 1 + 2 * 2 + 2
    assert space.overrides({"backend": "reference"}) == ["backend=reference"]
    assert space.overrides({"backend": "onnxruntime", f"onnxruntime:{ORT_THREADS}": 2}) == [
        "backend.tolerance.atol=0",
        "backend=onnxruntime",
        f"{ORT_THREADS}=2",
    ]
    configurations = list(space.configurations())
    assert len(configurations) == 7 and configurations[0] == {"backend": "reference"}


def test_a_backend_option_no_searched_backend_has_is_an_error_naming_them():
    with pytest.raises(SearchConfigError, match=r"none of the searched backends \(reference, onnxruntime\)"):
        build_space(
            parse("backend=choice(reference,onnxruntime)", "backend.compile_spec.forward.thread=range(1,3)"),
            {},
            lambda b, key: False,
        )
    with pytest.raises(SearchConfigError, match="'openvino' is not among the searched backends"):
        build_space(
            parse("backend=choice(reference,onnxruntime)"),
            {"openvino": parse("backend.tolerance.atol=0")},
            lambda b, key: True,
        )


def test_bad_sweeper_options_say_what_is_allowed():
    with pytest.raises(SearchConfigError, match="allowed: tpe, random, grid. Did you mean 'tpe'"):
        check_options(5, None, 1, "tpr", 4, ["latency"])
    with pytest.raises(SearchConfigError, match="'latncy' is not an objective"):
        check_options(5, None, 1, "tpe", 4, ["latncy"])
    with pytest.raises(SearchConfigError, match="n_trials=0: must be an integer >= 1"):
        check_options(0, None, 1, "tpe", 4, ["latency"])


# The objective


def report(**changes):
    base = {
        "status": "ok",
        "verify": {"passed": True, "max_abs_err": 1e-7},
        "latency": {"lowered_us": 12.5},
        "artifact": {"bytes": 1000},
    }
    return {**base, **changes}


def test_a_trial_is_feasible_only_if_it_ran_and_passed_verify():
    objectives = ["latency", "max_abs_err", "artifact_bytes"]
    ok = outcome_of(report(), objectives)
    assert ok.feasible and ok.objective_values(objectives) == [12.5, 1e-7, 1000.0]
    failed_verify = outcome_of(report(verify={"passed": False, "max_abs_err": 0.5}), ["latency"])
    assert not failed_verify.feasible and failed_verify.reason == "verify failed: max_abs_err=0.5"
    failed = outcome_of(report(status="failed", stage="lower", error="no kernel"), ["latency"])
    assert not failed.feasible and failed.reason == "failed in stage lower: no kernel"
    assert "verify did not run" in outcome_of(report(verify=None), ["latency"]).reason
    assert "no latency" in outcome_of(report(latency=None), ["latency"]).reason
    assert not outcome_of(None, ["latency"]).feasible


def test_the_pareto_front_keeps_what_nothing_beats_on_every_objective():
    entries = [
        {"trial": n, "values": {"latency": lat, "max_abs_err": err}}
        for n, (lat, err) in enumerate([(10, 1e-3), (12, 1e-7), (11, 1e-2), (20, 0.0)])
    ]
    assert [e["trial"] for e in pareto_front(entries, ["latency", "max_abs_err"])] == [0, 1, 3]


# End to end


def test_a_search_runs_only_a_chosen_backends_options_writes_best_yaml_that_replays_and_resumes(tmp_path):
    sweep_dir = tmp_path / "search"
    space = ["backend=choice(reference,onnxruntime)", f"{ORT_THREADS}=range(1,4)"]  # 4 configurations
    done = search(sweep_dir, *space, "hydra.sweeper.n_trials=2")
    assert done.returncode == 0, done.stderr[-3000:]
    first = results_of(sweep_dir)["search"]
    assert first["jobs_run"] == 2 and [j for j in os.listdir(sweep_dir) if j.isdigit()] != []
    for trial in first["trials"]:
        onnx_param = f"onnxruntime:{ORT_THREADS}" in trial["params"]
        assert onnx_param == (trial["params"]["backend"] == "onnxruntime")
    # The same command continues the study; the timeout lets one trial (over 1 s) start, not the second.
    again = search(sweep_dir, *space, "hydra.sweeper.n_trials=2", "hydra.sweeper.timeout=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "timeout of 1s reached after 1 trials" in again.stdout + again.stderr
    summary = results_of(sweep_dir)
    search_ = summary["search"]
    assert search_["jobs_run"] == 3 and search_["trials"][: len(first["trials"])] == first["trials"]
    assert sorted(job["num"] for job in summary["jobs"]) == [0, 1, 2]
    assert (
        len({tuple(sorted(t["params"].items())) for t in search_["trials"] if t["job"] is not None}) == 3
    )  # no repeat
    best = search_["best"]
    assert best["feasible"] and best["values"]["latency"] == min(
        t["values"]["latency"] for t in search_["trials"] if t["feasible"]
    )
    assert [job["num"] for job in summary["jobs"] if job["best"]] == [best["job"]]
    best_yaml = (sweep_dir / "best.yaml").read_text()
    assert f"# Reproduce it: {search_['command']}" in best_yaml
    config = yaml.safe_load(best_yaml)
    assert config["backend"]["name"] == best["params"]["backend"]
    assert search_["command"] in again.stdout
    assert replay.replay(sweep_dir / str(best["job"]))["match"]


def test_a_search_under_joblib_runs_a_batch_of_trials_in_parallel_with_a_pareto_front(tmp_path):
    sweep_dir = tmp_path / "search"
    done = search(
        sweep_dir,
        "hydra/launcher=joblib_local",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "backend=choice(reference,onnxruntime)",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.objectives=[latency,max_abs_err]",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    search_ = results_of(sweep_dir)["search"]
    assert [(t["job"], t["params"]["backend"], t["feasible"]) for t in search_["trials"]] == [
        (0, "reference", True),
        (1, "onnxruntime", True),
    ]
    assert "is launching 2 jobs" in done.stdout + done.stderr  # one batch of two
    assert (sweep_dir / "best.yaml").exists()
    front = [t for t in search_["trials"] if t["trial"] in search_["pareto"]]
    assert search_["best"]["trial"] in search_["pareto"]  # the fastest is never dominated
    assert front == [
        t
        for t in search_["trials"]
        if not any(
            all(o["values"][k] <= t["values"][k] for k in ("latency", "max_abs_err")) and o["values"] != t["values"]
            for o in search_["trials"]
        )
    ]


def test_the_presets_choose_the_search_sweeper_and_their_spaces_compose():
    from hydra import compose, initialize_config_module

    with initialize_config_module("pipeline.conf", version_base="1.3"):
        for preset, trials in (("search_backends", 24), ("search_ort", 20)):
            config = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
            assert config.hydra.sweeper._target_ == "hydra_plugins.pipeline_search.SearchSweeper"
            assert config.hydra.sweeper.n_trials == trials and config.hydra.mode.name == "MULTIRUN"
            lines = [f"{k}={v}" for k, v in config.hydra.sweeper.params.items()]
            assert all(o.is_sweep_override() for o in parse(*lines))
            backends = [o for o in parse(*lines) if o.key_or_group == "backend"]
            for backend in list(backends[0].sweep_string_iterator()) if backends else [config.backend.name]:
                composed = compose("config", overrides=[f"experiment={preset}", f"backend={backend}"])
                keys = [line.split("=")[0] for line in lines if line.split("=")[0] != "backend"]
                owned = [key for key in keys if OmegaConf.select(composed, key, default="absent") != "absent"]
                assert owned, f"{preset}: no option of {backend} is searched"


def test_an_infeasible_trial_is_never_best_even_when_faster(tmp_path):
    sweep_dir = tmp_path / "search"
    strict = "hydra.sweeper.backend_params={onnxruntime:{backend.tolerance.atol:0,backend.tolerance.rtol:0}}"
    done = search(sweep_dir, "backend=choice(reference,onnxruntime)", strict, "hydra.sweeper.sampler=grid")
    assert done.returncode == 0, done.stderr[-3000:]
    search_ = results_of(sweep_dir)["search"]
    by_backend = {t["params"]["backend"]: t for t in search_["trials"]}
    onnx = by_backend["onnxruntime"]
    assert not onnx["feasible"] and onnx["reason"].startswith("verify failed") and onnx["state"] == "FAIL"
    assert search_["best"]["params"]["backend"] == "reference"
    assert "INFEASIBLE: verify failed" in done.stdout + done.stderr


def test_a_search_with_no_feasible_trial_exits_non_zero_and_writes_no_best_yaml(tmp_path):
    sweep_dir = tmp_path / "search"
    done = search(
        sweep_dir,
        "backend=onnxruntime",
        "backend.tolerance.atol=0",
        "backend.tolerance.rtol=0",
        "hydra.sweeper.n_trials=3",
    )
    assert done.returncode == 1
    search_ = results_of(sweep_dir)["search"]
    assert search_["best"] is None and search_["feasible"] == 0 and search_["jobs_run"] == 1  # one configuration
    assert not (sweep_dir / "best.yaml").exists()
    assert "No trial was feasible" in (sweep_dir / "summary.md").read_text()


def test_a_trial_whose_process_is_killed_is_failed_and_the_search_goes_on(tmp_path):
    sweep_dir = tmp_path / "search"
    done = search(
        sweep_dir,
        "model=custom",
        "model.example_inputs={forward:[{shape:[1,8]}]}",
        "model._target_=choice(models.KillsItsProcess,torch.nn.ReLU)",
        "hydra.sweeper.sampler=grid",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = results_of(sweep_dir)
    killed, relu = summary["search"]["trials"]
    assert killed["state"] == "FAIL" and killed["status"] == "crashed" and "signal 9 (SIGKILL)" in killed["reason"]
    assert relu["feasible"] and summary["search"]["best"]["trial"] == relu["trial"]
    assert [job["status"] for job in summary["jobs"]] == ["crashed", "ok"]


@pytest.mark.slow
def test_a_search_under_submitit_runs_its_trials_as_separate_jobs(tmp_path):
    sweep_dir = tmp_path / "search"
    done = search(
        sweep_dir,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_jobs=2",
        "backend=choice(reference,onnxruntime)",
        "hydra.sweeper.sampler=grid",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    search_ = results_of(sweep_dir)["search"]
    assert [t["feasible"] for t in search_["trials"]] == [True, True]
    assert replay.replay(sweep_dir / str(search_["best"]["job"]))["match"]


def test_trials_a_stopped_search_left_running_are_told_from_their_reports_or_failed(tmp_path):
    from pipeline.app.search.study import open_study
    from pipeline.app.search.sweeper import Search

    study = open_study(tmp_path, "search", "tpe", 0, 4, ["latency"])
    finished, died = study.ask(), study.ask()
    for trial, job in ((finished, 0), (died, 1)):
        trial.suggest_categorical("backend", ["reference", "onnxruntime"])
        trial.set_user_attr("job", job)
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "report.json").write_text(
        json.dumps({"status": "failed", "stage": "verify", "error": "lowered outputs differ from eager"})
    )
    Search().finish_interrupted(study, tmp_path)  # the next invocation does this first
    reopened = open_study(tmp_path, "search", "tpe", 0, 4, ["latency"])
    first, second = reopened.trials
    assert first.state.name == "FAIL" and first.user_attrs["outcome"]["status"] == "failed"
    assert first.user_attrs["outcome"]["reason"] == "verify failed: lowered outputs differ from eager"
    assert second.state.name == "FAIL"
    assert second.user_attrs["outcome"]["reason"] == "the search stopped before this trial finished"


def test_a_space_that_does_not_compose_stops_the_search_with_hydras_reason(tmp_path):
    done = search(tmp_path / "search", "sede=choice(1,2)")
    assert done.returncode == 1
    assert "the search space gives a config that does not compose: " in done.stderr
    assert "Could not override 'sede'" in done.stderr and "Traceback" not in done.stderr


# A received or edited sweep directory: the journal is data, and a trial counts only as its job's report says


def forge_trial(sweep_dir, latency, job, overrides):
    """A finished, feasible-looking trial appended to the study's journal, as a forger would add one."""
    import optuna

    from pipeline.app.search.study import open_study

    study = open_study(sweep_dir, "search", "tpe", 0, 4, ["latency"])
    study.add_trial(
        optuna.trial.create_trial(
            params={"backend": "reference"},
            distributions={"backend": CategoricalDistribution(["reference"])},
            value=latency,
            user_attrs={
                "job": job,
                "overrides": overrides,
                "outcome": {"status": "ok", "reason": None, "feasible": True, "values": {"latency": latency}},
            },
        )
    )
    return study


def test_a_forged_trial_is_reported_never_crowned_and_its_overrides_never_printed(tmp_path, monkeypatch):
    from pipeline.app.search.results import write_results

    sweep_dir = tmp_path / "search"
    done = search(sweep_dir, "backend=reference", "hydra.sweeper.n_trials=1")
    assert done.returncode == 0, done.stderr[-3000:]
    honest = results_of(sweep_dir)["search"]["best"]
    forge_trial(sweep_dir, 0.001, 7, ["model._target_=os.system"])  # no job directory 7
    study = forge_trial(sweep_dir, 0.002, honest["job"], ["model._target_=os.system"])  # a real job, other overrides
    monkeypatch.setenv("PIPELINE_TEST_SECRET", "hunter2")
    config = sweep_dir / str(honest["job"]) / ".hydra" / "config.yaml"
    config.write_text(config.read_text() + "note: ${oc.env:PIPELINE_TEST_SECRET}\n")

    results = write_results(sweep_dir, study, ["latency"])
    forged = results["trials"][-2:]
    assert all(not t["feasible"] and t["reason"].startswith("forged: ") for t in forged)
    assert results["best"]["trial"] == honest["trial"]
    assert "os.system" not in results["command"] and "os.system" not in (sweep_dir / "best.yaml").read_text()
    best_yaml = (sweep_dir / "best.yaml").read_text()
    assert "${oc.env:PIPELINE_TEST_SECRET}" in best_yaml and "hunter2" not in best_yaml


def test_a_trial_the_journal_says_repeats_one_that_does_not_exist_is_not_feasible(tmp_path):
    import optuna

    from pipeline.app.search.results import trial_entries
    from pipeline.app.search.study import open_study

    study = open_study(tmp_path, "search", "tpe", 0, 4, ["latency"])
    study.add_trial(
        optuna.trial.create_trial(
            params={"backend": "reference"},
            distributions={"backend": CategoricalDistribution(["reference"])},
            value=0.001,
            user_attrs={"duplicate_of": 999},
        )
    )
    (entry,) = trial_entries(study, tmp_path)
    assert not entry["feasible"] and entry["reason"] == "the journal says it repeats trial 999, which it cannot"


def test_a_malformed_journal_entry_stops_the_search_naming_the_file_and_line(tmp_path):
    sweep_dir = tmp_path / "search"
    done = search(sweep_dir, "backend=reference", "hydra.sweeper.n_trials=1")
    assert done.returncode == 0, done.stderr[-3000:]
    journal = sweep_dir / "study.journal"
    lines = journal.read_text().splitlines()
    lines.append(json.dumps({"op_code": 8, "worker_id": "x", "trial_id": 0, "user_attr": {"job": "x"}}))
    journal.write_text("\n".join(lines) + "\n")
    again = search(sweep_dir, "backend=reference", "hydra.sweeper.n_trials=1")
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert f"study.journal, line {len(lines)}: trial attribute 'job' is 'x'" in again.stderr
