"""The generated source of small models, pinned: it is part of the artifact format.

Loading renders ``code.py`` again from the manifest and compares the texts, so a change to what
`pipeline.core.codegen` writes makes every saved artifact of the current format unloadable. A change that
makes these tests fail must add a binding version (`pipeline.core.codegen.TEMPLATES`) and bump
`pipeline.core.artifact.FORMAT_VERSION`, then update the files under tests/data/generated_source/ and the
pair below.
"""

from pathlib import Path

import pytest
import torch

import pipeline
from pipeline.core.artifact import BINDING_OF_VERSION, FORMAT_VERSION
from pipeline.core.codegen import BINDING
from pipeline.zoo import BasicModule

EXPECTED = Path(__file__).resolve().parent.parent / "data" / "generated_source"


class Options(torch.nn.Module):
    """Defaults, a keyword-only argument, a captured constant and a dict output: most of what codegen writes."""

    def forward(self, x: torch.Tensor, scale: float = 2.0, *, shift: int = 1) -> dict[str, torch.Tensor]:
        return {"scaled": x * scale + shift, "sum": x.sum()}


def _lowered(name: str) -> pipeline.LoweredModule:
    x, h = torch.ones(3), torch.ones(3)
    if name == "basic_export":
        inputs = {"forward": (x, h), "accum": (x, h)}
        return pipeline.to_backend("reference", BasicModule(), {m: {} for m in inputs}, example_inputs=inputs)
    if name == "basic_torchscript":
        return pipeline.to_backend("reference", BasicModule(), {"forward": {}}, frontend="torchscript")
    inputs = {"forward": {"args": (x, 0.5), "kwargs": {"shift": 3}}}
    return pipeline.to_backend("reference", Options(), {"forward": {}}, example_inputs=inputs)


def test_the_pinned_texts_belong_to_this_format_and_binding_version():
    assert (FORMAT_VERSION, BINDING) == (5, 1) and BINDING_OF_VERSION[FORMAT_VERSION] == BINDING


@pytest.mark.parametrize("name", ["basic_export", "basic_torchscript", "options"])
def test_generated_source_is_the_pinned_text(name):
    assert _lowered(name).code == (EXPECTED / f"{name}.py.txt").read_text()
