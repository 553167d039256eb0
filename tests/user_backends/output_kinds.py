"""A model whose output is one of the kinds a record must keep: 0-dim, empty, a view, or a dtype other than float32."""

import torch

KINDS = ("scalar", "empty", "non_contiguous", "bool", "int64", "float16", "bfloat16")


class Returns(torch.nn.Module):
    """``forward(x)`` of an ``x`` of shape (2, 4) returns one ``kind`` of output (`KINDS`)."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {KINDS}")
        self.kind = kind

    def forward(self, x):
        if self.kind == "scalar":
            return (x * 2).sum()  # a loss or a score: 0-dim
        if self.kind == "empty":
            return x[:, :0] * 2  # shape (2, 0)
        if self.kind == "non_contiguous":
            return (x * 2).t()
        if self.kind == "bool":
            return x > 0
        if self.kind == "int64":
            return (x * 10).to(torch.int64)
        if self.kind == "float16":
            return (x * 2).to(torch.float16)
        return (x * 2).to(torch.bfloat16)
