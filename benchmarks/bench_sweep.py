"""Sweep launchers: a 4-job sweep on the MLP, basic launcher against joblib with 2 workers.

    python benchmarks/bench_sweep.py [--repeats 2] [--out benchmarks/results/sweep.json]

Each sweep runs as a user runs it (``python -m pipeline -m ...``, one torch
thread per job) and is timed from outside. From the jobs' own reports:

* ``stage_s``: the time jobs spent in the pipeline's stages (capture, lower,
  verify, latency, record, ...), summed over jobs;
* ``in_job_overhead_s``: per job, the job's time beyond its stages (config
  validation, logging, writing outputs, and in the first job of each process
  the torch import); ``steady_in_job_overhead_s`` is the same over the jobs
  that were not the first in their process;
* ``launch_overhead_s``: per job, what the sweep's wall time adds beyond the
  stages, with the stage time divided over the workers: ``(wall - stage_s /
  workers) / jobs``. It includes starting Python and importing torch, once per
  process.

The sweep's speedup is basic wall time over joblib wall time, measured in the
same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import results_path

from pipeline.core.environment import git_state, package_versions
from pipeline.core.files import write_json

SWEEP = [
    "model=mlp",
    "threads=1",
    "backend.compile_spec.forward.constant_folding=true,false",
    "debug_handles=sequential,stable",
]
# Three job sizes: the default MLP, whose jobs take well under a second, and wider, deeper MLPs at
# batch 256, whose jobs take about 5 and 10 seconds, as lowering jobs of real models do. Each process
# pays a fixed ~2.5 s (importing torch, the first export's warm-up), so parallel jobs pay off with length.
MODELS = {
    "mlp-default": [],
    "mlp-1024x4-b256": ["model.hidden=1024", "model.layers=4", "model.example_inputs.forward=[{shape:[256,64]}]"],
    "mlp-1024x8-b256": ["model.hidden=1024", "model.layers=8", "model.example_inputs.forward=[{shape:[256,64]}]"],
}
LAUNCHERS = {"basic": ([], 1), "joblib": (["hydra/launcher=joblib_local", "hydra.launcher.n_jobs=2"], 2)}


def run_sweep(launcher_overrides, model_overrides, work_dir: Path) -> dict:
    sweep_dir = work_dir / "sweep"
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            f"hydra.sweep.dir={sweep_dir}",
            *launcher_overrides,
            *SWEEP,
            *model_overrides,
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweep failed:\n{done.stderr[-2000:]}")
    reports = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/report.json"))]
    stage_s = [sum(v for k, v in r["timings"].items() if "." not in k) for r in reports]
    in_job = [r["job_seconds"] - s for r, s in zip(reports, stage_s)]
    later = [o for r, o in zip(reports, in_job) if r["process"]["jobs_before"]]
    return {
        "wall_s": wall,
        "jobs": len(reports),
        "stage_s": sum(stage_s),
        "in_job_overhead_s": statistics.mean(in_job),
        # jobs after the first in their process: the overhead once torch is imported
        "steady_in_job_overhead_s": statistics.mean(later) if later else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each launcher")
    parser.add_argument("--out", default=results_path("sweep.json"))
    args = parser.parse_args(argv)

    results = {}
    for model, model_overrides in MODELS.items():
        samples = {name: [] for name in LAUNCHERS}
        for _ in range(args.repeats):
            for name, (overrides, _) in LAUNCHERS.items():
                with tempfile.TemporaryDirectory() as tmp:
                    samples[name].append(run_sweep(overrides, model_overrides, Path(tmp)))
        rows = {}
        for name, (_, workers) in LAUNCHERS.items():
            best = min(samples[name], key=lambda s: s["wall_s"])
            rows[name] = {
                **best,
                "workers": workers,
                "launch_overhead_s": (best["wall_s"] - best["stage_s"] / workers) / best["jobs"],
                "all_wall_s": [s["wall_s"] for s in samples[name]],
            }
        results[model] = {
            "overrides": model_overrides,
            "launchers": rows,
            "speedup": rows["basic"]["wall_s"] / rows["joblib"]["wall_s"],
        }

    print(f"4-job sweeps ({' '.join(SWEEP)}), best of {args.repeats}")
    print(
        f"{'model':<17}{'launcher':<9}{'workers':>8}{'wall s':>9}{'stages s':>10}"
        f"{'in-job overhead s/job':>23}{'(steady)':>10}{'launch overhead s/job':>23}"
    )
    for model, result in results.items():
        for name, row in result["launchers"].items():
            steady = row["steady_in_job_overhead_s"]
            print(
                f"{model:<17}{name:<9}{row['workers']:>8}{row['wall_s']:>9.2f}{row['stage_s']:>10.2f}"
                f"{row['in_job_overhead_s']:>23.3f}{'-' if steady is None else f'{steady:.3f}':>10}"
                f"{row['launch_overhead_s']:>23.3f}"
            )
        print(f"{model:<17}joblib speedup over basic: {result['speedup']:.2f}x (target >= 1.6x)")
    write_json(
        Path(args.out),
        {"benchmark": "sweep", "sweep": SWEEP, "models": results, "env": {**package_versions(), "git": git_state()}},
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
