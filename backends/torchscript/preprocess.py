"""The ahead-of-time half: ``preprocess`` freezes the module and saves it as a TorchScript archive.

Steps: issue debug handles on each method's inlined graph; freeze the module
once (if the spec says so; every lowered method is kept) and save it; match the
nodes of the graphs that will run -- the archive loaded and optimized as
`runtime.TorchScriptBackend.compile` will -- to the handled ones
(`mapping.match_nodes`). A loaded archive's nodes no longer know their module,
so the match runs on the frozen module itself, optimized in place as loading
optimizes, whose nodes are the loaded one's, one for one, constants aside
(checked). The payload is the saved archive saved once more with the map as an
extra file (``pipeline/backend_map.json``): the runtime reads it to name
failing and profiled nodes. The archives pass through a scratch directory, not
bytes in memory: on BERT-base that keeps the peak about 1.3 GB lower.

Freezing happens here and not at load on purpose: with torch 2.13, a module
frozen after ``torch.jit.load`` crashes the process (a segmentation fault)
when one of its ops raises, if the original module ran in the same process.
The backend map is ``{"<method>/<node index>": [handles]}``, indices counting
the optimized graph's nodes in program order.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pipeline.backends.torchscript.archive import BACKEND_MAP_FILE, load_module
from pipeline.backends.torchscript.compile_spec import NAME, TorchScriptCompileSpec, module_spec
from pipeline.backends.torchscript.mapping import inlined_graph, match_nodes, translate_indices
from pipeline.core.backend import LoweringError, PreprocessResult, canonical_json, describe_node, progress_step


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
    with progress_step("torchscript: freeze"):
        module = _freeze(program, methods) if spec.freeze else program
    # The archives go through files: torch.jit.load and torch.jit.save stream a file, where bytes in memory
    # cost each archive one more copy of the weights on either side of the call.
    with tempfile.TemporaryDirectory(prefix="pipeline-torchscript-") as scratch:
        archive = os.path.join(scratch, "frozen.pt")
        _save(module, archive)
        node_maps = _node_maps(graphs, handles, module, archive, methods, spec)
        extra = {
            "methods": {
                m: {"nodes": {str(i): h for i, h in node_maps[m].items()}, "lines": _handles_by_line(handles[m])}
                for m in methods
            }
        }
        # optimize_for_inference rewrote the frozen module in place, so the saved archive is its only
        # unoptimized copy: the payload is that archive, loaded and saved once more with the map.
        saved = _load(archive) if spec.optimize_for_inference else module
        del module
        payload_path = os.path.join(scratch, "archive")  # torch names the archive's folder after the file
        _save(saved, payload_path, {BACKEND_MAP_FILE: canonical_json(extra).decode()})
        del saved
        with open(payload_path, "rb") as file:
            payload = file.read()
    backend_map = {f"{method}/{index}": handles for method in methods for index, handles in node_maps[method].items()}
    return PreprocessResult(payload, backend_map)


def _node_maps(
    graphs: dict[str, Any],
    handles: dict[str, dict[Any, int]],
    module: torch.jit.ScriptModule,
    archive: str,
    methods: list[str],
    spec: TorchScriptCompileSpec,
) -> dict[str, dict[int, list[int]]]:
    """``{method: {index of a node of the graph compile will run: handles}}``.

    The match runs on the in-memory module optimized as loading optimizes it, whose nodes still know
    their module, and is carried over to the loaded archive's graph (the same nodes, constants aside);
    if loading changed the graph, it matches by lines. ``module`` is optimized in place: it is frozen
    once, and a copy of a ScriptModule would share the methods that optimize_for_inference rewrites.
    """
    running = load_module(archive, methods, spec)  # what compile will run
    in_memory = _optimize(module, methods) if spec.optimize_for_inference else module
    node_maps: dict[str, dict[int, list[int]]] = {}
    for method in methods:
        ran, kept = inlined_graph(running, method), inlined_graph(in_memory, method)
        node_maps[method] = translate_indices(
            match_nodes(graphs[method], handles[method], kept), kept, ran
        ) or match_nodes(graphs[method], handles[method], ran, by_module=False)
    return node_maps


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


def _save(module: torch.jit.ScriptModule, path: str, extra_files: Mapping[str, str] | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, path, _extra_files=dict(extra_files or {}))


def _load(path: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: torch.jit.ScriptModule = torch.jit.load(path, map_location="cpu")
    return module


def _handles_by_line(handles: dict[Any, int]) -> dict[str, list[int]]:
    """``"file:line"`` -> handles of the ops on that line, to place a TorchScript traceback."""
    lines: dict[str, list[int]] = {}
    for node, handle in handles.items():
        source = describe_node(node).source
        if source is not None and not node.kind().startswith("prim::"):
            lines.setdefault(f"{source.file}:{source.line}", []).append(handle)
    return {key: sorted(value) for key, value in lines.items()}
