"""The Hydra app: ``python -m pipeline [overrides]`` (or the ``lower`` console script).

It composes ``conf/``, validates the config before any work starts, runs the
stages of `pipeline.app.run.run` into Hydra's output directory and prints a short
summary. A bad config or a failed run exits non-zero with a one-paragraph
reason (set HYDRA_FULL_ERROR=1 for the traceback); a failed run still leaves
its ``report.json``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.app import run_lock
from pipeline.app.config import ConfigError, compose_config, validate
from pipeline.app.faults import can_fork, exit_code_of, run_in_child
from pipeline.app.run_files import REPORT, clear_earlier_run
from pipeline.app.schema import RunRequest
from pipeline.app.tables import format_point
from pipeline.core.files import write_json

log = logging.getLogger("pipeline")
_JOBS_IN_THIS_PROCESS = itertools.count()  # the jobs `lower` started in this process so far


def main() -> Any:
    """``python -m pipeline`` and ``lower``: ``--version``, a check of the composed config, then the Hydra app."""
    argv = sys.argv[1:]
    if "--version" in argv:
        print(version_text())
        return None
    if set(argv) & _HYDRA_FLAGS_WITHOUT_A_RUN:
        return lower()
    # A run into a named directory holds it from the start: Hydra writes .hydra/ there before the job runs.
    run_dir = named_run_dir(argv)
    try:
        with run_lock.held(Path(run_dir)) if run_dir else contextlib.nullcontext():
            exit_code = compose_check(argv)
            if exit_code:
                sys.exit(exit_code)
            return lower()
    except run_lock.RunDirectoryBusy as busy:
        print(f"Config error: {busy}", file=sys.stderr)
        sys.exit(2)


_FLAGS_WITH_A_VALUE = {
    "--config-dir": "--config-dir",
    "-cd": "--config-dir",
    "--config-path": "--config-path",
    "-cp": "--config-path",
    "--config-name": "--config-name",
    "-cn": "--config-name",
    "--package": "--package",
    "-p": "--package",
}
_HYDRA_FLAGS_WITHOUT_A_RUN = {
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--shell-completion",
    "-sc",
    "--multirun",
    "-m",
    "--experimental-rerun",
}


def named_run_dir(arguments: list[str]) -> str | None:
    """The directory a single run was told to write into (``hydra.run.dir=DIR``), if it was told one."""
    return next((a.split("=", 1)[1] for a in arguments if a.startswith("hydra.run.dir=")), None)


def version_text() -> str:
    from importlib.metadata import version

    versions = {name: version(name) for name in ("lowering-pipeline", "torch", "hydra-core")}
    return (
        f"lowering-pipeline {versions['lowering-pipeline']} (torch {versions['torch']}, "
        f"hydra-core {versions['hydra-core']})"
    )


def compose_check(argv: list[str]) -> int:
    """Compose the config as Hydra will: a composition error (an unknown option, a key set without ``+``)
    exits 2 with a did-you-mean, like any config error, and leaves a failed report.json if the run
    directory is named (``hydra.run.dir=DIR``). Sweeps are checked job by job, by the jobs."""
    from hydra.errors import HydraException

    overrides, flags, pending = [], {}, None
    for argument in argv:  # Hydra's own flags, and the overrides
        if pending:
            flags[pending], pending = argument, None
        elif argument in _FLAGS_WITH_A_VALUE:
            pending = _FLAGS_WITH_A_VALUE[argument]
        elif argument.startswith("--") and "=" in argument:
            flags[argument.split("=", 1)[0]] = argument.split("=", 1)[1]
        elif not argument.startswith("-"):
            overrides.append(argument)
    config_dir = flags.get("--config-dir")
    if flags.get("--config-path") or flags.get("--config-name"):
        return 0  # another primary config: Hydra checks it
    extra = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
    try:
        compose_config(overrides + extra)
        return 0
    except HydraException as error:
        message = explain_composition_error(error, overrides, extra)
    print(f"Config error: {message}", file=sys.stderr)
    run_dir = named_run_dir(overrides)
    if run_dir:
        clear_earlier_run(Path(run_dir))
        write_json(
            Path(run_dir) / REPORT, {"status": "failed", "stage": "config", "error": message, "overrides": overrides}
        )
    return 2


def explain_composition_error(error: BaseException, overrides: list[str], extra: list[str]) -> str:
    """Hydra's message in one paragraph, with the closest option or key there is."""
    import re

    from pipeline.core.errors import did_you_mean

    text = " ".join(str(error).split())
    missing = re.search(
        r"Could not find '(?P<group>[^'/]+)/(?P<option>[^']+)'.*?Available options in '[^']+': "
        r"(?P<options>.*?)(?: Config search path|$)",
        text,
    )
    if missing:
        options = missing["options"].split()
        return (
            f"{missing['group']}={missing['option']}: no such option; allowed: "
            f"{', '.join(repr(o) for o in options)}.{did_you_mean(missing['option'], options)}"
        )
    key = re.search(r"Could not override '(?P<key>[^']+)'", text)
    if key and not key["key"].startswith("hydra."):
        others = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(key["key"])]
        try:
            config = compose_config(others + extra)
        except Exception:  # the rest of the config does not compose either: say what Hydra said
            config = None
        return unknown_key_message(key["key"], config) if config is not None else f"{key['key']}: no such key."
    return text.split(" Set the environment variable HYDRA_FULL_ERROR")[0]


