"""Real-size models, pipeline next to the hand-written path: wall, peak RSS, latency and record ÷ save (issue #24).

    .venv/bin/python benchmarks/bench_real_size.py [--models bert,gpt2,resnet50] [--backends onnxruntime,openvino]
        [--repeats 1] [--quick]

Each cell (model x backend) runs two sides, each in a fresh process, their order alternating between repeats:

* the pipeline: ``python -m pipeline model=... backend=... model.dynamic_shapes=null`` into a scratch directory
  (static, as the hand paths are); its ``report.json`` gives the stage timings, peak RSS and latency;
* the hand path, the few lines a deployment engineer types with the runtime's own API (`hand_lower`), timed the
  same way, with its save timed alone and its latency measured against its own eager in interleaved rounds.

The inductor backend lowers with AOTInductor (a package on disk), so its hand path is
``torch._inductor.aoti_compile_and_package``, not ``torch.compile`` (which saves nothing to compare ``record`` with).
The 1B decoder (``conf/model/hf_llama_1b.yaml``) runs on onnxruntime and openvino only and needs about 20 GB.
Prints a Markdown table with the absolute numbers, the ratios and PASS/FAIL against the issue's goals, and writes
benchmarks/results/real_size.json. ``--quick`` uses tiny configs, to check the script itself in seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_file import results_path, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("onnxruntime", "openvino", "executorch", "torchscript", "inductor")
LARGE_BACKENDS = ("onnxruntime", "openvino")  # the 1B decoder: the backends that store weights past 2 GiB
GOALS = {"wall": 1.15, "rss": 1.3, "latency": 1.0, "record": 2.0}

# model -> (transformers class, config at its default (real) size, config for --quick, input shape, kwargs).
MODELS: dict[str, dict[str, Any]] = {
    "bert": {
        "target": "transformers.BertModel",
        "config": {},  # BertConfig(): BERT-base
        "quick": {
            "vocab_size": 1000,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 64,
        },
        "input": {"shape": [1, 128], "dtype": "int64", "low": 0, "high": 1000},
        "kwargs": {},
    },
    "gpt2": {
        "target": "transformers.GPT2LMHeadModel",
        "config": {},  # GPT2Config(): GPT-2 small
        "quick": {"vocab_size": 1000, "n_embd": 64, "n_layer": 2, "n_head": 2, "n_positions": 64},
        "input": {"shape": [1, 128], "dtype": "int64", "low": 0, "high": 1000},
        "kwargs": {"use_cache": False},
    },
    "resnet50": {
        "target": "transformers.ResNetModel",
        "config": {},  # ResNetConfig(): ResNet-50
        "quick": {"embedding_size": 8, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]},
        "input": {"shape": [1, 3, 224, 224], "dtype": "float32", "low": -1.0, "high": 1.0},
        "quick_input": {"shape": [1, 3, 32, 32], "dtype": "float32", "low": -1.0, "high": 1.0},
        "kwargs": {},
    },
    "llama_1b": {"preset": "hf_llama_1b"},  # conf/model/hf_llama_1b.yaml, as the pipeline has it
}
MODELS["llama_1b"].update(
    {
        "target": "transformers.LlamaForCausalLM",
        "kwargs": {"use_cache": False},
        "quick": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 1000,
        },
    }
)


def model_spec(name: str, quick: bool) -> dict[str, Any]:
    """The model config both sides build: ``_target_``, ``config``, one example input and its kwargs."""
    entry = MODELS[name]
    if "preset" in entry:
        from omegaconf import OmegaConf

        preset = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{entry['preset']}.yaml"))
        assert isinstance(preset, dict)
        config = entry["quick"] if quick else preset["config"]
        arg = preset["example_inputs"]["forward"]["args"][0]
        if quick:
            arg = {**arg, "shape": [1, 16], "high": 1000}
        return {"target": entry["target"], "config": config, "input": arg, "kwargs": entry["kwargs"]}
    config = entry["quick"] if quick else entry["config"]
    arg = entry.get("quick_input", entry["input"]) if quick else entry["input"]
    if quick and arg["dtype"] == "int64":
        arg = {**arg, "shape": [1, 16]}
    return {"target": entry["target"], "config": config, "input": arg, "kwargs": entry["kwargs"]}


# --- the pipeline side -------------------------------------------------------------------------------------------


def pipeline_side(spec: dict[str, Any], backend: str, scratch: Path) -> dict[str, Any]:
    """``python -m pipeline`` on ``spec`` (a model config written into a search path), timed from outside."""
    conf = scratch / "conf" / "model"
    conf.mkdir(parents=True)
    model = {
        "_target_": spec["target"],
        "config": spec["config"],
        "example_inputs": {"forward": {"args": [spec["input"]], "kwargs": spec["kwargs"]}},
    }
    (conf / "bench_real_size.yaml").write_text(json.dumps(model))  # JSON is YAML
    frontend = ["frontend=torchscript", "frontend.mode=trace"] if backend == "torchscript" else ["frontend=export"]
    command = [
        sys.executable,
        "-m",
        "pipeline",
        f"hydra.searchpath=[file://{scratch / 'conf'}]",
        "model=bench_real_size",
        f"backend={backend}",
        *frontend,
        "++model.dynamic_shapes=null",
        f"hydra.run.dir={scratch / 'run'}",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    report_file = scratch / "run" / "report.json"
    if not report_file.exists():
        return {"status": "failed", "error": done.stderr[-2000:], "wall_s": wall}
    report = json.loads(report_file.read_text())
    latency = report.get("latency") or {}
    return {
        "status": report["status"],
        "error": report.get("error"),
        "wall_s": wall,
        "timings": report["timings"],
        "memory": report["memory"],
        "peak_rss_mb": report["memory"]["peak_rss_mb"],
        "save_s": report["timings"].get("record"),
        "speedup": latency.get("speedup"),
        "eager_us": latency.get("eager_us"),
        "lowered_us": latency.get("lowered_us"),
    }


# --- the hand side (run in its own process: `--hand`) ---------------------------------------------------------------


def build(spec: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """The model with seeded random weights, wrapped to return its first output (as one writes for export)."""
    import importlib

    import torch

    module, cls = spec["target"].rsplit(".", 1)
    model_class = getattr(importlib.import_module(module), cls)
    torch.manual_seed(0)
    inner = model_class(model_class.config_class(**spec["config"])).eval()
    kwargs = spec["kwargs"]

    class FirstOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x, **kwargs)[0]

    arg = spec["input"]
    shape, dtype = arg["shape"], getattr(torch, arg["dtype"])
    if dtype.is_floating_point:
        x = torch.rand(shape, dtype=dtype) * (arg["high"] - arg["low"]) + arg["low"]
    else:
        x = torch.randint(arg["low"], arg["high"], shape, dtype=dtype)
    return FirstOutput().eval(), (x,)


def hand_lower(backend: str, model: Any, args: tuple[Any, ...], out: Path) -> tuple[Any, float]:
    """The hand-written lowering: (a callable on ``args``, the seconds its save took)."""
    import torch

    if backend == "onnxruntime":
        import onnxruntime

        program = torch.onnx.export(model, args, dynamo=True)
        start = time.perf_counter()
        program.save(str(out / "model.onnx"), external_data=True)
        save = time.perf_counter() - start
        options = onnxruntime.SessionOptions()
        # its threads spin after each run and starve the interleaved eager calls on a small machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x.numpy()})), save
    if backend == "openvino":
        import openvino

        converted = openvino.convert_model(model, example_input=args)
        start = time.perf_counter()
        openvino.save_model(converted, str(out / "model.xml"))
        save = time.perf_counter() - start
        compiled = openvino.Core().compile_model(converted, "CPU")
        return (lambda x: compiled([x.numpy()])), save
    if backend == "executorch":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime

        exported = torch.export.export(model, args)
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
        start = time.perf_counter()
        (out / "model.pte").write_bytes(program.buffer)
        save = time.perf_counter() - start
        method = Runtime.get().load_program(out / "model.pte").load_method("forward")
        return (lambda x: method.execute([x])), save
    if backend == "torchscript":
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(model, args))
        start = time.perf_counter()
        torch.jit.save(frozen, str(out / "model.pt"))
        save = time.perf_counter() - start
        return frozen, save
    if backend == "inductor":
        exported = torch.export.export(model, args)
        start = time.perf_counter()
        path = torch._inductor.aoti_compile_and_package(exported, package_path=str(out / "model.pt2"))
        save = time.perf_counter() - start  # compile and package are one call: the whole call is its "save"
        loaded = torch._inductor.aoti_load_package(path)
        return loaded, save
    raise SystemExit(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def interleaved_speedup(eager: Any, lowered: Any, x: Any, rounds: int = 5, iterations: int = 20) -> dict[str, float]:
    """eager ÷ lowered, the median over rounds that each time both sides back to back (as the app's latency)."""
    import torch

    def median_us(fn: Any) -> float:
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) * 1e6)
        return statistics.median(times)

    with torch.no_grad():
        for _ in range(3):
            eager(x), lowered(x)
        pairs = [(median_us(eager), median_us(lowered)) for _ in range(rounds)]
    return {
        "speedup": statistics.median(e / lo for e, lo in pairs),
        "eager_us": statistics.median(e for e, _ in pairs),
        "lowered_us": statistics.median(lo for _, lo in pairs),
    }


