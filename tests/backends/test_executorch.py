"""The executorch backend: each method lowered to an ExecuTorch program (.pte) and run by ExecuTorch.

Lowering takes seconds per model, so the lowered zoo models are shared by the
tests of this module and the conformance suite (the session's ``lowered_zoo``);
each test compares with eager PyTorch or checks one piece of the backend on them.

What every backend is held to (registration, spec validation, the zoo against
eager, save and load, handles, errors, profiles, bad inputs) is in
tests/backends/conformance.py; this file keeps what is this backend's own.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import backend_checks
import pytest
import torch
from backend_checks import compile_specs, run_app

import pipeline
from pipeline import zoo
from pipeline.backends.executorch import installed, partition_summary
from pipeline.backends.executorch.profile import align
from pipeline.backends.executorch.runtime import THREAD_POOL, ExecuTorchBackend
from pipeline.core.payload import pack_parts, unpack_parts
from pipeline.core.profiling import profile as profile_by_source

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = backend_checks.tolerance("executorch")


def quantized_tolerance() -> dict:
    """The tolerance the backend's YAML declares for quantized runs (``quantized_tolerance``)."""
    import yaml

    config = yaml.safe_load((ROOT / "conf" / "backend" / "executorch.yaml").read_text())
    return {key: float(value) for key, value in config["quantized_tolerance"].items()}


def lower(name: str, **options) -> pipeline.LoweredModule:
    model, inputs = zoo.build(name), zoo.example_inputs(name)
    return pipeline.to_backend("executorch", model, {m: dict(options) for m in inputs}, example_inputs=inputs)


@pytest.fixture(scope="module")
def lowered(lowered_zoo):
    """The zoo's MLP, CNN and Transformer, lowered at the defaults (XNNPACK, float32); built on first use, once
    per session, and shared with the conformance suite."""
    return lambda name: lowered_zoo("executorch", name)


@pytest.fixture(scope="module")
def quantized():
    cache = {}

    def get(mode: str) -> pipeline.LoweredModule:
        if mode not in cache:
            cache[mode] = lower("mlp", quantize=mode)
        return cache[mode]

    return get


def ops_of(module: pipeline.LoweredModule, handles) -> list:
    return [module.handle_map.handles[h].op for h in handles]


# -- the zoo at float32 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_model_with_three_methods_lowers_each_to_its_own_program(tmp_path):
    model, inputs = zoo.build("basic"), zoo.example_inputs("basic")
    module = lower("basic")
    _, programs = unpack_parts(module.payload, "executorch")
    assert list(programs) == ["forward", "accum", "sub_accum"]
    loaded = pipeline.load_lowered(pipeline.save_lowered(module, tmp_path / "basic.lowered"))
    backend_checks.check_against_eager(model, inputs, module, **TOLERANCE, loaded=loaded)


def test_payload_is_a_pte_per_method_with_the_instruction_table_in_a_json_header(lowered):
    meta, programs = unpack_parts(lowered("mlp").payload, "executorch")
    assert list(programs) == ["forward"]
    assert programs["forward"][4:8] == b"ET12"  # the flatbuffer file identifier of an ExecuTorch program
    assert [entry["kind"] for entry in meta["methods"]["forward"]["instructions"]] == ["delegate"]


def test_two_lowerings_of_a_statically_quantized_model_give_the_same_bytes_and_leave_no_files(
    quantized, tmp_path, monkeypatch
):
    scratch, work = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    monkeypatch.chdir(work)
    again = lower("mlp", quantize="int8_static")
    again.profile("forward", *zoo.example_inputs("mlp")["forward"])
    assert again.payload == quantized("int8_static").payload
    assert list(scratch.iterdir()) == [] and list(work.iterdir()) == []


# -- compile spec ---------------------------------------------------------------------------------


