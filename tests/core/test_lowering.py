"""to_backend / codegen_backend_module: ported from PyTorch's test_backends.py, plus what the original gets wrong."""

import ast
import dataclasses
import functools
import inspect
import re
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import pytest
import torch

import pipeline
from pipeline import zoo

FRONTENDS = ["torchscript", "export"]
ALL_METHODS = {"forward": {}, "accum": {}, "sub_accum": {}}


def lower_basic(frontend, xh, spec=ALL_METHODS, backend="test_backend"):
    return pipeline.to_backend(
        backend, zoo.BasicModule(), spec, frontend=frontend, example_inputs={m: xh for m in spec}
    )


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_execution_matches_eager_for_every_lowered_method(frontend, basic, xh):
    lowered = lower_basic(frontend, xh)
    for _ in range(2):  # the same input twice, as the original test does
        for method in ALL_METHODS:
            expected = getattr(basic, method)(*xh)
            got = getattr(lowered, method)(*xh)
            torch.testing.assert_close(got, expected)
    assert isinstance(lowered, pipeline.LoweredModule)
    assert isinstance(lowered(*xh), tuple)


def test_frontend_defaults_to_torchscript_for_a_script_module_and_export_otherwise(basic, xh):
    assert pipeline.to_backend("test_backend", torch.jit.script(basic), {"forward": {}}).frontend == "torchscript"
    assert (
        pipeline.to_backend("test_backend", basic, {"forward": {}}, example_inputs={"forward": xh}).frontend == "export"
    )


def test_empty_spec_values_are_fine(basic, xh):
    lowered = pipeline.to_backend("test_backend", basic, {"forward": {}}, example_inputs={"forward": xh})
    assert lowered.method_compile_spec == {"forward": {}}


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_spec_key_for_a_missing_method_names_it_and_the_methods_there_are(frontend, basic, xh):
    with pytest.raises(pipeline.LoweringError) as error:
        pipeline.to_backend("test_backend", basic, {"acum": {}}, frontend=frontend, example_inputs={"acum": xh})
    message = str(error.value)
    assert "'acum'" in message and "'accum'" in message and "'sub_accum'" in message
    assert "Did you mean 'accum'" in message


def test_calling_a_method_that_was_not_lowered_says_so(xh):
    lowered = lower_basic("export", xh, spec={"accum": {}})
    with pytest.raises(AttributeError, match="'sub_accum' of BasicModule was not lowered"):
        lowered.sub_accum(*xh)
    with pytest.raises(AttributeError, match="'forward' of BasicModule was not lowered"):
        lowered(*xh)


def test_unavailable_backend_warns_at_lowering_and_raises_on_call(xh):
    with pytest.warns(RuntimeWarning, match="'test_backend_unavailable' is not available"):
        lowered = lower_basic("export", xh, backend="test_backend_unavailable")
    with pytest.raises(pipeline.BackendNotAvailableError, match="is not available"):
        lowered(*xh)


def test_unavailable_backend_warning_reaches_python_warnings_filters(xh):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning):
            lower_basic("export", xh, backend="test_backend_unavailable")


class WithDefaults(torch.nn.Module):
    def forward(self, x: torch.Tensor, h: Optional[torch.Tensor] = None, n: int = 3) -> torch.Tensor:
        return x * n if h is None else x + h

    def keyword(self, x: torch.Tensor, *, scale: float = 2.0, shift: int = 1) -> torch.Tensor:
        return x * scale + shift


class EchoArgs(pipeline.Backend):
    """Returns what execute received, so a test sees the argument order."""

    def compile(self, payload, spec):
        return {m: functools.partial(self.run, m) for m in spec}

    def run(self, handle, inputs):
        codes = {torch.Tensor: -1.0, type(None): -2.0}
        return [torch.tensor([codes.get(type(v), v) for v in inputs], dtype=torch.float)]


