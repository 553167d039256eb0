"""Standard architectures, small: the shapes of the models people actually lower.

Each class follows the structure of the well-known model it is named after
(torchvision's ResNet BasicBlock, MobileNetV3 and EfficientNet blocks, the
usual embedding + RNN taggers, an attention encoder), with the same module
kinds and the same in-place habits (``ReLU(inplace=True)``, ``out += identity``,
``Dropout(inplace=True)``), so what their graphs hold is what real checkpoints'
graphs hold. Widths are tiny, so each runs in milliseconds; weights are seeded
and random (nothing is downloaded, and torchvision is not needed)::

    from pipeline.zoo import architectures
    model = architectures.build("resnet")
    inputs = architectures.example_inputs("resnet")   # {"forward": (x,)}

``ARCHITECTURES`` names every model with the frontends that can capture it.
Configs name the classes as ``pipeline.zoo.architectures.ResNetLike`` etc.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# -- ResNet ---------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convolutions, an in-place residual add and ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNetLike(nn.Module):
    """ResNet-18's layout (7x7 stem, max pool, four stages of two BasicBlocks) at a small width."""

    def __init__(self, width: int = 8, classes: int = 10, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        stages: list[nn.Module] = []
        inplanes = width
        for index, count in enumerate(blocks):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(
                    *[BasicBlock(inplanes if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(count)]
                )
            )
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


# -- MobileNetV3 and EfficientNet -----------------------------------------------------------------


def conv_norm_activation(
    inputs: int,
    outputs: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
    activation: Callable[..., nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: convolution, batch norm, an in-place activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(outputs),
    ]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: channel weights from a pooled, squeezed copy of the input."""

    def __init__(
        self,
        channels: int,
        squeezed: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Hardsigmoid,
    ):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.activation(self.fc1(self.avgpool(x)))
        return self.scale_activation(self.fc2(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scale(x) * x


class InvertedResidual(nn.Module):
    """MobileNetV3's block: expand, depthwise convolution, optional squeeze-excite, project, residual."""

    def __init__(
        self, inputs: int, kernel: int, expanded: int, outputs: int, squeeze_excite: bool, hardswish: bool, stride: int
    ):
        super().__init__()
        activation = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inputs:
            layers.append(conv_norm_activation(inputs, expanded, 1, activation=activation))
        layers.append(conv_norm_activation(expanded, expanded, kernel, stride, groups=expanded, activation=activation))
        if squeeze_excite:
            layers.append(SqueezeExcitation(expanded, _divisible(expanded // 4)))
        layers.append(conv_norm_activation(expanded, outputs, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


def _divisible(channels: int, divisor: int = 4) -> int:
    return max(divisor, (channels + divisor // 2) // divisor * divisor)


class MobileNetV3Like(nn.Module):
    """MobileNetV3-Small's structure: hardswish stem, inverted residuals with squeeze-excite, a
    classifier with in-place hardswish and dropout."""

    # inputs, kernel, expanded, outputs, squeeze-excite, hardswish, stride (torchvision's table, narrowed)
    SETTINGS = (
        (8, 3, 8, 8, True, False, 2),
        (8, 3, 24, 12, False, False, 2),
        (12, 3, 32, 12, False, False, 1),
        (12, 5, 48, 16, True, True, 2),
        (16, 5, 64, 16, True, True, 1),
    )

    def __init__(self, classes: int = 10, last_channels: int = 64, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [conv_norm_activation(3, 8, 3, 2, activation=nn.Hardswish)]
        layers += [InvertedResidual(*setting) for setting in self.SETTINGS]
        final = self.SETTINGS[-1][3]
        layers.append(conv_norm_activation(final, 6 * final, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * final, last_channels),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True),
            nn.Linear(last_channels, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth ("row" mode): drops whole samples' residual branches in training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty([x.shape[0], 1, 1, 1], dtype=x.dtype, device=x.device).bernoulli_(survival)
        return x * noise.div_(survival)


class MBConv(nn.Module):
    """EfficientNet's block: SiLU expand, depthwise convolution, squeeze-excite with a sigmoid gate,
    project, stochastic depth on the residual branch."""

    def __init__(self, inputs: int, outputs: int, expand_ratio: int, kernel: int, stride: int, stochastic_depth: float):
        super().__init__()
        expanded = inputs * expand_ratio
        layers: list[nn.Module] = []
        if expanded != inputs:
            layers.append(conv_norm_activation(inputs, expanded, 1, activation=nn.SiLU))
        layers.append(conv_norm_activation(expanded, expanded, kernel, stride, groups=expanded, activation=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, inputs // 4), activation=nn.SiLU, scale_activation=nn.Sigmoid))
        layers.append(conv_norm_activation(expanded, outputs, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth)
        self.use_res_connect = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += x
        return result


class EfficientNetLike(nn.Module):
    """EfficientNet-B0's structure (SiLU stem, MBConv stages, 1x1 head, dropout classifier), narrowed."""

    # inputs, outputs, expand ratio, kernel, stride
    SETTINGS = ((8, 8, 1, 3, 1), (8, 12, 4, 3, 2), (12, 12, 4, 3, 1), (12, 16, 4, 5, 2), (16, 16, 4, 5, 1))

    def __init__(self, classes: int = 10, head_channels: int = 64, dropout: float = 0.2, stochastic_depth: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [conv_norm_activation(3, 8, 3, 2, activation=nn.SiLU)]
        for index, setting in enumerate(self.SETTINGS):
            layers.append(MBConv(*setting, stochastic_depth=stochastic_depth * index / len(self.SETTINGS)))
        layers.append(conv_norm_activation(self.SETTINGS[-1][1], head_channels, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(head_channels, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# -- sequence models ------------------------------------------------------------------------------


class LSTMTagger(nn.Module):
    """Token ids -> per-token tag log-probabilities: embedding, a bidirectional two-layer LSTM, a linear head."""

    def __init__(self, vocab: int = 50, embedding: int = 16, hidden: int = 16, tags: int = 6, layers: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding, padding_idx=0)
        self.lstm = nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(tokens))
        return torch.log_softmax(self.head(states), dim=-1)


class GRUTagger(nn.Module):
    """Token ids -> tag scores and the predicted tags: embedding, a two-layer GRU, a linear head, argmax."""

    def __init__(self, vocab: int = 50, embedding: int = 16, hidden: int = 24, tags: int = 6, layers: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding, padding_idx=0)
        self.gru = nn.GRU(embedding, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, tags)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, _ = self.gru(self.embedding(tokens))
        scores = self.head(states)
        return scores, scores.argmax(dim=-1)


class AttentionEncoder(nn.Module):
    """Token ids (0 is padding) -> class scores: token and position embeddings, ``nn.MultiheadAttention``
    with a key padding mask, a residual layer norm, and a mean over the tokens that are not padding."""

    def __init__(self, vocab: int = 50, d_model: int = 32, heads: int = 4, max_length: int = 16, classes: int = 4):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model, padding_idx=0)
        self.position = nn.Embedding(max_length, d_model)
        self.attention = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = tokens == 0
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.embedding(tokens) + self.position(positions)
        attended, _ = self.attention(x, x, x, key_padding_mask=padding)
        x = self.norm(x + attended).masked_fill(padding.unsqueeze(-1), 0.0)
        kept = (~padding).sum(dim=1, keepdim=True).clamp(min=1)
        return self.head(x.sum(dim=1) / kept)


# -- data-dependent control flow ------------------------------------------------------------------


class CondGate(nn.Module):
    """``torch.cond`` on the input's sign: one branch or the other runs, decided at run time."""

    def __init__(self, features: int = 8):
        super().__init__()
        self.up = nn.Linear(features, features)
        self.down = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def positive(x: torch.Tensor) -> torch.Tensor:
            return self.up(x).relu() + x

        def negative(x: torch.Tensor) -> torch.Tensor:
            return self.down(x).tanh() - 1.0

        return torch.cond(x.sum() > 0, positive, negative, (x,))


# -- the list the tests and configs use -----------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    cls: type
    inputs: tuple[tuple[tuple[int, ...], torch.dtype, int], ...]  # (shape, dtype, vocab or 0) per argument
    frontends: tuple[str, ...]  # "export", "script", "trace": the captures that can take the model


_IMAGE = (((2, 3, 32, 32), torch.float32, 0),)
_TOKENS = (((2, 8), torch.int64, 50),)
ALL_FRONTENDS = ("export", "script", "trace")

ARCHITECTURES: dict[str, Architecture] = {
    "resnet": Architecture(ResNetLike, _IMAGE, ALL_FRONTENDS),
    "mobilenet_v3": Architecture(MobileNetV3Like, _IMAGE, ALL_FRONTENDS),
    "efficientnet": Architecture(EfficientNetLike, _IMAGE, ALL_FRONTENDS),
    "lstm_tagger": Architecture(LSTMTagger, _TOKENS, ALL_FRONTENDS),
    "gru_tagger": Architecture(GRUTagger, _TOKENS, ALL_FRONTENDS),
    "attention_encoder": Architecture(AttentionEncoder, _TOKENS, ALL_FRONTENDS),
    # torch.cond is export's construct: TorchScript neither scripts it nor traces both branches.
    "cond_gate": Architecture(CondGate, (((2, 8), torch.float32, 0),), ("export",)),
}


def build(name: str) -> nn.Module:
    """An architecture by short name, in eval mode with seeded weights."""
    torch.manual_seed(0)
    return ARCHITECTURES[name].cls().eval()


def example_inputs(name: str) -> dict[str, tuple]:
    """``{"forward": args}``, seeded: images uniform in [-1, 1), token ids in [0, vocab) with padding (0)
    at the end of the second sequence."""
    generator = torch.Generator().manual_seed(0)
    args = []
    for shape, dtype, vocab in ARCHITECTURES[name].inputs:
        if dtype.is_floating_point:
            args.append(torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1)
        else:
            tokens = torch.randint(1, vocab, shape, generator=generator, dtype=dtype)
            tokens[-1, shape[-1] // 2 :] = 0
            args.append(tokens)
    return {"forward": tuple(args)}
