"""Why export fixed a dimension the user declared dynamic: the guard, and the user's line that added it.

When a model's code pins a declared dimension (``x.view(2, -1)``, ``if x.shape[0] == 2``), torch.export
raises ``Constraints violated (batch)! ... specialized it to be a constant (2)`` and names no line of the
model. Its shape environment logs every guard it adds, at the moment it adds it, while the model's code runs
(non-strict export) or with the line in the message (strict export, where Dynamo interprets the code).
`guard_sites` listens to that log during an export and keeps, for each guard ``Eq(symbol, value)``, the
innermost line outside torch; `specialized_error` turns the violation into a `ShapeDeclarationError` that
names the dimension, the value and that line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from pipeline.core.shapes import ShapeDeclarationError

_SHAPES_LOG = "torch.fx.experimental.symbolic_shapes"
_GUARD = re.compile(r"eval (?P<guard>Eq\((?P<symbol>\w+), (?P<value>-?\d+)\)) \[guard added\]")
_DYNAMO_SITE = re.compile(r"\[guard added\] (?P<code>.*?)  # (?P<file>\S+):(?P<line>\d+) in (?P<function>\w+)")
_VIOLATED = re.compile(
    r"You marked (?P<name>\w+) as dynamic but your code specialized it to be a constant \((?P<value>-?\d+)\)"
)
_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass
class GuardSites:
    """``{value: the first user line whose guard fixed a symbol to it}``, filled while the block runs."""

    by_value: dict[int, str] = field(default_factory=dict)


class _Listener(logging.Handler):
    def __init__(self, sites: GuardSites):
        super().__init__(logging.INFO)
        self.sites = sites

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        found = _GUARD.search(message)
        if found is None:
            return
        value = int(found["value"])
        if value not in self.sites.by_value:
            self.sites.by_value[value] = _dynamo_site(message) or _innermost_user_line()


@contextlib.contextmanager
def guard_sites() -> Iterator[GuardSites]:
    """Within the block, the user lines of the guards torch adds (the shape log is on at INFO meanwhile)."""
    sites = GuardSites()
    logger = logging.getLogger(_SHAPES_LOG)
    listener, level = _Listener(sites), logger.level
    logger.addHandler(listener)
    logger.setLevel(logging.INFO)
    try:
        yield sites
    finally:
        logger.removeHandler(listener)
        logger.setLevel(level)


def specialized_error(error: BaseException, sites: GuardSites, method: str) -> ShapeDeclarationError | None:
    """A `ShapeDeclarationError` for a declared dimension export fixed to a constant, or None for another
    failure."""
    found = _VIOLATED.search(str(error))
    if found is None:
        return None
    value = int(found["value"])
    where = sites.by_value.get(value)
    at = f", at\n  {where}" if where else ""
    return ShapeDeclarationError(
        f"dynamic_shapes.{method}: the model fixes dimension {found['name']!r} to {value}{at}\n"
        f"so the lowered program cannot take another size there. Write that code without the fixed size "
        f"(x.view(x.shape[0], -1), not x.view({value}, -1)), or leave {found['name']!r} out of the declaration."
    )


def _dynamo_site(message: str) -> str:
    found = _DYNAMO_SITE.search(message)
    if found is None:
        return ""
    return f"{found['file']}:{found['line']}: {found['code'].strip()}"


def _innermost_user_line() -> str:
    for frame in reversed(traceback.extract_stack()[:-3]):
        if not frame.filename.startswith(_TORCH_DIR) and not frame.filename.startswith("<"):
            if "/pipeline/core/" in frame.filename or frame.filename.endswith("logging/__init__.py"):
                continue
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return ""
