"""Every backend against its peers (eager and ``torch.compile``) and against its own raw runtime.

    python benchmarks/bench_backends.py [--backends reference onnxruntime inductor torchscript executorch openvino]
        [--models mlp cnn transformer hf_bert] [--batches 1 32] [--threads 1] [--calls 200] [--rounds 7]
        [--no-compile] [--out benchmarks/results/backends.json]

1. Peers, per model and batch size, in one set of interleaved rounds: eager
   PyTorch, ``torch.compile(model)`` (default mode: the peer a user would pick
   instead), and for every backend its lowered module and its raw runtime
   (`raw_runtimes`: the runtime called directly on the same tensors). Rounds
   rotate the order, so that machine noise hits every candidate alike, and
   each block starts with untimed calls (the first calls after another runtime
   ran are slow: its worker threads still spin, the next one's are asleep).
   Blocks are sized to about 40 ms, so long calls get fewer iterations. The
   table shows medians under ``torch.no_grad()``, the lowering time per stage,
   and ``torch.compile``'s first call (when it compiles).
2. Wrapper overhead, where it can be seen: the MLP at batch 1, the lowered
   module against the raw runtime only, in many short alternating rounds; the
   overhead is the median of the per-round differences (pairs taken seconds
   apart cancel the machine's drift, which is larger than the effect).

Threads: eager and ``torch.compile`` run with ``torch.set_num_threads
(--threads)`` and each backend with as many of its own (onnxruntime
``intra_op_num_threads`` without spinning, inductor ``cpp_threads``,
executorch and openvino ``threads``; torchscript and reference use torch's).

Goals: on every model the project's best backend is at least as fast as
``torch.compile``; every backend's wrapper overhead is at most 2 us a call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from raw_runtimes import runners
from results_file import results_path, write_results
from workloads import MODELS, workload

import pipeline
from pipeline.app.latency import per_call_us
from pipeline.app.verify import compare_outputs
from pipeline.core import lowering
from pipeline.core.frontends import capture
from pipeline.core.registry import get_backend

BACKENDS = ("reference", "onnxruntime", "inductor", "torchscript", "executorch", "openvino")
OVERHEAD_TARGET_US = 2.0
BLOCK_S = 0.04  # the time one timed block aims at
STAGES = ("capture", "debug_handles", "preprocess", "compile", "codegen")

Candidate = tuple[Callable[..., Any], tuple, dict[str, Any]]


def thread_options(backend: str, threads: int) -> dict[str, Any]:
    """The compile-spec options that give the backend's own thread pool as many threads as torch has."""
    if backend == "onnxruntime":
        # No spinning: idle onnxruntime workers would spin through the rounds of the other candidates.
        return {"intra_op_num_threads": threads, "allow_spinning": False}
    if backend == "inductor":
        return {"cpp_threads": threads}
    if backend in ("executorch", "openvino"):
        return {"threads": threads}
    return {}  # reference and torchscript run on torch's own threads


def lower(backend: str, work, threads: int) -> tuple[pipeline.LoweredModule, dict[str, float]]:
    frontend = "torchscript" if backend == "torchscript" else "export"
    start = time.perf_counter()
    captured = capture(work.model, ["forward"], frontend, work.example_inputs, torchscript_mode=work.torchscript_mode)
    timings = {"capture": time.perf_counter() - start}
    done = lowering.lower(backend, captured, {"forward": thread_options(backend, threads)})
    timings.update(done.seconds.reported())
    return done.module, {stage: timings[stage] for stage in STAGES}


