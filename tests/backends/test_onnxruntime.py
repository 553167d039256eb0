"""The onnxruntime backend: each method exported to ONNX and run by an InferenceSession.

Every test lowers a real model through ``pipeline.to_backend`` (or checks one
piece of the backend directly) and compares with eager PyTorch.

What every backend is held to (registration, spec validation, the zoo against
eager, save and load, handles, errors, profiles, bad inputs) is in
tests/backends/conformance.py; this file keeps what is this backend's own.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Dict

import backend_checks
import onnx
import onnxruntime
import pytest
import torch
import torch.utils._pytree as pytree
from backend_checks import compile_specs, run_app
from torch import nn

import pipeline
from pipeline import zoo
from pipeline.backends.onnxruntime.runtime import OnnxRuntimeBackend
from pipeline.core.payload import pack_parts, unpack_parts

TOLERANCE = backend_checks.tolerance("onnxruntime")


def assert_same_outputs(expected, actual, **tolerance) -> None:
    backend_checks.assert_same_outputs(expected, actual, **(tolerance or TOLERANCE))


FRONTENDS = {
    "export": dict(frontend="export"),
    "trace": dict(frontend="torchscript", torchscript_mode="trace"),
    "script": dict(frontend="torchscript", torchscript_mode="script"),
}


def lower(model: nn.Module, inputs: dict, frontend: str = "export", spec: dict = None, **options):
    specs = {m: dict(spec or {}) for m in inputs}
    if frontend == "script":  # a scripted graph does not record argument shapes: the spec gives them
        for method, args in inputs.items():
            specs[method].setdefault("input_shapes", [list(a.shape) for a in args])
    return pipeline.to_backend("onnxruntime", model, specs, example_inputs=inputs, **FRONTENDS[frontend], **options)


# -- the zoo, on every frontend -------------------------------------------------------------------


def test_transformer_through_the_torchscript_exporter_is_rejected_pointing_at_the_export_frontend():
    model, inputs = zoo.build("transformer"), zoo.example_inputs("transformer")
    with pytest.raises(pipeline.LoweringError, match="frontend='export'"):
        lower(model, inputs, "script")


def test_scripted_module_without_input_shapes_is_rejected_naming_the_option():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    with pytest.raises(pipeline.LoweringError, match=r"compile_spec.forward.input_shapes"):
        pipeline.to_backend("onnxruntime", model, {"forward": {}}, frontend="torchscript", example_inputs=inputs)


def test_fast_path_captured_under_no_grad_is_rejected_naming_the_op():
    model, inputs = zoo.build("transformer"), zoo.example_inputs("transformer")
    with torch.no_grad(), pytest.raises(pipeline.UnsupportedOpError, match="_transformer_encoder_layer_fwd"):
        lower(model, inputs)


# -- output structures and arguments --------------------------------------------------------------


@dataclasses.dataclass
class ModelOutput:
    logits: torch.Tensor
    hidden: torch.Tensor


pytree.register_dataclass(ModelOutput, serialized_type_name="tests.backends.test_onnxruntime.ModelOutput")


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        hidden = self.body(x)
        return {"logits": hidden.relu(), "pair": (hidden, hidden * 2)}

    def as_dataclass(self, x):
        hidden = self.body(x)
        return ModelOutput(hidden.relu(), hidden)


def test_dict_and_dataclass_outputs_come_back_as_the_model_returns_them(tmp_path):
    torch.manual_seed(0)
    model, x = Heads().eval(), torch.randn(3, 6)
    inputs = {"forward": (x,), "as_dataclass": (x,)}
    lowered = lower(model, inputs)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "heads.lowered"))
    for module in (lowered, loaded):
        with torch.no_grad():
            assert_same_outputs(model(x), module(x))
            assert_same_outputs(model.as_dataclass(x), module.as_dataclass(x))
    assert isinstance(loaded.as_dataclass(x), ModelOutput)


class PairInput(nn.Module):
    def forward(self, x, pair):
        first, second = pair
        return x * first + second


def test_tuple_arguments_are_flattened_and_fed_by_input_name():
    model = PairInput()
    args = (torch.randn(4), (torch.randn(4), torch.randn(4)))
    lowered = lower(model, {"forward": args})
    assert not lowered.compiled("forward").flat
    assert_same_outputs(model(*args), lowered(*args))


# -- compile spec ---------------------------------------------------------------------------------


def test_compile_spec_options_reach_the_session():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(
        model,
        inputs,
        spec={
            "graph_optimization_level": "basic",
            "intra_op_num_threads": 1,
            "execution_mode": "parallel",
            "inter_op_num_threads": 2,
            "enable_mem_pattern": False,
            "use_deterministic_compute": True,
        },
    )
    options = lowered.compiled("forward").session.get_session_options()
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 2
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_PARALLEL
    assert not options.enable_mem_pattern and options.use_deterministic_compute


def test_opset_option_is_the_exported_models_opset():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs, spec={"opset": 18})
    _, models = unpack_parts(lowered.payload, "onnxruntime")
    opsets = {o.domain: o.version for o in onnx.load_from_string(models["forward"]).opset_import}
    assert opsets[""] == 18


def test_unavailable_provider_is_rejected_at_lowering_listing_the_available_ones():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    with pytest.raises(
        pipeline.LoweringError,
        match=r"\['NoSuchExecutionProvider'\] are not available.*"
        r"available: .*'CPUExecutionProvider'",
    ):
        lower(model, inputs, spec={"providers": ["NoSuchExecutionProvider"]})


def test_unavailable_provider_is_rejected_when_the_payload_is_compiled():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs)
    with pytest.raises(pipeline.LoweringError, match=r"available: .*'CPUExecutionProvider'"):
        OnnxRuntimeBackend().compile(
            lowered.payload, compile_specs("onnxruntime", {"forward": {"providers": ["NoSuchExecutionProvider"]}})
        )


# -- payload --------------------------------------------------------------------------------------


def test_payload_is_a_container_of_onnx_models_with_a_json_header():
    model, inputs = zoo.build("basic"), zoo.example_inputs("basic")
    lowered = lower(model, inputs)
    meta, models = unpack_parts(lowered.payload, "onnxruntime")
    assert list(models) == ["forward", "accum", "sub_accum"]
    for method, data in models.items():
        onnx.checker.check_model(onnx.load_from_string(data))
        assert [name for name, _ in meta["methods"][method]["inputs"]] == ["x", "h"]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[:-10],
        lambda data: b"NOTAPAYLOAD" + data,
        lambda data: data[:-1] + bytes([data[-1] ^ 0xFF]),
        lambda data: pack_parts("inductor", {}, {}),
    ],
)
def test_corrupt_payload_is_rejected_with_lowering_error(corrupt):
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs)
    with pytest.raises(pipeline.LoweringError, match="onnxruntime"):
        OnnxRuntimeBackend().compile(
            corrupt(lowered.payload), compile_specs("onnxruntime", lowered.method_compile_spec)
        )


# -- debug handles, errors, profiles ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_every_exported_onnx_node_maps_to_the_handles_of_its_fx_nodes(name):
    model, inputs = zoo.build(name), zoo.example_inputs(name)
    lowered = lower(model, inputs)
    _, models = unpack_parts(lowered.payload, "onnxruntime")
    nodes = [node.name for node in onnx.load_from_string(models["forward"]).graph.node]
    backend_map = lowered.handle_map.backend_map
    assert sorted(backend_map) == sorted(f"forward/{node}" for node in nodes)
    assert all(h in lowered.handle_map.handles for handles in backend_map.values() for h in handles)
    if name == "mlp":
        ops = {key: [lowered.handle_map.handles[h].op for h in handles] for key, handles in backend_map.items()}
        assert ops == {
            "forward/node_linear": ["aten::linear"],
            "forward/node_gelu": ["aten::gelu"],
            "forward/node_linear_1": ["aten::linear"],
            "forward/node_gelu_1": ["aten::gelu"],
            "forward/node_linear_2": ["aten::linear"],
        }


def test_torchscript_route_maps_nodes_by_source_range_and_module():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs, "trace")
    records = lowered.handle_map.handles
    described = {
        key: [(records[h].op, records[h].module_hierarchy.split("::<unknown>.")[1]) for h in handles]
        for key, handles in lowered.handle_map.backend_map.items()
    }
    assert described["forward/body/0/Gemm"] == [
        ("aten::linear", "body(Sequential)::forward.0(Linear)::forward.aten::linear")
    ]
    assert described["forward/head/Gemm"] == [("aten::linear", "head(Linear)::forward.aten::linear")]
    assert len(described) == 5


def test_profile_times_each_node_kernel_under_its_name_and_handles():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs)
    events = lowered.profile("forward", *inputs["forward"])
    assert [e.name for e in events] == [
        "forward/node_linear Gemm",
        "forward/node_gelu Gelu",
        "forward/node_linear_1 Gemm",
        "forward/node_gelu_1 Gelu",
        "forward/node_linear_2 Gemm",
    ]
    assert all(e.seconds >= 0 for e in events)
    assert [list(e.debug_handles) for e in events] == [
        lowered.handle_map.backend_map[e.name.split()[0]] for e in events
    ]


def test_profile_maps_nodes_onnxruntime_fused_through_the_values_they_compute():
    model, inputs = zoo.build("transformer"), zoo.example_inputs("transformer")
    lowered = lower(model, inputs)
    events = lowered.profile("forward", *inputs["forward"])
    fused = [e for e in events if e.name.split()[1] in ("SkipLayerNormalization", "FusedMatMul")]
    assert fused and all(e.debug_handles for e in fused)
    assert sum(1 for e in events if e.debug_handles) >= 0.8 * len(events)


# -- int8 quantization ---------------------------------------------------------------------------

QUANTIZED_TOLERANCE = backend_checks.tolerance("onnxruntime", "quantized_tolerance")
INTEGER_OPS = {"int8_dynamic": {"DynamicQuantizeLinear"}, "int8_static": {"QuantizeLinear", "DequantizeLinear"}}


@pytest.fixture(scope="module")
def quantized():
    """(quantize, model name) -> (model, inputs, lowered), each lowered once."""
    cases = {}
    for how in ("int8_dynamic", "int8_static"):
        for name in ("mlp", "cnn"):
            model, inputs = zoo.build(name), zoo.example_inputs(name)
            cases[how, name] = model, inputs, lower(model, inputs, spec={"quantize": how})
    return cases


@pytest.mark.parametrize("how", ["int8_dynamic", "int8_static"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_quantized_model_is_within_the_quantized_tolerance_and_not_exactly_eager(quantized, how, name, tmp_path):
    """A run that claims quantization and matches eager to float32 precision was not quantized."""
    model, inputs, lowered = quantized[how, name]
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "q.lowered"))
    backend_checks.check_against_eager(model, inputs, lowered, **QUANTIZED_TOLERANCE, loaded=loaded)
    _, models = unpack_parts(lowered.payload, "onnxruntime")
    assert INTEGER_OPS[how] <= {node.op_type for node in onnx.load_from_string(models["forward"]).graph.node}
    x = inputs["forward"][0]
    with torch.no_grad():
        error = (lowered(x) - model(x)).abs().max()
    assert error > 10 * TOLERANCE["atol"]


@pytest.mark.parametrize("how", ["int8_dynamic", "int8_static"])
def test_quantized_run_records_error_and_top1_agreement(quantized, how):
    from pipeline.app.verify import verify

    model, inputs, lowered = quantized[how, "cnn"]
    x = inputs["forward"][0]
    sets = {"forward": [((x,), {})] + [(backend_checks.fresh_like((x,), seed), {}) for seed in range(1, 4)]}
    result = verify(model, lowered, sets, **QUANTIZED_TOLERANCE)
    assert result.passed and 0 < result.mean_abs_err < result.max_abs_err
    assert result.agreement is not None and result.agreement >= 0.75  # 8 rows of 10 logits


def test_static_quantization_calibrates_on_the_example_inputs_and_is_reproducible(quantized):
    model, inputs, lowered = quantized["int8_static", "mlp"]
    assert lower(model, inputs, spec={"quantize": "int8_static"}).payload == lowered.payload
    fewer = lower(model, inputs, spec={"quantize": "int8_static", "calibration_samples": 0})  # the examples alone
    assert fewer.payload != lowered.payload


def test_every_quantized_node_maps_to_handles_and_qdq_nodes_to_the_node_they_feed(quantized):
    for how in ("int8_dynamic", "int8_static"):
        _, _, lowered = quantized[how, "mlp"]
        _, models = unpack_parts(lowered.payload, "onnxruntime")
        nodes = onnx.load_from_string(models["forward"]).graph.node
        backend_map = lowered.handle_map.backend_map
        assert sorted(backend_map) == sorted(f"forward/{node.name}" for node in nodes)
        ops = {
            key.split("/", 1)[1]: [lowered.handle_map.handles[h].op for h in handles]
            for key, handles in backend_map.items()
        }
        if how == "int8_static":  # linear -> Q -> DQ -> gelu: the pair belongs to the GELU it feeds
            assert ops["linear_QuantizeLinear"] == ops["linear_DequantizeLinear"] == ["aten::gelu"]
            assert ops["node_linear"] == ["aten::linear"]
        else:  # the MatMul of node_linear became MatMulInteger and friends, named after it
            assert ops["node_linear_MatMul_quant"] == ops["x_QuantizeLinear"] == ["aten::linear"]


def test_a_relu_the_quantizer_fused_into_its_conv_keeps_its_handle(quantized):
    _, _, lowered = quantized["int8_static", "cnn"]
    ops = {
        key.split("/", 1)[1]: [lowered.handle_map.handles[h].op for h in handles]
        for key, handles in lowered.handle_map.backend_map.items()
    }
    assert "node_relu" not in ops and "aten::relu" in ops["node_Conv_21"]


def test_quantized_profile_maps_every_kernel_to_source(quantized):
    _, inputs, lowered = quantized["int8_static", "mlp"]
    events = lowered.profile("forward", *inputs["forward"])
    assert events and sum(1 for e in events if e.debug_handles) >= 0.8 * len(events)


# -- registration, documentation, config ----------------------------------------------------------


def test_app_lowers_the_default_model_to_onnxruntime_with_an_option_overridden(tmp_path):
    report = run_app(tmp_path, "backend=onnxruntime", "backend.compile_spec.forward.intra_op_num_threads=1")
    assert report["status"] == "ok" and report["verify"]["passed"]
    assert report["compile_spec"]["forward"]["intra_op_num_threads"] == 1
    assert report["env"]["backend:onnxruntime"] == OnnxRuntimeBackend.version
    handles = json.loads((tmp_path / "handles.json").read_text())
    assert handles["backend_map"]


# -- no external data: a received model reads no file (issue 27) ---------------------------------

from artifact_forgery import forge  # noqa: E402
from file_canaries import OpenWatch  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from pipeline.backends.onnxruntime.external_data import check_model, external_tensors  # noqa: E402


def _externalize(tensor: TensorProto, location: str = "secret.bin") -> bytes:
    """Moves ``tensor``'s bytes out of the model to ``location``, as ONNX's external data does; its bytes."""
    data = onnx.numpy_helper.to_array(tensor).tobytes()
    for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
        tensor.ClearField(name)
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL
    return data


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory):
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = lower(model, inputs)
    return pipeline.save_lowered(lowered, tmp_path_factory.mktemp("ort") / "mlp.lowered"), lowered, inputs


def _forged_with_external_weight(mlp_artifact, out, level, location="secret.bin"):
    """The MLP artifact with its first initializer's data in ``location`` and the manifest's optimization level
    set to ``level``; every hash recomputed. Returns the artifact and the weight's bytes."""
    path, lowered, _ = mlp_artifact
    meta, models = unpack_parts(lowered.payload, "onnxruntime")
    proto = onnx.load_from_string(models["forward"])
    data = _externalize(proto.graph.initializer[0], location)
    payload = pack_parts("onnxruntime", meta, {"forward": proto.SerializeToString()})

    def level_of(manifest):
        manifest["compile_spec"]["forward"]["graph_optimization_level"] = level

    return forge(path, out, manifest=level_of, parts={"payload.bin": payload}), data, proto.graph.initializer[0].name


