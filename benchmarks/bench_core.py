"""Core overheads: the lowered method's cost per call, and the cost of issuing debug handles.

    python benchmarks/bench_core.py [--calls 5000] [--rounds 7] [--out benchmarks/results/core.json]

1. Per-call latency on PyTorch's BasicModule with a trivial backend (the
   ``test_backend`` of PyTorch's tests: ``forward`` returns ``(x + h, x - h)``):
   eager, the backend's ``execute`` called directly, and the lowered module.
   The rounds interleave the three so that machine noise hits them alike; the
   table shows medians and the lowered module's overhead over ``execute``.
2. Debug-handle issuing per strategy on FX and TorchScript graphs of about 1k,
   10k and 100k nodes, with the time per node (flat per-node time = linear).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch
from results_file import results_path, write_results

import pipeline
from pipeline import zoo
from pipeline.app.latency import per_call_us
from pipeline.core.debug_handles import STRATEGIES, DebugHandleGenerator


class TrivialBackend(pipeline.Backend):
    def compile(self, payload, method_compile_spec):
        return {method: self.execute for method in method_compile_spec}

    @staticmethod
    def execute(inputs):
        x, h = inputs
        return [x + h, x - h]


def bench_call_overhead(calls: int, rounds: int) -> dict:
    if "bench_trivial" not in pipeline.list_backends():
        pipeline.register_backend("bench_trivial", TrivialBackend, preprocess=lambda p, s, g: b"")
    model = zoo.BasicModule()
    x, h = torch.randn(5), torch.randn(5)
    lowered = pipeline.to_backend("bench_trivial", model, {"forward": {}}, example_inputs={"forward": (x, h)})
    candidates = {
        "eager": (model, (x, h)),
        "execute": (lambda a, b: TrivialBackend.execute([a, b]), (x, h)),
        "lowered": (lowered, (x, h)),
    }
    samples = {name: [] for name in candidates}
    with torch.no_grad():
        for fn, args in candidates.values():
            per_call_us(fn, args, calls // 5)  # warm-up
        for _ in range(rounds):
            for name, (fn, args) in candidates.items():
                samples[name].append(per_call_us(fn, args, calls))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "calls_per_round": calls,
        "rounds": rounds,
        "median_us": medians,
        "overhead_over_execute_us": medians["lowered"] - medians["execute"],
        "lowered_over_eager": medians["lowered"] / medians["eager"],
    }


def fx_graph(nodes: int) -> torch.fx.Graph:
    """A chain of adds spread over 10 submodules, with the metadata export records."""
    graph = torch.fx.Graph()
    value = graph.placeholder("x")
    for i in range(nodes):
        value = graph.call_function(torch.ops.aten.add.Tensor, (value, value))
        block = i % 10
        value.meta["nn_module_stack"] = {"L__self__": ("", "M"), f"L__self__b{block}": (f"b{block}", "Block")}
        value.meta["stack_trace"] = f'  File "/src/model.py", line {i % 500 + 1}, in forward\n    y = y + y\n'
    graph.output(value)
    return graph


class Block(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        y = y + x
        y = torch.relu(y)
        y = y - 1
        return y * y


def ts_graph(nodes: int):
    """The inlined graph of a scripted stack of small blocks (8 nodes each, with real source ranges)."""
    scripted = torch.jit.script(torch.nn.Sequential(*[Block() for _ in range(max(1, nodes // 8))]))
    graph = scripted.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def bench_handles(sizes) -> list:
    rows = []
    for kind, build in (("fx", fx_graph), ("torchscript", ts_graph)):
        for size in sizes:
            graph = build(size)
            size = len(list(graph.nodes)) if kind == "fx" else len(list(graph.nodes()))
            for strategy in STRATEGIES:
                gc.collect()  # so one strategy's garbage is not timed in the next
                start = time.perf_counter()
                handles = DebugHandleGenerator(strategy)(graph, "forward")
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "graph": kind,
                        "nodes": size,
                        "strategy": strategy,
                        "seconds": seconds,
                        "us_per_node": seconds / size * 1e6,
                        "handles": len(handles),
                    }
                )
                del handles
    return rows


def bench_shape_check(calls: int, rounds: int) -> dict:
    """The shape contract's check per call (issue 19): a runner that returns at once, called bare and
    behind the check of the zoo MLP's contract, static and with a dynamic batch."""
    from pipeline.core.shape_check import checked_runner
    from pipeline.core.shapes import Dynamic, InputShape, MethodShapes

    def bare(inputs):
        return inputs

    x = torch.randn(2, 64)
    contracts = {
        "static": MethodShapes((InputShape("x", (2, 64)),)),
        "dynamic": MethodShapes((InputShape("x", (Dynamic("batch", 1, 64), 64)),)),
    }
    runners = {"bare": bare, **{k: checked_runner(bare, c, {"x": 0}, "forward", "MLP") for k, c in contracts.items()}}
    samples = {name: [] for name in runners}
    inputs = [x]
    for _ in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            for _ in range(calls):
                runner(inputs)
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "calls_per_round": calls,
        "rounds": rounds,
        "median_us": medians,
        "check_us": {k: medians[k] - medians["bare"] for k in contracts},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--out", default=results_path("core.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    calls = bench_call_overhead(args.calls, args.rounds)
    print(
        "Per-call latency, BasicModule.forward with a trivial backend (median of "
        f"{args.rounds} rounds x {args.calls} calls)"
    )
    print(f"{'path':<10}{'us/call':>10}")
    for name, value in calls["median_us"].items():
        print(f"{name:<10}{value:>10.2f}")
    print(f"lowered - execute: {calls['overhead_over_execute_us']:.2f} us/call (target <= 3)")
    print(f"lowered / eager:   {calls['lowered_over_eager']:.2f}x (PyTorch's own lowered module: ~2.3x)\n")

    shapes = bench_shape_check(args.calls * 10, args.rounds)
    print("Shape-contract check per call, zoo MLP input (a runner that returns at once)")
    for name, value in shapes["check_us"].items():
        print(f"{name:<10}{value:>10.3f} us/call (target <= 1)")
    print()

    handles = bench_handles(args.sizes)
    print("Debug-handle issuing")
    print(f"{'graph':<13}{'nodes':>8}  {'strategy':<11}{'seconds':>9}{'us/node':>9}")
    for row in handles:
        timing = f"{row['seconds']:>9.4f}{row['us_per_node']:>9.2f}"
        print(f"{row['graph']:<13}{row['nodes']:>8}  {row['strategy']:<11}{timing}")

    write_results(
        args.out,
        {
            "benchmark": "core",
            "call_overhead": calls,
            "shape_check": shapes,
            "debug_handles": handles,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
