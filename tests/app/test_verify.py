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


class Shifted(torch.nn.Module):
    """Logits of 3 classes for 2 samples, shifted so that the second sample's top class changes."""

    def __init__(self, shift):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]) + self.shift * torch.tensor([0.0, 0.0, 1.5])


def test_mean_error_and_top1_agreement_are_recorded_for_classifier_outputs():
    result = verify(Shifted(0.0), Shifted(1.0), {"forward": [((torch.zeros(1),), {})]}, 1e-5, 1e-5)
    assert result.mean_abs_err == 1.5 / 3 and result.max_abs_err == 1.5
    assert result.agreement == 0.5  # sample 0 keeps class 0; sample 1 moves from class 1 to class 2
    assert verify(Shifted(0.0), Shifted(0.0), {"forward": [((torch.zeros(1),), {})] * 2}, 1e-5, 1e-5).agreement == 1.0


def test_agreement_is_none_where_no_output_is_a_row_of_class_scores():
    result = run(1.0, 1.5)
    assert result.agreement is None and result.mean_abs_err == 0.5
