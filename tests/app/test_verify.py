"""Numerics against eager: NaN and infinity are errors, never zero."""

import math

import torch

from pipeline.app.verify import verify
from pipeline.core.hashing import canonical_json


class Constant(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full_like(x, self.value)


def run(eager_value, lowered_value):
    return verify(Constant(eager_value), Constant(lowered_value), {"forward": [((torch.zeros(3),), {})]}, 1e-5, 1e-5)


def test_nan_where_eager_has_a_number_is_an_infinite_error():
    result = run(1.0, float("nan"))
    assert math.isinf(result.max_abs_err) and not result.passed
    assert b'"max_abs_err": "Infinity"' in canonical_json(result.to_json())  # strict JSON, still readable


def test_infinity_where_eager_has_a_number_is_an_infinite_error():
    result = run(1.0, float("inf"))
    assert math.isinf(result.max_abs_err) and not result.passed


def test_the_same_nan_or_infinity_on_both_sides_is_no_error():
    assert run(float("nan"), float("nan")).max_abs_err == 0.0
    result = run(float("inf"), float("inf"))
    assert result.max_abs_err == 0.0 and result.passed
