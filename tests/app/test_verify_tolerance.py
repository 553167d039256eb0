"""The tolerance rule: atol scales with each output's largest magnitude, floored at 1; a failure offers the
smallest tidy atol that would pass."""

import pytest
import torch

from pipeline.app.verify import output_scale, tidy_atol, verify


class Scaled(torch.nn.Module):
    """Outputs of a chosen magnitude, each element off by ``error`` times that magnitude."""

    def __init__(self, magnitude, error=0.0):
        super().__init__()
        self.magnitude, self.error = magnitude, error

    def forward(self, x):
        values = self.magnitude * torch.linspace(-1.0, 1.0, 64, dtype=torch.float32)
        return values + self.error * self.magnitude + 0 * x.sum()


def check(magnitude, error, atol=1e-5, rtol=1e-4):
    calls = {"forward": [((torch.zeros(2),), {})]}
    return verify(Scaled(magnitude), Scaled(magnitude, error), calls, atol, rtol)


def test_the_scale_is_the_largest_magnitude_floored_at_one():
    assert output_scale(torch.tensor([0.1, -0.2])) == 1.0
    assert output_scale(torch.tensor([3.0, -250.0, float("inf"), float("nan")])) == 250.0
    assert output_scale(torch.tensor([], dtype=torch.float32)) == 1.0


def test_float32_rounding_on_large_outputs_passes():
    # ResNet-50's features reach about 250: their float32 error (3e-4 measured) is far past a plain atol of 1e-5.
    result = check(250.0, 1.3e-6)
    assert result.passed and result.effective_atol == pytest.approx(250 * 1e-5)
    assert result.output_scales == [pytest.approx(250.0)]


@pytest.mark.parametrize("magnitude", [0.1, 1.0, 250.0])
def test_a_wrong_lowering_still_fails_at_every_magnitude(magnitude):
    result = check(magnitude, 1e-3)  # off by 1e-3 of the output's size
    assert not result.passed


def test_small_outputs_keep_the_absolute_atol():
    assert not check(0.1, 3e-4).passed  # 3e-5 off: above atol=1e-5 although small against rtol's 1e-4 scale
    assert check(0.1, 5e-5).passed


def test_needed_atol_is_the_smallest_that_passes():
    result = check(250.0, 1e-4)
    assert not result.passed
    assert check(250.0, 1e-4, atol=result.needed_atol * 1.001).passed
    assert not check(250.0, 1e-4, atol=result.needed_atol * 0.99).passed


@pytest.mark.parametrize("needed, tidy", [(4.2e-5, 5e-5), (1e-4, 1e-4), (1.01e-4, 2e-4), (2.5e-3, 5e-3), (6e-7, 1e-6)])
def test_tidy_atol_rounds_up_to_one_two_or_five(needed, tidy):
    assert tidy_atol(needed) == pytest.approx(tidy)


def test_the_failure_message_gives_the_error_the_tolerance_and_the_override(tmp_path):
    from tests.app.test_app import run_in_process

    report = run_in_process(tmp_path, "backend=off_by_one", "frontend=torchscript")
    assert report["stage"] == "verify"
    message = report["error"]
    assert "max_abs_err=0.001" in message and "atol=1e-05 x max(1, max|eager|) per output" in message
    assert "worst: forward[" in message
    override = message.split("verify.tolerance.atol=")[1].split()[0]
    assert float(override) >= report["verify"]["needed_atol"] and float(override) == tidy_atol(float(override))
