"""Models past protobuf's 2 GiB: onnxruntime keeps their weights as ONNX external data inside the payload,
OpenVINO as its IR's bin; neither reads a file outside the artifact.

The cheap tests force the external-data path on a tiny decoder (``EXTERNAL_DATA_ABOVE`` lowered to 0). The
slow one lowers a 1.1B-parameter Llama at TinyLlama's sizes (``conf/model/hf_llama_1b.yaml``).
"""

from __future__ import annotations

import re

import backend_checks
import onnx
import pytest
import torch
import transformers
from artifact_forgery import forge
from file_canaries import OpenWatch, assert_refused_unread

import pipeline
from pipeline.backends.onnxruntime import OnnxRuntimeCompileSpec, external_data
from pipeline.core.payload import pack_parts, unpack_parts


def assert_same_outputs(expected, actual, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    backend_checks.assert_same_outputs(expected, actual, atol=atol, rtol=rtol)


class Logits(torch.nn.Module):
    """A causal LM's logits alone (``use_cache=False``): no key/value cache to compare."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, use_cache=False).logits


def llama(**sizes) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**sizes)
    ids = torch.randint(0, config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    return Logits(transformers.LlamaForCausalLM(config).eval()), ids


TINY = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip


@pytest.fixture(scope="module")
def external():
    """The tiny decoder lowered to onnxruntime with every initializer as external data, saved."""
    model, ids = llama(**TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(external_data, "EXTERNAL_DATA_ABOVE", 0)
        lowered = pipeline.to_backend("onnxruntime", model, {"forward": {}}, example_inputs={"forward": (ids,)})
    return model, ids, lowered


def test_a_model_past_the_threshold_keeps_its_weights_in_a_payload_part_it_names(external):
    _, _, lowered = external
    _, parts = unpack_parts(lowered.payload, "onnxruntime")
    assert list(parts) == ["forward", "forward.weights"]
    model = onnx.load_from_string(parts["forward"])
    entries = [entries for _, entries in external_data.external_tensors(model)]
    assert entries and {e["location"] for e in entries} == {"forward.weights"}
    assert sum(int(e["length"]) for e in entries) == len(parts["forward.weights"])


def test_it_answers_like_eager_and_round_trips_through_save_and_load(external, tmp_path, monkeypatch):
    model, ids, lowered = external
    with torch.no_grad():
        expected = model(ids)
    assert_same_outputs(expected, lowered(ids))
    monkeypatch.chdir(tmp_path)  # where onnxruntime would look for a location given as a relative path
    path = pipeline.save_lowered(lowered, tmp_path / "llama.lowered")
    (tmp_path / "forward.weights").write_bytes(b"")  # a decoy under the part's name: never to be opened
    with OpenWatch(tmp_path / "forward.weights") as watch:
        loaded = pipeline.load_lowered(path)
        assert_same_outputs(expected, loaded(ids))
    assert not watch.opened


def test_the_same_model_lowered_twice_gives_the_same_payload(external):
    model, ids, lowered = external
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(external_data, "EXTERNAL_DATA_ABOVE", 0)
        again = pipeline.to_backend("onnxruntime", model, {"forward": {}}, example_inputs={"forward": (ids,)})
    assert again.payload == lowered.payload


def _with_location(lowered, location: str | None = None, **entries: str) -> bytes:
    """The payload with the first external tensor's location (or other entries) changed."""
    meta, parts = unpack_parts(lowered.payload, "onnxruntime")
    model = onnx.load_from_string(parts["forward"])
    tensor = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    changes = {**({"location": location} if location is not None else {}), **entries}
    for entry in tensor.external_data:
        if entry.key in changes:
            entry.value = changes.pop(entry.key)
    for key, value in changes.items():
        added = tensor.external_data.add()
        added.key, added.value = key, value
    return pack_parts("onnxruntime", meta, {**parts, "forward": model.SerializeToString()})


@pytest.mark.parametrize(
    "tampered, refusal",
    [
        (dict(location="/etc/hostname"), "its location '/etc/hostname' is an absolute path"),
        (dict(location="../forward.weights"), "its location '../forward.weights' is a path that leaves its folder"),
        (dict(location="secret.bin"), "its location 'secret.bin' is a name the payload does not carry"),
        (dict(location="forward"), "its location 'forward' is a name the payload does not carry"),
        (dict(length="99999999999"), r"bytes 0\.\.99999999999 are outside part 'forward.weights'"),
        (dict(basepath="/etc"), r"it has external-data keys \['basepath'\]"),
    ],
    ids=["absolute", "parent", "not-a-part", "the-model-part", "past-the-part", "extra-key"],
)
def test_a_tampered_external_data_entry_is_refused_at_load_and_nothing_is_opened(
    tampered, refusal, external, tmp_path, monkeypatch
):
    _, _, lowered = external
    monkeypatch.chdir(tmp_path)
    path = pipeline.save_lowered(lowered, tmp_path / "llama.lowered")
    forged = forge(path, tmp_path / "forged.lowered", parts={"payload.bin": _with_location(lowered, **tampered)})
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    assert_refused_unread(
        forged,
        tmp_path / "secret.bin",
        rf"forged.lowered: .*keeps its data outside the model: {refusal}.*may name only the "
        r"payload's part 'forward.weights', exactly",
    )


def test_the_check_runs_before_onnxruntime_sees_the_model(external):
    """The runtime itself refuses a payload whose model names a file, without the artifact's own checks."""
    _, _, lowered = external
    payload = _with_location(lowered, location="/etc/hostname")
    with pytest.raises(pipeline.LoweringError, match=re.escape("'/etc/hostname' is an absolute path")):
        lowered.runtime.compile(payload, {"forward": OnnxRuntimeCompileSpec()})


def test_quantizing_a_model_kept_as_external_data_is_refused_naming_the_option():
    model, ids = llama(**TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(external_data, "EXTERNAL_DATA_ABOVE", 0)
        with pytest.raises(pipeline.LoweringError, match="quantize=int8_dynamic .* lower it with quantize=none"):
            pipeline.to_backend(
                "onnxruntime", model, {"forward": {"quantize": "int8_dynamic"}}, example_inputs={"forward": (ids,)}
            )


def test_openvino_round_trips_the_decoder_from_its_payload_alone(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    model, ids = llama(**TINY)
    lowered = pipeline.to_backend("openvino", model, {"forward": {}}, example_inputs={"forward": (ids,)})
    with torch.no_grad():
        expected = model(ids)
    monkeypatch.chdir(tmp_path)
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "llama.lowered"))
    assert_same_outputs(expected, loaded(ids))
    assert list(unpack_parts(lowered.payload, "openvino")[1]) == ["forward.xml", "forward.bin"]


TINYLLAMA = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
    vocab_size=32000,
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_1b_decoder_lowers_verifies_and_reloads(backend, tmp_path):
    """About 4.4 GB of fp32 weights and several minutes per backend: run it alone."""
    model, _ = llama(**TINYLLAMA)
    ids = torch.randint(0, 32000, (1, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids)
    lowered = pipeline.to_backend(backend, model, {"forward": {}}, example_inputs={"forward": (ids,)})
    assert_same_outputs(expected, lowered(ids), atol=1e-3, rtol=1e-3)
    path = pipeline.save_lowered(lowered, tmp_path / "llama.lowered")
    del lowered
    assert_same_outputs(expected, pipeline.load_lowered(path)(ids), atol=1e-3, rtol=1e-3)
