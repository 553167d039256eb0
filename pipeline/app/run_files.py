"""The names of the files a run and a sweep write, in one place, and the clearing of an earlier run's."""

from __future__ import annotations

import json
from pathlib import Path

REPORT = "report.json"  # the record of a run: status, stages, numbers, environment
HANDLES = "handles.json"  # the debug-handle map and the backend's map
PROFILE = "profile.json"  # with profile=true: per-instruction times by source line
OUTPUTS = "outputs.bin"  # the lowered outputs on the example inputs: replay compares them where bytes cannot
LOG = "lower.log"  # the job's log (hydra.job.name is "lower")
HYDRA_DIR = ".hydra"  # Hydra's record of the composed config and overrides
LOCK = ".lock"  # held by the run writing into the directory (`pipeline.app.run_lock`)

RUN_FILES = (REPORT, HANDLES, PROFILE, OUTPUTS, LOG, HYDRA_DIR, LOCK)

SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG = "summary.json", "summary.csv", "summary.md", "summary.png"

DEFAULT_ARTIFACT = "model.lowered"


def clear_earlier_run(out_dir: Path, artifact_name: object | None = None) -> None:
    """Remove what an earlier run left in ``out_dir``: its records, its artifact (the one its report names,
    ``artifact_name`` and the default name) and stale temporary files, so that nothing an earlier run
    wrote sits beside a new report. Every path a run can take calls this before it writes its first
    record, a failed validation included. Hydra's ``.hydra/`` and the log are the new run's own."""
    names = [REPORT, HANDLES, PROFILE, OUTPUTS, DEFAULT_ARTIFACT, *_earlier_artifact(out_dir)]
    if isinstance(artifact_name, str) and _plain_name(artifact_name):
        names.append(artifact_name)
    for name in names:
        path = out_dir / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    for stale in out_dir.glob(".*.tmp"):  # write_atomic's temporary files of a run that was killed
        if stale.is_file():
            stale.unlink()


def _earlier_artifact(out_dir: Path) -> list[str]:
    """The artifact an earlier run in ``out_dir`` recorded, if its report names a plain file name."""
    try:
        entry = json.loads((out_dir / REPORT).read_text()).get("artifact") or {}
        name = entry.get("path")
    except (OSError, ValueError, AttributeError):
        return []
    return [name] if isinstance(name, str) and _plain_name(name) else []


def _plain_name(name: str) -> bool:
    """A file directly in the run directory that is not one of its records (a received report may name any path)."""
    return name == Path(name).name and not name.startswith(".") and name not in RUN_FILES
