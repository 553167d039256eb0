"""The lowered module's outputs on the example inputs, kept beside the artifact: what replay compares
when the artifact's bytes cannot match (native code, TorchScript archives).

``outputs.bin`` is a payload container (`pipeline.core.payload`): a JSON header
with each method's output leaves (dtype, shape) and the digest of the example
inputs, then the raw bytes of each leaf (`pipeline.core.tensor_data`), so every
output a backend returns is kept: 0-dim and empty tensors, views, bool, integers
and 16-bit floats. No pickle; equal outputs give equal bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from pipeline.core.errors import LoweringError, MalformedInput
from pipeline.core.files import write_atomic
from pipeline.core.hashing import sha256_bytes, sha256_chunks
from pipeline.core.payload import pack_parts, unpack_parts
from pipeline.core.tensor_data import read_tensor, tensor_bytes, tensor_entry

KIND = "outputs"


def inputs_digest(calls: dict[str, tuple[tuple, dict[str, Any]]]) -> str:
    """sha256 over every example tensor's dtype, shape and bytes, and every other value's repr."""
    return sha256_chunks(_example_chunks(calls))


def _example_chunks(calls: dict[str, tuple[tuple, dict[str, Any]]]) -> Iterator[bytes]:
    for method in sorted(calls):
        args, kwargs = calls[method]
        for leaf in pytree.tree_leaves((args, dict(sorted(kwargs.items())))):
            if isinstance(leaf, torch.Tensor):
                yield f"{method}:{leaf.dtype}:{list(leaf.shape)}".encode()
                yield tensor_bytes(leaf)
            else:
                yield f"{method}:{leaf!r}".encode()


def record(
    path: Path,
    lowered: Any,
    calls: dict[str, tuple[tuple, dict[str, Any]]],
    computed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write each lowered method's outputs on its example call; the report's entry.

    ``computed`` holds outputs already computed on those calls (verify's, `VerifyResult.example_outputs`):
    a method found there is not run again, which on a real-size model is most of the record stage.
    """
    meta: dict[str, Any] = {"inputs_sha256": inputs_digest(calls), "methods": {}}
    parts: dict[str, bytes] = {}
    with torch.no_grad():
        for method, (args, kwargs) in calls.items():
            outputs = computed[method] if computed and method in computed else getattr(lowered, method)(*args, **kwargs)
            leaves = [leaf for leaf in pytree.tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]
            meta["methods"][method] = [tensor_entry(t) for t in leaves]
            for index, tensor in enumerate(leaves):
                parts[f"{method}/{index}"] = tensor_bytes(tensor)
    data = pack_parts(KIND, meta, parts)
    write_atomic(path, data)
    return {"path": path.name, "sha256": sha256_bytes(data), "inputs_sha256": meta["inputs_sha256"]}


def read(path: Path) -> tuple[str, dict[str, list[torch.Tensor]]]:
    """``(inputs digest, {method: output tensors})``; a `LoweringError` for anything else."""
    meta, parts = unpack_parts(path.read_bytes(), KIND)
    outputs: dict[str, list[torch.Tensor]] = {}
    try:
        for method, leaves in meta["methods"].items():
            outputs[method] = [
                read_tensor(leaf, parts[f"{method}/{index}"], f"{method}[{index}]") for index, leaf in enumerate(leaves)
            ]
        return meta["inputs_sha256"], outputs
    except (MalformedInput, KeyError, TypeError, RuntimeError, AttributeError, ValueError) as error:
        raise LoweringError(f"{path}: not an outputs record: {type(error).__name__}: {error}") from None


def compare(recorded: Path, replayed: Path, atol: float, rtol: float) -> dict[str, Any]:
    """Whether the replayed outputs match the recorded ones within tolerance, on the same inputs."""
    before_inputs, before = read(recorded)
    after_inputs, after = read(replayed)
    if before_inputs != after_inputs:
        return {"match": False, "why": "the example inputs differ (seed, shapes or dtypes changed)"}
    for method in sorted(set(before) | set(after)):
        a, b = before.get(method, []), after.get(method, [])
        if len(a) != len(b) or any(x.shape != y.shape or x.dtype != y.dtype for x, y in zip(a, b)):
            return {"match": False, "why": f"method {method!r}: the outputs' number, shapes or dtypes differ"}
        for index, (x, y) in enumerate(zip(a, b)):
            if not torch.allclose(y.double(), x.double(), atol=atol, rtol=rtol, equal_nan=True):
                error = float((y.double() - x.double()).abs().max())
                return {
                    "match": False,
                    "why": f"method {method!r}, output {index}: max abs difference {error:.3g} "
                    f"is beyond atol={atol:g}, rtol={rtol:g}",
                }
    return {"match": True, "why": None}
