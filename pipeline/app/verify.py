"""Numerics: lowered outputs against eager, on the example inputs, on fresh random ones, and for a method
with dynamic dimensions at each dimension's bounds and between (`shape_points`).

``shapes`` lists each shape checked, with its errors: the example's (its random trials included) first,
then each bound, with where ``verify.max_elements`` capped it.

Besides the largest errors (what the tolerance judges), a result records the
mean absolute error and, for classifier-like outputs (2-D float tensors: a
row of logits per sample), the share of rows whose top-1 class is the same:
the figures that say how much a quantized run lost.

The tolerance scales with each output's size: an output passes when
``|lowered - eager| <= atol * scale + rtol * |eager|`` element by element, where
``scale = max(1, max|eager|)`` of that output tensor. Float32 rounding grows with the
magnitude of the values a network carries, not only with each element's own value
(a logit near 0 after fifty conv layers is as far off as its neighbours), so a fixed
absolute floor calibrated on unit-sized zoo outputs fails real models; floored at 1,
small outputs keep the plain absolute ``atol``. ``needed_atol`` is the smallest
``atol`` that the same rule would have accepted, which a failure message offers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.utils._pytree as pytree

from pipeline.app.shape_points import MethodPoints


@dataclass
class VerifyResult:
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool
    trials: int
    worst: str  # which method and input set had the largest error
    mean_abs_err: float = 0.0  # over every output element of every trial
    agreement: float | None = None  # top-1 agreement over the rows of 2-D float outputs; None: none such
    shapes: list[dict[str, Any]] = field(default_factory=list)  # per method and shape checked: its errors
    # The rule's own figures: the largest atol * scale any output was judged by, and the smallest atol that
    # would have passed every output (0 when every error is within rtol alone).
    effective_atol: float = 0.0
    needed_atol: float = 0.0
    output_scales: list[float] = field(default_factory=list)  # max(1, max|eager|) per output of the example
    # The lowered module's outputs on each method's example call (the first input set), which outputs.bin
    # records: kept so that the record stage need not run the module again. Not part of the JSON.
    example_outputs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        record = asdict(replace(self, example_outputs={}))
        del record["example_outputs"]
        return record


@dataclass
class Comparison:
    """One call's outputs, lowered against eager: the errors, and whether they are within tolerance."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    same_structure: bool = True
    error_sum: float = 0.0  # over every output element, for the mean error
    elements: int = 0
    agreeing: int = 0  # rows of 2-D float outputs whose top-1 class agrees
    rows: int = 0
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def needed_atol(self, rtol: float) -> float:
        """The smallest atol with which every output is within ``atol * scale + rtol * |eager|``."""
        if not self.same_structure:
            return math.inf
        needed = 0.0
        for e, a in self.pairs:
            if e.numel():
                excess = (_abs_error(e, a) - rtol * e.abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)).max()
                needed = max(needed, float(excess) / output_scale(e))
        return needed

    def effective_atol(self, atol: float) -> float:
        return max((atol * output_scale(e) for e, _ in self.pairs), default=atol)


def tidy_atol(needed: float) -> float:
    """``needed`` rounded up to 1, 2 or 5 times a power of ten: the value a failure message offers."""
    if not math.isfinite(needed) or needed <= 0:
        return needed
    power = 10.0 ** math.floor(math.log10(needed))
    steps = (float(f"{step * power:.1g}") for step in (1, 2, 5, 10))  # .1g: 3e-05, not 3.0000000000000004e-05
    return next(value for value in steps if value >= needed)


def output_scale(expected: torch.Tensor) -> float:
    """What an output's atol is multiplied by: max(1, its largest finite magnitude)."""
    finite = expected[expected.isfinite()] if expected.is_floating_point() else expected
    return max(1.0, float(finite.abs().max())) if finite.numel() else 1.0


def _different() -> Comparison:
    return Comparison(math.inf, math.inf, same_structure=False)


def compare_outputs(expected: Any, actual: Any) -> Comparison:
    """Largest absolute and relative error over all leaves, their sum, top-1 agreement of class scores,
    and whether the structures match, from one pass over the leaves."""
    expected_leaves, expected_spec = pytree.tree_flatten(expected)
    actual_leaves, actual_spec = pytree.tree_flatten(actual)
    if expected_spec != actual_spec:
        return _different()
    result = Comparison()
    for e, a in zip(expected_leaves, actual_leaves):
        if isinstance(e, torch.Tensor):
            if not isinstance(a, torch.Tensor) or e.shape != a.shape or e.dtype != a.dtype:
                return _different()
            e64, a64 = e.detach().double(), a.detach().double()
            diff = _abs_error(e64, a64)
            if diff.numel():
                result.max_abs = max(result.max_abs, float(diff.max()))
                result.max_rel = max(result.max_rel, float((diff / e64.abs().clamp_min(1e-12)).max()))
            result.error_sum += float(diff.sum())
            result.elements += e.numel()
            if e.dim() == 2 and e.is_floating_point() and e.shape[1] > 1:  # a row of class scores per sample
                result.agreeing += int((e.argmax(dim=1) == a.argmax(dim=1)).sum())
                result.rows += e.shape[0]
            result.pairs.append((e64, a64))
        elif e != a:
            return _different()
    return result


