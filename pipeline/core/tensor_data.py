"""Tensors as raw bytes: how payloads, fallbacks and records store tensors without pickling them.

A stored tensor is an entry ``{"dtype": "float32", "shape": [2, 3]}`` beside its
elements' bytes in row-major order. Every shape and dtype round-trips: 0-dim
tensors, empty ones (a 0 in the shape), views that are not contiguous, bool,
integer and 16-bit floats.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pipeline.core.bounded_json import expect, member
from pipeline.core.errors import MalformedInput


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's elements in row-major order, as raw (little-endian) bytes."""
    flat = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    as_bytes = flat.view(torch.uint8)
    out = bytearray(as_bytes.numel())
    torch.frombuffer(out, dtype=torch.uint8).copy_(as_bytes)  # one memcpy; bytes(storage) goes byte by byte
    return bytes(out)


def tensor_entry(tensor: torch.Tensor) -> dict[str, Any]:
    """The entry that `read_tensor` reads back beside `tensor_bytes`."""
    return {"dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}


def read_tensor(entry: Any, data: bytes, where: str) -> torch.Tensor:
    """The tensor of an entry and its bytes; `MalformedInput` naming ``where`` when they disagree."""
    dtype = getattr(torch, member(entry, "dtype", str, where), None)
    if not isinstance(dtype, torch.dtype):
        raise MalformedInput(f"{where}: unknown dtype {entry['dtype']!r}.")
    shape = [expect(s, int, f"{where}.shape") for s in member(entry, "shape", list, where)]
    if any(s < 0 for s in shape) or math.prod(shape) * dtype.itemsize != len(data):
        raise MalformedInput(f"{where}: shape {shape} of {dtype} does not match its {len(data)} bytes.")
    if not data:
        return torch.empty(shape, dtype=dtype)
    # A bytearray copy: the tensor owns writable memory instead of aliasing the caller's bytes.
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
