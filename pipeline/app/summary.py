"""Sweep summaries: one entry per job, built from the jobs' own report.json files.

No Hydra here: `sweep_callback` calls `summarize` and `write_summary` when a sweep
ends, and ``python -m pipeline.compare`` reads run directories with `job_entry`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from pipeline.app.records import RecordError, read_record
from pipeline.app.run_files import HYDRA_DIR, REPORT, SUMMARY_CSV, SUMMARY_JSON, SUMMARY_MD, SUMMARY_PNG
from pipeline.app.tables import format_point, markdown_table
from pipeline.core.files import write_atomic, write_json

COLUMNS = [
    "num",
    "status",
    "stage",
    "backend",
    "model",
    "frontend",
    "max_abs_err",
    "eager_us",
    "lowered_us",
    "speedup",
    "unstable",
    "shapes_passed",
    "latency_per_shape",
    "lowering_s",
    "artifact_sha256",
    "overrides",
    "error",
    "dir",
]


def summarize(sweep_dir: Path, total: int | None = None) -> dict[str, Any]:
    """One entry per job directory (``<num>/report.json``); jobs with no report are failures too."""
    jobs: dict[int, dict[str, Any]] = {}
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


def job_entry(num: int, job_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
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
        "unstable": latency.get("unstable"),
        "shapes_passed": _shapes_passed(verify.get("shapes")),
        "latency_per_shape": _latency_per_shape(latency.get("shapes")),
        "latency_shapes": _lowered_us_by_shape(latency.get("shapes")),
        "artifact_sha256": artifact.get("sha256"),
        "lowering_s": sum(timings.get(k, 0.0) for k in ("capture", "lower")) if timings else None,
        "dir": str(job_dir),
    }


def _shapes_passed(shapes: Any) -> str | None:
    """``3/4``: of the shapes verify checked (the example's and the dynamic bounds'), how many passed."""
    if not isinstance(shapes, list) or len(shapes) < 2:
        return None  # the example's shape alone: max_abs_err says it all
    return f"{sum(bool(shape.get('passed')) for shape in shapes)}/{len(shapes)}"


def _latency_per_shape(shapes: Any) -> str | None:
    """``batch=1: 46 us; batch=32: 73 us``: the lowered latency at each of latency.shapes."""
    if not isinstance(shapes, list) or not shapes:
        return None
    return "; ".join(f"{format_point(shape['point'])}: {shape['lowered_us']:.3g} us" for shape in shapes)


def _lowered_us_by_shape(shapes: Any) -> dict[str, float] | None:
    """``{"batch=1,seq=8": 46.0, ...}``: the lowered latency at each of latency.shapes, by its column label."""
    if not isinstance(shapes, list) or not shapes:
        return None
    return {shape_label(shape["point"]): shape["lowered_us"] for shape in shapes}


def shape_label(point: dict[str, int]) -> str:
    """``batch=1,seq=8``: a shape as a column header; without spaces, a plain-text table's columns stay apart."""
    return ",".join(f"{name}={size}" for name, size in point.items())


def shape_labels(jobs: list[dict[str, Any]]) -> list[str]:
    """Every shape some job timed with latency.shapes, in the order the jobs first name them."""
    labels: dict[str, None] = {}
    for job in jobs:
        labels.update(dict.fromkeys(job.get("latency_shapes") or {}))
    return list(labels)


def _missing(
    num: int,
    job_dir: Path,
    status: str = "crashed",
    stage: str | None = None,
    error: str = "the job left no report.json: its process died before recording",
) -> dict[str, Any]:
    entry: dict[str, Any] = {column: None for column in [*COLUMNS, "latency_shapes"]}
    entry.update(num=num, status=status, stage=stage, overrides=_overrides(job_dir), dir=str(job_dir), error=error)
    return entry


