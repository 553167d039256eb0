"""A search's results, from its study and its jobs' reports: summary.*, search.png, best.yaml, the command.

* ``summary.json`` is a sweep's summary (`pipeline.app.summary`) whose jobs
  also say their ``trial``, ``feasible``, ``reason`` and ``best``, plus a
  ``search`` entry: every trial so far, the best, the Pareto front (with more
  than one objective) and the command that reproduces the best trial.
* ``summary.md`` and ``summary.png`` as for every sweep; ``summary.md`` opens
  with the best trial and the trials table.
* ``search.png``: latency per trial with the best so far, and latency against
  max error with the Pareto front.
* ``best.yaml``: the best trial's composed config (its ``.hydra/config.yaml``,
  resolved). Absent when no trial was feasible.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

import optuna

from pipeline.app.run_files import HYDRA_DIR
from pipeline.app.search.objective import Outcome
from pipeline.app.summary import save_figure, summarize, write_summary
from pipeline.app.tables import markdown_table
from pipeline.core.files import write_atomic

BEST_YAML, SEARCH_PNG = "best.yaml", "search.png"

log = logging.getLogger("pipeline")


def describe(outcome: Outcome, objectives: list[str]) -> str:
    if not outcome.feasible:
        return f"INFEASIBLE: {outcome.reason}"
    return "feasible, " + ", ".join(f"{name} {outcome.values[name]:.6g}" for name in objectives)


def trial_entries(study: optuna.Study, sweep_dir: Path) -> list[dict[str, Any]]:
    """One entry per trial, in order; a trial that repeats an earlier one names it and has no job. A trial
    counts only as its job's report.json says (`verified_outcome`): the journal is not trusted on its own."""
    entries = []
    for trial in study.trials:
        outcome = trial.user_attrs.get("outcome") or {}
        repeat = trial.user_attrs.get("duplicate_of")
        if repeat is not None:
            outcome = (
                study.trials[repeat].user_attrs.get("outcome") or {}
                if 0 <= repeat < len(study.trials) and repeat != trial.number
                else {"reason": f"the journal says it repeats trial {repeat}, which it cannot"}
            )
        elif trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = verified_outcome(sweep_dir, trial, outcome, study.user_attrs.get("objectives") or ["latency"])
        entries.append(
            {
                "trial": trial.number,
                "job": trial.user_attrs.get("job"),
                "duplicate_of": repeat,
                "state": trial.state.name,
                "feasible": bool(outcome.get("feasible")) and trial.state == optuna.trial.TrialState.COMPLETE,
                "status": outcome.get("status"),
                "reason": outcome.get("reason") or (None if trial.state.is_finished() else "not finished"),
                "values": outcome.get("values") or {},
                "params": {name: _plain(value) for name, value in trial.params.items()},
                "overrides": trial.user_attrs.get("overrides", []),
            }
        )
    return entries


def verified_outcome(sweep_dir: Path, trial: Any, outcome: dict[str, Any], objectives: list[str]) -> dict[str, Any]:
    """The journal's outcome of a finished trial if its job directory holds a valid report.json run with the
    trial's overrides that judges it the same; else an infeasible outcome that says the trial is forged."""
    from pipeline.app.search.objective import outcome_of, read_report

    job, overrides = trial.user_attrs.get("job"), trial.user_attrs.get("overrides", [])
    report = read_report(sweep_dir / str(job)) if isinstance(job, int) else None
    judged = outcome_of(report, objectives) if report else None
    if (
        report is None
        or judged is None
        or report.get("overrides") != overrides
        or judged.feasible != bool(outcome.get("feasible"))
        or any(judged.values.get(k) != v for k, v in (outcome.get("values") or {}).items())
    ):
        return {
            "status": "forged",
            "feasible": False,
            "values": {},
            "reason": f"forged: the journal records job {job!r}, but its directory holds no report.json of this "
            "trial's overrides with these results",
        }
    return outcome


