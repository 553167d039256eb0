"""The ahead-of-time half: ``preprocess`` compiles each method with AOTInductor.

Per method: ``torch._inductor.aoti_compile_and_package(program,
package_path=<a temporary file>, inductor_configs=...)`` with the spec's
options, plus ``trace.provenance_tracking_level=1``, which makes inductor
write ``kernel_information.json`` into the package: for every kernel call, in
call order, the FX nodes of the exported program it computes. That becomes the
backend map, ``{"<method>/<kernel>:<call number>": [handles]}``. The ``.pt2``
packages go into one payload (`pipeline.core.payload`, kind
``inductor``) with each method's kernel list in the header.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pipeline.backends.inductor.compile_spec import NAME, InductorCompileSpec
from pipeline.core.backend import (
    Dynamic,
    LoweringError,
    PreprocessResult,
    exported_method,
    input_shapes,
    narrowed_dimensions,
    pack_parts,
    progress_step,
)

PACKAGE_NAME = "model.pt2"  # the archive's top folder is named after the file: keep it fixed
_PROVENANCE = {"trace.provenance_tracking_level": 1}


def preprocess(
    program: Any, specs: Mapping[str, InductorCompileSpec], generate_debug_handles: Callable
) -> PreprocessResult:
    packages: dict[str, bytes] = {}
    methods_meta: dict[str, Any] = {}
    for method, spec in specs.items():
        exported = exported_method(program, method, NAME)
        handles = generate_debug_handles(exported.graph, method=method)
        packages[method] = compile_package(exported, spec, method)
        _check_ranges_kept(exported, method)
        kernels = _kernels(packages[method], {node.name: handle for node, handle in handles.items()})
        methods_meta[method] = {"flat": _takes_flat_tensors(exported), "kernels": kernels}
    payload = pack_parts(NAME, {"methods": methods_meta}, packages)
    backend_map = {
        f"{method}/{name}": found for method, meta in methods_meta.items() for name, found in meta["kernels"] if found
    }
    return PreprocessResult(payload, backend_map)


def _below_two(program: torch.export.ExportedProgram) -> bool:
    return any(isinstance(size, Dynamic) and size.min < 2 for shape in input_shapes(program) for size in shape.sizes)


def _check_ranges_kept(program: torch.export.ExportedProgram, method: str) -> None:
    """Refuse a package whose runtime takes less than the declared range: inductor may add guards while it
    compiles (torch's convolution picks its kernel by batch size, so a CNN declared [1..64] came out as
    [1..15]), and the package then checks the narrower range at each call."""
    for argument, dim, declared, kept in narrowed_dimensions(program):
        raise LoweringError(
            f"Backend {NAME!r} cannot keep dynamic dimension {declared} of method {method!r} (argument "
            f"{argument!r}, dimension {dim}): AOTInductor narrowed it to [{kept.min}..{kept.max}] while "
            f"compiling (a kernel it chose holds only there). Declare bounds inside [{kept.min}..{kept.max}], "
            f"or lower on another backend."
        )


def compile_package(program: torch.export.ExportedProgram, spec: InductorCompileSpec, method: str) -> bytes:
    configs = {**_PROVENANCE, **spec.inductor_configs()}
    if _below_two(program):
        # AOTInductor's runtime refuses a dynamic size under 2 unless told otherwise; its kernels are written
        # size-obliviously, and verify checks the lowering at the declared minimum.
        configs["aot_inductor.check_lowerbound"] = False
    with tempfile.TemporaryDirectory(prefix="pipeline-aoti-") as directory:
        path = os.path.join(directory, PACKAGE_NAME)
        try:
            with progress_step("inductor: aoti_compile_and_package", method=method):
                torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs=configs)
        except Exception as error:
            raise LoweringError(
                f"Backend {NAME!r}: AOTInductor failed to compile method {method!r}: {type(error).__name__}: "
                f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            ) from error
        with open(path, "rb") as handle:
            return handle.read()


def _kernels(package: bytes, handle_of: dict[str, int]) -> list[tuple[str, list[int]]]:
    """``[(kernel:call number, handles)]`` in call order, from the package's kernel_information.json."""
    import io

    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        names = [n for n in archive.namelist() if n.endswith("kernel_information.json")]
        information = json.loads(archive.read(names[0])) if names else {}
    calls = sorted(information.items(), key=lambda item: int(item[0].rsplit(":", 1)[-1]))
    return [
        (kernel, sorted({handle_of[n] for n in info.get("pre_grad_nodes", []) if n in handle_of}))
        for kernel, info in calls
    ]


def _takes_flat_tensors(program: torch.export.ExportedProgram) -> bool:
    """Every argument is one tensor (no tuples, keyword-only or non-tensor arguments)."""
    from torch.export.graph_signature import InputKind

    in_spec = program.call_spec.in_spec
    if in_spec is None or in_spec.num_children != 2 or in_spec.child(1).num_children:
        return False
    args = in_spec.child(0)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    return all(args.child(i).is_leaf() for i in range(args.num_children)) and all(
        isinstance(placeholders[name].meta.get("val"), torch.Tensor) for name in users
    )
