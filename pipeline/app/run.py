"""One lowering run, top to bottom: the stages and the record they leave.

`run` takes a validated `RunRequest` and an output directory, and writes:
``model.lowered`` (the artifact), ``handles.json`` (the handle map and the
backend's map), ``profile.json`` (with ``profile=true``) and ``report.json``.
`run_stages` is the run itself, one ``with stages(...)`` block per stage.
A failing stage is recorded, not raised: the report says ``status: failed``
(or ``interrupted``, on SIGINT or SIGTERM) with the stage and the error, and
nothing half-written is left behind. What an earlier run left in the same
directory is removed first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.app import outputs_record, run_lock
from pipeline.app.backend_loading import load_backend
from pipeline.app.checkpoint import checkpoint_record, load_checkpoint
from pipeline.app.config import timed_method
from pipeline.app.dynamic_config import parameter_names
from pipeline.app.faults import Interrupted, signals_deferred, signals_raise
from pipeline.app.inputs import Call, as_example_inputs, make_call, make_method_calls
from pipeline.app.latency import measure
from pipeline.app.memory import StageMemory
from pipeline.app.run_files import HANDLES, OUTPUTS, PROFILE, REPORT, clear_earlier_run
from pipeline.app.schema import RunRequest
from pipeline.app.shape_points import MethodPoints, bound_points, call_at
from pipeline.app.targets import locate
from pipeline.app.verify import tidy_atol, verify
from pipeline.core import progress
from pipeline.core.artifact import write_artifact
from pipeline.core.environment import git_state, package_versions
from pipeline.core.errors import PipelineError
from pipeline.core.files import write_atomic, write_json
from pipeline.core.frontends import capture
from pipeline.core.hashing import canonical_json, sha256_bytes
from pipeline.core.lowering import lower
from pipeline.core.profiling import profile
from pipeline.core.shapes import contract_to_json

log = logging.getLogger("pipeline")


class StageFailed(PipelineError):
    """A stage that ran but whose result fails the run (e.g. numerics out of tolerance)."""


class Stages:
    """Times each stage, logs one line per stage, and remembers where a failure happened; `memory` keeps
    the peak RSS after each stage (`pipeline.app.memory`).

    A stage that runs long (an export, an inductor compile) logs what it is
    doing every `HEARTBEAT_S` seconds, so a sweep never looks stuck: the
    innermost step a backend or the lowering marked (`pipeline.core.progress`)
    with its method and partition, or ``still running`` when none is marked.
    Short stages stay quiet: the first line comes after `HEARTBEAT_S`.
    The heartbeat needs a thread; where the machine refuses one (a busy
    machine out of threads or processes), the stage runs without it and a
    warning says so.
    """

    HEARTBEAT_S = 30.0

    def __init__(self, on_enter: Callable[[str], None] | None = None) -> None:
        self.timings: dict[str, float] = {}
        self.memory = StageMemory()
        self.current: str | None = None
        self.on_enter = on_enter  # tells a sweep's supervising process where the job is

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.current = name
        if self.on_enter is not None:
            self.on_enter(name)
        start = time.perf_counter()
        done = threading.Event()
        thread = threading.Thread(target=self._heartbeat, args=(name, start, done), daemon=True)
        heartbeat: threading.Thread | None = thread
        try:
            thread.start()
        except RuntimeError as error:  # a busy machine refused a thread: the stage runs, only its heartbeat is lost
            log.warning("%-12s no heartbeat for this stage: %s: %s", name, type(error).__name__, error)
            heartbeat = None
        try:
            yield
        finally:
            done.set()
            if heartbeat is not None:
                heartbeat.join()
        self.timings[name] = time.perf_counter() - start
        self.memory.after(name)
        log.info("%-12s %8.3f s", name, self.timings[name])
        self.current = None

    def _heartbeat(self, name: str, start: float, done: threading.Event) -> None:
        while not done.wait(self.HEARTBEAT_S):
            log.info("%s", self.heartbeat_line(name, start))

    @staticmethod
    def heartbeat_line(name: str, start: float) -> str:
        """What a heartbeat says: the stage, its seconds so far, and the step running (`progress.describe`)."""
        now = time.perf_counter()
        doing = progress.describe(now)
        return f"{name:<12} {now - start:.0f} s: " + (doing if doing is not None else "still running")


def run(
    request: RunRequest,
    out_dir: Path,
    extra_record: dict[str, Any] | None = None,
    started: float | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every stage into ``out_dir``; ``started`` (a perf_counter time) is when the job began.

    SIGINT and SIGTERM end the run with ``status: interrupted`` (`faults.signals_raise`).
    """
    started = time.perf_counter() if started is None else started
    out_dir = Path(out_dir)
    with run_lock.held(out_dir):  # re-entrant: the app holds it already; replay and the API take it here
        return _run_into(request, out_dir, extra_record, started, on_stage)


