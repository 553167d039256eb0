"""Backends against eager PyTorch: latency, the lowered module's overhead, and lowering time per stage.

    python benchmarks/bench_backends.py [--backends reference onnxruntime inductor torchscript]
        [--models mlp cnn transformer] [--batches 1 32] [--threads 1] [--calls 200] [--rounds 7]
        [--out benchmarks/results/backends.json]

Per backend, model (the zoo's MLP, CNN and Transformer, seeded) and batch size:

1. Lowering: capture (the frontend; export, or torchscript for the torchscript
   backend) timed on its own, then ``codegen_backend_module(..., timings=...)``,
   which times issuing debug handles, the rest of preprocess, compile and codegen.
2. Latency, under ``torch.no_grad()``: eager, the lowered module, and the
   backend's raw executor called directly on the same inputs --
   ``InferenceSession.run`` with ready numpy feeds (onnxruntime), the AOTI
   runner's ``boxed_run`` (inductor), the loaded TorchScript method
   (torchscript), the compiled instruction list (reference). Rounds interleave
   the three, in rotated order, so that machine noise hits them alike; each
   block starts with untimed calls, because the first calls after another
   runtime ran are slow (its worker threads still spin on the 2 cores, and the
   next runtime's are asleep). The table shows medians;
   ``overhead`` is lowered minus raw, which at long calls is within noise.
3. Wrapper overhead, measured where it can be seen: the MLP at batch 1,
   lowered against raw only, with 10x the calls and 2x the rounds. For
   onnxruntime, the raw run on torch tensors (converting to numpy and back
   each call) is shown too: those conversions are part of any torch caller's cost.

Threads: eager runs with ``torch.set_num_threads(--threads)`` and each backend
with as many threads of its own (onnxruntime ``intra_op_num_threads``,
inductor ``cpp_threads``; torchscript and reference use torch's). With more
than one, onnxruntime's pool is separate from torch's OpenMP pool: its idle
workers spin by default and would take the cores from the eager rounds that
follow (eager then measures up to 10x slower), so the benchmark turns
``allow_spinning`` off. With 1 thread there are no pools at all.

Targets on a 2-core CPU: onnxruntime and inductor never slower than eager and
at least 1.3x faster on two of the three models; overhead at most 3 us per call.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

import pipeline
from pipeline import zoo
from pipeline.core.environment import git_state, package_versions
from pipeline.core.frontends import capture
from pipeline.core.files import write_json
from pipeline.app.latency import per_call_us
from pipeline.core.lowering import codegen_backend_module
from pipeline.core.registry import get_backend

BACKENDS = ("reference", "onnxruntime", "inductor", "torchscript")
MODELS = ("mlp", "cnn", "transformer")
SPEEDUP_TARGET = 1.3
OVERHEAD_TARGET_US = 3.0


def raw_executor(backend: str, lowered: pipeline.LoweredModule, args: tuple) -> Tuple[Callable, tuple]:
    """The backend's own executor for ``forward``, called as directly as it can be, with its inputs."""
    handle = lowered.compiled("forward")
    if backend == "onnxruntime":
        feeds = {name: args[index].numpy() for name, index in handle.inputs}
        run = handle.session.run
        return (lambda: run(None, feeds)), ()
    if backend == "inductor":
        run = handle.model.loader.boxed_run
        return (lambda *tensors: run(list(tensors))), args
    if backend == "torchscript":
        return handle.fn, args
    return (lambda *tensors: handle.run(tensors)), args  # reference: the compiled instruction list


def thread_options(backend: str, threads: int) -> Dict[str, Any]:
    """The compile-spec options that give the backend's own thread pool as many threads as torch has."""
    if backend == "onnxruntime":
        # No spinning: idle onnxruntime workers would spin through the eager rounds that follow.
        return {"intra_op_num_threads": threads, "allow_spinning": False}
    if backend == "inductor":
        return {"cpp_threads": threads}
    return {}  # reference and torchscript run on torch's own threads


