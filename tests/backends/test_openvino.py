"""The openvino backend: each exported method converted to OpenVINO IR and run by the CPU plugin.

Every test lowers a real model through ``pipeline.to_backend`` (or checks one
piece of the backend directly) and compares with eager PyTorch. A conversion
takes one to three seconds, so the zoo models are lowered once per session, and
shared with the conformance suite.

What every backend is held to (registration, spec validation, the zoo against
eager, save and load, handles, errors, profiles, bad inputs) is in
tests/backends/conformance.py; this file keeps what is this backend's own.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import backend_checks
import numpy
import openvino
import pytest
import torch
from backend_checks import compile_specs, line_of, run_app
from openvino.passes import ConstantFolding, Manager
from torch import nn

import pipeline
from pipeline import zoo
from pipeline.backends.openvino.convert import convert
from pipeline.backends.openvino.runtime import OpenVinoBackend
from pipeline.core.payload import pack_parts, unpack_parts

TOLERANCE = backend_checks.tolerance("openvino")
ZOO = ("basic", "mlp", "cnn", "transformer")
CAPABILITIES = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def lower(model: nn.Module, inputs: dict, spec: dict = None) -> pipeline.LoweredModule:
    return pipeline.to_backend("openvino", model, {m: dict(spec or {}) for m in inputs}, example_inputs=inputs)


def read_ir(parts: dict, method: str) -> "openvino.Model":
    weights = openvino.Tensor(numpy.frombuffer(parts[f"{method}.bin"], dtype=numpy.uint8))
    return openvino.Core().read_model(parts[f"{method}.xml"], weights)


@pytest.fixture(scope="module")
def zoo_lowered(lowered_zoo):
    """Each zoo model lowered at the defaults, the session's lowering that the conformance suite shares:
    name -> (model, inputs, lowered)."""
    return {name: (zoo.build(name), zoo.example_inputs(name), lowered_zoo("openvino", name)) for name in ZOO}


# -- the zoo ---------------------------------------------------------------------------------------


def test_payload_is_each_methods_ir_as_xml_and_bin_with_a_json_header(zoo_lowered):
    _, _, lowered = zoo_lowered["basic"]
    meta, parts = unpack_parts(lowered.payload, "openvino")
    assert list(parts) == ["forward.xml", "forward.bin", "accum.xml", "accum.bin", "sub_accum.xml", "sub_accum.bin"]
    for method in ("forward", "accum", "sub_accum"):
        assert parts[f"{method}.xml"].startswith(b"<?xml")
        model = read_ir(parts, method)
        assert [p.get_friendly_name() for p in model.get_parameters()] == ["x", "h"]
        assert meta["methods"][method]["flat"]


def test_lowering_leaves_no_files_behind():
    before = set(os.listdir(tempfile.gettempdir()))
    lower(zoo.build("mlp"), zoo.example_inputs("mlp"))
    assert [name for name in set(os.listdir(tempfile.gettempdir())) - before if "openvino" in name] == []


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_conversion_makes_the_same_operations_as_convert_model_with_the_programs_shapes(name):
    """The backend calls convert_model's steps one by one (to keep fused names); the IR must not differ."""
    model, inputs = zoo.build(name), zoo.example_inputs(name)
    program = torch.export.export(model, inputs["forward"])
    ours = convert(program, "forward").model
    theirs = openvino.convert_model(program, input=[tuple(x.shape) for x in inputs["forward"]])
    fold = Manager()
    fold.register_pass(ConstantFolding())
    fold.run_passes(theirs)
    assert [op.get_type_name() for op in ours.get_ordered_ops()] == [
        op.get_type_name() for op in theirs.get_ordered_ops()
    ]


class PairInput(nn.Module):
    def forward(self, x, pair):
        first, second = pair
        return x * first + second, x.sum()


def test_nested_arguments_are_flattened_and_outputs_keep_their_structure():
    model = PairInput()
    args = (torch.randn(4), (torch.randn(4), torch.randn(4)))
    lowered = lower(model, {"forward": args})
    assert not lowered.compiled("forward").flat
    backend_checks.assert_same_outputs(model(*args), lowered(*args), **TOLERANCE)


class OptionalArguments(torch.nn.Module):  # as Hugging Face models take token_type_ids=None, use_cache=...
    def forward(self, x, bias=None, double=False):
        y = x + bias if bias is not None else x
        return y * 2 if double else y


