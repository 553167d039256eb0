"""Artifacts: one zip, no pickle, verified on load, byte-identical for identical lowerings."""

import hashlib
import json
import os
import zipfile

import pytest
import torch

import pipeline
from pipeline import zoo
from pipeline.core import artifact

SPEC = {"forward": {"opt": "O1"}, "accum": {}, "sub_accum": {}}


@pytest.fixture(params=["torchscript", "export"])
def lowered(request, xh):
    return pipeline.to_backend(
        "test_backend", zoo.BasicModule(), SPEC, frontend=request.param, example_inputs={m: xh for m in SPEC}
    )


def test_save_load_round_trip_keeps_outputs_spec_and_signatures(lowered, xh, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    loaded = pipeline.load_lowered(path)
    for method in SPEC:
        torch.testing.assert_close(getattr(loaded, method)(*xh), getattr(lowered, method)(*xh))
    assert loaded.method_compile_spec == SPEC
    assert loaded.frontend == lowered.frontend
    assert loaded.code == lowered.code


def test_the_handle_map_survives_the_round_trip(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    loaded = pipeline.load_lowered(path)
    assert loaded.handle_map.to_json() == lowered.handle_map.to_json()
    assert loaded.handle_map.handles  # not empty, unlike the original after jit.load


def test_runtime_errors_still_map_to_source_after_loading(lowered, tmp_path, unchecked_shapes):
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "basic.lowered"))
    with pytest.raises(pipeline.BackendRuntimeError, match="return x \\+ h"):
        loaded.accum(torch.rand(2, 4), torch.rand(13, 9))


def test_two_identical_lowerings_give_byte_identical_files(xh, tmp_path):
    paths = []
    for i in range(2):
        model = zoo.BasicModule()
        lowered = pipeline.to_backend("test_backend", model, SPEC, example_inputs={m: xh for m in SPEC})
        paths.append(pipeline.save_lowered(lowered, tmp_path / f"{i}.lowered"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_the_file_holds_json_bytes_and_source_only(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["code.py", "handles.json", "manifest.json", "payload.bin"]
        manifest = json.loads(archive.read("manifest.json"))
        for name in archive.namelist():
            assert b"\x80\x04\x95" not in archive.read(name)  # no pickle protocol-4 stream
    assert manifest["backend"] == "test_backend"
    assert manifest["methods"] == list(SPEC)
    assert manifest["versions"]["torch"] == torch.__version__
    assert set(manifest["sha256"]) == {"payload.bin", "handles.json", "code.py"}
    assert manifest["signatures"]["forward"]["params"] == [
        {"name": "x", "kind": "positional"},
        {"name": "h", "kind": "positional"},
    ]


def rewrite(path, name, transform):
    with zipfile.ZipFile(path) as archive:
        parts = {n: archive.read(n) for n in archive.namelist()}
    parts[name] = transform(parts[name])
    with zipfile.ZipFile(path, "w") as archive:
        for n, data in parts.items():
            archive.writestr(n, data)


def edit_manifest(path, **changes):
    rewrite(path, "manifest.json", lambda data: json.dumps({**json.loads(data), **changes}).encode())


def test_a_tampered_part_is_a_hash_mismatch(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    rewrite(path, "payload.bin", lambda data: data + b" ")
    with pytest.raises(pipeline.ArtifactError, match="sha256 mismatch in payload.bin"):
        pipeline.load_lowered(path)


def test_an_unknown_format_version_is_refused(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    edit_manifest(path, format_version=99)
    with pytest.raises(pipeline.ArtifactError, match="format version 99 is not supported"):
        pipeline.load_lowered(path)


def test_a_missing_backend_is_named(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    # a file made where a backend 'gone' is installed: its code.py names that backend too
    rewrite(path, "code.py", lambda code: code.replace(b"'test_backend'", b"'gone'"))
    with zipfile.ZipFile(path) as archive:
        code = archive.read("code.py")
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    edit_manifest(path, backend="gone", sha256={**manifest["sha256"], "code.py": hashlib.sha256(code).hexdigest()})
    with pytest.raises(pipeline.ArtifactError, match="Backend 'gone' is not registered"):
        pipeline.load_lowered(path)


def test_not_an_artifact_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.lowered"
    path.write_bytes(b"not a zip")
    with pytest.raises(pipeline.ArtifactError, match="cannot read lowered-module artifact"):
        pipeline.load_lowered(path)


def test_unavailable_backend_saves_but_does_not_load(xh, tmp_path):
    with pytest.warns(RuntimeWarning):
        lowered = pipeline.to_backend(
            "test_backend_unavailable", zoo.BasicModule(), {"forward": {}}, example_inputs={"forward": xh}
        )
    path = pipeline.save_lowered(lowered, tmp_path / "u.lowered")
    with pytest.raises(pipeline.BackendNotAvailableError, match="not available"):
        pipeline.load_lowered(path)


def test_a_failed_write_leaves_no_file_behind(lowered, tmp_path, monkeypatch):
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    assert list(tmp_path.iterdir()) == []


def test_read_artifact_does_not_need_the_backend_to_compile(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    contents = artifact.read_artifact(path)
    assert contents["manifest"]["frontend"] == lowered.frontend
    assert contents["payload.bin"] == lowered.payload


def test_the_payload_is_stored_the_text_deflated_and_the_manifest_written_last(lowered, tmp_path):
    path = pipeline.save_lowered(lowered, tmp_path / "basic.lowered")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == ["payload.bin", "handles.json", "code.py", "manifest.json"]
    compression = {info.filename: info.compress_type for info in infos}
    assert compression.pop("payload.bin") == zipfile.ZIP_STORED
    assert set(compression.values()) == {zipfile.ZIP_DEFLATED}
    assert all(info.flag_bits & 0x08 for info in infos)  # sizes and CRC follow the data: nothing written twice


def test_write_artifact_gives_the_size_and_sha256_of_the_file_it_wrote(lowered, tmp_path):
    written = artifact.write_artifact(lowered, tmp_path / "basic.lowered")
    data = written.path.read_bytes()
    assert (written.size, written.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_saving_and_reading_never_hold_a_second_copy_of_the_payload(lowered, tmp_path):
    import tracemalloc

    size = 64 << 20
    lowered.payload = os.urandom(size)  # read_artifact checks the hashes and compiles nothing
    path = tmp_path / "big.lowered"
    tracemalloc.start()
    try:
        pipeline.save_lowered(lowered, path)
        _, saving = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = pipeline.read_artifact(path)
        _, reading = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read["payload.bin"] == lowered.payload
    assert saving < size / 4, f"saving traced {saving / 2**20:.0f} MiB for a {size >> 20} MiB payload"
    assert reading < 1.25 * size, f"reading traced {reading / 2**20:.0f} MiB for a {size >> 20} MiB payload"


def test_text_that_would_deflate_like_a_bomb_is_stored(tmp_path):
    repetitive = b"{}" * (4 << 20)  # 8 MB that deflate about 1000:1, past the reader's 200:1
    assert artifact._compression("handles.json", repetitive) == zipfile.ZIP_STORED
    assert artifact._compression("handles.json", b'{"handles": []}') == zipfile.ZIP_DEFLATED
    assert artifact._compression("payload.bin", b"{}") == zipfile.ZIP_STORED
