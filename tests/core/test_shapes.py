"""Dynamic shapes in the core: the declaration, the capture that keeps it, the contract every call is
checked against, and its record in an artifact (issue 19).

The backend here, ``held_program``, runs the captured program itself in PyTorch (its payload names a
program held in this process), so that these cases check the core's part alone; each real backend's part is
in tests/backends.
"""

from __future__ import annotations

import json
import zipfile

import backend_checks
import pytest
import torch
from torch import nn

import pipeline
from pipeline.core.shapes import Dynamic, InputShape, MethodShapes, parse_declaration

BATCH = {"name": "batch", "min": 1, "max": 64}
HELD: dict[str, object] = {}  # payload -> the program preprocess got (this process only)


class HeldProgram(pipeline.Backend):
    name = "held_program"
    dynamic_shapes = ("torchscript", "export")

    @staticmethod
    def preprocess(program, specs, generate_debug_handles):
        key = str(len(HELD))
        HELD[key] = program
        return key.encode()

    def compile(self, payload, specs):
        program = HELD[payload.decode()]

        def runner(method):
            if isinstance(program, dict):
                module = program[method].module()
                return lambda inputs: torch.utils._pytree.tree_leaves(module(*inputs))
            return lambda inputs: torch.utils._pytree.tree_leaves(getattr(program, method)(*inputs))

        return {method: runner(method) for method in specs}


@pytest.fixture(autouse=True, scope="module")
def held_program():
    pipeline.register_backend(HeldProgram)
    yield
    pipeline.unregister_backend("held_program")


