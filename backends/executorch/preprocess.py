"""The ahead-of-time half: ``preprocess`` lowers each exported method to a ``.pte`` and packs them.

Per method: issue debug handles for the exported program's nodes and tag the
nodes with them (`partition.tag_handles`); quantize it if the spec says so
(`quantize`); lower it to an ExecuTorch program (`program.to_executorch`); read
the partition back (`partition.method_table`) and the bytes its memory plan
allocates (``planned_bytes`` in the notes; a dynamic program is planned for
each dimension's maximum, `dynamic`). The payload
(`pipeline.core.payload.pack_parts`, kind ``executorch``) holds one ``.pte``
per method, with each method's instruction table and argument layout in the
header. Nothing is pickled: a ``.pte`` is a flatbuffer, data the runtime
interprets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from pipeline.backends.executorch.compile_spec import NAME, ExecuTorchCompileSpec, Quantize
from pipeline.backends.executorch.partition import backend_map, method_partition, method_table, tag_handles
from pipeline.backends.executorch.program import planned_bytes, to_executorch
from pipeline.backends.executorch.quantize import quantize
from pipeline.core.backend import PreprocessResult, exported_method, options_of, pack_parts, progress_step


def preprocess(
    program: Any, specs: Mapping[str, ExecuTorchCompileSpec], generate_debug_handles: Callable
) -> PreprocessResult:
    programs: dict[str, bytes] = {}
    methods_meta: dict[str, Any] = {}
    handles: dict[str, Any] = {}
    notes: dict[str, Any] = {}
    for method, spec in specs.items():
        exported = exported_method(program, method, NAME)
        issued = generate_debug_handles(exported.graph, method=method)
        tag_handles(issued)
        if spec.quantize is not Quantize.none:
            with progress_step("executorch: quantize", method=method):
                exported = quantize(exported, spec, method)
        lowered = to_executorch(exported, spec, method)
        with progress_step("executorch: serialize", method=method):
            programs[method] = bytes(lowered.buffer)
        table = method_table(lowered, method)
        methods_meta[method] = {"flat": takes_flat_tensors(exported), "instructions": table}
        handles.update(backend_map(method, table))
        notes[method] = {
            "partition": method_partition(table, set(issued.values()), options_of(spec)),
            "planned_bytes": planned_bytes(lowered, method),
        }
    return PreprocessResult(pack_parts(NAME, {"methods": methods_meta}, programs), handles, notes)


def takes_flat_tensors(exported: torch.export.ExportedProgram) -> bool:
    """Whether the method's arguments are tensors passed positionally (no nesting, no keywords), so
    that the runtime can hand them to ExecuTorch as they come."""
    args, kwargs = exported.example_inputs or ((), {})
    return not kwargs and all(isinstance(a, torch.Tensor) for a in args)