def _run_into(
    request: RunRequest,
    out_dir: Path,
    extra_record: dict[str, Any] | None,
    started: float,
    on_stage: Callable[[str], None] | None,
) -> dict[str, Any]:
    clear_earlier_run(out_dir, request.artifact_name)
    stages = Stages(on_stage)
    report = _base_report(request, extra_record or {})
    lower_timings: dict[str, float] = {}
    threads_before = torch.get_num_threads()  # restored: the next job of a sweep may run in this process
    if request.threads:
        torch.set_num_threads(request.threads)
    try:
        with signals_raise():
            run_stages(request, out_dir, stages, report, lower_timings)
    except Interrupted as interruption:
        report.update(
            status="interrupted",
            stage=stages.current or "unknown",
            error=str(interruption),
            signal=signal.Signals(interruption.signum).name,
        )
    except Exception as error:  # recorded, not raised: the report is the result
        report.update(status="failed", stage=stages.current or "unknown", error=f"{type(error).__name__}: {error}")
        report["traceback"] = traceback.format_exc()
    finally:
        torch.set_num_threads(threads_before)
    report["timings"] = {**stages.timings, **{f"lower.{k}": v for k, v in lower_timings.items()}}
    report["memory"] = stages.memory.to_json()
    report["job_seconds"] = time.perf_counter() - started
    with signals_deferred():
        write_json(out_dir / REPORT, report)
    return report