def test_values_the_program_was_specialised_on_are_not_ir_inputs():
    model, x = OptionalArguments(), torch.randn(4)
    lowered = lower(model, {"forward": {"args": (x,), "kwargs": {"bias": None, "double": True}}})
    backend_checks.assert_same_outputs(model(x, double=True), lowered(x, double=True), **TOLERANCE)


class ThreeOutputs(torch.nn.Module):
    def forward(self, x):
        return x.sum(), x * 2, x[:2] + 1


def test_one_input_with_several_outputs_gives_each_output_in_its_place():
    model, x = ThreeOutputs(), torch.randn(4)
    lowered = lower(model, {"forward": (x,)})
    assert lowered.compiled("forward").flat
    backend_checks.assert_same_outputs(model(x), lowered(x), **TOLERANCE)


# -- compile spec and precision -------------------------------------------------------------------


def test_default_precision_is_f32_and_the_compiled_model_reports_it(zoo_lowered, tmp_path):
    _, _, lowered = zoo_lowered["mlp"]
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "mlp.lowered"))
    assert lowered.method_compile_spec["forward"]["inference_precision"] == "f32"
    for module in (lowered, loaded):
        compiled = module.compiled("forward")
        assert compiled.inference_precision == "f32"
        assert compiled.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"


@pytest.mark.skipif("BF16" not in CAPABILITIES, reason="this CPU does not compute in bf16")
def test_bf16_is_what_the_compiled_model_reports_and_is_less_exact_than_f32(zoo_lowered):
    model, inputs, f32 = zoo_lowered["mlp"]
    bf16 = lower(model, inputs, {"inference_precision": "bf16"})
    assert bf16.compiled("forward").inference_precision == "bf16"
    x = inputs["forward"][0]
    with torch.no_grad():
        expected = model(x)
    assert (bf16(x) - expected).abs().max() > 10 * (f32(x) - expected).abs().max()


@pytest.mark.skipif("FP16" in CAPABILITIES, reason="this CPU computes in f16")
def test_a_precision_the_cpu_cannot_compute_in_is_rejected_naming_its_capabilities():
    with pytest.raises(
        pipeline.LoweringError,
        match=r"inference_precision='f16', but the CPU plugin compiled the "
        r"model at '\w+'.*capabilities: .*'FP32'",
    ):
        lower(zoo.build("mlp"), zoo.example_inputs("mlp"), {"inference_precision": "f16"})


def test_compile_spec_options_reach_the_plugin():
    lowered = lower(
        zoo.build("mlp"), zoo.example_inputs("mlp"), {"performance_hint": "THROUGHPUT", "num_streams": 2, "threads": 2}
    )
    compiled = lowered.compiled("forward").compiled
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert int(compiled.get_property("NUM_STREAMS")) == 2
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[:-10],
        lambda data: b"NOTAPAYLOAD" + data,
        lambda data: data[:-1] + bytes([data[-1] ^ 0xFF]),
        lambda data: pack_parts("onnxruntime", {}, {}),
    ],
)
def test_corrupt_payload_is_rejected_with_lowering_error(zoo_lowered, corrupt):
    _, _, lowered = zoo_lowered["mlp"]
    with pytest.raises(pipeline.LoweringError, match="openvino"):
        OpenVinoBackend().compile(corrupt(lowered.payload), compile_specs("openvino", lowered.method_compile_spec))


# -- debug handles, errors, profiles ---------------------------------------------------------------


def ir_nodes(lowered: pipeline.LoweredModule, method: str = "forward") -> list:
    _, parts = unpack_parts(lowered.payload, "openvino")
    model = read_ir(parts, method)
    return [op for op in model.get_ordered_ops() if op.get_type_name() not in ("Constant", "Parameter", "Result")]


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_every_ir_node_maps_to_the_handles_of_the_fx_nodes_it_came_from(zoo_lowered, name):
    _, _, lowered = zoo_lowered[name]
    backend_map = lowered.handle_map.backend_map
    assert sorted(backend_map) == sorted(f"forward/{op.get_friendly_name()}" for op in ir_nodes(lowered))
    assert all(h in lowered.handle_map.handles for handles in backend_map.values() for h in handles)
    if name == "mlp":
        ops = {key: [lowered.handle_map.handles[h].op for h in handles] for key, handles in backend_map.items()}
        assert ops == {
            f"forward/{node}/aten.{op}.default/{kind}": [f"aten::{op}"]
            for node, op, kinds in [
                ("linear", "linear", ("MatMul", "Add")),
                ("gelu", "gelu", ("Gelu",)),
                ("linear_1", "linear", ("MatMul", "Add")),
                ("gelu_1", "gelu", ("Gelu",)),
                ("linear_2", "linear", ("MatMul", "Add")),
            ]
            for kind in kinds
        }


