"""The reference backend: a compiler to an instruction list, and its interpreter.

Every test lowers a real model through ``pipeline.to_backend`` (or checks one
piece of the backend directly) and compares with eager PyTorch.

What every backend is held to (registration, spec validation, the zoo against
eager, save and load, handles, errors, profiles, bad inputs) is in
tests/backends/conformance.py; this file keeps what is this backend's own.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import backend_checks
import pytest
import torch
from backend_checks import compile_specs, fresh_like, line_of
from torch import nn

import pipeline
import pipeline.backends.reference as reference
from pipeline import zoo
from pipeline.backends.reference import ops
from pipeline.backends.reference.interpreter import ReferenceBackend
from pipeline.backends.reference.program import (
    Block,
    InputSpec,
    Instruction,
    MethodProgram,
    Program,
    Ref,
    parse,
    serialize,
    to_text,
)
from pipeline.core.source import portable_path

FRONTENDS = {
    "export": dict(frontend="export"),
    "script": dict(frontend="torchscript", torchscript_mode="script"),
    "trace": dict(frontend="torchscript", torchscript_mode="trace"),
}
TOLERANCE = backend_checks.tolerance("reference")


def assert_same_outputs(expected, actual, **tolerance) -> None:
    backend_checks.assert_same_outputs(expected, actual, **(tolerance or TOLERANCE))


pytestmark = [  # tracing the zoo warns about what it does; the tests check the results instead
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning"),
]


def lower(model: nn.Module, inputs: dict, frontend: str, spec: dict = None, **options) -> pipeline.LoweredModule:
    return pipeline.to_backend(
        "reference",
        model,
        {m: dict(spec or {}) for m in inputs},
        example_inputs=inputs,
        **FRONTENDS[frontend],
        **options,
    )


# -- the zoo, on every frontend ------------------------------------------------------------------


def test_lowered_program_runs_other_batch_sizes_than_the_example():
    model, inputs = zoo.build("cnn"), zoo.example_inputs("cnn", batch=2)
    lowered = lower(
        model, inputs, "export", dynamic_shapes={"forward": {"x": {0: {"name": "batch", "min": 1, "max": 64}}}}
    )
    x = torch.randn(5, 3, 16, 16)
    assert_same_outputs(model(x), lowered(x))


def test_compiled_program_lists_one_instruction_per_op_with_its_handle():
    lowered = lower(zoo.build("mlp"), zoo.example_inputs("mlp"), "export")
    listing = to_text(parse(lowered.payload).methods["forward"])
    assert listing.count("aten::linear(") == 3 and listing.count("aten::gelu(") == 2
    assert "<float32 tensor (128, 64)>" in listing and "# 0, handle 0" in listing


# -- artifacts -----------------------------------------------------------------------------------


def test_payload_round_trips_tensors_of_every_kind_exactly():
    constants = [
        torch.randn(3, 4),
        torch.randn(2, 3).to(torch.float16),
        torch.randn(5).to(torch.bfloat16),
        torch.tensor([True, False, True]),
        torch.arange(-3, 3, dtype=torch.int64),
        torch.tensor(2.5),
        torch.empty(0, 3),
        torch.randn(4, 6)[:, ::2],
        torch.randn(2, 2, dtype=torch.complex64),
    ]
    method = MethodProgram("forward", [], Block([], list(constants)), flatten_inputs=True, flatten_outputs=False)
    payload = serialize(Program({"forward": method}))
    restored = parse(payload).methods["forward"].body.outputs
    for original, copy in zip(constants, restored):
        assert copy.dtype == original.dtype and copy.shape == original.shape
        assert torch.equal(copy, original)
    assert serialize(parse(payload)) == payload


@pytest.mark.parametrize("payload", [b"", b"not a payload at all", b"PLREFBE\0" + b"\x01\0\0\0" + b"\xff" * 8])
def test_corrupt_payload_is_rejected_with_lowering_error(payload):
    with pytest.raises(pipeline.LoweringError, match="corrupt payload"):
        ReferenceBackend().compile(payload, compile_specs("reference", {"forward": {}}))


def test_payload_naming_an_op_the_backend_cannot_run_is_rejected_at_compile():
    sort = Instruction("aten::sort", [Ref(0), 0], {}, [1], id=0)
    method = MethodProgram(
        "forward", [InputSpec(0, "x", "Tensor")], Block([sort], [Ref(1)]), flatten_inputs=True, flatten_outputs=False
    )
    with pytest.raises(pipeline.LoweringError, match="aten::sort"):
        ReferenceBackend().compile(serialize(Program({"forward": method})), compile_specs("reference", {"forward": {}}))


def test_truncated_payload_is_rejected_with_lowering_error():
    lowered = lower(zoo.build("mlp"), zoo.example_inputs("mlp"), "export")
    with pytest.raises(pipeline.LoweringError, match="corrupt payload"):
        ReferenceBackend().compile(lowered.payload[:-100], compile_specs("reference", {"forward": {}}))


# -- what the compiler rejects -------------------------------------------------------------------


class Sorting(nn.Module):
    def forward(self, x):
        y = x.relu()
        return torch.sort(y, 0).values


class SortThenTopk(nn.Module):
    def forward(self, x):
        y = torch.sort(x).values
        return torch.topk(y, 2).values


@pytest.mark.parametrize("frontend", ["export", "script"])
def test_unsupported_op_is_rejected_naming_op_method_source_line_and_the_way_out(frontend):
    with pytest.raises(pipeline.UnsupportedOpError) as info:
        lower(Sorting(), {"forward": (torch.randn(4),)}, frontend)
    message = str(info.value)
    line = line_of(Sorting.forward, "torch.sort")
    assert "aten::sort is not in the reference backend's op table; lower on onnxruntime or inductor" in message
    assert f"method 'forward', {portable_path(__file__)}:{line}: `return torch.sort(y, 0).values`" in message
    assert f"runs the {len(ops.SUPPORTED_OPS)} ops listed in pipeline.backends.reference's docstring" in message


@pytest.mark.parametrize("frontend", ["export", "script"])
def test_every_unsupported_op_is_reported_at_once(frontend):
    with pytest.raises(pipeline.UnsupportedOpError) as info:
        lower(SortThenTopk(), {"forward": (torch.randn(4),)}, frontend)
    message = str(info.value)
    assert "cannot compile 2 nodes of 2 ops" in message
    assert "aten::sort" in message and "aten::topk" in message


def test_unsupported_op_in_a_branch_folding_removes_is_accepted():
    class TrainingOnlySort(nn.Module):
        def forward(self, x):
            if self.training:
                x = torch.sort(x, 0).values
            return x * 2

    model = TrainingOnlySort().eval()
    lowered = lower(model, {"forward": (torch.randn(4),)}, "script")
    x = torch.randn(4)
    assert torch.equal(lowered(x), x * 2)
    with pytest.raises(pipeline.UnsupportedOpError, match="(?s)aten::sort.*Constant folding is off"):
        lower(model, {"forward": (torch.randn(4),)}, "script", spec={"constant_folding": False})


def test_batch_norm_in_training_mode_is_rejected():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    with pytest.raises(pipeline.LoweringError, match="inference"):
        lower(model, {"forward": (torch.randn(3, 4),)}, "export")


# -- errors at run time point at the source ------------------------------------------------------


class A(nn.Module):
    def forward(self, x, y):
        return x + y


class C(nn.Module):
    def __init__(self):
        super().__init__()
        self.A0 = A()

    def forward(self, x, y):
        return self.A0(x, y) * 2


def mismatched_call(lowered):
    with pytest.raises(pipeline.BackendRuntimeError) as info:
        lowered(torch.randn(2, 4), torch.randn(13, 9))
    return info.value


@pytest.mark.parametrize("frontend", ["export", "script"])
def test_shape_mismatch_at_run_time_names_hierarchy_and_source_of_the_add(frontend, unchecked_shapes):
    # Distinct example tensors: export specializes a program to inputs that alias.
    lowered = lower(zoo.BasicModule(), {"forward": (torch.randn(5), torch.randn(5))}, frontend)
    error = mismatched_call(lowered)
    message = str(error)
    line = line_of(zoo.BasicModule.accum, "return x + h")
    assert "aten::add" in message and "must match the size" in message
    assert "top(BasicModule)::<unknown>.aten::add" in message
    assert f'File "{portable_path(zoo.__file__)}", line {line}' in message and "return x + h" in message
    assert len(error.debug_handles) == 1 and error.debug_handles[0] != -1


@pytest.mark.parametrize("frontend", ["export", "script", "trace"])
def test_shape_mismatch_in_a_submodule_names_the_submodule(frontend, unchecked_shapes):
    lowered = lower(C(), {"forward": (torch.randn(5), torch.randn(5))}, frontend)
    message = str(mismatched_call(lowered))
    assert "top(C)::<unknown>.A0(A)::forward.aten::add" in message
    if frontend != "trace":  # pipeline.core.source does not parse traced source ranges yet
        assert f'File "{portable_path(__file__)}", line {line_of(A.forward, "return x + y")}' in message


def test_a_failing_assert_in_the_model_raises_with_its_message():
    class NeedsMatrix(nn.Module):
        def forward(self, x):
            assert x.dim() == 2, "needs a matrix"
            return x.relu()

    lowered = lower(NeedsMatrix(), {"forward": (torch.randn(2, 3),)}, "script")
    with pytest.raises(pipeline.BackendRuntimeError, match="prim::RaiseException.*needs a matrix"):
        lowered(torch.randn(2, 3, 4))
    x = torch.randn(2, 3)
    assert torch.equal(lowered(x), x.relu())


# -- control flow and inputs ---------------------------------------------------------------------


class Branchy(nn.Module):
    def forward(self, x, n: int):
        if bool(x.sum() > 0):
            y = x * 2
        else:
            y = x - 1
        for i in range(n):
            y = y + i
        return y, n + 1


def test_data_dependent_if_and_loop_run_at_run_time():
    lowered = lower(Branchy(), {"forward": (torch.randn(3), 2)}, "script")
    positive, negative = torch.ones(3), -torch.ones(3)
    for x in (positive, negative):
        for n in (0, 3):
            assert_same_outputs(Branchy()(x, n), lowered(x, n))


class ListBuilder(nn.Module):
    def forward(self, x):
        shape: List[int] = []
        holder = [shape]  # read through an alias after the appends
        for d in range(x.dim()):
            shape.append(x.size(d))
        shape.append(1)
        return x.reshape(holder[0])


def test_lists_built_with_append_are_fresh_on_every_call_and_survive_aliasing():
    lowered = lower(ListBuilder(), {"forward": (torch.randn(2, 3),)}, "script")
    for x in (torch.randn(2, 3), torch.randn(4, 5, 6), torch.randn(2, 3)):
        assert lowered(x).shape == (*x.shape, 1)


class OptionalBias(nn.Module):
    def forward(self, x, bias: Optional[torch.Tensor] = None):
        if bias is not None:
            x = x + bias
        return x.relu()


def test_optional_arguments_are_bound_as_given_in_torchscript():
    lowered = lower(OptionalBias(), {"forward": (torch.randn(3),)}, "script")
    x, bias = torch.randn(3), torch.randn(3)
    assert torch.equal(lowered(x), x.relu())
    assert torch.equal(lowered(x, bias), (x + bias).relu())


class PairSum(nn.Module):
    def forward(self, pair: Tuple[torch.Tensor, torch.Tensor], scale: float = 2.0):
        first, second = pair
        return (first + second) * scale


@pytest.mark.parametrize("frontend", ["export", "script"])
def test_tuple_arguments_are_bound_from_their_leaves(frontend):
    pair = (torch.randn(3), torch.randn(3))
    lowered = lower(PairSum(), {"forward": (pair, 2.0)}, frontend)
    assert_same_outputs(PairSum()(pair), lowered(pair))


# -- compile spec --------------------------------------------------------------------------------


@pytest.mark.parametrize("frontend", ["export", "trace"])
def test_check_inputs_rejects_a_shape_other_than_the_lowered_one(frontend, unchecked_shapes):
    """The backend's own check, behind the shape contract's (which would refuse the call first)."""
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    checked = lower(model, inputs, frontend, spec={"check_inputs": True})
    with pytest.raises(
        pipeline.BackendRuntimeError,
        match=r"must be a float32 tensor of shape \(2, 64\); "
        r"got a float32 tensor of shape \(3, 64\)",
    ):
        checked(torch.randn(3, 64))
    x = torch.randn(2, 64)
    assert_same_outputs(model(x), checked(x))
    unchecked = lower(model, inputs, frontend)
    assert unchecked(torch.randn(3, 64)).shape == (3, 10)


def test_folding_and_dead_code_elimination_shrink_the_program():
    model, inputs = zoo.build("cnn"), zoo.example_inputs("cnn")

    def instructions(spec):
        lowered = lower(model, inputs, "trace", spec=spec)
        x = fresh_like(inputs["forward"], seed=4)
        assert_same_outputs(model(*x), lowered(*x))
        return sum(1 for _ in parse(lowered.payload).methods["forward"].instructions())

    optimized = instructions({})
    assert optimized < instructions({"constant_folding": False, "dead_code_elimination": False})


# -- debug handles, backend map, profile ---------------------------------------------------------


@pytest.mark.parametrize("strategy", ["sequential", "stable", "none"])
@pytest.mark.parametrize("frontend", ["export", "script"])
def test_every_debug_handle_strategy_lowers_and_runs(strategy, frontend):
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs, frontend, debug_handles=strategy)
    x = fresh_like(inputs["forward"], seed=5)
    assert_same_outputs(model(*x), lowered(*x))
    backend_map = lowered.handle_map.backend_map
    if strategy == "none":
        assert backend_map == {}
    else:
        assert sorted(backend_map) == sorted(f"forward/{i}" for i in range(len(backend_map)))
        assert all(h in lowered.handle_map.handles for handles in backend_map.values() for h in handles)


def test_runtime_error_without_debug_handles_reports_handle_minus_one():
    lowered = lower(zoo.BasicModule(), {"forward": (torch.randn(5), torch.randn(5))}, "script", debug_handles="none")
    assert mismatched_call(lowered).debug_handles == [-1]


def test_profile_times_each_instruction_under_its_id_and_handle():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs, "export")
    runners = ReferenceBackend().compile(lowered.payload, compile_specs("reference", lowered.method_compile_spec))
    events = runners["forward"].profile(list(inputs["forward"]))
    assert [e.name for e in events] == [
        "forward/0 aten::linear",
        "forward/1 aten::gelu",
        "forward/2 aten::linear",
        "forward/3 aten::gelu",
        "forward/4 aten::linear",
    ]
    assert all(e.seconds >= 0 for e in events)
    assert [list(e.debug_handles) for e in events] == [
        lowered.handle_map.backend_map[e.name.split()[0]] for e in events
    ]


# -- registration and documentation --------------------------------------------------------------


def test_package_docstring_documents_every_supported_op():
    documented = reference.__doc__
    missing = [
        name
        for name in ops.SUPPORTED_OPS
        if f"``{name.split('::')[1]}``" not in documented and f"``{name}``" not in documented
    ]
    assert missing == []


# -- a received payload runs the op table and nothing else (issue 27) ----------------------------


def _one_instruction_payload(instruction: Instruction, inputs: tuple = ()) -> bytes:
    inputs = inputs or (InputSpec(0, "x", "Tensor"),)
    method = MethodProgram(
        "forward",
        list(inputs),
        Block([instruction], [Ref(instruction.outputs[0])]),
        flatten_inputs=True,
        flatten_outputs=False,
    )
    return serialize(Program({"forward": method}))


@pytest.mark.parametrize(
    "instruction, message",
    [
        (
            Instruction("aten::add.out", [Ref(0), Ref(0)], {"out": Ref(0)}, [1], id=0),
            r"instruction 0 \(aten::add.out\) writes into its argument 'out' in place",
        ),
        (
            Instruction("aten::full.default", [[1 << 40], 1.0], {}, [1], id=0),
            r"instruction 0 \(aten::full.default\) asks for a tensor of 4398046511104 bytes, past the limit",
        ),
        (
            Instruction("aten::expand.default", [Ref(0), [1 << 40]], {}, [1], id=0),
            r"\(aten::expand.default\) asks for a tensor of \d+ bytes, past the limit",
        ),
        (Instruction("prim::Constant", [], {}, [1], id=0), r"\(prim::Constant\) reads a value known only at run time"),
    ],
    ids=["an out= variant", "full of 2**40", "expand to 2**40", "a compile-time op"],
)
def test_a_payload_instruction_preprocess_would_not_write_is_refused_at_compile(instruction, message):
    with pytest.raises(pipeline.LoweringError, match=message):
        ReferenceBackend().compile(_one_instruction_payload(instruction), compile_specs("reference", {"forward": {}}))


def test_a_forged_out_variant_in_an_artifact_is_an_artifact_error_and_the_input_is_untouched(tmp_path):
    from artifact_forgery import forge

    x = torch.randn(2, 64)
    lowered = lower(zoo.build("mlp"), {"forward": (x,)}, "export")
    path = pipeline.save_lowered(lowered, tmp_path / "mlp.lowered")
    payload = _one_instruction_payload(Instruction("aten::mul.out", [Ref(0), 0.0], {"out": Ref(0)}, [1], id=0))
    forged = forge(path, tmp_path / "forged.lowered", parts={"payload.bin": payload})
    with pytest.raises(pipeline.ArtifactError, match=r"forged.lowered: .*aten::mul.out\) writes into its argument"):
        pipeline.load_lowered(forged)


def test_a_size_the_program_computes_is_judged_before_the_factory_runs():
    zeros = Instruction("aten::zeros.default", [[Ref(0)]], {}, [1], id=0)
    handle = ReferenceBackend().compile(
        _one_instruction_payload(zeros, [InputSpec(0, "n", "int")]), compile_specs("reference", {"forward": {}})
    )["forward"]
    assert handle.run([3])[0].equal(torch.zeros(3))
    with pytest.raises(pipeline.BackendRuntimeError, match=r"aten::zeros.default asks for a tensor of \d+ bytes"):
        handle.run([1 << 40])


def test_format_fills_only_empty_fields_as_torchscript_does_and_reads_no_attribute():
    format_ = ops.kernel_for("aten::format")
    template = "{} {0} {0.__repr__.__globals__} {x} {}"
    assert format_(template, torch.zeros(1), 2) == f"{torch.zeros(1)} {{0}} {{0.__repr__.__globals__}} {{x}} 2"

    class Checked(nn.Module):
        def forward(self, x):
            if x.dim() != 2:
                raise ValueError("needs 2 dims, got {} ({})".format(x.dim(), "x"))
            return x.relu()

    lowered = lower(Checked(), {"forward": (torch.randn(2, 3),)}, "script")
    with pytest.raises(pipeline.BackendRuntimeError, match=r"needs 2 dims, got 3 \(x\)"):
        lowered(torch.randn(2, 3, 4))