def test_methods_asking_for_different_thread_counts_are_rejected():
    model, inputs = zoo.build("basic"), zoo.example_inputs("basic")
    with pytest.raises(pipeline.LoweringError, match=r"threads differ across methods \(\[1, 2\]\)"):
        pipeline.to_backend(
            "executorch", model, {"forward": {"threads": 1}, "accum": {"threads": 2}}, example_inputs=inputs
        )


def test_partitioner_none_runs_every_node_on_portable_kernels():
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    module = lower("mlp", partitioner="none")
    backend_checks.check_against_eager(model, inputs, module, **TOLERANCE)
    summary = partition_summary(module)["forward"]
    assert summary["delegates"] == [] and summary["portable"] == summary["fx_nodes"] == 5
    kernels = [(k["kernel"], ops_of(module, k["debug_handles"])) for k in summary["portable_kernels"]]
    assert ("aten::addmm.out", ["aten::linear"]) in kernels and ("aten::gelu.out", ["aten::gelu"]) in kernels
    assert all(ops in (["aten::linear"], ["aten::gelu"]) for _, ops in kernels)  # linear: permute + addmm


def test_a_thread_count_other_than_the_pools_is_refused_while_methods_use_the_pool(lowered):
    module = lowered("mlp")  # loaded: its XNNPACK delegate holds the pool
    other = THREAD_POOL.size() + 1
    with pytest.raises(pipeline.LoweringError, match=rf"thread pool \(one per process\) has {other - 1} threads"):
        ExecuTorchBackend().compile(module.payload, compile_specs("executorch", {"forward": {"threads": other}}))
    assert THREAD_POOL.size() == other - 1


RESIZE_IN_A_FRESH_PROCESS = """
import sys, torch
from pipeline import zoo
from pipeline.backends.executorch.compile_spec import ExecuTorchCompileSpec
from pipeline.backends.executorch.runtime import THREAD_POOL, ExecuTorchBackend
payload = open(sys.argv[1], "rb").read()
handles = ExecuTorchBackend().compile(payload, {"forward": ExecuTorchCompileSpec(threads=1)})
x = zoo.example_inputs("mlp")["forward"][0]
torch.testing.assert_close(handles["forward"].run([x])[0], zoo.build("mlp")(x), atol=1e-5, rtol=1e-4)
print(THREAD_POOL.size())
"""


def test_threads_size_the_runtimes_pool_when_no_method_uses_it(lowered, tmp_path):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(lowered("mlp").payload)
    done = subprocess.run(
        [sys.executable, "-c", RESIZE_IN_A_FRESH_PROCESS, str(payload)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "1"


# -- payload --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[:-10],
        lambda data: b"NOTAPAYLOAD" + data,
        lambda data: pack_parts("onnxruntime", {}, {}),
    ],
)
def test_corrupt_payload_is_rejected_with_lowering_error(corrupt, lowered):
    module = lowered("mlp")
    with pytest.raises(pipeline.LoweringError, match="executorch"):
        ExecuTorchBackend().compile(corrupt(module.payload), compile_specs("executorch", module.method_compile_spec))


# -- the partition and debug handles ---------------------------------------------------------------


def test_partition_records_the_fx_nodes_each_xnnpack_node_runs(lowered):
    module = lowered("mlp")
    described = {key: ops_of(module, handles) for key, handles in module.handle_map.backend_map.items()}
    assert described == {
        "forward/0:XnnpackBackend": ["aten::linear", "aten::gelu", "aten::linear", "aten::gelu", "aten::linear"],
        "forward/0:XnnpackBackend/0:FullyConnected": ["aten::linear"],
        "forward/0:XnnpackBackend/1:Gelu": ["aten::gelu"],
        "forward/0:XnnpackBackend/2:FullyConnected": ["aten::linear"],
        "forward/0:XnnpackBackend/3:Gelu": ["aten::gelu"],
        "forward/0:XnnpackBackend/4:FullyConnected": ["aten::linear"],
    }
    summary = partition_summary(module)["forward"]
    assert summary["delegated"] == summary["fx_nodes"] == 5 and summary["portable_kernels"] == []
    json.dumps(summary)  # goes into report.json as it is


