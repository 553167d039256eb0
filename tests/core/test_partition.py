"""Partitioned lowering: the supported groups on the backend, the rest in PyTorch, every node recorded."""

import json
import zipfile
from pathlib import Path

import pytest
import torch
from artifact_forgery import forge, members
from backend_checks import check_against_eager, line_of, tolerance
from torch import nn

import pipeline
from pipeline.core.lowering import to_backend
from pipeline.core.op_policy import NAMESPACES
from pipeline.core.partitioning import KIND, PartitionedModule
from pipeline.core.payload import pack_parts, unpack_parts
from pipeline.core.profiling import profile
from pipeline.zoo.fnet import FNet, FourierBlock

ARTIFACTS = Path(__file__).resolve().parent.parent / "data" / "artifacts"

FFT_LINE = line_of(FourierBlock.forward, "torch.fft.fft2")


@pytest.fixture(scope="module")
def fnet():
    torch.manual_seed(0)
    return FNet(layers=2).eval(), {"forward": (torch.randn(2, 8, 16),)}


@pytest.fixture(scope="module")
def lowered(fnet):
    model, inputs = fnet
    return to_backend("reference", model, {"forward": {}}, example_inputs=inputs, partition=True)


class TwoMethods(nn.Module):
    """Two methods, nested outputs, a max (a multi-output op) and FFTs between supported ops."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x, y):
        h = torch.relu(self.a(x))
        spectrum = torch.fft.rfft(h).abs()
        top, where = torch.max(self.b(h) * 2, dim=-1)
        return {"pair": (top, where), "rest": [spectrum.sum(-1) + y.sum(), torch.tanh(h)]}

    def encode(self, x):
        h = self.a(x)
        h.relu_()  # an in-place op: the program is functionalized before it is split
        return torch.fft.fft(h).real.sigmoid()


def test_without_partition_an_op_the_backend_lacks_is_still_an_unsupported_op_error(fnet):
    model, inputs = fnet
    with pytest.raises(pipeline.UnsupportedOpError, match="aten::fft_fft2"):
        to_backend("reference", model, {"forward": {}}, example_inputs=inputs)


def test_fnet_runs_in_three_subgraphs_on_the_reference_backend_and_matches_eager(fnet, lowered):
    model, inputs = fnet
    record = lowered.partition
    assert isinstance(lowered, PartitionedModule)
    assert [p["name"] for p in record["partitions"]] == ["forward_p0", "forward_p1", "forward_p2"]
    assert all(p["backend"] == "reference" for p in record["partitions"])
    assert record["partitions"][0]["nodes"] == ["linear", "tanh"]  # the embedding, up to the first FFT
    check_against_eager(model, inputs, lowered, atol=1e-5, rtol=1e-5)


def test_every_fallback_op_is_recorded_with_its_source_line_module_path_and_reason(lowered):
    fallback = lowered.partition["fallback"]
    assert [e["op"] for e in fallback] == ["aten::fft_fft2", "aten::real"] * 2
    assert {e["source"].rsplit("/", 1)[-1] for e in fallback} == {f"fnet.py:{FFT_LINE}"}
    assert [e["module_path"] for e in fallback] == ["blocks.0", "blocks.0", "blocks.1", "blocks.1"]
    assert all("torch.fft.fft2" in e["text"] and "op table" in e["reason"] for e in fallback)
    total, on_backend = lowered.partition["nodes"], lowered.partition["on_backend"]
    assert total == on_backend + len(fallback)
    assert lowered.partition["summary"] == (
        f"{on_backend} of {total} nodes on reference in 3 subgraphs; fallback: fft_fft2/real at fnet.py:{FFT_LINE}"
    )


def test_debug_handles_are_unique_across_partitions_and_each_names_its_partition(lowered):
    records = lowered.handle_map.handles
    by_partition = {}
    for record in records.values():
        by_partition.setdefault(record.partition, []).append(record.handle)
    assert sorted(by_partition) == ["fallback", "forward_p0", "forward_p1", "forward_p2"]
    listed = [h for p in lowered.partition["partitions"] for h in p["handles"]]
    assert len(listed) == len(set(listed))  # no handle in two partitions
    for partition in lowered.partition["partitions"]:
        assert sorted(by_partition[partition["name"]]) == partition["handles"]
    # the backend's instruction ids point at the handles of their own partition's nodes
    assert len(lowered.handle_map.backend_map) == lowered.partition["on_backend"]
    for key, handles in lowered.handle_map.backend_map.items():
        assert all(records[h].partition == key.split("/")[0] for h in handles)
    assert sorted(by_partition["fallback"]) == sorted(e["handle"] for e in lowered.partition["fallback"])


def test_a_saved_partitioned_module_loads_without_trust_and_gives_the_same_outputs(fnet, lowered, tmp_path):
    model, inputs = fnet
    path = pipeline.save_lowered(lowered, tmp_path / "fnet.lowered")
    loaded = pipeline.load_lowered(path)  # data only: the fallback's ATen ops and the backend's handles
    assert isinstance(loaded, PartitionedModule) and loaded.partition == lowered.partition
    check_against_eager(model, inputs, lowered, atol=1e-5, rtol=1e-5, loaded=loaded)
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    handles = json.loads(zipfile.ZipFile(path).read("handles.json"))
    assert manifest["format_version"] == 5 and manifest["partition"]["summary"] == lowered.partition["summary"]
    assert {r["partition"] for r in handles["handles"]} == {"fallback", "forward_p0", "forward_p1", "forward_p2"}
    assert pipeline.save_lowered(loaded, tmp_path / "again.lowered").read_bytes() == path.read_bytes()


def _forge_fallback(path, out, change):
    """The artifact with the fallback JSON of its payload changed by ``change(meta)``, hashes redone."""
    payload = dict(members(path))["payload.bin"]
    meta, parts = unpack_parts(payload, KIND)
    change(meta)
    return forge(path, out, parts={"payload.bin": pack_parts(KIND, meta, parts)})


@pytest.mark.parametrize(
    "target, message",
    [
        ("builtins::eval.default", "is not allowed; a fallback runs ops of the namespaces"),
        ("aten::relu_.default", "writes into its arguments"),
        ("aten::no_such_op.default", "does not exist"),
    ],
)
def test_loading_refuses_a_fallback_op_outside_the_allowed_namespaces(lowered, tmp_path, target, message):
    path = pipeline.save_lowered(lowered, tmp_path / "fnet.lowered")

    def change(meta):
        step = next(s for s in meta["methods"]["forward"]["steps"] if s["call"] == "op")
        step["target"] = target

    forged = _forge_fallback(path, tmp_path / "forged.lowered", change)
    with pytest.raises(pipeline.ArtifactError, match=message):
        pipeline.load_lowered(forged)
    assert NAMESPACES == ("aten", "prims")


def test_loading_refuses_a_fallback_that_reads_a_value_before_it_is_defined(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "fnet.lowered")
    forged = _forge_fallback(
        path,
        tmp_path / "forged.lowered",
        lambda meta: meta["methods"]["forward"]["steps"][0]["args"].append({"ref": "nowhere"}),
    )
    with pytest.raises(pipeline.ArtifactError, match="'nowhere' is read before any input or step defines it"):
        pipeline.load_lowered(forged)


def test_a_version_2_artifact_still_loads_and_may_not_claim_a_partition(tmp_path):
    # A file written by the last version-2 commit (tests/data/artifacts/README.md), not one relabelled today.
    path = ARTIFACTS / "mlp-v2.lowered"
    call = json.loads((ARTIFACTS / "mlp-v2.io.json").read_text())["forward"]
    x, expected = (torch.tensor(t["values"]).reshape(t["shape"]) for t in (call["inputs"][0], call["outputs"][0]))
    torch.testing.assert_close(pipeline.load_lowered(path)(x), expected)
    claims = forge(path, tmp_path / "v2p.lowered", manifest=lambda m: m.update(format_version=2, partition={}))
    with pytest.raises(pipeline.ArtifactError, match="version-2 manifest has no 'partition'"):
        pipeline.load_lowered(claims)


def test_several_methods_with_nested_outputs_split_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TwoMethods().eval()
    inputs = {"forward": (torch.randn(3, 8), torch.randn(2)), "encode": (torch.randn(3, 8),)}
    lowered = to_backend("reference", model, {"forward": {}, "encode": {}}, example_inputs=inputs, partition=True)
    names = [p["name"] for p in lowered.partition["partitions"]]
    assert {n.rsplit("_", 1)[0] for n in names} == {"forward", "encode"}
    assert {e["op"] for e in lowered.partition["fallback"]} >= {"aten::fft_rfft", "aten::fft_fft"}
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "two.lowered"))
    check_against_eager(model, inputs, lowered, atol=1e-5, rtol=1e-5, loaded=loaded)


def test_groups_smaller_than_min_nodes_fall_back_with_that_reason(fnet):
    model, inputs = fnet
    lowered = to_backend("reference", model, {"forward": {}}, example_inputs=inputs, partition=True, min_nodes=3)
    assert [p["name"] for p in lowered.partition["partitions"]] == ["forward_p0", "forward_p1"]  # embed+tanh fell back
    embed = [e for e in lowered.partition["fallback"] if e["node"] in ("linear", "tanh")]
    assert len(embed) == 2 and all("fewer than min_nodes=3" in e["reason"] for e in embed)
    check_against_eager(model, inputs, lowered, atol=1e-5, rtol=1e-5)
    everything = to_backend("reference", model, {"forward": {}}, example_inputs=inputs, partition=True, min_nodes=1000)
    assert everything.partition["partitions"] == [] and everything.partition["on_backend"] == 0
    check_against_eager(model, inputs, everything, atol=1e-5, rtol=1e-5)


def test_profiles_attribute_time_to_partitions_and_source_lines(fnet, lowered):
    _, inputs = fnet
    result = profile(lowered, inputs, calls=2)
    assert set(result["by_partition"]) == {"fallback", "forward_p0", "forward_p1", "forward_p2"}
    assert result["attributed_share"] == 1.0
    assert any(e["source"].split(": ")[0].endswith(f"fnet.py:{FFT_LINE}") for e in result["by_source"])
    assert any(e["name"].startswith("forward_p1:") for e in result["events"])  # the backend's own events
    assert any(e["name"] == "fallback:aten::fft_fft2.default" for e in result["events"])


def test_partitioning_needs_the_export_frontend():
    model = nn.Linear(4, 2).eval()
    with pytest.raises(pipeline.LoweringError, match="allowed with partition=True: 'export'"):
        to_backend("reference", model, {"forward": {}}, frontend="torchscript", partition=True)
    with pytest.raises(pipeline.LoweringError, match="min_nodes must be an int of at least 1"):
        to_backend(
            "reference",
            model,
            {"forward": {}},
            example_inputs={"forward": (torch.randn(1, 4),)},
            partition=True,
            min_nodes=0,
        )


class Windowed(nn.Module):
    """A buffer and a constant tensor read by fallback ops, and an input returned as it is."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(8))
        self.linear = nn.Linear(8, 8)

    def forward(self, x):
        window = torch.fft.fft(self.window).real
        ramp = torch.tensor([1.0, 2.0] * 4)
        return self.linear(x * window) + torch.fft.fft(ramp).real, x


