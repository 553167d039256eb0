"""Sweep progress and the summary at the end: `SweepCallback`, a Hydra callback.

It is registered in ``conf/config.yaml``. Under the joblib and submitit
launchers, per-job hooks run in worker processes, so nothing is collected in
memory: every job writes its own ``report.json`` (a failed job too: the task
records failures instead of raising), and ``on_multirun_end`` reads them all
from the sweep directory (`summary.summarize`) and writes ``summary.json``,
``summary.csv``, ``summary.md`` and ``summary.png``. If any job failed, the
sweep then exits non-zero.

A search (``hydra/sweeper=search``) expects infeasible trials: its sweeper
writes the summary with the trials' outcomes and decides the exit status (1
only when no trial was feasible), so this callback leaves that to it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipeline.app.logs import TOTAL_ENV
from pipeline.app.run_files import SUMMARY_MD
from pipeline.app.search.config import is_search
from pipeline.app.summary import summarize, summary_table, write_summary
from pipeline.app.tables import text_table

log = logging.getLogger("pipeline")


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_search(config):
            return  # the sweeper knows the count (trials so far + n_trials) and logs it
        total = count_jobs(config)
        if total:
            os.environ[TOTAL_ENV] = str(total)
        log.info("sweep of %s jobs into %s", total or "?", config.hydra.sweep.dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_multirun():
            log.info("started: %s", " ".join(HydraConfig.get().overrides.task) or "(defaults)")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if not _is_multirun():
            return
        report = job_return.return_value if job_return is not None and _completed(job_return) else None
        if isinstance(report, dict) and report.get("status") == "ok":
            latency = report.get("latency") or {}
            speed = f", speedup {latency['speedup']:.2f}x" if latency else ""
            speed += " (UNSTABLE: rounds disagree)" if latency.get("unstable") else ""
            log.info("ok%s", speed)
        elif isinstance(report, dict):
            log.info(
                "%s in stage %s: %s", report.get("status", "failed").upper(), report.get("stage"), report.get("error")
            )
        else:
            log.info("FAILED: the job raised")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if is_search(config):
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        total = int(os.environ.get(TOTAL_ENV, "0")) or None
        summary = summarize(sweep_dir, total)
        write_summary(sweep_dir, summary)
        print(text_table(*summary_table(summary["jobs"]), max_width=None))
        log.info("summary: %s", sweep_dir / SUMMARY_MD)
        if summary["failed"]:
            log.error("%d of %d jobs failed; see %s", summary["failed"], len(summary["jobs"]), sweep_dir / SUMMARY_MD)
            sys.exit(1)


def count_jobs(config: DictConfig) -> int | None:
    """The number of jobs a basic-sweeper sweep will run (command line over ``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
        sizes: dict[str, int] = {}
        for override in overrides:
            sizes[override.get_key_element()] = (
                len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
            )
    except Exception:  # e.g. glob() sweeps, which need the config repository to expand
        return None
    return math.prod(sizes.values())


def _is_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _completed(job_return: Any) -> bool:
    from hydra.core.utils import JobStatus

    return job_return.status == JobStatus.COMPLETED
