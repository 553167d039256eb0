"""`quiet`: keep a library's own log lines and warnings out of what a lowering prints.

Exporters and lowering toolchains log every pass at INFO (which Hydra's
logging shows) and warn about their own deprecations; neither says anything
about the model. Errors still raise, and records at ``level`` and above still
show::

    with quiet("torch.onnx", level=logging.ERROR):
        torch.onnx.export(...)
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet(logger: str, level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, ``logger`` (and its children) log only at ``level`` and above, and warnings
    are not shown."""
    target = logging.getLogger(logger)
    previous = target.level
    target.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        target.setLevel(previous)
