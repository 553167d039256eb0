"""Sweep summaries: one entry per job, built from the jobs' own report.json files.

No Hydra here: `sweep_callback` calls `summarize` and `write_summary` when a sweep
ends, and ``python -m pipeline.compare`` reads run directories with `job_entry`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Optional

from pipeline.core.files import write_atomic, write_json
from pipeline.app.records import RecordError, read_record
from pipeline.app.run_files import HYDRA_DIR, REPORT, SUMMARY_CSV, SUMMARY_JSON, SUMMARY_MD, SUMMARY_PNG
from pipeline.app.tables import markdown_table

COLUMNS = ["num", "status", "stage", "backend", "model", "frontend", "max_abs_err", "eager_us", "lowered_us",
           "speedup", "lowering_s", "artifact_sha256", "overrides", "error", "dir"]


def summarize(sweep_dir: Path, total: Optional[int] = None) -> Dict[str, Any]:
    """One entry per job directory (``<num>/report.json``); jobs with no report are failures too."""
    jobs: Dict[int, Dict[str, Any]] = {}
    for report_path in sweep_dir.glob(f"*/{REPORT}"):
        if report_path.parent.name.isdigit():
            num = int(report_path.parent.name)
            try:
                jobs[num] = job_entry(num, report_path.parent, read_record(report_path, "report"))
            except RecordError as error:  # a job that wrote something else is recorded as failed, with why
                jobs[num] = _missing(num, report_path.parent, status="failed", stage="record", error=str(error))
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


def _missing(num: int, job_dir: Path, status: str = "crashed", stage: Optional[str] = None,
             error: str = "the job left no report.json: its process died before recording") -> Dict[str, Any]:
    entry: Dict[str, Any] = {column: None for column in COLUMNS}
    entry.update(num=num, status=status, stage=stage, overrides=_overrides(job_dir), dir=str(job_dir), error=error)
    return entry


def _overrides(job_dir: Path) -> List[str]:
    """The job's overrides as Hydra recorded them, if the file is the list of strings it should be."""
    import yaml

    try:
        overrides = yaml.safe_load((job_dir / HYDRA_DIR / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def write_summary(sweep_dir: Path, summary: Dict[str, Any]) -> None:
    rows = [[job[c] if c != "overrides" else " ".join(job[c]) for c in COLUMNS] for job in summary["jobs"]]
    write_json(sweep_dir / SUMMARY_JSON, summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    write_atomic(sweep_dir / SUMMARY_CSV, buffer.getvalue().encode())
    shown = ["num", "status", "stage", "backend", "max_abs_err", "eager_us", "lowered_us", "speedup", "lowering_s",
             "overrides"]
    table = markdown_table(shown, [[row[COLUMNS.index(c)] for c in shown] for row in rows])
    text = f"# Sweep summary\n\n{len(summary['jobs'])} jobs, {summary['failed']} failed, in `{sweep_dir}`.\n\n{table}\n"
    write_atomic(sweep_dir / SUMMARY_MD, text.encode())
    plot_summary(sweep_dir / SUMMARY_PNG, summary["jobs"])


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