def interleaved(candidates: dict[str, Candidate], rounds: int, max_calls: int) -> dict[str, list[float]]:
    """Per candidate, the mean time per call of each round's block (us); rounds rotate the order."""
    calls = {}
    for key, (fn, args, kwargs) in candidates.items():
        per_call_us(fn, args, 3, kwargs)  # first calls: allocation, lazy initialisation
        estimate = per_call_us(fn, args, 5, kwargs)
        calls[key] = max(3, min(max_calls, int(BLOCK_S * 1e6 / max(estimate, 1e-3))))
    samples: dict[str, list[float]] = {key: [] for key in candidates}
    order = list(candidates)
    for round_ in range(rounds):
        shift = round_ % len(order)
        for key in order[shift:] + order[:shift]:
            fn, args, kwargs = candidates[key]
            per_call_us(fn, args, max(2, calls[key] // 10), kwargs)  # untimed: the runtime switch settles
            samples[key].append(per_call_us(fn, args, calls[key], kwargs))
    return samples


def bench_peers(
    name: str, batch: int, backends: list[str], compile_peer: bool, threads: int, calls: int, rounds: int
) -> dict[str, Any]:
    work = workload(name, batch)
    candidates: dict[str, Candidate] = {"eager": (work.model, work.args, work.kwargs)}
    row: dict[str, Any] = {"model": name, "batch": batch, "backends": {}}
    # Lowered with grad enabled, as the app captures: under no_grad, nn.TransformerEncoderLayer takes its
    # fast path (aten._transformer_encoder_layer_fwd), which exporters have no translation for.
    lowered = {backend: lower(backend, work, threads) for backend in backends}
    with torch.no_grad():
        expected = work.model(*work.args, **work.kwargs)
        if compile_peer:
            torch._dynamo.reset()  # a fresh compilation per model and batch: no shapes marked dynamic by the last
            compiled = torch.compile(work.model)
            start = time.perf_counter()
            output = compiled(*work.args, **work.kwargs)
            row["torch_compile"] = {
                "first_call_s": time.perf_counter() - start,
                "max_abs_err": compare_outputs(expected, output).max_abs,
            }
            candidates["torch.compile"] = (compiled, work.args, work.kwargs)
        for backend, (module, lowering_s) in lowered.items():
            row["backends"][backend] = {
                "lowering_s": lowering_s,
                "max_abs_err": compare_outputs(expected, module(*work.args, **work.kwargs)).max_abs,
            }
            candidates[backend] = (module, work.args, work.kwargs)
            fn, fn_args = runners(backend, module, work.args, work.kwargs)["raw"]
            candidates[f"{backend}:raw"] = (fn, fn_args, {})
        samples = interleaved(candidates, rounds, calls)
    median = {key: statistics.median(values) for key, values in samples.items()}
    row["eager_us"] = median["eager"]
    if compile_peer:
        row["torch_compile"]["us"] = median["torch.compile"]
    for backend, entry in row["backends"].items():
        entry.update(us=median[backend], raw_us=median[f"{backend}:raw"], speedup=median["eager"] / median[backend])
    row["samples_us"] = samples
    return row


def bench_overhead(backend: str, threads: int, rounds: int, calls: int) -> dict[str, Any]:
    """Lowered against raw (and the runtime on ready inputs) on the MLP at batch 1: paired rounds."""
    work = workload("mlp", 1)
    lowered, _ = lower(backend, work, threads)
    candidates: dict[str, Candidate] = {"lowered": (lowered, work.args, {})}
    for kind, (fn, fn_args) in runners(backend, lowered, work.args, {}).items():
        candidates[kind] = (fn, fn_args, {})
    with torch.no_grad():
        samples = interleaved(candidates, rounds, calls)
    differences = [lowered_us - raw_us for lowered_us, raw_us in zip(samples["lowered"], samples["raw"])]
    result = {
        "backend": backend,
        "median_us": {key: statistics.median(v) for key, v in samples.items()},
        "overhead_us": statistics.median(differences),
        "rounds": rounds,
    }
    if "ready" in samples:
        result["conversions_us"] = statistics.median(r - n for r, n in zip(samples["raw"], samples["ready"]))
    return result


def verdicts(rows: list[dict[str, Any]], overheads: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if "torch_compile" not in row or not row["backends"]:
            continue
        best = min(row["backends"], key=lambda b: row["backends"][b]["us"])
        ratio = row["torch_compile"]["us"] / row["backends"][best]["us"]
        lines.append(
            f"{row['model']}@{row['batch']}: best backend {best} is {ratio:.2f}x torch.compile's speed "
            f"({'ok' if ratio >= 1.0 else 'SLOWER'})"
        )
    for row in overheads:
        verdict = "ok" if row["overhead_us"] <= OVERHEAD_TARGET_US else "OVER"
        lines.append(
            f"wrapper overhead, {row['backend']}: {row['overhead_us']:.2f} us per call "
            f"(target <= {OVERHEAD_TARGET_US:g}: {verdict})"
        )
    return lines


def print_peers(row: dict[str, Any]) -> None:
    compiled = row.get("torch_compile")
    peers = f"eager {row['eager_us']:.1f} us" + (
        f", torch.compile {compiled['us']:.1f} us ({row['eager_us'] / compiled['us']:.2f}x, first call "
        f"{compiled['first_call_s']:.1f} s)"
        if compiled
        else ""
    )
    print(f"\n{row['model']} at batch {row['batch']}: {peers}")
    print(
        f"  {'backend':<12}{'us':>10}{'vs eager':>9}{'vs compile':>11}{'raw us':>10}{'overhead':>9}{'max err':>9}"
        f"   {'capture':>7}{'handles':>8}{'preproc':>8}{'compile':>8}{'codegen':>8}"
    )
    for backend, entry in row["backends"].items():
        versus = f"{compiled['us'] / entry['us']:>10.2f}x" if compiled else f"{'-':>11}"
        t = entry["lowering_s"]
        print(
            f"  {backend:<12}{entry['us']:>10.1f}{entry['speedup']:>8.2f}x{versus}{entry['raw_us']:>10.1f}"
            f"{entry['us'] - entry['raw_us']:>9.2f}{entry['max_abs_err']:>9.1e}   {t['capture']:>7.2f}"
            f"{t['debug_handles']:>8.3f}{t['preprocess']:>8.2f}{t['compile']:>8.3f}{t['codegen']:>8.4f}",
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backends", nargs="+", default=None, choices=BACKENDS, help="default: every backend installed here"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for eager, torch.compile and each backend's own pool alike"
    )
    parser.add_argument("--calls", type=int, default=200, help="at most this many calls per timed block")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--no-compile",
        dest="compile_peer",
        action="store_false",
        help="leave torch.compile out (it compiles for each model and batch)",
    )
    parser.add_argument("--out", default=results_path("backends.json"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch's own, about torch.jit and pytree:
    warnings.filterwarnings("ignore", category=FutureWarning)  # they would interleave with the table
    torch.set_num_threads(args.threads)
    installed = [b for b in BACKENDS if get_backend(b).backend_cls().is_available()]
    backends = args.backends or installed
    print(
        f"Latency: median of {args.rounds} interleaved rounds (blocks of ~{BLOCK_S * 1e3:g} ms, at most "
        f"{args.calls} calls), {args.threads} thread(s); lowering time per stage in s. Backends: {backends}"
    )

    rows = []
    for name in args.models:
        for batch in args.batches:
            rows.append(bench_peers(name, batch, backends, args.compile_peer, args.threads, args.calls, args.rounds))
            print_peers(rows[-1])

    overhead_rounds = args.rounds * 6
    print(f"\nWrapper overhead on the MLP at batch 1: lowered minus raw, median of {overhead_rounds} paired rounds")
    print(f"{'backend':<12}{'lowered us':>11}{'raw us':>9}{'overhead':>10}{'numpy in/out':>14}")
    overheads = []
    for backend in backends:
        row = bench_overhead(backend, args.threads, overhead_rounds, args.calls * 2)
        overheads.append(row)
        m = row["median_us"]
        conversions = f"{row['conversions_us']:>14.2f}" if "conversions_us" in row else f"{'-':>14}"
        print(f"{backend:<12}{m['lowered']:>11.2f}{m['raw']:>9.2f}{row['overhead_us']:>10.2f}{conversions}", flush=True)
    print(
        "(numpy in/out: what the raw call spends converting torch tensors to numpy and back; both "
        "the raw call and the lowered module pay it)\n"
    )
    for line in verdicts(rows, overheads):
        print(line)

    write_results(
        args.out,
        {
            "benchmark": "backends",
            "rows": rows,
            "overhead": overheads,
            "verdicts": verdicts(rows, overheads),
            "backends": {b: get_backend(b).version for b in backends},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
