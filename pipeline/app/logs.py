"""Which log lines reach the console: the pipeline's own. Everything else goes to the job's log file."""

from __future__ import annotations

import logging
import os

TOTAL_ENV = "PIPELINE_SWEEP_JOBS"  # the sweep's job count, set by the sweep callback, inherited by workers


class PipelineOnly(logging.Filter):
    """Passes the ``pipeline`` logger's records, except torch's output that `pipeline.core.toolchain_output`
    collects under ``pipeline.torch``; other libraries' records (exporters, optimizers) stay in the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return (name == "pipeline" or name.startswith("pipeline.")) and not name.startswith("pipeline.torch")


class JobTag(logging.Filter):
    """Adds ``record.job``: `` [job k/N]`` in a sweep (so parallel jobs' lines can be told apart), else empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = _job_tag()
        return True


def _job_tag() -> str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    config = HydraConfig.get()
    if config.mode != RunMode.MULTIRUN:
        return ""
    return f" [job {config.job.num + 1}/{os.environ.get(TOTAL_ENV, '?')}]"
