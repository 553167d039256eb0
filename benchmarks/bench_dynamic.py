"""A dynamic lowering against static ones at the same shapes, per backend, in one run (issue 19).

    python benchmarks/bench_dynamic.py [--backends reference onnxruntime openvino executorch]
        [--batches 1 8 32] [--rounds 7] [--out benchmarks/results/dynamic.json]

The zoo Transformer is lowered once with a dynamic batch (1..64) and, for each batch, once statically at
that batch. At each batch the rounds interleave the two modules, so that the machine's noise hits both
alike, and the table shows the medians and their ratio: the goal is the dynamic module within 10% of the
static one (ratio <= 1.10). For executorch it also shows the memory each program plans (``planned_bytes``
in the lowering's notes): the dynamic program plans for the maximum batch.

HF BERT (two sequence lengths) and inductor are left out of the defaults: their lowerings take minutes on a
2-core machine. ``--backends inductor`` adds it (its dynamic sizes start at 2, so use ``--batches 2 8 32``).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from results_file import results_path, write_results

import pipeline
from pipeline import zoo
from pipeline.app.latency import per_call_us
from pipeline.core.shapes import resize

DEFAULT_BACKENDS = ("reference", "onnxruntime", "openvino", "executorch")


def lower(backend: str, x: torch.Tensor, dynamic: bool, low: int) -> pipeline.LoweredModule:
    model = zoo.build("transformer").eval()
    declaration = {"forward": {"x": {0: {"name": "batch", "min": low, "max": 64}}}} if dynamic else None
    return pipeline.to_backend(
        backend, model, {"forward": {}}, example_inputs={"forward": (x,)}, dynamic_shapes=declaration
    )


def planned_bytes(lowered: pipeline.LoweredModule) -> int | None:
    notes = lowered.notes.get("forward", lowered.notes)
    value = notes.get("planned_bytes") if isinstance(notes, dict) else None
    return int(value) if isinstance(value, int) else None


def bench_backend(backend: str, batches: list[int], rounds: int, calls: int) -> list[dict]:
    (example,) = zoo.example_inputs("transformer")["forward"]
    dynamic = lower(backend, example, dynamic=True, low=min(batches))
    rows = []
    for batch in batches:
        x = resize(example, 0, batch)
        static = lower(backend, x, dynamic=False, low=batch)
        with torch.no_grad():
            for module in (dynamic, static):
                per_call_us(module, (x,), max(calls // 5, 1))  # warm-up
            samples: dict[str, list[float]] = {"dynamic": [], "static": []}
            for _ in range(rounds):
                samples["dynamic"].append(per_call_us(dynamic, (x,), calls))
                samples["static"].append(per_call_us(static, (x,), calls))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        rows.append(
            {
                "backend": backend,
                "batch": batch,
                "dynamic_us": medians["dynamic"],
                "static_us": medians["static"],
                "ratio": medians["dynamic"] / medians["static"],
                "planned_bytes_dynamic": planned_bytes(dynamic),
                "planned_bytes_static": planned_bytes(static),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", default=results_path("dynamic.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [row for backend in args.backends for row in bench_backend(backend, args.batches, args.rounds, args.calls)]
    print(f"zoo Transformer, dynamic batch 1..64 against static lowerings (medians of {args.rounds} rounds)")
    print(f"{'backend':<12}{'batch':>6}{'dynamic us':>12}{'static us':>11}{'ratio':>7}  planned bytes (dyn / static)")
    for row in rows:
        planned = (
            f"{row['planned_bytes_dynamic']:,} / {row['planned_bytes_static']:,}"
            if row["planned_bytes_dynamic"] is not None
            else ""
        )
        print(
            f"{row['backend']:<12}{row['batch']:>6}{row['dynamic_us']:>12.1f}{row['static_us']:>11.1f}"
            f"{row['ratio']:>7.2f}  {planned}"
        )
    write_results(args.out, {"benchmark": "dynamic", "rounds": args.rounds, "calls": args.calls, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