def _abs_error(expected: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """|expected - actual|, where equal values (NaN and NaN, inf and inf) differ by 0 and any other
    NaN or infinity is an infinite error: a NaN where eager has a number must never read as 0."""
    same = (expected == actual) | (expected.isnan() & actual.isnan())
    diff = (expected - actual).abs().nan_to_num(nan=math.inf, posinf=math.inf)
    return torch.where(same, torch.zeros_like(diff), diff)


def verify(
    eager: torch.nn.Module,
    lowered: torch.nn.Module,
    input_sets: Mapping[str, Sequence[tuple[Any, ...]]],
    atol: float,
    rtol: float,
    points: Mapping[str, MethodPoints] | None = None,
) -> VerifyResult:
    """``input_sets`` maps each method to the calls to try at the example's shapes, each ``(args, kwargs)``;
    ``points``, each method with dynamic dimensions to the other shapes to check."""
    total = _Totals()
    shapes = []
    example_outputs: dict[str, Any] = {}
    output_scales: list[float] = []
    with torch.no_grad():
        for method, sets in input_sets.items():
            method_points = (points or {}).get(method, MethodPoints())
            example = _Totals()
            for index, (args, kwargs) in enumerate(sets):
                label = f"{method}[{'example' if index == 0 else f'random {index}'}]"
                expected = getattr(eager, method)(*args, **kwargs)
                actual = getattr(lowered, method)(*args, **kwargs)
                if index == 0:  # cloned: a runtime may hand out its output buffers again on the next call
                    example_outputs[method] = pytree.tree_map_only(torch.Tensor, torch.clone, actual)
                compared = compare_outputs(expected, actual)
                if index == 0:
                    output_scales += [output_scale(e) for e, _ in compared.pairs]
                example.add(compared, label, atol, rtol)
                total.add(compared, label, atol, rtol)
            shapes.append(example.shape(method, "example", method_points.example, None))
            for point in method_points.points:
                compared = _compare(eager, lowered, method, *point.call)
                one = _Totals()
                one.add(compared, f"{method}[{point.label}]", atol, rtol)
                total.add(compared, f"{method}[{point.label}]", atol, rtol)
                shapes.append(one.shape(method, point.label, point.point, point.capped))
    return VerifyResult(
        total.max_abs,
        total.max_rel,
        atol,
        rtol,
        total.passed,
        total.trials,
        total.worst,
        mean_abs_err=total.error_sum / total.elements if total.elements else 0.0,
        agreement=total.agreeing / total.rows if total.rows else None,
        shapes=shapes,
        effective_atol=total.effective_atol,
        needed_atol=total.needed_atol,
        output_scales=output_scales,
        example_outputs=example_outputs,
    )


def _compare(eager: Any, lowered: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Comparison:
    return compare_outputs(getattr(eager, method)(*args, **kwargs), getattr(lowered, method)(*args, **kwargs))


@dataclass
class _Totals:
    """The errors of several calls together: the largest, their sum, and whether every call passed."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    passed: bool = True
    trials: int = 0
    worst: str = ""
    error_sum: float = 0.0
    elements: int = 0
    agreeing: int = 0
    rows: int = 0
    effective_atol: float = 0.0
    needed_atol: float = 0.0

    def add(self, compared: Comparison, label: str, atol: float, rtol: float) -> None:
        self.trials += 1
        if compared.max_abs >= self.max_abs:
            self.worst = label
        self.max_abs, self.max_rel = max(self.max_abs, compared.max_abs), max(self.max_rel, compared.max_rel)
        needed = compared.needed_atol(rtol)  # inf where the structure differs: no atol passes it
        self.passed = self.passed and needed <= atol
        self.effective_atol = max(self.effective_atol, compared.effective_atol(atol))
        self.needed_atol = max(self.needed_atol, needed)
        self.error_sum, self.elements = self.error_sum + compared.error_sum, self.elements + compared.elements
        self.agreeing, self.rows = self.agreeing + compared.agreeing, self.rows + compared.rows

    def shape(self, method: str, label: str, point: dict[str, int], capped: Any) -> dict[str, Any]:
        return {
            "method": method,
            "label": label,
            "point": dict(point),
            "max_abs_err": self.max_abs,
            "max_rel_err": self.max_rel,
            "passed": self.passed,
            "trials": self.trials,
            "capped": capped.to_json() if capped is not None else None,
        }