def unknown_key_message(key: str, config: Any) -> str:
    """``verify.tolerence.atol: no such key; verify has: ... Did you mean 'tolerance'?``, naming the first
    segment of the path that does not exist, at any depth. Only ``model`` takes keys its config lacks (the
    constructor's arguments, with ``+``): every other section is closed by its schema, so no ``+`` hint."""
    from omegaconf import OmegaConf

    from pipeline.core.errors import did_you_mean

    parts = key.split(".")
    node, depth = config, 0
    while depth < len(parts) - 1 and OmegaConf.is_dict(node) and parts[depth] in node:
        node, depth = node[parts[depth]], depth + 1
    parent, missing = ".".join(parts[:depth]), parts[depth]
    if not OmegaConf.is_dict(node):
        return f"{key}: no such key; {parent} is a value ({node!r}), not a section."
    known = [str(k) for k in node]
    where = f"{parent or 'the config'} has: {', '.join(repr(k) for k in known)}." if known else ""
    message = f"{'.'.join(parts[: depth + 1])}: no such key; {where}{did_you_mean(missing, known)}".rstrip("; ")
    if parts[0] == "model" and depth >= 1:
        message += f" A constructor argument the model's config lacks is added with +: +{key}=..."
    return message


@hydra.main(config_path="pkg://pipeline.conf", config_name="config", version_base="1.3")
def lower(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with run_lock.held(out_dir):
        return _lower_into(cfg, out_dir, multirun, started, hydra_cfg)


def _lower_into(cfg: DictConfig, out_dir: Path, multirun: bool, started: float, hydra_cfg: Any) -> dict[str, Any]:
    record = {
        "job_num": hydra_cfg.job.num if multirun else None,
        "run_dir": str(out_dir),
        "overrides": list(hydra_cfg.overrides.task),
        "choices": {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")},
        # A sweep's first job in each process also pays for its imports (the backend, torch's lazy modules);
        # `jobs_before` tells the later ones apart. (Whether torch was imported says nothing: composing the
        # config imports the backend it names, and with it torch, before any job starts.)
        "process": {"pid": os.getpid(), "jobs_before": next(_JOBS_IN_THIS_PROCESS)},
        "lock_takeover": run_lock.takeover(out_dir),  # the run that died holding this directory, if one did
    }
    try:
        request = validate(cfg)
    except ConfigError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report = {"status": "failed", "stage": "config", "error": str(error), **record}
        clear_earlier_run(out_dir, _artifact_name(cfg))
        write_json(out_dir / REPORT, report)
        print(f"Config error: {error}", file=sys.stderr)
        return _finish(report, multirun, exit_code=2)

    from pipeline.app.run import run  # the stages load with the first job: not for --help or a bad config

    if multirun and can_fork():  # a job that is killed must not take the sweep's worker with it
        report = run_in_child(
            lambda on_stage: run(request, out_dir, extra_record=record, started=started, on_stage=on_stage),
            lambda stage, cause: _crashed(out_dir, request, record, stage, cause),
        )
    else:
        report = run(request, out_dir, extra_record=record, started=started)
    _print_summary(report, out_dir)
    interrupted = exit_code_of(report)
    if interrupted is not None:
        sys.exit(interrupted)  # a sweep stops too: the user asked to stop
    return _finish(report, multirun, exit_code=1)


def _artifact_name(cfg: DictConfig) -> Any:
    """The artifact name the config asks for, if it can be read at all (the config did not validate)."""
    try:
        return cfg.get("artifact_name")
    except Exception:  # an interpolation that does not resolve
        return None


def _crashed(out_dir: Path, request: RunRequest, record: dict[str, Any], stage: str, cause: str) -> dict[str, Any]:
    report = {
        "status": "crashed",
        "stage": stage,
        "error": cause,
        "backend": request.backend_name,
        "frontend": request.frontend,
        "model": request.model_target,
        "methods": list(request.compile_spec),
        **record,
    }
    write_json(out_dir / REPORT, report)
    return report


def _finish(report: dict[str, Any], multirun: bool, exit_code: int) -> dict[str, Any]:
    """Single runs exit non-zero on failure; sweep jobs return, so the other jobs still run."""
    if report["status"] != "ok" and not multirun:
        sys.exit(exit_code)
    return report


def _print_summary(report: dict[str, Any], out_dir: Path) -> None:
    if report["status"] != "ok":
        reason = (
            f"Lowering failed in stage '{report['stage']}': {report['error']} "
            f"The record of the run is in {out_dir / REPORT}."
        )
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and report.get("traceback"):
            reason += "\n" + report["traceback"]
        print(reason, file=sys.stderr)
    parts = [
        f"backend {report['backend']}",
        f"frontend {report['frontend']}",
        f"methods {', '.join(report['methods'])}",
    ]
    if report.get("verify"):
        v = report["verify"]
        checked = len(v.get("shapes") or ())
        at = f" at {checked} shapes" if checked > 1 else ""
        parts.append(f"max error {v['max_abs_err']:.2e} ({'passed' if v['passed'] else 'FAILED'}{at})")
    if report.get("latency"):
        lat = report["latency"]
        parts.append(
            f"speedup {lat['speedup']:.2f}x ({lat['eager_us']:.1f} -> {lat['lowered_us']:.1f} us"
            f"{', UNSTABLE: rounds disagree' if lat.get('unstable') else ''})"
        )
        parts += [
            f"at {format_point(shape['point'])}: {shape['lowered_us']:.1f} us ({shape['speedup']:.2f}x)"
            for shape in lat.get("shapes") or ()
        ]
    log.info("%s | %s", report["status"].upper(), " | ".join(parts))
    log.info("outputs: %s", out_dir)


if __name__ == "__main__":
    main()
