"""Operands as JSON beside raw tensor bytes: what the reference payload and the partition fallback share.

Both formats write a program's operands as JSON, tensors as ``{"tensor": index}``
into a table of raw bytes stored beside the JSON (`pipeline.core.tensor_data`).
Written once, here:

* `TensorTable`: the tensors a program reads, in first-use order, each stored
  once. The reference payload stores equal tensors once (``by_content``); the
  fallback stores each parameter or constant object once. Either way equal
  programs give equal bytes.
* torch's own constants, a device, dtype, layout or memory format: a one-key
  object, ``{"device": "cpu"}``, ``{"dtype": "float32"}``, ``{"layout": "strided"}``,
  ``{"memory_format": "contiguous_format"}`` (`torch_constant`, `read_torch_constant`).

Each format keeps its own spelling of the rest: the reference payload writes
Python scalars and lists as JSON and refers to values by number; the fallback
writes scalars as literals (`pipeline.core.literals`) and refers to values by name.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

from pipeline.core.tensor_data import read_tensor, tensor_bytes, tensor_entry

__all__ = ["TORCH_CONSTANT_TAGS", "TensorTable", "read_tensor", "read_torch_constant", "torch_constant"]

_ENUMS: dict[str, type[torch.dtype] | type[torch.layout] | type[torch.memory_format]] = {
    "dtype": torch.dtype,
    "layout": torch.layout,
    "memory_format": torch.memory_format,
}
TORCH_CONSTANT_TAGS = ("device", *_ENUMS)


def torch_constant(value: object) -> dict[str, str] | None:
    """``{"dtype": "float32"}`` and the like for a device, dtype, layout or memory format; None for anything else."""
    if isinstance(value, torch.device):
        return {"device": str(value)}
    for tag, kind in _ENUMS.items():
        if isinstance(value, kind):
            return {tag: str(value).removeprefix("torch.")}
    return None


def read_torch_constant(tag: str, content: object) -> torch.device | torch.dtype | torch.layout | torch.memory_format:
    """The constant `torch_constant` wrote as ``{tag: content}``; a ``ValueError`` naming it if there is none."""
    if tag not in TORCH_CONSTANT_TAGS or not isinstance(content, str):
        raise ValueError(f"unknown {tag} {content!r}")
    if tag == "device":
        try:
            return torch.device(content)
        except RuntimeError as error:  # torch's words for a device string it cannot read
            raise ValueError(f"unknown device {content!r}: {error}") from None
    value: Any = getattr(torch, content, None)
    if not isinstance(value, _ENUMS[tag]):
        raise ValueError(f"unknown {tag} {content!r}")
    return value


class TensorTable:
    """Tensors a program reads (parameters, constants), each stored once, in first-use order.

    ``by_content``: tensors of equal dtype, shape and bytes share one entry; else
    each tensor object has its own. ``store`` names the format in the message of
    a tensor it cannot hold (sparse, quantized: they have no plain bytes).
    """

    def __init__(self, store: str, by_content: bool = False) -> None:
        self.store = store
        self.by_content = by_content
        self.tensors: list[torch.Tensor] = []
        self._bytes: list[bytes | None] = []  # by content: read when added; by object: when first asked for
        self._index: dict[Hashable, int] = {}

    def add(self, tensor: torch.Tensor) -> int:
        """The tensor's index; a ``TypeError`` if it has no plain bytes to store."""
        if tensor.layout != torch.strided or tensor.is_quantized:
            raise TypeError(f"a {tensor.layout} tensor cannot be stored in {self.store}")
        raw = tensor_bytes(tensor) if self.by_content else None
        key: Hashable = (str(tensor.dtype), tuple(tensor.shape), raw) if self.by_content else id(tensor)
        if key not in self._index:
            self._index[key] = len(self.tensors)
            self.tensors.append(tensor)  # held, so that no other tensor takes its id while the table lives
            self._bytes.append(raw)
        return self._index[key]

    def data(self, index: int) -> bytes:
        """The raw bytes of tensor ``index`` (`tensor_data.tensor_bytes`)."""
        raw = self._bytes[index]
        if raw is None:
            raw = self._bytes[index] = tensor_bytes(self.tensors[index])
        return raw

    def entry(self, index: int) -> dict[str, object]:
        """Tensor ``index``'s dtype and shape, as `read_tensor` reads them back beside its bytes."""
        return tensor_entry(self.tensors[index])
