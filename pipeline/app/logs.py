"""Which log lines reach the console: the pipeline's own. Everything else goes to the job's log file."""

from __future__ import annotations

import logging


class PipelineOnly(logging.Filter):
    """Passes the ``pipeline`` logger's records, except torch's output that `pipeline.core.torch_output`
    collects under ``pipeline.torch``; other libraries' records (exporters, optimizers) stay in the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return (name == "pipeline" or name.startswith("pipeline.")) and not name.startswith("pipeline.torch")
