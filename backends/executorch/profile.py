"""Profiles from ETDump, mapped to source through the method's instruction table.

`profile_method` loads the method's ``.pte`` again with ETDump enabled, runs
it twice (a warm-up, then the call reported), writes the ETDump into a private
temporary directory and reads its profiling events (ticks of the runtime's
platform clock, nanoseconds on Linux). Of the reported call:

* each portable kernel's ``OPERATOR_CALL`` becomes an event named
  ``"<method>/<instruction>:<kernel>"`` with that instruction's handles;
* a delegate's events are its operators' own when it reports them, as XNNPACK
  does (``"Fully Connected (NC, F32) GEMM #1"``, timed in microseconds by
  XNNPACK): each is tied to the delegate node it runs (`align`), and named
  ``"<method>/<instruction>:XnnpackBackend/<operator>"``. What the delegate call
  spent outside its operators (copying arguments in and out) is one more
  event, ``"... (outside its operators)"``, with the delegate's handles. A
  delegate that reports nothing inside is one event with all its handles.

XNNPACK reports its operators with no debug ids, in the order its runtime
created them from the delegate's nodes, and fuses some nodes into others
(a dynamic quantization into the matrix multiply that follows). `align` pairs
operators with nodes in order, by how alike their names are, and gives each
node no operator took to the next operator (the one it was fused into).

The same events locate a failing call (`failing_instruction`): ExecuTorch's
Python runtime raises only an error code, but the ETDump of the call, run again
on a separate copy of the program, ends at the instruction that failed.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

from pipeline.backends.executorch import installed
from pipeline.core.backend import UNKNOWN_HANDLE, BackendRuntimeError, ProfileEvent

_NANOSECONDS = 1e-9
_RUN_END = "Method::execute"
_KERNEL_EVENT = "OPERATOR_CALL"
_DELEGATE_EVENT = "DELEGATE_CALL"
# XNNPACK unary operators that its name table lacks print as "Invalid Unary Op".
_UNARY = {
    "abs",
    "ceiling",
    "clamp",
    "cos",
    "elu",
    "exp",
    "floor",
    "gelu",
    "hardswish",
    "leakyrelu",
    "log",
    "negate",
    "reciprocalsquareroot",
    "sigmoid",
    "sin",
    "square",
    "squareroot",
    "tanh",
}
_SAME_OPERATION = {"mean": ("globalavgpooling",), "copy": ("staticreshape", "squeeze", "unsqueeze")}


# One ETDump profile event: (name, chain, instruction, delegate operator or "", start, end).
Event = tuple[str, int, int, str, int, int]


def profile_method(method: Any, arguments: list[Any]) -> list[ProfileEvent]:
    data = _etdump_of_calls(method, arguments, calls=2)  # a warm-up, then the call reported
    return profile_events(method.method, method.instructions, last_call(read_etdump(data)))


def failing_instruction(method: Any, arguments: list[Any]) -> dict[str, Any] | None:
    """The instruction-table entry of the instruction a failing call stopped at, found by running the
    call again on a separate copy of the program with ETDump on (ExecuTorch logs each instruction's
    event even when it fails), or None when no instruction ran (e.g. the inputs were refused)."""
    try:
        data = _etdump_of_calls(method, arguments, calls=1, failing=True)
    except Exception:  # the ETDump is best-effort context for an error already being raised
        return None
    ran = [e for e in read_etdump(data) if e[1] == 0]
    by_index = {entry["instruction"]: entry for entry in method.instructions}
    return by_index.get(ran[-1][2]) if ran else None


def _etdump_of_calls(method: Any, arguments: list[Any], calls: int, failing: bool = False) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pipeline-executorch-etdump-") as directory:
        program = installed.runtime().load_program(method.pte, enable_etdump=True, debug_buffer_size=0)
        loaded = program.load_method(method.method)
        for _ in range(calls):
            try:
                loaded.execute(arguments)
            except RuntimeError as error:
                if not failing:
                    raise BackendRuntimeError(f"ExecuTorch: {error}", [UNKNOWN_HANDLE]) from error
        path = os.path.join(directory, "run.etdp")
        program.write_etdump_result_to_file(path, os.path.join(directory, "debug.bin"))
        with open(path, "rb") as handle:
            return handle.read()


def read_etdump(data: bytes) -> list[Event]:
    serialize = installed.executorch_module("executorch.devtools.etdump.serialize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its own use of importlib.resources
        etdump = serialize.deserialize_from_etdump_flatcc(data)
    events = []
    for run in etdump.run_data:
        for event in run.events or ():
            found = event.profile_event
            if found is not None:
                events.append(
                    (
                        found.name or "",
                        found.chain_index,
                        found.instruction_id,
                        found.delegate_debug_id_str or "",
                        found.start_time,
                        found.end_time,
                    )
                )
    return events


def last_call(events: list[Event]) -> list[Event]:
    """The events of the last ``execute``: those after the one-but-last ``Method::execute`` event."""
    ends = [i for i, event in enumerate(events) if event[0] == _RUN_END]
    if not ends:
        return []
    start = ends[-2] + 1 if len(ends) > 1 else 0
    return events[start : ends[-1]]


def profile_events(method: str, instructions: list[dict[str, Any]], events: list[Event]) -> list[ProfileEvent]:
    by_instruction: dict[int, list[Event]] = {}
    for event in events:
        if event[1] == 0:  # the method's one chain
            by_instruction.setdefault(event[2], []).append(event)
    reported = []
    for entry in instructions:
        found = by_instruction.get(entry["instruction"], [])
        key = f"{method}/{entry['instruction']}:{entry['name']}"
        handles = tuple(entry["handles"])
        if entry["kind"] == "delegate":
            reported += _delegate_events(key, entry, found)
            continue
        timed = [e for e in found if e[0] == _KERNEL_EVENT] or [e for e in found if not e[3]]
        if timed:
            reported.append(ProfileEvent(key, _seconds(timed[-1]), handles))
    return reported


def _delegate_events(key: str, entry: dict[str, Any], found: list[Event]) -> list[ProfileEvent]:
    calls = [e for e in found if e[0] == _DELEGATE_EVENT]
    total = _seconds(calls[-1]) if calls else 0.0
    inside = [e for e in found if e[3]]
    handles = tuple(entry["handles"])
    if not inside:
        return [ProfileEvent(key, total, handles)] if calls else []
    nodes = entry.get("nodes", [])
    covered = align([e[3] for e in inside], [node["name"] for node in nodes])
    reported = []
    for event, node_indices in zip(inside, covered):
        node_handles = sorted({h for i in node_indices for h in nodes[i]["handles"]})
        reported.append(ProfileEvent(f"{key}/{event[3]}", _seconds(event), tuple(node_handles)))
    outside = total - sum(e.seconds for e in reported)
    if calls and outside > 0:
        reported.append(ProfileEvent(f"{key} (outside its operators)", outside, handles))
    return reported


def align(operators: Sequence[str], nodes: Sequence[str]) -> list[list[int]]:
    """For each operator (in run order), the indices of the delegate nodes it runs.

    Operators and nodes are paired in order, as many pairs as possible and the
    most alike names among those (a dynamic-programming alignment); a node left
    unpaired was fused into the next paired operator (the last one, at the end).
    """
    n, m = len(operators), len(nodes)
    # best[i][j]: best score pairing operators[i:] with nodes[j:]
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = max(
                best[i + 1][j], best[i][j + 1], 10 + _likeness(operators[i], nodes[j]) + best[i + 1][j + 1]
            )
    pairs: list[int | None] = [None] * n
    i = j = 0
    while i < n and j < m:
        if best[i][j] == 10 + _likeness(operators[i], nodes[j]) + best[i + 1][j + 1]:
            pairs[i] = j
            i, j = i + 1, j + 1
        elif best[i][j] == best[i][j + 1]:
            j += 1
        else:
            i += 1
    covered: list[list[int]] = [[] if p is None else [p] for p in pairs]
    paired = [(i, p) for i, p in enumerate(pairs) if p is not None]
    taken = {p for _, p in paired}
    for node in range(m):
        if node in taken or not paired:
            continue
        into = next((i for i, p in paired if p > node), paired[-1][0])
        covered[into].append(node)
    return [sorted(c) for c in covered]


def _likeness(operator: str, node: str) -> int:
    """3: the same operation by name; 2: one name contains the other; 1: known to be the same
    operation under other names; 0: unlike."""
    op = _letters(operator.split(" #")[0].split(" (")[0])
    kind = _letters(node)
    bare = re.sub(r"^static|[1-3]d$", "", kind)
    if op == kind:
        return 3
    if op in kind or bare in op:
        return 2
    if (
        any(kind.startswith(alias) for alias in _SAME_OPERATION.get(op, ()))
        or ("unary" in op and kind in _UNARY)
        or op[:4] == kind[:4]
    ):
        return 1
    return 0


def _letters(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _seconds(event: Event) -> float:
    return max(0, event[5] - event[4]) * _NANOSECONDS
