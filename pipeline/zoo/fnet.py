"""FNet (Lee-Thorp et al., 2021, "FNet: Mixing Tokens with Fourier Transforms"): encoder blocks whose
self-attention is replaced by a 2-D discrete Fourier transform over sequence and hidden dimensions,
keeping the real part.

The reference backend has no FFT, so the model lowers there only with partitioning: the projections,
feed-forwards and norms run on the backend, the transforms in PyTorch::

    python -m pipeline model=fnet backend=reference partition=true
"""

from __future__ import annotations

import torch
from torch import nn


class FourierBlock(nn.Module):
    def __init__(self, hidden: int, expansion: int):
        super().__init__()
        self.mix_norm = nn.LayerNorm(hidden)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, hidden * expansion), nn.GELU(), nn.Linear(hidden * expansion, hidden)
        )
        self.out_norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.fft.fft2(x).real  # token mixing: the FFT over (sequence, hidden)
        x = self.mix_norm(x + mixed)
        return self.out_norm(x + self.feed_forward(x))


class FNet(nn.Module):
    """Features [batch, sequence, features] -> class scores [batch, classes]."""

    def __init__(self, features: int = 16, hidden: int = 32, layers: int = 2, expansion: int = 2, classes: int = 4):
        super().__init__()
        self.embed = nn.Linear(features, hidden)
        self.blocks = nn.ModuleList(FourierBlock(hidden, expansion) for _ in range(layers))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))
