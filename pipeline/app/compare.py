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
from typing import Any, Dict, List

from pipeline.app.summary import job_entry
from pipeline.app.tables import text_table

COLUMNS = ["run", "status", "stage", "backend", "frontend", "model", "max_abs_err", "eager_us", "lowered_us", "speedup",
           "artifact_sha256", "overrides"]


def collect(paths: List[Path]) -> List[Dict[str, Any]]:
    rows = []
    for path in paths:
        reports = [path / "report.json"] if (path / "report.json").exists() else sorted(
            path.glob("*/report.json"), key=lambda p: (not p.parent.name.isdigit(), int(p.parent.name)
                                                       if p.parent.name.isdigit() else 0, p.parent.name))
        if not reports:
            raise FileNotFoundError(f"{path}: no report.json here or in its subdirectories")
        for report_path in reports:
            report = json.loads(report_path.read_text())
            entry = job_entry(report.get("job_num") or 0, report_path.parent, report)
            entry["run"] = str(report_path.parent)
            rows.append(entry)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.dirs)
    except (OSError, json.JSONDecodeError) as error:
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