@pytest.fixture(scope="module")
def echo_backend():
    pipeline.register_backend("echo_args", EchoArgs, preprocess=lambda p, s, g: b"")
    yield "echo_args"
    pipeline.unregister_backend("echo_args")


def test_signature_keeps_positional_defaults(echo_backend):
    model = WithDefaults()
    lowered = pipeline.to_backend(echo_backend, torch.jit.script(model), {"forward": {}})
    assert inspect.signature(lowered.forward) == inspect.signature(model.forward)
    x = torch.ones(2)
    assert lowered(x).tolist() == [-1.0, -2.0, 3.0]  # x, h=None, n=3: defaults filled in
    assert lowered(x, n=5).tolist() == [-1.0, -2.0, 5.0]


def test_signature_keeps_keyword_only_arguments_and_passes_them_last(echo_backend):
    model = WithDefaults()
    x = torch.ones(2)
    lowered = pipeline.to_backend(echo_backend, model, {"keyword": {}}, example_inputs={"keyword": (x,)})
    assert inspect.signature(lowered.keyword) == inspect.signature(model.keyword)
    assert lowered.keyword(x).tolist() == [-1.0, 2.0, 1.0]
    with pytest.raises(TypeError):
        lowered.keyword(x, 0.5)  # keyword-only stays keyword-only
    compile(lowered.code, "<check>", "exec")  # the generated code parses
    by_name = pipeline.to_backend(
        echo_backend,
        model,
        {"keyword": {}},
        example_inputs={"keyword": {"args": (x,), "kwargs": {"shift": 7, "scale": 0.5}}},
    )
    assert by_name.keyword(x, shift=7, scale=0.5).tolist() == [-1.0, 0.5, 7.0]


class Specialised(torch.nn.Module):
    def forward(self, x, scale: float = 1.0, bias: Optional[torch.Tensor] = None, activation: str = "relu", **kwargs):
        y = x * scale + (bias if bias is not None else 0)
        y = y * kwargs["mask"] if "mask" in kwargs else y
        return torch.relu(y) if activation == "relu" else torch.tanh(y)


@pytest.mark.parametrize("backend", ["reference", "onnxruntime"])
def test_a_call_with_a_value_the_program_was_not_specialised_on_is_refused_naming_it(backend):
    model, x, mask = Specialised(), torch.randn(4), torch.ones(4)
    lowered = pipeline.to_backend(
        backend, model, {"forward": {}}, example_inputs={"forward": {"args": (x, 0.5), "kwargs": {"mask": mask}}}
    )
    assert inspect.signature(lowered.forward) == inspect.signature(model.forward)  # **kwargs included
    torch.testing.assert_close(lowered(x, 0.5, mask=mask), model(x, 0.5, mask=mask))
    refusals = [
        (lambda: lowered(x, 2.0, mask=mask), "argument 'scale' was captured as 0.5; this call passes 2.0"),
        (lambda: lowered(x, 0.5, bias=x, mask=mask), "argument 'bias' was captured as None; this call passes a Tensor"),
        (
            lambda: lowered(x, 0.5, activation="tanh", mask=mask),
            "'activation' was captured as 'relu'; this call passes 'tanh'",
        ),
        (
            lambda: lowered(x, 0.5, mask=mask, extra=1),
            "captured with keyword arguments 'mask' through **kwargs; this call adds 'extra'",
        ),
        (lambda: lowered(x, 0.5), "this call leaves out 'mask'"),
    ]
    for call, message in refusals:
        with pytest.raises(pipeline.ArgumentError, match=re.escape(message)):
            call()
    again = pipeline.load_lowered(pipeline.save_lowered(lowered, Path(tempfile.mkdtemp()) / "s.lowered"))
    with pytest.raises(pipeline.ArgumentError, match="'scale' was captured as 0.5"):
        again(x, 2.0, mask=mask)
    torch.testing.assert_close(again(x, 0.5, mask=mask), model(x, 0.5, mask=mask))


