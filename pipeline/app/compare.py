"""Put runs and sweeps side by side: ``python -m pipeline.compare DIR... [--json]``.

Each DIR is a run directory (``report.json``) or a sweep directory (its jobs'
reports). One row per run: what was lowered, how it ended, its error, latency
and speedup, and the artifact hash (equal hashes: byte-identical lowerings).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.app.records import RecordError, read_record
from pipeline.app.run_files import REPORT
from pipeline.app.summary import job_entry
from pipeline.app.tables import text_table

COLUMNS = [
    "run",
    "status",
    "stage",
    "backend",
    "frontend",
    "model",
    "max_abs_err",
    "eager_us",
    "lowered_us",
    "speedup",
    "artifact_sha256",
    "overrides",
]


def collect(paths: list[Path]) -> list[dict[str, Any]]:
    """One row per run: ``path`` is a run directory, or a sweep directory whose numbered jobs are runs."""
    rows = []
    for path in paths:
        reports = (
            [path / REPORT]
            if (path / REPORT).exists()
            else sorted(
                (p for p in path.glob(f"*/{REPORT}") if p.parent.name.isdigit()), key=lambda p: int(p.parent.name)
            )
        )
        if not reports:
            raise RecordError(f"{path}: no {REPORT} here or in its numbered job directories")
        for report_path in reports:
            report = read_record(report_path, "report")
            entry = job_entry(report.get("job_num") or 0, report_path.parent, report)
            entry["run"] = str(report_path.parent)
            rows.append(entry)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.dirs)
    except RecordError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    table = [[r[c] if c != "overrides" else " ".join(r[c]) for c in COLUMNS] for r in rows]
    for row in table:
        row[COLUMNS.index("artifact_sha256")] = (row[COLUMNS.index("artifact_sha256")] or "-")[:12]
    print(text_table(COLUMNS, table, max_width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
