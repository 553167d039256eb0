"""A dynamic lowering against static ones at the same shapes, per model and backend, in one run (issue 19).

    python benchmarks/bench_dynamic.py [--models transformer bert]
        [--backends reference onnxruntime openvino executorch inductor]
        [--batches 1 8 32] [--seqs 8 64] [--rounds 7] [--out benchmarks/results/dynamic.json]

Each model is lowered once per backend with its dynamic dimensions and, for each shape, once statically
at that shape:

- the zoo Transformer, a dynamic batch 1..64, at each of ``--batches``;
- HF BERT (a tiny seeded ``BertConfig``, nothing downloaded), ``input_ids`` and ``attention_mask`` sharing a
  dynamic batch 1..32 and sequence 1..64, at each of ``--batches`` by each of ``--seqs``.

At each shape the rounds interleave the two modules, so that the machine's noise hits both alike, and the
table shows the medians and their ratio: the goal is the dynamic module within 10% of the static one
(ratio <= 1.10). For executorch it also shows the memory each program plans (``planned_bytes`` in the
lowering's notes): the dynamic program plans for the maximum shape.

A full run takes about 8 minutes on a 2-core machine (inductor compiles each of its 11 lowerings in about
12 s); ``--models transformer`` or ``--backends ...`` narrows it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from results_file import results_path, write_results

import pipeline
from pipeline import zoo
from pipeline.app.latency import per_call_us
from pipeline.core.shapes import resize

DEFAULT_BACKENDS = ("reference", "onnxruntime", "openvino", "executorch", "inductor")
DEFAULT_MODELS = ("transformer", "bert")

Call = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Workload:
    """A model, its example call, its declaration and how to build a call at a shape ({dimension name: size})."""

    title: str
    build: Callable[[], torch.nn.Module]
    example: Call
    declaration: dict[str, Any]
    at: Callable[[Call, dict[str, int]], Call]


def transformer() -> Workload:
    (x,) = zoo.example_inputs("transformer")["forward"]
    return Workload(
        "zoo Transformer, dynamic batch 1..64",
        lambda: zoo.build("transformer").eval(),
        ((x,), {}),
        {"x": {0: {"name": "batch", "min": 1, "max": 64}}},
        lambda call, shape: ((resize(call[0][0], 0, shape["batch"]),), {}),
    )


def bert() -> Workload:
    import transformers

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        config = transformers.BertConfig(
            vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64,
        )  # fmt: skip
        return transformers.BertModel(config).eval()

    def at(call: Call, shape: dict[str, int]) -> Call:
        (ids,), kwargs = call
        sized = [resize(resize(t, 0, shape["batch"]), 1, shape["seq"]) for t in (ids, kwargs["attention_mask"])]
        return (sized[0],), {"attention_mask": sized[1]}

    ids = torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(0))
    return Workload(
        "HF BERT, dynamic batch 1..32 and sequence 1..64",
        build,
        ((ids,), {"attention_mask": torch.ones_like(ids)}),
        {
            "input_ids": {0: {"name": "batch", "min": 1, "max": 32}, 1: {"name": "seq", "min": 1, "max": 64}},
            "attention_mask": {0: "batch", 1: "seq"},
        },
        at,
    )


WORKLOADS = {"transformer": transformer, "bert": bert}


def lower(backend: str, workload: Workload, call: Call, dynamic: bool) -> pipeline.LoweredModule:
    args, kwargs = call
    return pipeline.to_backend(
        backend,
        workload.build(),
        {"forward": {}},
        example_inputs={"forward": {"args": args, "kwargs": kwargs}},
        dynamic_shapes={"forward": workload.declaration} if dynamic else None,
    )


def planned_bytes(lowered: pipeline.LoweredModule) -> int | None:
    notes = lowered.notes.get("forward", lowered.notes)
    value = notes.get("planned_bytes") if isinstance(notes, dict) else None
    return int(value) if isinstance(value, int) else None


def label(shape: dict[str, int]) -> str:
    return ",".join(f"{name}={size}" for name, size in shape.items())


def bench(model: str, backend: str, shapes: list[dict[str, int]], rounds: int, calls: int) -> list[dict[str, Any]]:
    workload = WORKLOADS[model]()
    dynamic = lower(backend, workload, workload.example, dynamic=True)
    rows = []
    for shape in shapes:
        args, kwargs = workload.at(workload.example, shape)
        static = lower(backend, workload, (args, kwargs), dynamic=False)
        with torch.no_grad():
            for module in (dynamic, static):
                per_call_us(module, args, max(calls // 5, 1), kwargs)  # warm-up
            samples: dict[str, list[float]] = {"dynamic": [], "static": []}
            for _ in range(rounds):
                samples["dynamic"].append(per_call_us(dynamic, args, calls, kwargs))
                samples["static"].append(per_call_us(static, args, calls, kwargs))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        rows.append(
            {
                "model": model,
                "backend": backend,
                "shape": shape,
                "label": label(shape),
                "dynamic_us": medians["dynamic"],
                "static_us": medians["static"],
                "ratio": medians["dynamic"] / medians["static"],
                "planned_bytes_dynamic": planned_bytes(dynamic),
                "planned_bytes_static": planned_bytes(static),
            }
        )
        print(f"  {model} {backend} {label(shape)}: ratio {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def shapes_of(model: str, batches: list[int], seqs: list[int]) -> list[dict[str, int]]:
    if model == "bert":
        return [{"batch": b, "seq": s} for s in seqs for b in batches]
    return [{"batch": b} for b in batches]


def print_table(rows: list[dict[str, Any]], rounds: int) -> None:
    print(f"\nDynamic lowerings against static ones at the same shape (medians of {rounds} rounds)")
    print(
        f"{'model':<13}{'backend':<12}{'shape':<17}{'dynamic us':>12}{'static us':>11}{'ratio':>7}"
        "  planned bytes (dyn / static)"
    )
    for row in rows:
        planned = (
            f"{row['planned_bytes_dynamic']:,} / {row['planned_bytes_static']:,}"
            if row["planned_bytes_dynamic"] is not None
            else ""
        )
        print(
            f"{row['model']:<13}{row['backend']:<12}{row['label']:<17}{row['dynamic_us']:>12.1f}"
            f"{row['static_us']:>11.1f}{row['ratio']:>7.2f}  {planned}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(WORKLOADS), default=list(DEFAULT_MODELS))
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seqs", type=int, nargs="+", default=[8, 64], help="BERT's sequence lengths")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", default=results_path("dynamic.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [
        row
        for model in args.models
        for backend in args.backends
        for row in bench(model, backend, shapes_of(model, args.batches, args.seqs), args.rounds, args.calls)
    ]
    print_table(rows, args.rounds)
    record = {"benchmark": "dynamic", "models": args.models, "rounds": args.rounds, "calls": args.calls}
    write_results(args.out, {**record, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