class Pair(nn.Module):
    """Two inputs that share their batch."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * mask.unsqueeze(-1)


class FixesTheBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        doubled = x * 2
        return doubled.view(2, -1)  # the line that pins the batch


def pair_inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 3, 4), torch.ones(batch, 3)


def lower_pair(**options):
    return pipeline.to_backend(
        "held_program",
        Pair(),
        {"forward": {}},
        example_inputs={"forward": pair_inputs()},
        dynamic_shapes={"forward": {"x": {0: BATCH}, "mask": {0: "batch"}}},
        **options,
    )


def test_a_declared_dimension_is_one_name_with_bounds_across_the_inputs_that_share_it():
    lowered = lower_pair()
    assert lowered.shapes["forward"] == MethodShapes(
        (
            InputShape("x", (Dynamic("batch", 1, 64), 3, 4)),
            InputShape("mask", (Dynamic("batch", 1, 64), 3)),
        )
    )
    program_dims = {str(s) for s in lowered.shapes["forward"].inputs}
    assert program_dims == {"x: [batch[1..64], 3, 4]", "mask: [batch[1..64], 3]"}


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_calls_in_range_answer_as_eager(batch):
    lowered, inputs = lower_pair(), pair_inputs(batch)
    torch.testing.assert_close(lowered(*inputs), Pair()(*inputs))


@pytest.mark.parametrize(
    "x, mask, message",
    [
        (
            torch.randn(65, 3, 4),
            torch.ones(65, 3),
            r"argument 'x' has size 65 in dimension 0 \('batch'\); allowed: 1\.\.64",
        ),
        (
            torch.randn(4, 5, 4),
            torch.ones(4, 3),
            r"argument 'x' has size 5 in dimension 1, which the program was "
            r"captured with as 3 \(static\)\. To vary it, declare it dynamic",
        ),
        (
            torch.randn(4, 3),
            torch.ones(4, 3),
            r"argument 'x' has 2 dimension\(s\) \(shape \[4, 3\]\); the program takes 3",
        ),
        (
            torch.randn(4, 3, 4),
            torch.ones(5, 3),
            r"dimension 'batch' is 4 in argument 'x' \(dimension 0\) but 5 in "
            r"argument 'mask'",
        ),
    ],
)
def test_a_call_outside_the_contract_is_a_shape_error_naming_argument_and_dimension(x, mask, message):
    lowered = lower_pair()
    with pytest.raises(pipeline.ShapeError, match=message) as raised:
        lowered(x, mask)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith("Pair.forward lowered to 'held_program': ")


def test_a_static_lowering_refuses_another_size_before_the_backend_sees_it():
    lowered = pipeline.to_backend("held_program", Pair(), {"forward": {}}, example_inputs={"forward": pair_inputs()})
    assert lowered.shapes["forward"].inputs[0] == InputShape("x", (2, 3, 4))
    with pytest.raises(pipeline.ShapeError, match=r"'forward': \{'x': \{0: \{'name'"):
        lowered(*pair_inputs(3))


def test_torch_export_dims_and_auto_are_accepted():
    batch = torch.export.Dim("batch", min=1, max=32)
    lowered = pipeline.to_backend(
        "held_program",
        Pair(),
        {"forward": {}},
        example_inputs={"forward": pair_inputs()},
        dynamic_shapes={"forward": {"x": {0: batch}, "mask": {0: batch}}},
    )
    assert lowered.shapes["forward"].dimensions == {"batch": Dynamic("batch", 1, 32)}
    auto = pipeline.to_backend(
        "held_program", Pair(), {"forward": {}}, example_inputs={"forward": pair_inputs()}, dynamic_shapes="auto"
    )
    found = auto.shapes["forward"]
    assert found.dynamic and [str(s) for s in found.inputs][0].startswith("x: [x_0[")
    inputs = pair_inputs(5)
    torch.testing.assert_close(auto(*inputs), Pair()(*inputs))


@pytest.mark.parametrize(
    "declaration, message",
    [
        (
            {"xx": {0: BATCH}},
            r"^dynamic_shapes\.forward\.xx: method 'forward' has no tensor argument 'xx'; its tensor "
            r"arguments: 'mask', 'x'\. Did you mean 'x'\?",
        ),
        ({"x": {3: BATCH}}, r"^dynamic_shapes\.forward\.x\.3: dimension 3 is out of range: the example of 'x' has 3"),
        ({"x": {0: {"name": "batch", "min": 9, "max": 4}}}, r"^dynamic_shapes\.forward\.x\.0: min \(9\) is greater"),
        ({"x": {0: "batch"}}, r"^dynamic_shapes\.forward\.x\.0: dimension 'batch' has no bounds"),
        ({"x": {0: {"name": "batch", "min": 3, "max": 8}}}, r"the example input has size 2 here, outside the bounds"),
        ({"x": {0: {"name": "batch", "mx": 8}}}, r"unknown key 'mx'.*Did you mean 'max'\?"),
        ({"x": {0: BATCH, 1: "batch"}}, r"dimension 'batch' has size 3 here but 2 at x\.0"),
    ],
)
def test_a_bad_declaration_names_its_key_path(declaration, message):
    with pytest.raises(pipeline.ShapeDeclarationError, match=message):
        pipeline.to_backend(
            "held_program",
            Pair(),
            {"forward": {}},
            example_inputs={"forward": pair_inputs()},
            dynamic_shapes={"forward": declaration},
        )


def test_a_declaration_for_a_method_that_is_not_lowered_is_refused():
    with pytest.raises(pipeline.ShapeDeclarationError, match=r"dynamic_shapes\.forwad: .*Did you mean 'forward'"):
        pipeline.to_backend(
            "held_program",
            Pair(),
            {"forward": {}},
            example_inputs={"forward": pair_inputs()},
            dynamic_shapes={"forwad": {"x": {0: BATCH}}},
        )


def test_a_model_that_fixes_a_declared_dimension_is_refused_naming_the_line():
    with pytest.raises(pipeline.ShapeDeclarationError) as raised:
        pipeline.to_backend(
            "held_program",
            FixesTheBatch(),
            {"forward": {}},
            example_inputs={"forward": (torch.randn(2, 4),)},
            dynamic_shapes={"forward": {"x": {0: BATCH}}},
        )
    message = str(raised.value)
    assert "fixes dimension 'batch' to 2" in message
    assert "test_shapes.py" in message and "doubled.view(2, -1)" in message


def test_the_trace_mode_says_it_cannot_keep_a_declaration():
    with pytest.raises(
        pipeline.ShapeDeclarationError, match=r"a trace records the example's sizes as constants.*frontend.mode=script"
    ):
        pipeline.to_backend(
            "held_program",
            Pair(),
            {"forward": {}},
            frontend="torchscript",
            torchscript_mode="trace",
            example_inputs={"forward": pair_inputs()},
            dynamic_shapes={"forward": {"x": {0: BATCH}, "mask": {0: "batch"}}},
        )


def test_a_scripted_program_checks_the_declared_arguments():
    lowered = lower_pair(frontend="torchscript")
    inputs = pair_inputs(9)
    torch.testing.assert_close(lowered(*inputs), Pair()(*inputs))
    with pytest.raises(pipeline.ShapeError, match="argument 'x' has size 65"):
        lowered(*pair_inputs(65))


def test_a_backend_that_keeps_no_dynamic_dimensions_refuses_before_preprocess(monkeypatch):
    monkeypatch.setattr(HeldProgram, "dynamic_shapes", ())
    with pytest.raises(
        pipeline.LoweringError,
        match=r"^dynamic_shapes.forward: backend 'held_program' cannot keep dynamic dimension batch\[1\.\.64\] of "
        r"method 'forward': it keeps no dynamic dimensions on frontend 'export' \(it takes static shapes only\)",
    ):
        lower_pair()
    monkeypatch.setattr(HeldProgram, "dynamic_shapes", ("export",))
    monkeypatch.setattr(
        HeldProgram, "dynamic_refusal", classmethod(lambda cls, method, spec: "its int8 path is static")
    )
    with pytest.raises(pipeline.LoweringError, match=r"of method 'forward': its int8 path is static; "):
        lower_pair()


def test_the_contract_survives_save_and_load_and_is_checked_as_data(tmp_path):
    path = pipeline.save_lowered(lower_pair(), tmp_path / "pair.lowered")
    loaded = pipeline.load_lowered(path)
    assert loaded.shapes == lower_pair().shapes
    with pytest.raises(pipeline.ShapeError, match="allowed: 1..64"):
        loaded(*pair_inputs(65))
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["format_version"] == 5
    assert manifest["shapes"]["forward"]["inputs"][0] == {
        "argument": "x",
        "sizes": [{"max": 64, "min": 1, "name": "batch"}, 3, 4],
    }


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["inputs"][0].update(argument="y"), r"'y' is not an argument of the method"),
        (lambda s: s["inputs"][0]["sizes"][0].update(min=70), r"min \(70\) is greater than max \(64\)"),
        (lambda s: s["inputs"][0]["sizes"].__setitem__(1, -3), r"expected an integer in 0\.\."),
        (lambda s: s["inputs"][1]["sizes"][0].update(max=9), r"dimension 'batch' has two sets of bounds"),
        (lambda s: s["inputs"][0]["sizes"][0].update(name="a b"), r"is not an identifier"),
    ],
)
def test_a_tampered_contract_is_an_artifact_error(tmp_path, edit, message):
    from artifact_forgery import forge

    saved = pipeline.save_lowered(lower_pair(), tmp_path / "pair.lowered")
    path = forge(saved, tmp_path / "forged.lowered", manifest=lambda manifest: edit(manifest["shapes"]["forward"]))
    with pytest.raises(pipeline.ArtifactError, match=message):
        pipeline.load_lowered(path)


def test_parse_declaration_gives_validate_the_same_messages():
    x = torch.randn(2, 8)
    with pytest.raises(pipeline.ShapeDeclarationError, match=r"^model\.dynamic_shapes\.forward\.input_ids: "):
        parse_declaration({"input_ids": {0: BATCH}}, "forward", {"x": x}, "model.dynamic_shapes.forward")


def test_a_partitioned_lowering_keeps_the_dynamic_batch_in_its_groups_and_its_fallback():
    model = backend_checks.FftInTheMiddle().eval()
    lowered = pipeline.to_backend(
        "reference",
        model,
        {"forward": {}},
        example_inputs={"forward": (torch.randn(3, 4),)},
        partition=True,
        dynamic_shapes={"forward": {"x": {0: BATCH}}},
    )
    assert lowered.partition["fallback"]
    for batch in (1, 9, 64):
        x = torch.randn(batch, 4)
        torch.testing.assert_close(lowered(x), model(x))
