"""Example inputs from their specs: seeded, so the same config gives the same tensors."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

from pipeline.app.schema import InputSpec


def make_inputs(specs: Sequence[InputSpec], seed: int) -> Tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(_tensor(spec, generator) for spec in specs)


def make_method_inputs(example_inputs: Dict[str, List[InputSpec]], seed: int) -> Dict[str, Tuple[torch.Tensor, ...]]:
    return {method: make_inputs(specs, seed) for method, specs in example_inputs.items()}


def _tensor(spec: InputSpec, generator: torch.Generator) -> torch.Tensor:
    dtype = getattr(torch, spec.dtype)
    shape = tuple(spec.shape)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if not dtype.is_floating_point:
        return torch.randint(int(spec.low), int(spec.high), shape, generator=generator, dtype=dtype)
    values = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (spec.low + (spec.high - spec.low) * values).to(dtype)