class Recording(pipeline.Backend):
    calls: list = []

    def compile(self, payload, spec):
        return {m: functools.partial(self.run, m) for m in spec}

    def run(self, handle, inputs):
        Recording.calls.append((handle, inputs))
        return [inputs[0] + inputs[1], inputs[0] - inputs[1]]


def test_generated_code_is_readable_python_that_calls_execute_once_with_the_arguments_in_order(xh):
    pipeline.register_backend("recording", Recording, preprocess=lambda p, s, g: b"")
    try:
        lowered = pipeline.to_backend("recording", zoo.BasicModule(), {"forward": {}}, example_inputs={"forward": xh})
    finally:
        pipeline.unregister_backend("recording")
    functions = [n for n in ast.parse(lowered.code).body if isinstance(n, ast.FunctionDef)]
    assert [(f.name, [a.arg for a in f.args.args]) for f in functions] == [("forward", ["self", "x", "h"])]
    assert ast.get_docstring(functions[0]).startswith("Lowered forward(x, h)")
    Recording.calls.clear()
    total, difference = lowered(*xh)
    assert len(Recording.calls) == 1 and Recording.calls[0][0] == "forward"
    assert all(a is b for a, b in zip(Recording.calls[0][1], xh))
    assert total.equal(xh[0] + xh[1]) and difference.equal(xh[0] - xh[1])


class WrongCount(pipeline.Backend):
    def compile(self, payload, spec):
        return {m: functools.partial(self.run, m) for m in spec}

    def run(self, handle, inputs):
        return [inputs[0]]  # forward of BasicModule returns two values


def test_backend_returning_the_wrong_number_of_outputs_is_reported(basic, xh):
    pipeline.register_backend("wrong_count", WrongCount, preprocess=lambda p, s, g: b"")
    try:
        lowered = pipeline.to_backend("wrong_count", basic, {"forward": {}}, example_inputs={"forward": xh})
        with pytest.raises(pipeline.BackendRuntimeError, match="returned 1 values .* expected a list of 2"):
            lowered(*xh)
    finally:
        pipeline.unregister_backend("wrong_count")


def test_preprocess_must_return_bytes(basic, xh):
    pipeline.register_backend("returns_module", WrongCount, preprocess=lambda p, s, g: p)
    try:
        with pytest.raises(pipeline.LoweringError, match="must return bytes"):
            pipeline.to_backend("returns_module", basic, {"forward": {}}, example_inputs={"forward": xh})
    finally:
        pipeline.unregister_backend("returns_module")


def test_lowered_module_nested_in_an_eager_parent(xh):
    class Parent(torch.nn.Module):
        def __init__(self, child):
            super().__init__()
            self.child = child

        def forward(self, x, h):
            a, s = self.child(x, h)
            return a * s

    lowered_child = lower_basic("export", xh, spec={"forward": {}})
    parent = Parent(lowered_child)
    torch.testing.assert_close(parent(*xh), (xh[0] + xh[1]) * (xh[0] - xh[1]))
    assert isinstance(parent.child, pipeline.LoweredModule)


def test_forward_hooks_of_the_module_and_global_ones_still_run(xh):
    # LoweredModule.__call__ skips torch.nn.Module's call machinery only while no hook is registered.
    lowered = lower_basic("export", xh, spec={"forward": {}})
    seen = []
    handles = [
        lowered.register_forward_pre_hook(lambda module, args: seen.append("pre")),
        lowered.register_forward_hook(lambda module, args, output: (output[0] * 0, output[1])),
    ]
    total, _ = lowered(*xh)
    assert seen == ["pre"] and total.eq(0).all()
    for handle in handles:
        handle.remove()
    total, _ = lowered(*xh)
    assert seen == ["pre"] and total.equal(xh[0] + xh[1])
    global_handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: seen.append(type(m)))
    try:
        lowered(*xh)
    finally:
        global_handle.remove()
    assert seen == ["pre", pipeline.LoweredModule]


