"""The built-in model zoo: small models built from code (nothing is downloaded).

``basic`` is the BasicModule of PyTorch's backend tests; ``mlp``, ``cnn`` and
``transformer`` are the models the benchmarks and sweeps compare backends on.
Configs name them as ``pipeline.zoo.MLP`` etc. through ``model._target_``.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicModule(nn.Module):
    """The module of PyTorch's ``test_backends.py``: three methods, no parameters."""

    def forward(self, x, h):
        return self.accum(x, h), self.sub_accum(x, h)

    def accum(self, x, h):
        return x + h

    def sub_accum(self, x, h):
        return x - h


class MLP(nn.Module):
    def __init__(self, in_features: int = 64, hidden: int = 128, out_features: int = 10, layers: int = 2):
        super().__init__()
        blocks = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, out_features)

    def forward(self, x):
        return self.head(self.body(x))


class CNN(nn.Module):
    def __init__(self, channels: int = 3, width: int = 16, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Transformer(nn.Module):
    """A stack of ``nn.TransformerEncoderLayer`` (batch first, no dropout)."""

    def __init__(self, d_model: int = 32, nhead: int = 4, dim_feedforward: int = 64, num_layers: int = 2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


def build(name: str) -> nn.Module:
    """A zoo model by short name, in eval mode with seeded weights."""
    torch.manual_seed(0)
    return {"basic": BasicModule, "mlp": MLP, "cnn": CNN, "transformer": Transformer}[name]().eval()


def example_inputs(name: str, batch: int = 2) -> dict:
    """``{method: args}`` for a zoo model, seeded."""
    generator = torch.Generator().manual_seed(0)
    if name == "basic":
        x, h = torch.randn(5, generator=generator), torch.randn(5, generator=generator)
        return {"forward": (x, h), "accum": (x, h), "sub_accum": (x, h)}
    shapes = {"mlp": (batch, 64), "cnn": (batch, 3, 16, 16), "transformer": (batch, 8, 32)}
    return {"forward": (torch.randn(*shapes[name], generator=generator),)}
