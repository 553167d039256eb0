"""Every number a compile spec holds has a bound that nothing in a file can raise (issue 27, part 6).

A received artifact's manifest carries every option of every method, so an
integer without an upper bound is a number an attacker chooses: thread counts
that stall the loading process, sample counts that make lowering run forever.
This test finds every integer field of every built-in backend's spec and sets it
past any bound, so a field added without one fails here.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from pipeline.core.registry import get_backend
from pipeline.core.spec import SpecError, parse_compile_spec

BUILT_IN = ("reference", "onnxruntime", "inductor", "torchscript", "openvino", "executorch")
HUGE = 10**12


def _integer_fields():
    for name in BUILT_IN:
        schema = get_backend(name).backend_cls.CompileSpec
        hints = typing.get_type_hints(schema)
        for field in dataclasses.fields(schema):
            kind = hints[field.name]
            if kind is int or kind == typing.Optional[int]:
                yield pytest.param(name, field.name, HUGE, id=f"{name}.{field.name}")
            elif kind == typing.Optional[list[list[int]]]:
                yield pytest.param(name, field.name, [[HUGE]], id=f"{name}.{field.name}")


FIELDS = list(_integer_fields())


def test_the_audit_finds_the_integer_fields():
    found = {param.id for param in FIELDS}
    assert {
        "onnxruntime.intra_op_num_threads",
        "onnxruntime.inter_op_num_threads",
        "openvino.threads",
        "executorch.threads",
        "inductor.cpp_threads",
        "onnxruntime.input_shapes",
    } <= found


@pytest.mark.parametrize("backend, field, value", FIELDS)
def test_every_integer_option_past_its_bound_is_refused_naming_the_field_and_the_range(backend, field, value):
    schema = get_backend(backend).backend_cls.CompileSpec
    with pytest.raises(SpecError) as raised:
        parse_compile_spec(schema, {field: value}, "compile_spec.forward")
    message = str(raised.value)
    assert field in message and (".." in message or "at most" in message), message