def test_a_node_fused_while_converting_maps_to_every_node_it_replaced(zoo_lowered):
    """OpenVINO folds each BatchNorm into its Convolution and names the result anew (Convolution_2)."""
    _, _, lowered = zoo_lowered["cnn"]
    records = lowered.handle_map.handles
    convolutions = [op.get_friendly_name() for op in ir_nodes(lowered) if op.get_type_name() == "Convolution"]
    assert len(convolutions) == 2
    for name in convolutions:
        assert "/" not in name  # a name OpenVINO made: nothing but the fused names leads to the source
        handles = lowered.handle_map.backend_map[f"forward/{name}"]
        assert sorted(records[h].op for h in handles) == ["aten::batch_norm", "aten::conv2d"]


def test_profile_times_each_executed_node_with_the_handles_of_all_it_fused(zoo_lowered):
    _, inputs, lowered = zoo_lowered["mlp"]
    events = lowered.profile("forward", *inputs["forward"])
    records = lowered.handle_map.handles
    assert [e.name.split()[1] for e in events] == ["FullyConnected"] * 3
    assert [[records[h].op for h in e.debug_handles] for e in events] == [
        ["aten::linear", "aten::gelu"],
        ["aten::linear", "aten::gelu"],
        ["aten::linear"],
    ]
    assert all(e.seconds >= 0 for e in events)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_every_profiled_node_maps_to_source(zoo_lowered, name):
    """Nodes the plugin made itself (layout Reorders, pieces of attention) take the handles of what they feed."""
    _, inputs, lowered = zoo_lowered[name]
    events = lowered.profile("forward", *inputs["forward"])
    assert events and all(e.debug_handles for e in events)
    if name == "cnn":
        reorder = next(e for e in events if e.name.endswith(" Reorder"))
        assert "aten::conv2d" in [lowered.handle_map.handles[h].op for h in reorder.debug_handles]


class AddTwice(nn.Module):
    def forward(self, x, y):
        total = x + y
        return total * 2


def test_failing_node_is_reported_with_its_handles_and_source_line(unchecked_shapes):
    """Sizes the plugin checks only when the node runs: a program exported with a dynamic dimension (the
    shape contract would refuse the call first: x and y share it)."""
    size = torch.export.Dim("size")
    program = torch.export.export(AddTwice(), (torch.randn(4), torch.randn(4)), dynamic_shapes=({0: size}, {0: size}))
    lowered = pipeline.codegen_backend_module("openvino", {"forward": program}, {"forward": {}})
    assert torch.equal(lowered(torch.ones(6), torch.ones(6)), torch.full((6,), 4.0))  # the size is not fixed
    with pytest.raises(pipeline.BackendRuntimeError, match="mismatch") as raised:
        lowered(torch.randn(3), torch.randn(5))
    records = lowered.handle_map.handles
    assert "aten::add.Tensor" in [records[h].op for h in raised.value.debug_handles]
    assert f"line {line_of(AddTwice.forward, 'total = x + y')}" in str(raised.value)


def test_input_of_the_wrong_dtype_is_reported_with_handle_minus_one(zoo_lowered):
    _, _, lowered = zoo_lowered["mlp"]
    with pytest.raises(pipeline.BackendRuntimeError, match="precision: f64") as raised:
        lowered(torch.randn(2, 64, dtype=torch.float64))
    assert raised.value.debug_handles == [-1]


# -- installing, registration, documentation, config ------------------------------------------------


def test_without_openvino_the_backend_is_listed_unavailable_and_lowering_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    assert "openvino" in pipeline.list_backends()
    assert not OpenVinoBackend().is_available()
    with pytest.raises(
        pipeline.LoweringError,
        match=r"needs the openvino package.*pip install "
        r"'lowering-pipeline\[openvino\]'",
    ):
        lower(zoo.build("mlp"), zoo.example_inputs("mlp"))


