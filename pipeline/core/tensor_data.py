"""Tensors as raw bytes: how payloads and fallbacks store weights and constants without pickling them."""

from __future__ import annotations

import torch


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's elements in row-major order, as raw (little-endian) bytes."""
    flat = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    as_bytes = flat.view(torch.uint8)
    out = bytearray(as_bytes.numel())
    torch.frombuffer(out, dtype=torch.uint8).copy_(as_bytes)  # one memcpy; bytes(storage) goes byte by byte
    return bytes(out)