def run_stages(
    request: RunRequest, out_dir: Path, stages: Stages, report: dict[str, Any], lower_timings: dict[str, float]
) -> None:
    """The stages, top to bottom; each fills in its part of ``report``."""
    with stages("register"):
        backend = load_backend(request.backend_name, request.backend_target)
        report["env"][f"backend:{backend.name}"] = backend.version
        # handles.json depends only on the program; the payload, on the backend.
        report["reproducible"] = {"artifact": backend.reproducible, "handles": True}
    with stages("build"):
        model = build_model(request)
        report["checkpoint"] = checkpoint_record(request.checkpoint)
        report["provenance"] = provenance(type(model), backend.backend_cls)
        calls = make_method_calls(request.example_inputs, request.seed)
    with stages("capture"):
        captured = capture(
            model,
            list(request.compile_spec),
            request.frontend,
            as_example_inputs(calls),
            request.torchscript_mode,
            dynamic_shapes=request.dynamic_shapes,
            strict=request.strict,
        )
        report["capture"] = {method: mode.to_json() for method, mode in captured.modes.items()}
        for method, mode in captured.modes.items():
            if mode.fallback_reason:
                log.warning("capture      %s captured %s: %s", method, mode.mode, mode.fallback_reason)
    with stages("lower"):
        lowering = lower(
            request.backend_name,
            captured,
            request.compile_spec,
            debug_handles=request.debug_handles,
            partition=request.partition,
            min_nodes=request.min_nodes,
        )
        lowered = lowering.module
        lower_timings.update(lowering.seconds.reported())
        report["backend_notes"] = lowered.notes
        report["shapes"] = {m: contract_to_json(shapes) for m, shapes in lowered.shapes.items() if shapes.dynamic}
        if request.partition:
            report["partition"] = lowered.partition
            log.info("partition    %s", lowered.partition["summary"])
        del captured, lowering  # the module holds all that later stages read; the program is done with
    verified: dict[str, Any] = {}
    if request.verify.enabled:
        with stages("verify"):
            result = verify(
                model,
                lowered,
                _input_sets(request, calls),
                request.tolerance.atol,
                request.tolerance.rtol,
                _bound_points(model, lowered, calls, request.verify.max_elements),
            )
            report["verify"] = result.to_json()
            verified = result.example_outputs
            for shape in result.shapes:
                if shape["capped"]:
                    log.info(
                        "verify       %s %s capped by verify.max_elements: %s",
                        shape["method"],
                        shape["label"],
                        shape["capped"],
                    )
    if request.latency.enabled:
        with stages("latency"):
            method = timed_method(list(request.compile_spec))
            report["latency"] = _latency(request, model, lowered, method, calls[method])
    if request.profile:
        with stages("profile"):
            report["profile"] = record_profile(lowered, as_example_inputs(calls), out_dir)
    del model  # the eager model's weights: nothing after verify and latency runs it
    with stages("record"):
        report.update(record_outputs(lowered, out_dir, request.artifact_name))
        report["outputs"] = outputs_record.record(out_dir / OUTPUTS, lowered, calls, verified)
    if report["verify"] is not None and not report["verify"]["passed"]:
        stages.current = "verify"
        v = report["verify"]
        raise StageFailed(
            f"lowered outputs differ from eager beyond tolerance: max_abs_err={v['max_abs_err']:.3g}, "
            f"max_rel_err={v['max_rel_err']:.3g} (atol={v['atol']:g} x max(1, max|eager|) per output, "
            f"up to {v['effective_atol']:.3g}; rtol={v['rtol']:g}; worst: {v['worst']}); "
            + (
                f"verify.tolerance.atol={tidy_atol(v['needed_atol']):g} would accept it"
                if math.isfinite(v["needed_atol"])
                else "the outputs' structure, shape, dtype or non-finite values differ: no tolerance accepts it"
            )
        )


def build_model(request: RunRequest) -> torch.nn.Module:
    torch.manual_seed(request.seed)  # seeded random weights: the same config builds the same model
    model_class = locate(request.model_target, "model._target_")
    model = model_class(**model_arguments(model_class, request.model_kwargs))
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model._target_ {request.model_target} built a {type(model).__name__}, not an nn.Module.")
    if request.checkpoint is not None:
        load_checkpoint(model, Path(request.checkpoint))
    return model.eval()


def provenance(model_class: type, backend_class: type) -> dict[str, Any]:
    """Which source files the model class (and a backend that is not built in) came from, with their
    digests, so that a change to a custom model shows in the record even where its name does not."""
    record = {"model": source_digest(model_class)}
    if not backend_class.__module__.startswith("pipeline.backends."):
        record["backend"] = source_digest(backend_class)
    return record


def source_digest(cls: type) -> dict[str, Any]:
    import inspect

    from pipeline.core.hashing import sha256_file
    from pipeline.core.source import portable_path

    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # a class defined in C
        path = None
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "file": portable_path(path) if path else None,
        "sha256": sha256_file(path) if path and Path(path).is_file() else None,
    }