@dataclasses.dataclass
class ModelOutput:
    logits: torch.Tensor
    hidden: torch.Tensor


torch.utils._pytree.register_dataclass(ModelOutput, serialized_type_name="tests.ModelOutput")


class Structured(torch.nn.Module):
    def forward(self, x):
        return {"sum": x + 1, "pair": ((x * 2, x - 1), [x.relu(), x.sigmoid()])}

    def output(self, x):
        return ModelOutput(logits=x * 3, hidden=x.tanh())


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_outputs_come_back_in_the_structure_the_model_returns(frontend, tmp_path):
    x = torch.randn(4)
    lowered = pipeline.to_backend(
        "reference", Structured(), {"forward": {}}, frontend=frontend, example_inputs={"forward": (x,)}
    )
    expected = Structured()(x)
    got = lowered(x)
    assert type(got) is dict and type(got["pair"]) is tuple and type(got["pair"][1]) is list
    torch.testing.assert_close(got, expected)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "s.lowered"))
    torch.testing.assert_close(loaded(x), expected)


def test_pytree_registered_outputs_come_back_as_their_type(tmp_path):
    x = torch.randn(4)
    lowered = pipeline.to_backend("reference", Structured(), {"output": {}}, example_inputs={"output": (x,)})
    got = lowered.output(x)
    assert isinstance(got, ModelOutput)
    torch.testing.assert_close(got.logits, x * 3)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "o.lowered"))
    assert isinstance(loaded.output(x), ModelOutput)


T = torch.zeros(2)


@pytest.mark.parametrize(
    "inputs",
    [
        [T, None, True, 3, 2.0, "text"],  # the fast path: each argument is its own leaf
        [T, (T, [T, None]), {"b": T, "a": 1}],  # nested: pytree's walk, dict keys sorted
        [torch.nn.Parameter(T.clone())],
        [],
    ],
)
def test_argument_leaves_are_the_leaves_pytree_gives(inputs):
    from pipeline.core.backend import argument_leaves

    expected = torch.utils._pytree.tree_leaves(list(inputs))
    assert [id(leaf) for leaf in argument_leaves(inputs)] == [id(leaf) for leaf in expected]


def test_lower_returns_the_module_and_the_seconds_of_each_step(xh):
    from pipeline.core.lowering import lower

    lowering = lower(
        "reference", pipeline.capture(zoo.BasicModule(), ["forward"], "export", {"forward": xh}), {"forward": {}}
    )
    assert lowering.module(*xh)[0].equal(xh[0] + xh[1])
    steps = ("resolve", "capture", "handles", "preprocess", "debug_handles", "codegen", "compile")
    assert all(getattr(lowering.seconds, step) >= 0 for step in steps) and lowering.seconds.partition is None
    assert set(lowering.seconds.reported()) == {"debug_handles", "preprocess", "compile", "codegen"}


class _GraphBreak(torch.nn.Module):
    """Plain Python to eager and to non-strict export; a graph break that strict (Dynamo) export refuses."""

    def forward(self, x):
        torch._dynamo.graph_break()
        return x + 1


def test_strict_false_captures_non_strict_first_as_torch_does():
    captured = pipeline.capture(_GraphBreak(), ["forward"], "export", {"forward": (torch.randn(3),)}, strict=False)
    assert captured.modes["forward"].to_json() == {"mode": "non_strict", "fallback_reason": None}


def test_strict_capture_falls_back_to_non_strict_and_says_why():
    from pipeline.core.lowering import lower

    captured = pipeline.capture(_GraphBreak(), ["forward"], "export", {"forward": (torch.randn(3),)})
    mode = captured.modes["forward"]
    assert mode.mode == "non_strict"
    assert mode.fallback_reason is not None and mode.fallback_reason.startswith("strict export failed: ")
    x = torch.randn(3)
    torch.testing.assert_close(lower("reference", captured, {"forward": {}}).module(x), x + 1)
