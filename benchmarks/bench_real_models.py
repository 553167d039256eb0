"""The real-model matrix of the README: model x backend, a check mark with the max error, or why it fails.

    .venv/bin/python benchmarks/bench_real_models.py [--backends reference,onnxruntime,torchscript,inductor]

Each cell runs the app's stages (`pipeline.app.real_models.lower`, the same list the tests use) into a
scratch directory. Prints a Markdown table and writes benchmarks/results/real_models.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.app.real_models import BACKENDS, REAL_MODELS, lower  # noqa: E402
from pipeline.core.environment import git_state, package_versions  # noqa: E402
from pipeline.core.files import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "real_models.json"


def cell(report: dict) -> str:
    """✓ with the max error and whether the lowering is dynamic (each declared dimension verified at its
    minimum, maximum and a size between) or static; ✗ with the stage and the reason."""
    if report["status"] == "ok":
        dynamic = len(report["verify"].get("shapes") or ()) > 1
        return f"✓ {float(report['verify']['max_abs_err']):.1e} {'dyn ✓' if dynamic else 'static'}"
    reason = " ".join(str(report["error"]).split())
    return f"✗ {report['stage']}: {reason[:90]}{'...' if len(reason) > 90 else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--models", default=",".join(REAL_MODELS))
    args = parser.parse_args()
    backends, models = args.backends.split(","), args.models.split(",")
    results = {}
    for model in models:
        for backend in backends:
            with tempfile.TemporaryDirectory() as scratch:
                start = time.perf_counter()
                report = lower(model, backend, Path(scratch))
                results[f"{model}/{backend}"] = {
                    "status": report["status"],
                    "stage": report["stage"],
                    "error": report["error"],
                    "max_abs_err": (report.get("verify") or {}).get("max_abs_err"),
                    "seconds": round(time.perf_counter() - start, 1),
                    "cell": cell(report),
                }
                print(f"{model:18s} {backend:12s} {results[f'{model}/{backend}']['cell']}", file=sys.stderr)
    lines = ["| model | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    lines += [
        f"| {model} | " + " | ".join(results[f"{model}/{b}"]["cell"] for b in backends) + " |" for model in models
    ]
    print("\n".join(lines))
    write_json(RESULTS, {"results": results, "env": {**package_versions(), "git": git_state()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