def model_arguments(model_class: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments as the class takes them. A Hugging Face model takes its configuration
    object: a ``config`` mapping becomes an instance of the class's own ``config_class``, and a null
    ``config`` (``model.config=null``) the class's defaults: ``BertConfig()`` is BERT-base."""
    config_class = getattr(model_class, "config_class", None)
    if not isinstance(config_class, type):
        return kwargs
    if isinstance(kwargs.get("config"), dict):
        return {**kwargs, "config": config_class(**kwargs["config"])}
    if "config" in kwargs and kwargs["config"] is None:
        return {**kwargs, "config": config_class()}
    return kwargs


def record_outputs(lowered: Any, out_dir: Path, artifact_name: str) -> dict[str, Any]:
    """Write the artifact (streamed, `write_artifact`) and handles.json atomically; their entries for the report."""
    written = write_artifact(lowered, out_dir / artifact_name)
    handles = canonical_json(lowered.handle_map.to_json())
    write_atomic(out_dir / HANDLES, handles)
    return {
        "artifact": {"path": artifact_name, "bytes": written.size, "sha256": written.sha256},
        "handles": {"path": HANDLES, "count": len(lowered.handle_map.handles), "sha256": sha256_bytes(handles)},
    }


def record_profile(lowered: Any, inputs: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write profile.json; the report keeps the hottest source lines."""
    result = profile(lowered, inputs)
    if result is None:
        log.warning("backend %s cannot report per-instruction times; no profile.json", lowered.backend_name)
        return {"path": None, "supported": False, "top": []}
    write_json(out_dir / PROFILE, result)
    top = [{k: e[k] for k in ("source", "module_hierarchy", "seconds", "share")} for e in result["by_source"][:10]]
    by_partition = {"by_partition": result["by_partition"]} if "by_partition" in result else {}
    return {
        "path": PROFILE,
        "supported": True,
        "attributed_share": result["attributed_share"],
        "top": top,
        **by_partition,
    }


def _input_sets(request: RunRequest, calls: dict[str, Call]) -> dict[str, list[Call]]:
    """The example call first, then calls with fresh random tensors of the same shapes."""
    return {
        method: [calls[method]]
        + [
            make_call(request.example_inputs[method], request.seed + 1000 * (trial + 1))
            for trial in range(request.verify.random_trials)
        ]
        for method in request.compile_spec
    }


def _latency(request: RunRequest, model: torch.nn.Module, lowered: Any, method: str, call: Call) -> dict[str, Any]:
    """The example's latency, and with ``latency.shapes`` each of those shapes', by the one lowered module."""
    options = request.latency

    def timed(at: Call) -> dict[str, Any]:
        result = measure(
            method,
            getattr(model, method),
            getattr(lowered, method),
            at,
            options.warmup,
            options.iterations,
            options.rounds,
        )
        return result.to_json()

    record = timed(call)
    if options.shapes:
        names = parameter_names(model, method)
        shapes = lowered.shapes.get(method)
        record["shapes"] = []
        for index, point in enumerate(options.shapes):
            at = call_at(shapes, call, names, point, f"latency.shapes[{index}]")
            record["shapes"].append({"point": dict(point), **timed(at)})
    return record


def _bound_points(
    model: torch.nn.Module, lowered: Any, calls: dict[str, Call], max_elements: int
) -> dict[str, MethodPoints]:
    """For each method with dynamic dimensions, the shapes at their bounds and between."""
    return {
        method: bound_points(shapes, calls[method], parameter_names(model, method), max_elements)
        for method, shapes in lowered.shapes.items()
        if method in calls and shapes.dynamic
    }


def _base_report(request: RunRequest, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ok",
        "stage": None,
        "error": None,
        "backend": request.backend_name,
        "frontend": request.frontend,
        "torchscript_mode": request.torchscript_mode if request.frontend == "torchscript" else None,
        "strict": request.strict if request.frontend == "export" else None,
        "capture": None,
        "model": request.model_target,
        "methods": list(request.compile_spec),
        "compile_spec": request.compile_spec,
        "debug_handles": request.debug_handles,
        # as JSON writes it: a dimension's index is a string key
        "dynamic_shapes": json.loads(json.dumps(request.dynamic_shapes)),
        "shapes": None,
        "seed": request.seed,
        "verify": None,
        "latency": None,
        "profile": None,
        "artifact": None,
        "handles": None,
        "partition": None,
        "env": {**package_versions(), "git": git_state()},
        **extra,
    }