def hand_child(spec: dict[str, Any], backend: str, out: Path) -> dict[str, Any]:
    """One hand-path run in this process: lower, save, latency; its peak RSS from the kernel."""
    import torch

    torch.set_grad_enabled(False)
    model, args = build(spec)
    start = time.perf_counter()
    lowered, save = hand_lower(backend, model, args, out)
    lower_s = time.perf_counter() - start
    latency = interleaved_speedup(model, lowered, args[0])
    return {
        "status": "ok",
        "lower_s": lower_s,
        "save_s": save,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        **latency,
    }


def hand_side(spec: dict[str, Any], backend: str, scratch: Path) -> dict[str, Any]:
    """`hand_child` in a fresh process, its wall timed from outside as the pipeline's is."""
    command = [sys.executable, __file__, "--hand", json.dumps({"spec": spec, "backend": backend, "out": str(scratch)})]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"status": "failed", "error": done.stderr[-2000:], "wall_s": wall}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall}


# --- the parent: cells, ratios, table ----------------------------------------------------------------------------


def run_cell(model: str, backend: str, repeats: int, quick: bool) -> dict[str, Any]:
    spec = model_spec(model, quick)
    runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], "hand": []}
    for repeat in range(repeats):
        order = ("pipeline", "hand") if repeat % 2 == 0 else ("hand", "pipeline")
        for side in order:
            with tempfile.TemporaryDirectory(prefix=f"real_size_{side}_") as scratch:
                run = (pipeline_side if side == "pipeline" else hand_side)(spec, backend, Path(scratch))
            runs[side].append(run)
            print(f"  {model} {backend} {side} #{repeat}: {run['status']} {run['wall_s']:.1f} s", file=sys.stderr)
    return {"runs": runs, **summarize(runs)}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians of each side over the repeats and the four ratios (pipeline ÷ hand) with their verdicts."""
    if any(r["status"] != "ok" for side in runs.values() for r in side):
        errors = [str(r.get("error"))[-300:] for side in runs.values() for r in side if r["status"] != "ok"]
        return {"status": "failed", "errors": errors}

    def median(side: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[side])

    medians = {side: {k: median(side, k) for k in ("wall_s", "peak_rss_mb", "save_s", "speedup")} for side in runs}
    p, h = medians["pipeline"], medians["hand"]
    ratios = {
        "wall": p["wall_s"] / h["wall_s"],
        "rss": p["peak_rss_mb"] / h["peak_rss_mb"],
        # lowered ÷ eager of the pipeline over the same of the hand path: below 1 when the pipeline's is faster
        "latency": h["speedup"] / p["speedup"],
        "record": p["save_s"] / h["save_s"],
    }
    return {
        "status": "ok",
        "medians": medians,
        "ratios": ratios,
        "pass": {k: ratios[k] <= GOALS[k] for k in GOALS},
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | backend | wall s (pipe / hand) | wall ÷ | peak RSS MB (pipe / hand) | RSS ÷ "
        "| speedup vs eager (pipe / hand) | latency ÷ | record / save s | record ÷ save | goals |",
        "|---" * 11 + "|",
    ]
    for key, cell in results.items():
        model, backend = key.split("/")
        if cell["status"] != "ok":
            lines.append(f"| {model} | {backend} | failed: {' '.join(cell['errors'][0].split())[-120:]} |" + " |" * 9)
            continue
        p, h, r = cell["medians"]["pipeline"], cell["medians"]["hand"], cell["ratios"]
        verdict = ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in cell["pass"].items())
        lines.append(
            f"| {model} | {backend} | {p['wall_s']:.1f} / {h['wall_s']:.1f} | {r['wall']:.2f} "
            f"| {p['peak_rss_mb']:.0f} / {h['peak_rss_mb']:.0f} | {r['rss']:.2f} "
            f"| {p['speedup']:.2f} / {h['speedup']:.2f} | {r['latency']:.2f} "
            f"| {p['save_s']:.2f} / {h['save_s']:.2f} | {r['record']:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--hand":
        job = json.loads(sys.argv[2])
        print(json.dumps(hand_child(job["spec"], job["backend"], Path(job["out"]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="bert,gpt2,resnet50,llama_1b", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny configs: checks the script, measures nothing")
    parser.add_argument("--out", help="default: benchmarks/results/real_size.json (real_size_quick.json with --quick)")
    args = parser.parse_args()
    out = args.out or results_path("real_size_quick.json" if args.quick else "real_size.json")
    for model in args.models.split(","):
        if model not in MODELS:
            parser.error(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    results = {}
    for model in args.models.split(","):
        for backend in args.backends.split(","):
            if model == "llama_1b" and backend not in LARGE_BACKENDS:
                continue
            results[f"{model}/{backend}"] = run_cell(model, backend, args.repeats, args.quick)
    print(table(results))
    write_results(out, {"quick": args.quick, "repeats": args.repeats, "goals": GOALS, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
