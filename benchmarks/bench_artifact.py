"""What reading an artifact as data costs: save, check (read_artifact) and load, per zoo model.

    python benchmarks/bench_artifact.py [--rounds 30] [--out benchmarks/results/artifact.json]

Each zoo model is lowered on the reference backend (a data-only payload) and
saved; then ``read_artifact`` (bounded zip and JSON reading, every manifest
field, the hashes, code.py against the manifest) and ``load_lowered`` (the
same plus compiling the payload and generating the methods) are timed. The
table shows medians over the rounds, which alternate the two calls so that
machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_file import results_path, write_results

import pipeline
from pipeline import zoo


def bench_model(name: str, directory: Path, rounds: int) -> dict:
    model, inputs = zoo.build(name), zoo.example_inputs(name)
    lowered = pipeline.to_backend("reference", model, {m: {} for m in inputs}, example_inputs=inputs)
    start = time.perf_counter()
    path = pipeline.save_lowered(lowered, directory / f"{name}.lowered")
    save = time.perf_counter() - start
    times = {"read_artifact": [], "load_lowered": []}
    for _ in range(rounds):
        for label, fn in (("read_artifact", pipeline.read_artifact), ("load_lowered", pipeline.load_lowered)):
            gc.collect()
            start = time.perf_counter()
            fn(path)
            times[label].append(time.perf_counter() - start)
    return {
        "model": name,
        "bytes": path.stat().st_size,
        "handles": len(lowered.handle_map.handles),
        "save_ms": save * 1e3,
        **{f"{label}_ms": statistics.median(values) * 1e3 for label, values in times.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["basic", "mlp", "cnn", "transformer"])
    parser.add_argument("--out", default=results_path("artifact.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        rows = [bench_model(name, Path(directory), args.rounds) for name in args.models]
    print(f"Reference-backend artifacts (median of {args.rounds} rounds)")
    print(f"{'model':<13}{'bytes':>9}{'handles':>9}{'save ms':>10}{'read ms':>10}{'load ms':>10}")
    for row in rows:
        print(
            f"{row['model']:<13}{row['bytes']:>9}{row['handles']:>9}{row['save_ms']:>10.2f}"
            f"{row['read_artifact_ms']:>10.2f}{row['load_lowered_ms']:>10.2f}"
        )
    write_results(args.out, {"benchmark": "artifact", "models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
