"""The ahead-of-time half: ``preprocess`` freezes the module and saves it as a TorchScript archive.

Steps: issue debug handles on each method's inlined graph; freeze the module
(if the spec says so; every lowered method is kept) and save it; match the
nodes of the graphs that will run -- the archive loaded and optimized as
`runtime.TorchScriptBackend.compile` will -- to the handled ones
(`mapping.match_nodes`). A loaded archive's nodes no longer know their module,
so the match runs on the same optimization of the in-memory module, whose
nodes are the loaded one's, one for one, constants aside (checked). The payload is the frozen
module saved once more with the map as an extra file
(``pipeline/backend_map.json``): the runtime reads it to name failing and
profiled nodes.

Freezing happens here and not at load on purpose: with torch 2.13, a module
frozen after ``torch.jit.load`` crashes the process (a segmentation fault)
when one of its ops raises, if the original module ran in the same process.
The backend map is ``{"<method>/<node index>": [handles]}``, indices counting
the optimized graph's nodes in program order.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pipeline.backends.torchscript.archive import BACKEND_MAP_FILE, load_module
from pipeline.backends.torchscript.compile_spec import NAME, TorchScriptCompileSpec, module_spec
from pipeline.backends.torchscript.mapping import inlined_graph, match_nodes, translate_indices
from pipeline.core.backend import LoweringError, PreprocessResult, canonical_json, describe_node


def preprocess(
    program: Any, specs: Mapping[str, TorchScriptCompileSpec], generate_debug_handles: Callable
) -> PreprocessResult:
    if not isinstance(program, torch.jit.ScriptModule):
        raise LoweringError(
            f"Backend {NAME!r} lowers TorchScript modules (the torchscript frontend), not a {type(program).__name__}."
        )
    spec = module_spec(specs)
    methods = list(specs)
    program.eval()
    graphs = {method: inlined_graph(program, method) for method in methods}
    handles = {method: generate_debug_handles(graphs[method], method=method) for method in methods}
    module = _freeze(program, methods) if spec.freeze else program
    archive = _save(module)
    running = load_module(archive, methods, spec)  # what compile will run
    # The same module again, optimized in memory. Freezing again rather than copying: a copy of a
    # ScriptModule shares its methods, which optimize_for_inference rewrites in place.
    in_memory = _optimize(_freeze(program, methods), methods) if spec.optimize_for_inference else module
    node_maps: dict[str, dict[int, list[int]]] = {}
    for method in methods:
        ran, kept = inlined_graph(running, method), inlined_graph(in_memory, method)
        # Match on the in-memory graph, whose nodes still know their module, and carry the map over to
        # the loaded one (same nodes, constants aside); if loading changed the graph, match by lines.
        node_maps[method] = translate_indices(
            match_nodes(graphs[method], handles[method], kept), kept, ran
        ) or match_nodes(graphs[method], handles[method], ran, by_module=False)
    extra = {
        "methods": {
            m: {"nodes": {str(i): h for i, h in node_maps[m].items()}, "lines": _handles_by_line(handles[m])}
            for m in methods
        }
    }
    payload = _save(module, {BACKEND_MAP_FILE: canonical_json(extra).decode()})
    backend_map = {f"{method}/{index}": handles for method in methods for index, handles in node_maps[method].items()}
    return PreprocessResult(payload, backend_map)


def _freeze(module: torch.jit.ScriptModule, methods: list[str]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.jit.freeze(module, preserved_attrs=[m for m in methods if m != "forward"])
        except Exception as error:
            raise LoweringError(
                f"Backend {NAME!r}: torch.jit.freeze failed: {type(error).__name__}: {error}. "
                "Lower with freeze=False and optimize_for_inference=False to keep the module as scripted."
            ) from error


def _optimize(module: torch.jit.ScriptModule, methods: list[str]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.optimize_for_inference(module, [m for m in methods if m != "forward"])


def _save(module: torch.jit.ScriptModule, extra_files: Mapping[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, buffer, _extra_files=dict(extra_files or {}))
    return buffer.getvalue()


def _handles_by_line(handles: dict[Any, int]) -> dict[str, list[int]]:
    """``"file:line"`` -> handles of the ops on that line, to place a TorchScript traceback."""
    lines: dict[str, list[int]] = {}
    for node, handle in handles.items():
        source = describe_node(node).source
        if source is not None and not node.kind().startswith("prim::"):
            lines.setdefault(f"{source.file}:{source.line}", []).append(handle)
    return {key: sorted(value) for key, value in lines.items()}
