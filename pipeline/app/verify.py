"""Numerics: lowered outputs against eager, on the example inputs and on fresh random ones."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
import torch.utils._pytree as pytree


@dataclass
class VerifyResult:
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool
    trials: int
    worst: str  # which method and input set had the largest error

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def compare_outputs(expected: Any, actual: Any) -> Tuple[float, float, bool, Callable]:
    """Largest absolute and relative error over all leaves, and whether the structures match."""
    expected_leaves, expected_spec = pytree.tree_flatten(expected)
    actual_leaves, actual_spec = pytree.tree_flatten(actual)
    if expected_spec != actual_spec:
        return float("inf"), float("inf"), False, lambda atol, rtol: False
    max_abs, max_rel = 0.0, 0.0
    pairs: List[Tuple[torch.Tensor, torch.Tensor]] = []
    for e, a in zip(expected_leaves, actual_leaves):
        if isinstance(e, torch.Tensor):
            if not isinstance(a, torch.Tensor) or e.shape != a.shape:
                return float("inf"), float("inf"), False, lambda atol, rtol: False
            e64, a64 = e.detach().double(), a.detach().double()
            diff = _abs_error(e64, a64)
            if diff.numel():
                max_abs = max(max_abs, float(diff.max()))
                max_rel = max(max_rel, float((diff / e64.abs().clamp_min(1e-12)).max()))
            pairs.append((e64, a64))
        elif e != a:
            return float("inf"), float("inf"), False, lambda atol, rtol: False

    def close(atol: float, rtol: float) -> bool:
        return all(torch.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True) for e, a in pairs)

    return max_abs, max_rel, True, close


def _abs_error(expected: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """|expected - actual|, where equal values (NaN and NaN, inf and inf) differ by 0 and any other
    NaN or infinity is an infinite error: a NaN where eager has a number must never read as 0."""
    same = (expected == actual) | (expected.isnan() & actual.isnan())
    diff = (expected - actual).abs().nan_to_num(nan=math.inf, posinf=math.inf)
    return torch.where(same, torch.zeros_like(diff), diff)


def verify(eager: torch.nn.Module, lowered: torch.nn.Module, input_sets: Dict[str, Sequence[tuple]],
           atol: float, rtol: float) -> VerifyResult:
    """``input_sets`` maps each method to the calls to try, each ``(args, kwargs)``."""
    max_abs, max_rel, passed, trials, worst = 0.0, 0.0, True, 0, ""
    with torch.no_grad():
        for method, sets in input_sets.items():
            for index, (args, kwargs) in enumerate(sets):
                expected = getattr(eager, method)(*args, **kwargs)
                actual = getattr(lowered, method)(*args, **kwargs)
                abs_err, rel_err, same_structure, close = compare_outputs(expected, actual)
                trials += 1
                if abs_err >= max_abs:
                    worst = f"{method}[{'example' if index == 0 else f'random {index}'}]"
                max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
                passed = passed and same_structure and close(atol, rtol)
    return VerifyResult(max_abs, max_rel, atol, rtol, passed, trials, worst)