def test_buffers_and_constants_the_fallback_reads_are_stored_with_it(tmp_path):
    model, inputs = Windowed().eval(), {"forward": (torch.randn(2, 8),)}
    lowered = to_backend("reference", model, {"forward": {}}, example_inputs=inputs, partition=True)
    meta, parts = unpack_parts(lowered.payload, KIND)
    assert meta["tensors"][0] == {"dtype": "float32", "shape": [8]}  # the window, read by the first fft
    assert parts["tensor/0"] == model.window.numpy().tobytes()
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "windowed.lowered"))
    check_against_eager(model, inputs, lowered, atol=1e-5, rtol=1e-5, loaded=loaded)


class Eigen(nn.Module):
    def forward(self, x):
        values = torch.linalg.eigh(x @ x.mT)[0]  # the reference backend has no eigh
        return torch.relu(values * 2) + torch.linalg.eigh(x)[0]


def test_a_failing_fallback_op_is_reported_at_its_source_line(unchecked_shapes):
    lowered = to_backend(
        "reference", Eigen().eval(), {"forward": {}}, example_inputs={"forward": (torch.randn(3, 3),)}, partition=True
    )
    with pytest.raises(pipeline.BackendRuntimeError, match="Fallback op aten::linalg_eigh.default") as error:
        lowered(torch.randn(3, 4))  # x @ x.mT is square, x itself is not
    assert f"line {line_of(Eigen.forward, 'torch.linalg.eigh(x)[0]')}" in str(error.value)


def test_the_onnxruntime_backend_partitions_fnet_around_its_complex_values(fnet):
    model, inputs = fnet
    lowered = to_backend("onnxruntime", model, {"forward": {}}, example_inputs=inputs, partition=True)
    assert len(lowered.partition["partitions"]) == 3
    assert "complex tensor" in lowered.partition["fallback"][0]["reason"]
    check_against_eager(model, inputs, lowered, **tolerance("onnxruntime"))
