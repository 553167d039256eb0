"""A trial's outcome, from the report.json its job wrote: feasible with objective values, or infeasible and why.

Feasible means the run finished (``status: ok``), verify ran and passed, and
latency was measured. Anything else (a failed stage, a verify failure, a
crashed process, no report at all) is infeasible, and its reason is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.app.records import RecordError, read_record
from pipeline.app.run_files import REPORT


@dataclass
class Outcome:
    feasible: bool
    status: str  # the report's status (ok, failed, crashed, ...), or "missing" with no report
    reason: str | None = None  # why it is infeasible
    values: dict[str, float] = field(default_factory=dict)  # every objective the report has

    def objective_values(self, objectives: list[str]) -> list[float]:
        return [self.values[name] for name in objectives]


def outcome_of(report: dict[str, Any] | None, objectives: list[str], job_error: str | None = None) -> Outcome:
    """``report`` is the job's report.json (None if it left none); ``job_error`` what the launcher said."""
    if report is None:
        return Outcome(False, "missing", job_error or "the job left no report.json: its process died before recording")
    status = str(report.get("status", "failed"))
    verify, latency, artifact = report.get("verify"), report.get("latency"), report.get("artifact") or {}
    values = {
        name: float(value)
        for name, value in (
            ("latency", (latency or {}).get("lowered_us")),
            ("max_abs_err", (verify or {}).get("max_abs_err")),
            ("artifact_bytes", artifact.get("bytes")),
        )
        if isinstance(value, (int, float))
    }
    if status != "ok" and report.get("stage") == "verify":
        return Outcome(False, status, f"verify failed: {report.get('error')}", values)
    if status != "ok":
        return Outcome(False, status, f"{status} in stage {report.get('stage')}: {report.get('error')}", values)
    if not verify:
        return Outcome(
            False,
            status,
            "verify did not run (verify.enabled=false): a search needs it to know the trial is correct",
            values,
        )
    if not verify.get("passed"):
        return Outcome(False, status, f"verify failed: max_abs_err={verify.get('max_abs_err')}", values)
    missing = [name for name in objectives if name not in values]
    if missing:
        return Outcome(False, status, f"the report has no {', '.join(missing)} (latency.enabled=false?)", values)
    return Outcome(True, status, None, values)


def read_report(job_dir: Path) -> dict[str, Any] | None:
    try:
        return read_record(job_dir / REPORT, "report")
    except (RecordError, OSError):
        return None