def test_nodes_xnnpack_fuses_count_for_the_node_that_took_them_in(lowered):
    module = lowered("cnn")
    nodes = {
        key.split("/", 2)[2]: ops_of(module, handles)
        for key, handles in module.handle_map.backend_map.items()
        if key.count("/") == 2
    }
    assert nodes["1:Conv2d"] == ["aten::conv2d", "aten::batch_norm", "aten::relu"]
    assert nodes["2:MaxPooling2d"] == ["aten::max_pool2d"]


def test_partition_of_the_transformer_names_the_kernels_left_outside_the_delegates(lowered):
    module = lowered("transformer")
    summary = partition_summary(module)["forward"]
    kernels = {k["kernel"]: ops_of(module, k["debug_handles"]) for k in summary["portable_kernels"]}
    assert kernels["aten::native_layer_norm.out"] == ["aten::layer_norm"]
    assert len(summary["delegates"]) > 1
    assert summary["delegated"] + summary["portable"] + summary["not_run"] == summary["fx_nodes"]
    assert summary["delegated"] > summary["portable"] > 0
    issued = set(module.handle_map.handles)
    assert all(set(handles) <= issued for handles in module.handle_map.backend_map.values())


# -- profiles -------------------------------------------------------------------------------------


def test_profile_times_each_xnnpack_operator_under_the_fx_nodes_it_runs(lowered):
    module = lowered("mlp")
    events = module.profile("forward", *zoo.example_inputs("mlp")["forward"])
    inside = [e for e in events if "(outside" not in e.name]
    assert [e.name for e in inside] == [
        "forward/0:XnnpackBackend/Fully Connected (NC, F32) GEMM #1",
        "forward/0:XnnpackBackend/GELU (NC) #1",
        "forward/0:XnnpackBackend/Fully Connected (NC, F32) GEMM #2",
        "forward/0:XnnpackBackend/GELU (NC) #2",
        "forward/0:XnnpackBackend/Fully Connected (NC, F32) GEMM #3",
    ]
    assert [ops_of(module, e.debug_handles) for e in inside] == [["aten::linear"], ["aten::gelu"]] * 2 + [
        ["aten::linear"]
    ]
    assert all(e.seconds >= 0 for e in events) and sum(e.seconds for e in events) > 0


def test_profile_by_source_line_reaches_the_models_own_lines(lowered):
    module = lowered("mlp")
    report = profile_by_source(module, zoo.example_inputs("mlp"), calls=2)
    lines = {entry["source"] for entry in report["by_source"]}
    assert any("zoo" in line and "self.head(self.body(x))" in line for line in lines)


def test_profile_times_each_portable_kernel_under_its_instruction(lowered):
    module = lowered("transformer")
    events = module.profile("forward", *zoo.example_inputs("transformer")["forward"])
    layer_norms = [e for e in events if e.name.endswith(":aten::native_layer_norm.out")]
    assert len(layer_norms) == 4
    assert all(ops_of(module, e.debug_handles) == ["aten::layer_norm"] for e in layer_norms)
    assert sum(1 for e in events if e.debug_handles) >= 0.9 * len(events)


def test_operators_are_aligned_with_the_nodes_they_were_fused_from():
    # XNNPACK's runtime fused each dynamic quantization (Convert) into the multiply that follows it
    operators = [
        "Fully Connected (NC, QDU8, F32, QC8W) GEMM #1",
        "GELU (NC) #1",
        "Fully Connected (NC, QDU8, F32, QC8W) GEMM #2",
    ]
    nodes = ["Convert", "FullyConnected", "Gelu", "Convert", "FullyConnected"]
    assert align(operators, nodes) == [[0, 1], [2], [3, 4]]
    # names that differ: a convolution node, a mean for global pooling, an unnamed quantized unary op
    assert align(
        ["Convolution (NHWC, F32) IGEMM #1", "Mean (ND) Reduce2 #1", "Invalid Unary Op #1"],
        ["Conv2d", "GlobalAvgPooling2d", "Convert", "Gelu"],
    ) == [[0], [1], [2, 3]]


