"""Models that the reference backend cannot lower or that cannot be built."""

import torch


class SortNet(torch.nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1).values


class NeedsArgument(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = width

    def forward(self, x):
        return x
