"""Selective lowering (SelectiveLoweringTest of test_backends.py) on eager models."""

import pytest
import torch

import pipeline
from pipeline import zoo


class MiddleModule(torch.nn.Module):
    def __init__(self, submodule):
        super().__init__()
        self.submodule = submodule
        self.new_attr = 24

    def forward(self, x, y):
        return self.submodule(x, y)


class OuterModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sub1 = MiddleModule(zoo.BasicModule())
        self.sub2 = MiddleModule(zoo.BasicModule())
        self.other = MiddleModule(zoo.BasicModule())

    def forward(self, x, y):
        a, b = self.sub1.submodule(x, y)
        c, d = self.sub2(x, y)
        e, f = self.other(x, y)
        return a + c + e, b + d + f


PATHS = ["sub1.submodule", "sub2.submodule"]


@pytest.mark.parametrize("inputs", ["none", "tuple", "as_to_backend_takes_them"])
def test_selected_submodules_are_lowered_and_the_rest_is_untouched(inputs, xh):
    outer = OuterModule()
    example_inputs = {"none": None, "tuple": xh, "as_to_backend_takes_them": {"forward": xh}}[inputs]
    lowered = pipeline.to_backend_selective(
        "test_backend", outer, PATHS, {"forward": {}}, example_inputs=example_inputs
    )
    use_export = example_inputs is not None
    torch.testing.assert_close(lowered(*xh), outer(*xh))
    assert isinstance(lowered.sub1.submodule, pipeline.LoweredModule)
    assert isinstance(lowered.sub2.submodule, pipeline.LoweredModule)
    assert lowered.sub1.submodule.frontend == ("export" if use_export else "torchscript")
    assert type(lowered.other.submodule) is zoo.BasicModule
    assert type(lowered.sub1) is MiddleModule and lowered.sub1.new_attr == 24


def test_the_input_model_is_not_changed(xh):
    outer = OuterModule()
    pipeline.to_backend_selective("test_backend", outer, PATHS)
    assert type(outer.sub1.submodule) is zoo.BasicModule
    assert type(outer.sub2.submodule) is zoo.BasicModule


def test_a_path_that_does_not_exist_is_named():
    with pytest.raises(pipeline.LoweringError, match=r"'sub1' has no attribute 'nope' \(path 'sub1.nope'\)"):
        pipeline.to_backend_selective("test_backend", OuterModule(), ["sub1.nope"])


def test_a_path_to_an_attribute_that_is_not_a_module_is_named():
    with pytest.raises(pipeline.LoweringError, match="attribute 'sub1.new_attr' is a int, not a Module"):
        pipeline.to_backend_selective("test_backend", OuterModule(), ["sub1.new_attr"])


def test_an_empty_path_is_rejected():
    with pytest.raises(pipeline.LoweringError, match="non-empty dotted paths"):
        pipeline.to_backend_selective("test_backend", OuterModule(), [""])