def test_app_lowers_with_an_option_overridden_records_the_precision_and_maps_the_profile(tmp_path):
    report = run_app(
        tmp_path,
        "backend=openvino",
        "model=cnn",
        "backend.compile_spec.forward.threads=1",
        "profile=true",
        "latency.enabled=false",
    )
    assert report["status"] == "ok" and report["verify"]["passed"]
    assert report["compile_spec"]["forward"]["threads"] == 1
    assert report["compile_spec"]["forward"]["inference_precision"] == "f32"
    assert report["env"]["backend:openvino"] == OpenVinoBackend.version
    assert json.loads((tmp_path / "handles.json").read_text())["backend_map"]
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert report["profile"]["supported"] and profile["by_source"]
    assert all(entry["source"] != "<unknown>" for entry in profile["by_source"])


# -- a received IR is IR, reads only its own weights and sets no compile option (issue 27) --------

from artifact_forgery import forge  # noqa: E402
from file_canaries import OpenWatch, assert_refused_unread, secret_file  # noqa: E402


def _onnx_naming(location: str) -> bytes:
    """An ONNX model whose one initializer keeps its 16 bytes in the file ``location``."""
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    float4 = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", float4[:1], float4[1:], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture(scope="module")
def mlp_artifact(zoo_lowered, tmp_path_factory):
    _, _, lowered = zoo_lowered["mlp"]
    return pipeline.save_lowered(lowered, tmp_path_factory.mktemp("ov-artifact") / "mlp.lowered"), lowered


def _with_xml(mlp_artifact, out, xml: bytes):
    path, lowered = mlp_artifact
    meta, parts = unpack_parts(lowered.payload, "openvino")
    return forge(path, out, parts={"payload.bin": pack_parts("openvino", meta, {**parts, "forward.xml": xml})})


def test_openvino_reads_onnx_bytes_given_as_ir_and_the_file_their_external_data_names(tmp_path, monkeypatch):
    """Why the IR is checked: read_model picks a frontend by content, and the ONNX one reads files."""
    monkeypatch.chdir(tmp_path)
    secret_file(tmp_path / "secret.bin")
    with OpenWatch(tmp_path / "secret.bin") as watch:
        openvino.Core().read_model(_onnx_naming("secret.bin"), openvino.Tensor(numpy.zeros(0, numpy.uint8)))
    assert watch.opened


def test_an_onnx_model_in_place_of_the_ir_is_refused_and_the_file_it_names_is_never_opened(
    mlp_artifact, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    secret = secret_file(tmp_path / "secret.bin")
    forged = _with_xml(mlp_artifact, tmp_path / "forged.lowered", _onnx_naming("secret.bin"))
    assert_refused_unread(
        forged, tmp_path / "secret.bin", r"forged.lowered: .*the IR of method 'forward' is not OpenVINO IR: it starts"
    )
    assert secret not in (tmp_path / "forged.lowered").read_bytes()


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda xml: xml.replace(b"?>", b'?>\n<!DOCTYPE net [<!ENTITY leak SYSTEM "file:///etc/hostname">]>', 1),
            "declares a document type",
        ),
        (lambda xml: b"<root/>", "it starts b'<root/>'"),
        (
            lambda xml: xml.replace(b"<net ", b"<notnet ", 1).replace(b"</net>", b"</notnet>"),
            "root element is not <net>",
        ),
        (
            lambda xml: xml.replace(
                b"<rt_info />",
                b'<rt_info><runtime_options><INFERENCE_NUM_THREADS value="100000" /></runtime_options></rt_info>',
                1,
            ),
            "carries runtime_options",
        ),
    ],
    ids=["a document type", "another root", "no net", "runtime options"],
)
def test_an_ir_that_is_not_what_preprocess_writes_is_refused(edit, message, mlp_artifact, tmp_path):
    _, lowered = mlp_artifact
    _, parts = unpack_parts(lowered.payload, "openvino")
    edited = edit(parts["forward.xml"])
    assert edited != parts["forward.xml"]
    forged = _with_xml(mlp_artifact, tmp_path / "forged.lowered", edited)
    with pytest.raises(pipeline.ArtifactError, match=message):
        pipeline.load_lowered(forged)
