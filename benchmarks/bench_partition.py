"""What partitioning costs per call: the same model lowered whole and with ``partition=True``.

    python benchmarks/bench_partition.py [--rounds 7] [--calls 300] [--out benchmarks/results/partition.json]

Models the reference backend runs whole (so partitioning makes one group and
no fallback) show the fallback's per-call overhead: walking the steps and
calling the group's handle. FNet, which needs partitioning on the reference
backend (its FFTs), is timed against eager instead. Rounds alternate the
variants so that machine noise hits them alike; the table shows medians of
the per-call microseconds.
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
from pipeline.zoo.fnet import FNet


def bench(name: str, model: torch.nn.Module, args: tuple, rounds: int, calls: int) -> dict:
    spec, inputs = {"forward": {}}, {"forward": args}
    variants = {"partitioned": pipeline.to_backend("reference", model, spec, example_inputs=inputs, partition=True)}
    try:
        variants["whole"] = pipeline.to_backend("reference", model, spec, example_inputs=inputs)
    except pipeline.UnsupportedOpError:
        variants["eager"] = model
    times = {label: [] for label in variants}
    with torch.no_grad():
        for fn in variants.values():
            per_call_us(fn, args, 20)  # warm-up
        for _ in range(rounds):
            for label, fn in variants.items():
                times[label].append(per_call_us(fn, args, calls))
    summary = variants["partitioned"].partition["summary"]
    return {"model": name, "summary": summary, **{f"{label}_us": statistics.median(t) for label, t in times.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", default=results_path("partition.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cases = [(name, zoo.build(name), zoo.example_inputs(name)["forward"]) for name in ("mlp", "cnn", "transformer")]
    cases.append(("fnet", FNet().eval(), (torch.randn(2, 8, 16),)))
    rows = [bench(name, model, tuple(inputs), args.rounds, args.calls) for name, model, inputs in cases]
    print(f"Per-call microseconds on the reference backend (median of {args.rounds} rounds of {args.calls} calls)")
    print(f"{'model':<13}{'whole':>10}{'eager':>10}{'partitioned':>13}  split")
    for row in rows:
        whole, eager = (f"{row[key]:.1f}" if key in row else "-" for key in ("whole_us", "eager_us"))
        print(f"{row['model']:<13}{whole:>10}{eager:>10}{row['partitioned_us']:>13.1f}  {row['summary']}")
    write_results(args.out, {"benchmark": "partition", "models": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
