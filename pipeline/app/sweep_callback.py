"""Sweeps: progress while jobs run, and a summary of every job when the sweep ends.

`SweepCallback` is a Hydra callback (registered in ``conf/config.yaml``). Under
the joblib and submitit launchers, per-job hooks run in worker processes, so
nothing is collected in memory: every job writes its own ``report.json`` (a
failed job too: the task records failures instead of raising), and
``on_multirun_end`` reads them all from the sweep directory and writes
``summary.json``, ``summary.csv``, ``summary.md`` and ``summary.png``. If any
job failed, the sweep then exits non-zero.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipeline.core.hashing import write_atomic, write_json
from pipeline.app.tables import markdown_table, text_table

log = logging.getLogger("pipeline")

TOTAL_ENV = "PIPELINE_SWEEP_JOBS"  # inherited by worker processes
COLUMNS = ["num", "status", "stage", "backend", "model", "frontend", "max_abs_err", "eager_us", "lowered_us",
           "speedup", "lowering_s", "artifact_sha256", "overrides", "error", "dir"]


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        total = count_jobs(config)
        if total:
            os.environ[TOTAL_ENV] = str(total)
        log.info("sweep of %s jobs into %s", total or "?", config.hydra.sweep.dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_multirun():
            log.info("%s started: %s", _job_label(), " ".join(HydraConfig.get().overrides.task) or "(defaults)")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if not _is_multirun():
            return
        report = job_return.return_value if job_return is not None and _completed(job_return) else None
        if isinstance(report, dict) and report.get("status") == "ok":
            latency = report.get("latency") or {}
            speed = f", speedup {latency['speedup']:.2f}x" if latency else ""
            log.info("%s ok%s", _job_label(), speed)
        elif isinstance(report, dict):
            log.info("%s FAILED in stage %s: %s", _job_label(), report.get("stage"), report.get("error"))
        else:
            log.info("%s FAILED: the job raised", _job_label())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        total = int(os.environ.get(TOTAL_ENV, "0")) or None
        summary = summarize(sweep_dir, total)
        write_summary(sweep_dir, summary)
        print(text_table(["num", "status", "speedup", "max_abs_err", "overrides"],
                         [[j["num"], j["status"], j["speedup"], j["max_abs_err"], " ".join(j["overrides"])]
                          for j in summary["jobs"]]))
        log.info("summary: %s", sweep_dir / "summary.md")
        if summary["failed"]:
            log.error("%d of %d jobs failed; see %s", summary["failed"], len(summary["jobs"]), sweep_dir / "summary.md")
            sys.exit(1)


def count_jobs(config: DictConfig) -> Optional[int]:
    """The number of jobs a basic-sweeper sweep will run (command line over ``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
        sizes: Dict[str, int] = {}
        for override in overrides:
            sizes[override.get_key_element()] = (
                len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1)
    except Exception:  # e.g. glob() sweeps, which need the config repository to expand
        return None
    return math.prod(sizes.values())


def summarize(sweep_dir: Path, total: Optional[int] = None) -> Dict[str, Any]:
    """One entry per job directory (``<num>/report.json``); jobs with no report are failures too."""
    jobs: Dict[int, Dict[str, Any]] = {}
    for report_path in sweep_dir.glob("*/report.json"):
        if report_path.parent.name.isdigit():
            num = int(report_path.parent.name)
            jobs[num] = job_entry(num, report_path.parent, json.loads(report_path.read_text()))
    for child in sweep_dir.iterdir() if sweep_dir.exists() else []:
        if child.is_dir() and child.name.isdigit() and int(child.name) not in jobs:
            jobs[int(child.name)] = _missing(int(child.name), child)
    for num in range(total or 0):
        jobs.setdefault(num, _missing(num, sweep_dir / str(num)))
    ordered = [jobs[n] for n in sorted(jobs)]
    return {"sweep_dir": str(sweep_dir), "jobs": ordered, "failed": sum(j["status"] != "ok" for j in ordered)}


def job_entry(num: int, job_dir: Path, report: Dict[str, Any]) -> Dict[str, Any]:
    verify, latency, artifact = report.get("verify") or {}, report.get("latency") or {}, report.get("artifact") or {}
    timings = report.get("timings") or {}
    return {
        "num": num,
        "status": report.get("status", "failed"),
        "stage": report.get("stage"),
        "error": report.get("error"),
        "backend": report.get("backend"),
        "model": report.get("model"),
        "frontend": report.get("frontend"),
        "overrides": report.get("overrides", []),
        "max_abs_err": verify.get("max_abs_err"),
        "eager_us": latency.get("eager_us"),
        "lowered_us": latency.get("lowered_us"),
        "speedup": latency.get("speedup"),
        "artifact_sha256": artifact.get("sha256"),
        "lowering_s": sum(timings.get(k, 0.0) for k in ("capture", "lower")) if timings else None,
        "dir": str(job_dir),
    }


def _missing(num: int, job_dir: Path) -> Dict[str, Any]:
    entry = {column: None for column in COLUMNS}
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides: List[str] = []
    if overrides_file.exists():
        from omegaconf import OmegaConf

        overrides = list(OmegaConf.load(overrides_file))
    entry.update(num=num, status="failed", stage="crashed", overrides=overrides, dir=str(job_dir),
                 error="the job left no report.json: it crashed or was killed before recording")
    return entry


def write_summary(sweep_dir: Path, summary: Dict[str, Any]) -> None:
    rows = [[job[c] if c != "overrides" else " ".join(job[c]) for c in COLUMNS] for job in summary["jobs"]]
    write_json(sweep_dir / "summary.json", summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    write_atomic(sweep_dir / "summary.csv", buffer.getvalue().encode())
    shown = ["num", "status", "stage", "backend", "max_abs_err", "eager_us", "lowered_us", "speedup", "lowering_s",
             "overrides"]
    table = markdown_table(shown, [[row[COLUMNS.index(c)] for c in shown] for row in rows])
    text = f"# Sweep summary\n\n{len(summary['jobs'])} jobs, {summary['failed']} failed, in `{sweep_dir}`.\n\n{table}\n"
    write_atomic(sweep_dir / "summary.md", text.encode())
    plot_summary(sweep_dir / "summary.png", summary["jobs"])


def plot_summary(path: Path, jobs: List[Dict[str, Any]]) -> None:
    """Speedup over eager per job; failed jobs are marked in red at zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{j['num']}: " + (" ".join(j["overrides"]) or "(defaults)") for j in jobs]
    values = [j["speedup"] if j["status"] == "ok" and j["speedup"] else 0.0 for j in jobs]
    colors = ["tab:blue" if j["status"] == "ok" else "tab:red" for j in jobs]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(jobs) + 1.5))
    axes.barh(range(len(jobs)), values, color=colors)
    axes.set_yticks(range(len(jobs)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    axes.set_xlabel("speedup over eager (red: failed)")
    axes.set_title("Lowered latency per configuration")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    write_atomic(path, buffer.getvalue())


def _is_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_label() -> str:
    total = os.environ.get(TOTAL_ENV, "?")
    return f"[job {HydraConfig.get().job.num + 1}/{total}]"


def _completed(job_return: Any) -> bool:
    from hydra.core.utils import JobStatus

    return job_return.status == JobStatus.COMPLETED