def pareto_front(entries: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    """The entries no other entry beats on every objective (all minimized)."""

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        pairs = [(a["values"][o], b["values"][o]) for o in objectives]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    usable = [e for e in entries if all(o in e["values"] for o in objectives)]
    return [e for e in usable if not any(dominates(other, e) for other in usable)]


def search_results(study: optuna.Study, objectives: list[str], sweep_dir: Path) -> dict[str, Any]:
    trials = trial_entries(study, sweep_dir)
    feasible = [t for t in trials if t["feasible"] and t["duplicate_of"] is None]
    best = min(feasible, key=lambda t: (t["values"]["latency"], t["trial"])) if feasible else None
    front = pareto_front(feasible, objectives) if len(objectives) > 1 else ([best] if best else [])
    return {
        "objectives": objectives,
        "trials": trials,
        "jobs_run": sum(t["job"] is not None for t in trials),
        "feasible": len(feasible),
        "best": best,
        "pareto": sorted(t["trial"] for t in front),
        "command": reproduce_command(best["overrides"]) if best else None,
    }


def reproduce_command(overrides: list[str]) -> str:
    """One run of the trial's config; ``hydra.mode=RUN`` because a preset's overrides start a search."""
    return " ".join(["python -m pipeline", "hydra.mode=RUN", *(shlex.quote(o) for o in overrides)])


def write_results(sweep_dir: Path, study: optuna.Study, objectives: list[str]) -> dict[str, Any]:
    results = search_results(study, objectives, sweep_dir)
    summary = summarize(sweep_dir)
    by_job = {t["job"]: t for t in results["trials"] if t["job"] is not None}
    best = results["best"]
    for job in summary["jobs"]:
        trial = by_job.get(job["num"])
        job.update(
            trial=trial and trial["trial"],
            feasible=bool(trial and trial["feasible"]),
            reason=trial["reason"] if trial else "no trial of the study ran this job",
            best=bool(best and trial and trial["trial"] == best["trial"]),
        )
    summary["search"] = results
    write_summary(sweep_dir, summary, preface=markdown(results))
    plot_search(sweep_dir / SEARCH_PNG, results)
    best_yaml = sweep_dir / BEST_YAML
    if best:
        write_atomic(best_yaml, best_config(Path(sweep_dir) / str(best["job"]), best, results["command"]).encode())
        log.info(
            "best: trial %d (job %d), %.6g us; config in %s",
            best["trial"],
            best["job"],
            best["values"]["latency"],
            best_yaml,
        )
        print(f"Reproduce the best trial:\n  {results['command']}")
    elif best_yaml.exists():
        best_yaml.unlink()  # an earlier invocation's best cannot be: the study includes its trials
    return results


def best_config(job_dir: Path, best: dict[str, Any], command: str) -> str:
    """The best trial's composed config as its job recorded it: read as data, nothing resolved (a job directory
    may come from elsewhere, and ``${oc.env:...}`` would copy the environment into the file)."""
    text = (job_dir / HYDRA_DIR / "config.yaml").read_text()
    return (
        f"# The best trial of a search: trial {best['trial']}, job directory {job_dir.name}, "
        f"median lowered latency {best['values']['latency']:.6g} us.\n# Reproduce it: {command}\n"
        f"# or replay the job: python -m pipeline.replay {job_dir}\n{text}"
    )


def markdown(results: dict[str, Any]) -> str:
    best = results["best"]
    head = (
        f"Search: {len(results['trials'])} trials, {results['jobs_run']} jobs run, {results['feasible']} "
        f"feasible; objectives: {', '.join(results['objectives'])}.\n\n"
    )
    if best:
        head += (
            f"**Best: trial {best['trial']}** (job {best['job']}), latency {best['values']['latency']:.6g} us, "
            f"max error {best['values'].get('max_abs_err', float('nan')):.3g}. Reproduce it with\n\n"
            f"    {results['command']}\n\n"
        )
    else:
        head += "**No trial was feasible**: no best.yaml.\n\n"
    rows = [
        [
            t["trial"],
            t["job"] if t["job"] is not None else f"= trial {t['duplicate_of']}",
            "yes" if t["feasible"] else "no",
            t["values"].get("latency"),
            t["values"].get("max_abs_err"),
            _whole(t["values"].get("artifact_bytes")),
            "best" if best and t["trial"] == best["trial"] else ("pareto" if t["trial"] in results["pareto"] else ""),
            " ".join(f"{k}={v}" for k, v in t["params"].items()),
            t["reason"] or "",
        ]
        for t in results["trials"]
    ]
    table = markdown_table(
        ["trial", "job", "feasible", "latency_us", "max_abs_err", "artifact_bytes", "", "params", "reason"], rows
    )
    return f"{head}{table}\n\nThe jobs:\n\n"


def plot_search(path: Path, results: dict[str, Any]) -> None:
    """Left: latency per trial (infeasible ones as red marks) and the best so far. Right: latency against max
    error for the feasible trials, the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in results["trials"] if t["duplicate_of"] is None]
    feasible = [t for t in trials if t["feasible"]]
    figure, (progress, tradeoff) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [t["trial"] for t in feasible]
    progress.scatter(xs, [t["values"]["latency"] for t in feasible], color="tab:blue", label="feasible trial")
    top = max([t["values"]["latency"] for t in feasible] + [1.0])
    infeasible = [t["trial"] for t in trials if not t["feasible"]]
    progress.scatter(
        infeasible, [top] * len(infeasible), color="tab:red", marker="x", label="infeasible (drawn at top)"
    )
    best_so_far, steps = float("inf"), []
    for t in sorted(feasible, key=lambda t: t["trial"]):
        best_so_far = min(best_so_far, t["values"]["latency"])
        steps.append((t["trial"], best_so_far))
    if steps:
        progress.step([s[0] for s in steps], [s[1] for s in steps], where="post", color="black", label="best so far")
    progress.set_xlabel("trial")
    progress.set_ylabel("median lowered latency (us)")
    progress.set_title("Latency per trial")
    progress.legend(fontsize=8)
    points = [t for t in feasible if "max_abs_err" in t["values"]]
    front = sorted(pareto_front(points, ["latency", "max_abs_err"]), key=lambda t: t["values"]["latency"])
    for t in points:
        x, y = t["values"]["latency"], max(t["values"]["max_abs_err"], 1e-12)
        tradeoff.scatter(x, y, color="tab:orange" if t in front else "tab:blue")
        tradeoff.annotate(str(t["trial"]), (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    if front:
        tradeoff.plot(
            [t["values"]["latency"] for t in front],
            [max(t["values"]["max_abs_err"], 1e-12) for t in front],
            color="tab:orange",
            label="Pareto front",
        )
        tradeoff.legend(fontsize=8)
    tradeoff.set_yscale("log")
    tradeoff.set_xlabel("median lowered latency (us)")
    tradeoff.set_ylabel("max abs error against eager (zero drawn at 1e-12)")
    tradeoff.set_title("Speed against accuracy (trial numbers)")
    save_figure(path, figure)


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
