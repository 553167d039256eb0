"""Backend failures come back with module hierarchy and source line (DebugInfo tests of test_backend.cpp)."""

import functools

import pytest
import torch

import pipeline
from pipeline.core.source import portable_path

X, H = torch.rand(2, 4), torch.rand(13, 9)  # shapes that cannot be added
pytestmark = pytest.mark.usefixtures("unchecked_shapes")  # the backend meets them: what does it say?


class M(torch.nn.Module):
    def forward(self, x, h):
        return x + h


class A(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class B(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A0 = A()

    def forward(self, x, y):
        return self.A0(x, y)


class COfA(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A0 = A()

    def forward(self, x, y):
        return self.A0(x, y)


class COfB(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.B0 = B()

    def forward(self, x, y):
        return self.B0(x, y)


ADD_LINE = A.forward.__code__.co_firstlineno + 1


def failure(lowered):
    with pytest.raises(pipeline.BackendRuntimeError) as error:
        lowered(X, H)
    return error.value


def lower(model, frontend):
    example = (torch.rand(4), torch.rand(4))
    return pipeline.to_backend(
        "test_backend", model, {"forward": {}}, frontend=frontend, example_inputs={"forward": example}
    )


@pytest.mark.parametrize("frontend", ["torchscript", "export"])
def test_error_at_top_level_names_the_op_and_line(frontend):
    error = failure(lower(M(), frontend))
    message = str(error)
    assert "The size of tensor a (4) must match the size of tensor b (9)" in message
    assert "Module hierarchy: top(M)::<unknown>.aten::add" in message
    assert f'{portable_path(__file__)}", line {M.forward.__code__.co_firstlineno + 1}' in message
    assert "return x + h" in message
    assert isinstance(error.__cause__, pipeline.BackendRuntimeError)
    assert error.debug_handles == error.__cause__.debug_handles


@pytest.mark.parametrize("frontend", ["torchscript", "export"])
def test_error_in_a_submodule_shows_one_level_of_hierarchy(frontend):
    message = str(failure(lower(COfA(), frontend)))
    assert "top(COfA)::<unknown>.A0(A)::forward.aten::add" in message
    assert f"line {ADD_LINE}" in message and "return x + y" in message


@pytest.mark.parametrize("frontend", ["torchscript", "export"])
def test_error_two_levels_down_shows_both_levels(frontend):
    message = str(failure(lower(COfB(), frontend)))
    assert "top(COfB)::<unknown>.B0(B)::forward.A0(A)::forward.aten::add" in message


def test_error_in_a_lowered_submodule_of_an_eager_parent():
    parent = COfA()
    parent.A0 = lower(A(), "export")
    message = str(failure(parent))
    assert "top(A)::<unknown>.aten::add" in message
    assert f"line {ADD_LINE}" in message


@pytest.mark.parametrize("example", [None, (torch.rand(4), torch.rand(4))], ids=["torchscript", "export"])
def test_error_in_a_selectively_lowered_submodule_shows_the_hierarchy_from_the_top(example):
    model = COfB()
    lowered = pipeline.to_backend_selective("test_backend", model, ["B0"], {"forward": {}}, example_inputs=example)
    message = str(failure(lowered))
    assert "top(COfB)::<unknown>.B0(B)::forward.A0(A)::forward.aten::add" in message
    assert "return x + y" in message


class UnknownHandle(pipeline.Backend):
    def compile(self, payload, spec):
        return {m: functools.partial(self.run, m) for m in spec}

    def run(self, handle, inputs):
        raise pipeline.BackendRuntimeError("kernel 7 failed", debug_handles=[2, -1, 12345])


def test_unknown_handles_are_shown_as_unknown_and_printed_readably():
    pipeline.register_backend("unknown_handle", UnknownHandle, preprocess=lambda p, s, g: b"")
    try:
        lowered = pipeline.to_backend(
            "unknown_handle", M(), {"forward": {}}, example_inputs={"forward": (torch.rand(4), torch.rand(4))}
        )
        message = str(failure(lowered))
    finally:
        pipeline.unregister_backend("unknown_handle")
    assert message.startswith("kernel 7 failed")
    assert "debug handles: 2, -1, 12345" in message
    assert "debug handle -1: unknown" in message
    assert "debug handle 12345: unknown" in message
    assert "debug handle 2: unknown" in message  # preprocess issued no handles at all
