"""Example inputs from their specs: seeded, so the same config gives the same tensors."""

from __future__ import annotations

from typing import Any

import torch

from pipeline.app.schema import InputSpec, MethodInputs

Call = tuple[tuple[Any, ...], dict[str, Any]]  # (args, kwargs)


def make_call(spec: MethodInputs, seed: int) -> Call:
    """The arguments of one call: tensors drawn from ``seed`` in order (positional, then by name)."""
    generator = torch.Generator().manual_seed(seed)
    args = tuple(_value(item, generator) for item in spec.args)
    return args, {name: _value(item, generator) for name, item in spec.kwargs.items()}


def make_method_calls(example_inputs: dict[str, MethodInputs], seed: int) -> dict[str, Call]:
    return {method: make_call(spec, seed) for method, spec in example_inputs.items()}


def as_example_inputs(calls: dict[str, Call]) -> dict[str, dict[str, Any]]:
    """The form `pipeline.to_backend` and `capture` take: ``{method: {"args": ..., "kwargs": ...}}``."""
    return {method: {"args": args, "kwargs": kwargs} for method, (args, kwargs) in calls.items()}


def _value(item: Any, generator: torch.Generator) -> Any:
    return _tensor(item, generator) if isinstance(item, InputSpec) else item


def _tensor(spec: InputSpec, generator: torch.Generator) -> torch.Tensor:
    dtype = getattr(torch, spec.dtype)
    shape = tuple(spec.shape)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if not dtype.is_floating_point:
        return torch.randint(int(spec.low), int(spec.high), shape, generator=generator, dtype=dtype)
    values = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (spec.low + (spec.high - spec.low) * values).to(dtype)
