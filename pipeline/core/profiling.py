"""Profiles mapped to source: a backend's per-instruction times, through the handle map, to lines.

A backend that can time its own work gives its runners a ``profile(inputs)``
that returns `ProfileEvent`s carrying debug handles (as ExecuTorch's delegates
log profiling events with their delegate debug ids). Here the events of a few
calls are added up per handle and per source line, the way ExecuTorch's
Inspector attributes delegate events to the op graph.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pipeline.core.frontends import call_arguments
from pipeline.core.lowered_module import LoweredModule


def profile(lowered: LoweredModule, inputs: dict[str, tuple[Any, ...]], calls: int = 3) -> dict[str, Any] | None:
    """Per-source-line times of ``calls`` runs of each method, or None if the backend cannot report."""
    events: dict[tuple[str, str, tuple[int, ...]], float] = defaultdict(float)
    supported = False
    for method, args in inputs.items():
        call_args, call_kwargs = call_arguments(args, method)
        for call in range(calls + 1):
            reported = lowered.profile(method, *call_args, **call_kwargs)
            if reported is None:
                break
            supported = True
            if call == 0:
                continue  # a warm-up call: first-call costs are not the program's
            for event in reported:
                events[(method, event.name, tuple(event.debug_handles))] += event.seconds / calls
    if not supported:
        return None
    total = sum(events.values()) or 1.0
    by_source: dict[tuple[str, str], dict[str, Any]] = {}
    for (method, name, handles), seconds in events.items():
        records = [lowered.handle_map.handles.get(h) for h in handles]
        places = sorted({_place(r) for r in records}) or [("<unknown>", "<unknown>")]
        for where, hierarchy in places:  # a fused kernel's time is split over its source lines
            entry = by_source.setdefault(
                (where, hierarchy), {"source": where, "module_hierarchy": hierarchy, "seconds": 0.0, "events": []}
            )
            entry["seconds"] += seconds / len(places)
            entry["events"].append(f"{method}:{name}")
    ranked = sorted(by_source.values(), key=lambda e: (-e["seconds"], e["source"]))
    for entry in ranked:
        entry["share"] = entry["seconds"] / total
        entry["events"] = sorted(set(entry["events"]))
    unknown = sum(e["seconds"] for e in ranked if e["source"] == "<unknown>")
    return {
        "backend": lowered.backend_name,
        "calls": calls,
        "total_seconds": total,
        "attributed_share": 1.0 - unknown / total,  # the share of profiled time tied to a source line
        "events": [
            {"method": m, "name": n, "debug_handles": list(h), "seconds": s}
            for (m, n, h), s in sorted(events.items(), key=lambda item: -item[1])
        ],
        "by_source": ranked,
        **_by_partition(lowered, events, total),
    }


def _by_partition(
    lowered: LoweredModule, events: dict[tuple[str, str, tuple[int, ...]], float], total: float
) -> dict[str, Any]:
    """For a partitioned module, ``{"by_partition": {"forward_p0": {"seconds":, "share":}, "fallback": ...}}``:
    each event's time goes to the partitions of its handles (handles.json records them)."""
    if not any(record.partition for record in lowered.handle_map.handles.values()):
        return {}
    seconds: dict[str, float] = defaultdict(float)
    for (_, _, handles), spent in events.items():
        owners = sorted(
            {getattr(lowered.handle_map.handles.get(h), "partition", None) or "<unknown>" for h in handles}
        ) or ["<unknown>"]
        for owner in owners:
            seconds[owner] += spent / len(owners)
    return {"by_partition": {name: {"seconds": s, "share": s / total} for name, s in sorted(seconds.items())}}


def _place(record: Any) -> tuple[str, str]:
    if record is None:
        return ("<unknown>", "<unknown>")
    source = record.source
    where = f"{source.file}:{source.line}: {source.text}" if source else "<unknown>"
    return (where, record.module_hierarchy)
