"""The record of a split: every group's nodes and every fallback op with its source, and its summary line.

Nothing about the split is silent: the record (`partition_record`, saved in the artifact's manifest as
`PartitionedModule.partition` and written to report.json) lists every group's nodes and every fallback op
with its source line and module path; its ``summary`` is the one line the app prints. `mark_handles` says
in handles.json which partition each handle's node went to.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from pipeline.core.debug_handles import HandleMap
from pipeline.core.partitioning.split import FALLBACK, ProgramSplit, counted
from pipeline.core.source import describe_node

MAX_LISTED = 3  # fallback places named in the summary line; the record lists all


def partition_record(split: ProgramSplit, backend: str, min_nodes: int) -> dict[str, Any]:
    """The report's ``partition`` entry: every group's nodes, every fallback op with its source."""
    partitions, fallback = [], []
    for method, s in split.methods.items():
        handles = split.handles[method]
        for group in s.groups:
            partitions.append(
                {
                    "name": group.name,
                    "method": method,
                    "backend": backend,
                    "nodes": [n.name for n in group.nodes if counted(n)],
                    "handles": sorted(handles[n] for n in group.nodes if n in handles),
                }
            )
        for node in s.fallback_nodes:
            if counted(node):
                fallback.append(_fallback_entry(method, node, handles.get(node), s.reasons.get(node, "")))
    total = sum(counted(n) for s in split.methods.values() for n in s.program.graph.nodes)
    on_backend = sum(len(p["nodes"]) for p in partitions)
    record = {
        "backend": backend,
        "min_nodes": min_nodes,
        "nodes": total,
        "on_backend": on_backend,
        "partitions": partitions,
        "fallback": fallback,
    }
    record["summary"] = summary_line(record)
    return record


def _fallback_entry(method: str, node: torch.fx.Node, handle: int | None, reason: str) -> dict[str, Any]:
    where = describe_node(node)
    source = where.source
    return {
        "method": method,
        "node": node.name,
        "op": where.op,
        "handle": handle,
        "reason": reason,
        "source": f"{source.file}:{source.line}" if source else None,
        "text": source.text if source else None,
        "module_path": where.module_path,
    }


def summary_line(record: dict[str, Any]) -> str:
    """``42 of 45 nodes on reference in 2 subgraphs; fallback: fft_fft at model.py:31``."""
    count = len(record["partitions"])
    text = (
        f"{record['on_backend']} of {record['nodes']} nodes on {record['backend']} in {count} "
        f"subgraph{'s' * (count != 1)}"
    )
    ops_at: dict[str, list[str]] = {}  # place -> ops there, in program order
    for entry in record["fallback"]:
        op = entry["op"].split("::")[-1].split(".")[0]
        file, _, line = (entry["source"] or "").rpartition(":")
        place = f"{os.path.basename(file)}:{line}" if entry["source"] else "unknown source"
        if op not in ops_at.setdefault(place, []):
            ops_at[place].append(op)
    if not ops_at:
        return text + "; no fallback"
    places = [f"{'/'.join(ops)} at {place}" for place, ops in ops_at.items()]
    more = f" and {len(places) - MAX_LISTED} more" if len(places) > MAX_LISTED else ""
    return f"{text}; fallback: {', '.join(places[:MAX_LISTED])}{more}"


def mark_handles(handle_map: HandleMap, split: ProgramSplit) -> None:
    """handles.json says, for every handle, the partition its node went to (or ``fallback``)."""
    for method, s in split.methods.items():
        owner = {node: group.name for group in s.groups for node in group.nodes}
        for node, handle in split.handles[method].items():
            record = handle_map.handles.get(handle)
            if record is not None:
                handle_map.handles[handle] = dataclasses.replace(record, partition=owner.get(node, FALLBACK))
