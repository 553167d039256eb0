"""What the process is doing right now, for the heartbeat of a long stage to say.

A lowering step marks itself with ``progress.step("executorch: to_executorch", method="forward")``; the steps
nest (a stack per process, shared by threads, since the heartbeat reads it from its own thread). `describe`
names the innermost step with the details of every enclosing one and how long the innermost has run, e.g.
``executorch: to_executorch (method forward, partition 2/3), step running 35 s``. Marking costs a lock and a
list append: cheap enough for per-method and per-partition steps, not meant for per-node work.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    """One marked step: its name, its details (method, partition, ...) and when it began (perf_counter)."""

    name: str
    details: dict[str, str] = field(default_factory=dict)
    started: float = 0.0


_lock = threading.Lock()
_stack: list[Step] = []


@contextlib.contextmanager
def step(name: str, **details: object) -> Iterator[None]:
    """Mark ``name`` as running (with ``details`` such as ``method="forward"``) until the block ends."""
    marked = Step(name, {key: str(value) for key, value in details.items()}, time.perf_counter())
    with _lock:
        _stack.append(marked)
    try:
        yield
    finally:
        with _lock:
            # Remove this step itself: a step left open by a generator must not unbalance the others.
            for index in range(len(_stack) - 1, -1, -1):
                if _stack[index] is marked:
                    del _stack[index]
                    break


def current() -> tuple[Step, ...]:
    """The steps running now, outermost first."""
    with _lock:
        return tuple(_stack)


def describe(now: float | None = None) -> str | None:
    """The innermost step, the details of all enclosing steps, and how long the innermost has run; None when
    no step is marked."""
    steps = current()
    if not steps:
        return None
    now = time.perf_counter() if now is None else now
    details: dict[str, str] = {}
    for running in steps:
        details.update(running.details)
    innermost = steps[-1]
    where = ", ".join(f"{key} {value}" for key, value in details.items())
    text = innermost.name + (f" ({where})" if where else "")
    return f"{text}, step running {now - innermost.started:.0f} s"
