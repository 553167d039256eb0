"""The Hydra app: ``python -m pipeline [overrides]`` (or the ``lower`` console script).

It composes ``conf/``, validates the config before any work starts, runs the
stages of `pipeline.app.run.run` into Hydra's output directory and prints a short
summary. A bad config or a failed run exits non-zero with a one-paragraph
reason (set HYDRA_FULL_ERROR=1 for the traceback); a failed run still leaves
its ``report.json``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.core.files import write_json
from pipeline.app.config import ConfigError, validate
from pipeline.app.faults import can_fork, exit_code_of, run_in_child
from pipeline.app.run_files import REPORT
from pipeline.app.schema import RunRequest

log = logging.getLogger("pipeline")


@hydra.main(config_path="pkg://pipeline.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Dict[str, Any]:
    started = time.perf_counter()
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    record = {
        "job_num": hydra_cfg.job.num if multirun else None,
        "run_dir": str(out_dir),
        "overrides": list(hydra_cfg.overrides.task),
        "choices": {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")},
        # A sweep's first job in each process also pays for importing torch.
        "process": {"pid": os.getpid(), "torch_preloaded": "torch" in sys.modules},
    }
    try:
        request = validate(cfg)
    except ConfigError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report = {"status": "failed", "stage": "config", "error": str(error), **record}
        write_json(out_dir / REPORT, report)
        print(f"Config error: {error}", file=sys.stderr)
        return _finish(report, multirun, exit_code=2)

    from pipeline.app.run import run  # torch is imported here, in the job, not in a sweep's parent

    if multirun and can_fork():  # a job that is killed must not take the sweep's worker with it
        report = run_in_child(lambda on_stage: run(request, out_dir, extra_record=record, started=started,
                                                   on_stage=on_stage),
                              lambda stage, cause: _crashed(out_dir, request, record, stage, cause))
    else:
        report = run(request, out_dir, extra_record=record, started=started)
    _print_summary(report, out_dir)
    interrupted = exit_code_of(report)
    if interrupted is not None:
        sys.exit(interrupted)  # a sweep stops too: the user asked to stop
    return _finish(report, multirun, exit_code=1)


def _crashed(out_dir: Path, request: RunRequest, record: Dict[str, Any], stage: str, cause: str) -> Dict[str, Any]:
    report = {"status": "crashed", "stage": stage, "error": cause, "backend": request.backend_name,
              "frontend": request.frontend, "model": request.model_target, "methods": list(request.compile_spec),
              **record}
    write_json(out_dir / REPORT, report)
    return report


def _finish(report: Dict[str, Any], multirun: bool, exit_code: int) -> Dict[str, Any]:
    """Single runs exit non-zero on failure; sweep jobs return, so the other jobs still run."""
    if report["status"] != "ok" and not multirun:
        sys.exit(exit_code)
    return report


def _print_summary(report: Dict[str, Any], out_dir: Path) -> None:
    if report["status"] != "ok":
        reason = (f"Lowering failed in stage '{report['stage']}': {report['error']} "
                  f"The record of the run is in {out_dir / REPORT}.")
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and report.get("traceback"):
            reason += "\n" + report["traceback"]
        print(reason, file=sys.stderr)
    parts = [f"backend {report['backend']}", f"frontend {report['frontend']}",
             f"methods {', '.join(report['methods'])}"]
    if report.get("verify"):
        v = report["verify"]
        parts.append(f"max error {v['max_abs_err']:.2e} ({'passed' if v['passed'] else 'FAILED'})")
    if report.get("latency"):
        lat = report["latency"]
        parts.append(f"speedup {lat['speedup']:.2f}x ({lat['eager_us']:.1f} -> {lat['lowered_us']:.1f} us)")
    log.info("%s | %s", report["status"].upper(), " | ".join(parts))
    log.info("outputs: %s", out_dir)


if __name__ == "__main__":
    main()