def _overrides(job_dir: Path) -> list[str]:
    """The job's overrides as Hydra recorded them, if the file is the list of strings it should be."""
    import yaml

    try:
        overrides = yaml.safe_load((job_dir / HYDRA_DIR / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def varying_overrides(jobs: list[dict[str, Any]]) -> list[str]:
    """Each job's overrides without those every job shares: what tells the jobs apart."""
    shared = set.intersection(*(set(j["overrides"] or []) for j in jobs)) if jobs else set()
    return [" ".join(o for o in (j["overrides"] or []) if o not in shared) or "(defaults)" for j in jobs]


def write_summary(sweep_dir: Path, summary: dict[str, Any], preface: str = "") -> None:
    """summary.json, .csv, .md and .png; ``preface`` is markdown put before the jobs' table (a search's results)."""
    jobs = summary["jobs"]
    shapes = shape_labels(jobs)
    rows = [
        [job[c] if c != "overrides" else " ".join(job[c]) for c in COLUMNS] + _per_shape_cells(job, shapes)
        for job in jobs
    ]
    write_json(sweep_dir / SUMMARY_JSON, summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS + shapes)
    writer.writerows(rows)
    write_atomic(sweep_dir / SUMMARY_CSV, buffer.getvalue().encode())
    table = markdown_table(*summary_table(jobs))
    text = f"# Sweep summary\n\n{len(jobs)} jobs, {summary['failed']} failed, in `{sweep_dir}`.\n\n{preface}{table}\n"
    write_atomic(sweep_dir / SUMMARY_MD, text.encode())
    plot_summary(sweep_dir / SUMMARY_PNG, jobs)


# The summary table's columns before the lowered latency per shape (one column per shape label, when jobs
# timed latency.shapes) and after it; then the overrides that vary, in full.
TABLE_BEFORE_SHAPES = [
    "num",
    "status",
    "stage",
    "backend",
    "max_abs_err",
    "eager_us",
    "lowered_us",
    "speedup",
    "unstable",
    "shapes_passed",
]
TABLE_AFTER_SHAPES = ["lowering_s"]


def summary_table(jobs: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The summary table's headers and rows, as the console, ``summary.md`` and ``inspect`` show it."""
    shapes = shape_labels(jobs)
    headers = TABLE_BEFORE_SHAPES + shapes + TABLE_AFTER_SHAPES + ["overrides"]
    rows = [
        [job.get(c) for c in TABLE_BEFORE_SHAPES]
        + _per_shape_cells(job, shapes)
        + [job.get(c) for c in TABLE_AFTER_SHAPES]
        + [label]
        for job, label in zip(jobs, varying_overrides(jobs))
    ]
    return headers, rows


def _per_shape_cells(job: dict[str, Any], shapes: list[str]) -> list[float | None]:
    timed = job.get("latency_shapes") or {}
    return [timed.get(shape) for shape in shapes]


def plot_summary(path: Path, jobs: list[dict[str, Any]]) -> None:
    """Left: speedup per job on a log axis, failed jobs in red with their stage, unstable ones hatched.
    Middle: speedup against max error, the trade-off a user picks from. Right, when jobs timed
    latency.shapes: the lowered latency per job, one bar per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{j['num']}: {label}" for j, label in zip(jobs, varying_overrides(jobs))]
    ok = [j["status"] == "ok" and bool(j["speedup"]) for j in jobs]
    speedups = [j["speedup"] for j, good in zip(jobs, ok) if good]
    floor = min(speedups + [1.0]) / 2  # where a failed job's bar ends: visible on a log axis
    shapes = shape_labels(jobs)
    widths = [3, 2, 3] if shapes else [3, 2]
    figure, axes = plt.subplots(
        1, len(widths), figsize=(13 + 6 * bool(shapes), 0.45 * len(jobs) + 2), gridspec_kw={"width_ratios": widths}
    )
    bars, tradeoff = axes[0], axes[1]
    for index, (job, good) in enumerate(zip(jobs, ok)):
        if good:
            bars.barh(
                index, job["speedup"], color="tab:blue", hatch="//" if job.get("unstable") else None, edgecolor="white"
            )
        else:
            bars.barh(index, floor, color="tab:red")
            bars.text(floor, index, f"  {job['status']} in {job['stage'] or '?'}", va="center", fontsize=8)
    bars.set_xscale("log")
    bars.set_yticks(range(len(jobs)), labels, fontsize=8)
    bars.invert_yaxis()
    bars.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    bars.set_xlabel("speedup over eager, log scale (red: failed; hatched: unstable)")
    bars.set_title("Speedup per configuration")
    points = [
        (j["max_abs_err"], j["speedup"], j["num"])
        for j, good in zip(jobs, ok)
        if good and isinstance(j["max_abs_err"], (int, float))
    ]
    for error, speedup, num in points:
        tradeoff.scatter(max(error, 1e-12), speedup, color="tab:blue")
        tradeoff.annotate(str(num), (max(error, 1e-12), speedup), fontsize=8, xytext=(3, 3), textcoords="offset points")
    tradeoff.set_xscale("log")
    tradeoff.set_yscale("log")
    tradeoff.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    tradeoff.set_xlabel("max abs error against eager (zero drawn at 1e-12)")
    tradeoff.set_ylabel("speedup over eager")
    tradeoff.set_title("Speed against accuracy (job numbers)")
    if shapes:
        _plot_latency_per_shape(axes[2], jobs, shapes)
    save_figure(path, figure)


def _plot_latency_per_shape(axis: Any, jobs: list[dict[str, Any]], shapes: list[str]) -> None:
    """Grouped bars: per job (in the speedup plot's order), the lowered latency at each shape it timed."""
    height = 0.8 / len(shapes)
    for k, shape in enumerate(shapes):
        timed = [(index, us) for index, job in enumerate(jobs) if (us := (job.get("latency_shapes") or {}).get(shape))]
        offset = (k - (len(shapes) - 1) / 2) * height
        axis.barh([index + offset for index, _ in timed], [us for _, us in timed], height, label=shape)
    axis.set_xscale("log")
    axis.tick_params(axis="x", which="minor", labelbottom=False)  # a log axis labels 3e2, 4e2, ... on top of each other
    axis.set_yticks(range(len(jobs)), [str(job["num"]) for job in jobs], fontsize=8)
    axis.set_ylim(len(jobs) - 0.5, -0.5)  # the first job on top, as in the speedup plot
    axis.set_xlabel("lowered latency, us, log scale")
    axis.set_ylabel("job")
    axis.set_title("Latency per shape (latency.shapes)")
    axis.legend(fontsize=8)


def save_figure(path: Path, figure: Any) -> None:
    """A matplotlib figure as PNG bytes with no software tag or date, written atomically, then closed."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