@pytest.mark.parametrize("level", ["disable", "all"])
def test_an_initializer_with_external_data_is_refused_at_load_whatever_the_optimization_level(
    level, mlp_artifact, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # where onnxruntime looks for the file of a model given as bytes
    forged, data, name = _forged_with_external_weight(mlp_artifact, tmp_path / "forged.lowered", level)
    (tmp_path / "secret.bin").write_bytes(data)  # the weights it wants, so that only the check can refuse
    with pytest.raises(
        pipeline.ArtifactError,
        match=rf"forged.lowered: .*method 'forward': tensor graph.initializer "
        rf"'{name}' keeps its data outside the model: its location 'secret.bin' is a name the payload does not carry",
    ):
        pipeline.load_lowered(forged)


@pytest.mark.parametrize("level", ["disable", "all"])
def test_the_file_external_data_names_is_never_opened(level, mlp_artifact, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    forged, data, _ = _forged_with_external_weight(mlp_artifact, tmp_path / "forged.lowered", level)
    (tmp_path / "secret.bin").write_bytes(data)
    with OpenWatch(tmp_path / "secret.bin") as watch:
        with pytest.raises(pipeline.ArtifactError, match="keeps its data outside the model"):
            pipeline.load_lowered(forged)
    assert not watch.opened


def test_onnxruntime_itself_would_open_it(mlp_artifact, tmp_path, monkeypatch):
    """Why the check exists, and that the FIFO would tell: a session made directly opens the file."""
    monkeypatch.chdir(tmp_path)
    _, lowered, _ = mlp_artifact
    _, models = unpack_parts(lowered.payload, "onnxruntime")
    proto = onnx.load_from_string(models["forward"])
    (tmp_path / "secret.bin").write_bytes(_externalize(proto.graph.initializer[0]))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    with OpenWatch(tmp_path / "secret.bin") as watch:
        onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert watch.opened


def _constant(name: str, value: float = 1.0) -> onnx.NodeProto:
    return helper.make_node(
        "Constant",
        [],
        [name],
        name=name,
        value=onnx.numpy_helper.from_array(numpy_array([value]), name=f"{name}_value"),
    )


def numpy_array(values):
    import numpy

    return numpy.asarray(values, dtype=numpy.float32)


def _model(nodes, initializers=(), sparse=(), functions=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        list(initializers),
        sparse_initializer=list(sparse),
    )
    return helper.make_model(
        graph, functions=list(functions), opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )


def _in_initializer():
    weight = onnx.numpy_helper.from_array(numpy_array([1.0]), name="w")
    _externalize(weight)
    return _model([helper.make_node("Identity", ["w"], ["y"])], initializers=[weight]), "graph.initializer 'w'"


def _in_sparse_initializer():
    values = onnx.numpy_helper.from_array(numpy_array([1.0]), name="s")
    indices = onnx.numpy_helper.from_array(__import__("numpy").asarray([0], dtype="int64"), name="s_indices")
    _externalize(values)
    sparse = helper.make_sparse_tensor(values, indices, [4])
    return _model([helper.make_node("Identity", ["s"], ["y"])], sparse=[sparse]), "sparse_initializer 's' values"


def _in_a_constant_attribute():
    node = _constant("c")
    _externalize(node.attribute[0].t)
    return _model([node]), "node 'c', attribute 'value'"


def _in_a_subgraph():
    inner = _constant("deep")
    _externalize(inner.attribute[0].t)
    then = helper.make_graph([inner], "then", [], [helper.make_tensor_value_info("deep", TensorProto.FLOAT, None)])
    other = helper.make_graph(
        [_constant("shallow")], "else", [], [helper.make_tensor_value_info("shallow", TensorProto.FLOAT, None)]
    )
    flag = helper.make_node("Constant", [], ["flag"], value=helper.make_tensor("f", TensorProto.BOOL, [], [True]))
    branch = helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then, else_branch=other)
    return _model([flag, branch]), "node 'branch', attribute 'then_branch' (graph), node 'deep'"


def _in_a_function():
    inner = _constant("in_function")
    _externalize(inner.attribute[0].t)
    function = helper.make_function("local", "Made", [], ["in_function"], [inner], [helper.make_opsetid("", 17)])
    return _model([helper.make_node("Made", [], ["y"], domain="local")], functions=[function]), "function Made"


@pytest.mark.parametrize(
    "make",
    [_in_initializer, _in_sparse_initializer, _in_a_constant_attribute, _in_a_subgraph, _in_a_function],
    ids=lambda make: make.__name__.removeprefix("_in_"),
)
def test_external_data_is_found_wherever_a_tensor_can_stand(make):
    model, where = make()
    assert [entries["location"] for _, entries in external_tensors(model)] == ["secret.bin"]
    with pytest.raises(
        pipeline.LoweringError,
        match=re.escape(where) + r".*keeps its data outside the model: its location "
        r"'secret.bin' is a name the payload does not carry",
    ):
        check_model(model.SerializeToString(), "the model")


def test_a_payload_model_that_is_not_onnx_is_refused():
    with pytest.raises(pipeline.LoweringError, match="the model is not an ONNX model"):
        check_model(b"\x00\x00ORTM" + b"\xff" * 40, "the model")


@pytest.mark.parametrize("field", ["intra_op_num_threads", "inter_op_num_threads"])
def test_a_received_manifest_asking_for_more_threads_than_the_bound_is_refused_at_load(field, mlp_artifact, tmp_path):
    path, _, _ = mlp_artifact

    def many_threads(manifest):
        manifest["compile_spec"]["forward"].update({field: 100_000, "execution_mode": "parallel"})

    forged = forge(path, tmp_path / "threads.lowered", manifest=many_threads)
    started = time.perf_counter()
    with pytest.raises(
        pipeline.ArtifactError,
        match=rf"threads.lowered: .*compile_spec.forward: {field} must be in "
        rf"0\.\.256 \(0: onnxruntime's default\), not 100000",
    ):
        pipeline.load_lowered(forged)
    assert time.perf_counter() - started < 5.0  # refused before any thread is made


@pytest.mark.parametrize("inputs", [[["x", -1]], [["x", 10**12]], [["x", "0"]], [[0, 0]], "x"])
def test_a_payload_input_index_outside_the_arguments_is_refused_at_compile(inputs, mlp_artifact):
    _, lowered, _ = mlp_artifact
    meta, models = unpack_parts(lowered.payload, "onnxruntime")
    meta["methods"]["forward"]["inputs"] = inputs
    with pytest.raises(
        pipeline.LoweringError,
        match=r"inputs of method 'forward' must be \[name, index\] pairs "
        r"with index in 0\.\.99999",
    ):
        OnnxRuntimeBackend().compile(
            pack_parts("onnxruntime", meta, models), compile_specs("onnxruntime", lowered.method_compile_spec)
        )