# -- quantization ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, kernel", [("int8_dynamic", "QDU8"), ("int8_static", "QS8")])
def test_quantized_mlp_is_within_the_quantized_tolerance_and_not_eagers_float_result(mode, kernel, quantized):
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    module = quantized(mode)
    backend_checks.check_against_eager(model, inputs, module, **quantized_tolerance())
    x = inputs["forward"][0]
    with torch.no_grad():
        difference = (module(x) - model(x)).abs().max().item()
    # a float run differs by < 1e-6 (the float tolerance is 1e-5): this much is int8 arithmetic
    assert difference > 1e-4
    events = module.profile("forward", x)
    gemms = [e for e in events if "Fully Connected" in e.name]
    assert len(gemms) == 3 and all(kernel in e.name for e in gemms)
    assert partition_summary(module)["forward"]["quantize"] == mode


def test_calibration_inputs_are_seeded_and_shaped_like_the_example_inputs():
    from pipeline.backends.executorch.quantize import calibration_inputs

    args, kwargs = (torch.randn(2, 3), torch.tensor([3, 7])), {"mask": torch.ones(4, dtype=torch.bool)}
    first, second = calibration_inputs(args, kwargs, 3), calibration_inputs(args, kwargs, 3)
    assert len(first) == 3
    for (a1, k1), (a2, k2) in zip(first, second):
        assert all(torch.equal(x, y) for x, y in zip(a1, a2)) and torch.equal(k1["mask"], k2["mask"])
        assert a1[0].shape == (2, 3) and a1[1].dtype == torch.int64 and 3 <= int(a1[1].min()) <= int(a1[1].max()) <= 7
        assert k1["mask"].dtype == torch.bool
    assert not torch.equal(first[0][0][0], first[1][0][0])


# -- installing -----------------------------------------------------------------------------------


@pytest.fixture
def executorch_missing(monkeypatch):
    """Imports of executorch and torchao fail, as where the extra is not installed."""
    real = importlib.import_module

    def import_module(name, package=None):
        if name.split(".")[0] in ("executorch", "torchao"):
            raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")
        return real(name, package)

    monkeypatch.setattr(installed.importlib, "import_module", import_module)


def test_without_executorch_the_backend_is_listed_unavailable_and_lowering_names_the_extra(executorch_missing):
    assert "executorch" in pipeline.list_backends()
    assert ExecuTorchBackend().is_available() is False
    with pytest.raises(pipeline.LoweringError, match=r"pip install 'lowering-pipeline\[executorch\]'"):
        lower("mlp")


def test_without_executorch_an_artifact_is_refused_as_unavailable(lowered, tmp_path, executorch_missing):
    path = pipeline.save_lowered(lowered("mlp"), tmp_path / "mlp.lowered")
    with pytest.raises(pipeline.BackendNotAvailableError, match="'executorch' is not available"):
        pipeline.load_lowered(path)


# -- registration, documentation, config ----------------------------------------------------------


def test_yaml_declares_a_quantized_tolerance_looser_than_the_float_one():
    assert quantized_tolerance()["atol"] > TOLERANCE["atol"]


@pytest.mark.slow
def test_app_lowers_the_mlp_to_executorch_and_records_the_partition_handles(tmp_path):
    report = run_app(tmp_path, "model=mlp", "backend=executorch", "backend.compile_spec.forward.threads=1", timeout=900)
    assert report["status"] == "ok" and report["verify"]["passed"]
    assert report["compile_spec"]["forward"]["threads"] == 1
    handles = json.loads((tmp_path / "handles.json").read_text())
    assert "forward/0:XnnpackBackend/0:FullyConnected" in handles["backend_map"]