def bench_one(backend: str, name: str, batch: int, calls: int, rounds: int, threads: int) -> Dict[str, Any]:
    model = zoo.build(name)
    inputs = zoo.example_inputs(name, batch=batch)
    frontend = "torchscript" if backend == "torchscript" else "export"
    start = time.perf_counter()
    captured = capture(model, ["forward"], frontend, inputs)
    timings = {"capture": time.perf_counter() - start}
    lowered = codegen_backend_module(backend, captured, {"forward": thread_options(backend, threads)}, timings=timings)
    args = inputs["forward"]
    raw, raw_args = raw_executor(backend, lowered, args)
    candidates = {"eager": (model, args), "lowered": (lowered, args), "raw": (raw, raw_args)}
    samples: Dict[str, List[float]] = {key: [] for key in candidates}
    with torch.no_grad():
        expected, actual = model(*args), lowered(*args)
        for fn, fn_args in candidates.values():
            per_call_us(fn, fn_args, max(10, calls // 5))  # warm-up
        order = list(candidates)
        for round_ in range(rounds):
            for key in order[round_ % 3:] + order[:round_ % 3]:  # rotated: no candidate always goes first
                fn, fn_args = candidates[key]
                per_call_us(fn, fn_args, max(5, calls // 10))  # untimed: the runtime switch settles first
                samples[key].append(per_call_us(fn, fn_args, calls))
    median = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "backend": backend, "model": name, "batch": batch, "frontend": frontend,
        "eager_us": median["eager"], "lowered_us": median["lowered"], "raw_us": median["raw"],
        "speedup": median["eager"] / median["lowered"], "overhead_us": median["lowered"] - median["raw"],
        "max_abs_err": float((expected - actual).abs().max()),
        "lowering_s": {stage: timings[stage] for stage in ("capture", "debug_handles", "preprocess", "compile",
                                                           "codegen")},
        "samples_us": samples,
    }


def bench_overhead(backend: str, calls: int, rounds: int, threads: int) -> Dict[str, Any]:
    """Lowered against raw only, on the MLP at batch 1 (the shortest call, so the least noise)."""
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp", batch=1)
    frontend = "torchscript" if backend == "torchscript" else "export"
    lowered = pipeline.to_backend(backend, model, {"forward": thread_options(backend, threads)}, frontend=frontend,
                                  example_inputs=inputs)
    args = inputs["forward"]
    raw, raw_args = raw_executor(backend, lowered, args)
    candidates = {"lowered": (lowered, args), "raw": (raw, raw_args)}
    if backend == "onnxruntime":  # the raw run again, but converting torch tensors to numpy and back per call
        handle = lowered.compiled("forward")
        run, names = handle.session.run, [name for name, _ in handle.inputs]
        candidates["raw_from_tensors"] = (
            lambda *tensors: [torch.from_numpy(o) for o in run(None, {n: t.numpy() for n, t in zip(names, tensors)})],
            args)
    samples: Dict[str, List[float]] = {key: [] for key in candidates}
    with torch.no_grad():
        for fn, fn_args in candidates.values():
            per_call_us(fn, fn_args, calls // 5)
        for _ in range(rounds):
            for key, (fn, fn_args) in candidates.items():
                samples[key].append(per_call_us(fn, fn_args, calls))
    median = {key: statistics.median(values) for key, values in samples.items()}
    return {"backend": backend, "median_us": median, "overhead_us": median["lowered"] - median["raw"],
            "calls_per_round": calls, "rounds": rounds}


def verdicts(rows: List[Dict[str, Any]], overheads: List[Dict[str, Any]]) -> List[str]:
    lines = []
    for backend in ("onnxruntime", "inductor"):
        mine = [r for r in rows if r["backend"] == backend]
        if not mine:
            continue
        slower = [f"{r['model']}@{r['batch']}" for r in mine if r["speedup"] < 1.0]
        fast_models = sorted({r["model"] for r in mine
                              if all(o["speedup"] >= SPEEDUP_TARGET for o in mine if o["model"] == r["model"])})
        lines.append(f"{backend}: never slower than eager: {'yes' if not slower else 'NO (' + ', '.join(slower) + ')'}; "
                     f">= {SPEEDUP_TARGET}x at every batch on {len(fast_models)} of {len({r['model'] for r in mine})} "
                     f"models ({', '.join(fast_models) or 'none'}; target: 2)")
    for row in overheads:
        verdict = "ok" if row["overhead_us"] <= OVERHEAD_TARGET_US else "OVER"
        lines.append(f"wrapper overhead, {row['backend']}: {row['overhead_us']:.2f} us per call "
                     f"(target <= {OVERHEAD_TARGET_US:g}: {verdict})")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for eager (torch.set_num_threads) and for each backend's own pool alike")
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/backends.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch's own, about torch.jit and pytree:
    warnings.filterwarnings("ignore", category=FutureWarning)  # they would interleave with the table
    torch.set_num_threads(args.threads)
    for backend in args.backends:
        get_backend(backend)  # registers it through its entry point

    rows = []
    header = (f"{'backend':<12}{'model':<12}{'batch':>5}{'eager us':>10}{'lowered':>10}{'speedup':>8}"
              f"{'raw us':>10}{'overhead':>9}   {'capture':>7}{'handles':>8}{'preproc':>8}{'compile':>8}{'codegen':>8}")
    print(f"Latency (median of {args.rounds} interleaved rounds x {args.calls} calls, "
          f"torch threads {args.threads}) and lowering time per stage (s)")
    print(header)
    for backend in args.backends:
        for name in args.models:
            for batch in args.batches:
                row = bench_one(backend, name, batch, args.calls, args.rounds, args.threads)
                rows.append(row)
                t = row["lowering_s"]
                print(f"{backend:<12}{name:<12}{batch:>5}{row['eager_us']:>10.1f}{row['lowered_us']:>10.1f}"
                      f"{row['speedup']:>7.2f}x{row['raw_us']:>10.1f}{row['overhead_us']:>9.2f}   "
                      f"{t['capture']:>7.2f}{t['debug_handles']:>8.3f}{t['preprocess']:>8.2f}{t['compile']:>8.3f}"
                      f"{t['codegen']:>8.4f}", flush=True)

    print(f"\nWrapper overhead on the MLP at batch 1 (lowered against raw only; median of {args.rounds * 2} rounds "
          f"x {args.calls * 10} calls)")
    print(f"{'backend':<12}{'lowered us':>11}{'raw us':>9}{'overhead':>10}")
    overheads = []
    for backend in args.backends:
        row = bench_overhead(backend, args.calls * 10, args.rounds * 2, args.threads)
        overheads.append(row)
        m = row["median_us"]
        note = (f"   (raw run converting torch<->numpy per call: {m['raw_from_tensors']:.2f} us)"
                if "raw_from_tensors" in m else "")
        print(f"{backend:<12}{m['lowered']:>11.2f}{m['raw']:>9.2f}{row['overhead_us']:>10.2f}{note}", flush=True)
    print()
    for line in verdicts(rows, overheads):
        print(line)

    write_json(Path(args.out), {
        "benchmark": "backends",
        "rows": rows,
        "overhead": overheads,
        "verdicts": verdicts(rows, overheads),
        "env": {**package_versions(("torch", "onnxruntime", "onnx", "onnxscript", "lowering-pipeline")),
                "git": git_state(), "machine": platform.machine(), "processor": platform.processor(),
                "torch_threads": torch.get_num_threads(),
                "backends": {b: get_backend(b).version for b in args.backends}},
    })
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
