"""Trust: nothing in an artifact runs code without ``trust_code=True``, and every bad artifact is an ArtifactError.

The corpus of issue 9, one test per case: the trust policy (torchscript,
inductor, and data-only backends), generated code that never pastes text from
a file, and malformed files (raw exceptions, zip bombs, duplicate members).
Every injected text would create a canary file if it ran; the ``canary``
fixture fails the test if the file ever appears. The fuzzer is in
test_artifact_fuzz.py.
"""

from __future__ import annotations

import functools
import gc
import glob
import hashlib
import io
import json
import logging
import os
import re
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Tuple

import pytest
import torch
from artifact_forgery import (
    CANARY_MODULE,
    CanaryModel,
    canary_inputs,
    forge,
    forge_consistently,
    injections,
    members,
    time_limit,
    write_canary_module,
    write_members,
)
from backend_checks import compile_specs

import pipeline
from pipeline import zoo
from pipeline.core import literals
from pipeline.core.payload import pack_parts, unpack_parts

GIB = 1 << 30


@pytest.fixture(scope="module")
def canary_dir(tmp_path_factory):
    """A directory on sys.path holding a module whose import creates the canary file."""
    directory = tmp_path_factory.mktemp("canary")
    write_canary_module(directory, directory / "canary-ran")
    sys.path.insert(0, str(directory))
    yield directory
    sys.path.remove(str(directory))
    sys.modules.pop(CANARY_MODULE, None)


@pytest.fixture
def canary(canary_dir):
    """The file any injected code would create; the test fails if it appears."""
    path = canary_dir / "canary-ran"
    assert not path.exists()
    yield path
    assert not path.exists(), "code from an artifact ran"
    assert CANARY_MODULE not in sys.modules, "an artifact imported a module"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A valid reference-backend artifact of the canary model and its outputs."""
    inputs = canary_inputs()
    lowered = pipeline.to_backend("reference", CanaryModel(), {"forward": {}}, example_inputs={"forward": inputs})
    path = pipeline.save_lowered(lowered, tmp_path_factory.mktemp("reference") / "canary.lowered")
    return path, lowered


def refused(path, match: str = "") -> pipeline.ArtifactError:
    with pytest.raises(pipeline.ArtifactError, match=match) as raised:
        pipeline.load_lowered(path)
    assert str(path) in str(raised.value)  # the error names the file
    return raised.value


# -- 1. trust: code-carrying payloads need trust_code=True -----------------------------------------


def test_data_only_artifacts_load_without_trust(reference, tmp_path):
    path, lowered = reference
    x, y = canary_inputs()
    assert pipeline.load_lowered(path)(x, y)["sum"].equal(lowered(x, y)["sum"])
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    onnx = pipeline.to_backend("onnxruntime", model, {"forward": {}}, example_inputs=inputs)
    saved = pipeline.save_lowered(onnx, tmp_path / "mlp.lowered")
    loaded = pipeline.load_lowered(saved)
    assert loaded(*inputs["forward"]).equal(onnx(*inputs["forward"]))
    meta, _ = unpack_parts(onnx.payload, "onnxruntime")  # a well-formed container around a model that is not one
    forged = forge(
        saved,
        tmp_path / "forged.lowered",
        parts={"payload.bin": pack_parts("onnxruntime", meta, {"forward": b"not an onnx model"})},
    )
    refused(forged, "backend 'onnxruntime' cannot compile payload.bin")


class SetStateCanary(torch.nn.Module):
    """A TorchScript module whose __setstate__ runs when its archive is loaded, and says so."""

    def __init__(self):
        super().__init__()
        self.w = torch.ones(3)

    def forward(self, x):
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return self.w, self.training

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        print("CANARY: __setstate__ ran")
        self.w = state[0]
        self.training = state[1]


def test_a_torchscript_artifact_runs_nothing_without_trust_and_loads_with_it(tmp_path, caplog):
    x = torch.randn(3)
    lowered = pipeline.to_backend(
        "torchscript",
        torch.jit.script(SetStateCanary()),
        {"forward": {"freeze": False, "optimize_for_inference": False}},
    )
    assert lowered(x).equal(x)  # the run that made it uses it in-process, no opt-in
    path = pipeline.save_lowered(lowered, tmp_path / "ts.lowered")
    caplog.set_level(logging.INFO, logger="pipeline.torch")  # a payload's prints go to the log, as a runtime's do
    caplog.clear()
    error = refused(path, "backend 'torchscript' payloads carry executable code")
    assert "trust_code=True" in str(error)
    assert "CANARY" not in caplog.text
    loaded = pipeline.load_lowered(path, trust_code=True)
    assert "CANARY: __setstate__ ran" in caplog.text  # what the opt-in allows
    assert loaded(x).equal(lowered(x))


def test_an_inductor_artifact_is_refused_without_trust_naming_the_opt_in(inductor_mlp):
    _, _, _, path = inductor_mlp
    error = refused(path, "backend 'inductor' payloads carry executable code")
    assert f"load_lowered({str(path)!r}, trust_code=True)" in str(error)


def test_inductor_unpacks_into_a_private_directory_that_goes_with_the_handle(inductor_mlp):
    model, inputs, lowered, path = inductor_mlp
    loaded = pipeline.load_lowered(path, trust_code=True)
    directory = loaded.compiled("forward").directory
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert [name for name in os.listdir(directory) if name.startswith("aotinductor_")]  # the loader unpacked here
    assert loaded(*inputs["forward"]).equal(lowered(*inputs["forward"]))
    del loaded
    gc.collect()  # a LoweredModule lives in a reference cycle (its bound methods)
    assert not os.path.exists(directory)


def test_inductor_leaves_nothing_in_the_system_temp_folder_at_exit(inductor_mlp, tmp_path):
    _, _, _, path = inductor_mlp
    system_temp = tmp_path / "system-temp"  # the child's own, so other processes on the machine cannot interfere
    system_temp.mkdir()
    child = (
        "import glob, json, os, pipeline\n"
        f"lowered = pipeline.load_lowered({str(path)!r}, trust_code=True)\n"
        "directory = lowered.compiled('forward').directory\n"
        f"print(json.dumps({{'directory': directory, 'system': glob.glob({str(system_temp)!r} + '/aotinductor_*')}}))\n"
    )  # exits with the module alive: only the exit hook can clean up
    done = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(system_temp)},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["directory"].startswith(str(system_temp)) and seen["system"] == []
    assert not os.path.exists(seen["directory"])
    assert [n for n in os.listdir(system_temp) if n.startswith(("aotinductor_", "pipeline-aoti"))] == []


CONSTRUCTOR = """
#include <stdio.h>
__attribute__((constructor)) static void pipeline_canary(void) {
    FILE *f = fopen(CANARY, "w");
    if (f) fclose(f);
}
"""


def test_a_library_in_a_hand_made_package_loads_only_with_trust(inductor_mlp, tmp_path, canary_dir):
    """The issue's case: a .pt2 around a library with a constructor function, in an inductor artifact."""
    _, _, lowered, path = inductor_mlp
    ran = canary_dir / "constructor-ran"
    source = tmp_path / "canary.c"
    source.write_text(CONSTRUCTOR)
    library = tmp_path / "canary.so"
    built = subprocess.run(
        ["gcc", "-shared", "-fPIC", f'-DCANARY="{ran}"', "-o", str(library), str(source)],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        pytest.skip(f"no C compiler: {built.stderr}")
    meta, packages = unpack_parts(lowered.payload, "inductor")
    package = members_of_bytes(packages["forward"])
    package = [(name, library.read_bytes() if name.endswith(".so") else data) for name, data in package]
    payload = pack_parts("inductor", meta, {"forward": zip_bytes(package, zipfile.ZIP_STORED)})
    forged = forge(path, tmp_path / "forged.lowered", parts={"payload.bin": payload})
    refused(forged, "trust_code=True")
    assert not ran.exists()
    try:
        pipeline.load_lowered(forged, trust_code=True)
    except pipeline.ArtifactError:
        pass  # the library is not a model; its constructor has run by then
    assert ran.exists()  # what trust_code=True allows, and why it is needed
    ran.unlink()


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../escaped.txt", "'..' component"),
        ("/tmp/pipeline-absolute-escape.txt", "absolute path"),
        ("model/data/../../escaped.txt", "'..' component"),
        ("model\\..\\escaped.txt", "backslashes"),
        ("link", "symbolic link"),
    ],
)
def test_package_members_that_would_land_outside_the_directory_are_refused(name, problem, tmp_path):
    from pipeline.backends.inductor.runtime import InductorBackend

    info = zipfile.ZipInfo(name)
    if name == "link":
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr("model/data/aotinductor/model/x.wrapper.so", b"\x7fELF")
        package.writestr(info, b"/etc/passwd" if name == "link" else b"escaped")
    payload = pack_parts(
        "inductor", {"methods": {"forward": {"flat": True, "kernels": []}}}, {"forward": buffer.getvalue()}
    )
    before = set(glob.glob("/tmp/escaped.txt")) | set(glob.glob("/tmp/pipeline-absolute-escape.txt"))
    with pytest.raises(pipeline.LoweringError, match=f"the member {re.escape(repr(name))}.*{problem}"):
        InductorBackend().compile(payload, compile_specs("inductor", {"forward": {}}))
    assert set(glob.glob("/tmp/escaped.txt")) | set(glob.glob("/tmp/pipeline-absolute-escape.txt")) == before


# -- 2. generated code never pastes text from a file -----------------------------------------------


def _param(document, index, key, value):
    document["signatures"]["forward"]["params"][index][key] = value


def _method_name(document, value):
    document["methods"] = [value]
    for section in ("compile_spec", "signatures", "outputs", "shapes"):
        document[section] = {value: document[section]["forward"]}


FIELDS = {
    "parameter name": lambda d, v: _param(d, 0, "name", v),
    "annotation": lambda d, v: _param(d, 1, "annotation", v),
    "default": lambda d, v: _param(d, 2, "default", v),
    "return annotation": lambda d, v: d["signatures"]["forward"].__setitem__("returns", v),
    "method name": _method_name,
    "leaf kind": lambda d, v: d["outputs"]["forward"].__setitem__("leaf_kinds", [v, "Tensor", "Tensor"]),
    "original type": lambda d, v: d.__setitem__("original_type", v),
}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("injection", range(len(injections(Path("x")))))
def test_code_in_any_manifest_field_never_runs(field, injection, reference, canary, tmp_path):
    path, _ = reference
    text = injections(canary)[injection]
    forged = forge(path, tmp_path / "forged.lowered", manifest=lambda d: FIELDS[field](d, text))
    if field == "original type":  # shown in messages only, never in code: the artifact loads
        pipeline.load_lowered(forged)(*canary_inputs())
    else:
        refused(forged)


@pytest.mark.parametrize(
    "name, message",
    [
        ("x y", "not a Python identifier"),
        ("class", "keyword"),
        ("1x", "not a Python identifier"),
        ("", "not a Python identifier"),
        ("__class__", "__dunder__"),
        ("self", "clashes"),
        ("Tensor", "clashes"),
        ("tree_unflatten", "clashes"),
        (["x"], "must be a string"),
        (None, "must be a string"),
        ("\ufb01", "NFKC"),
    ],
)
def test_parameter_names_outside_the_closed_set_are_refused(name, message, reference, canary, tmp_path):
    path, _ = reference
    refused(forge(path, tmp_path / "f.lowered", manifest=lambda d: _param(d, 0, "name", name)), message)


@pytest.mark.parametrize("name", ["eval", "payload", "_handles", "to", "state_dict", "code"])
def test_method_names_that_are_module_attributes_are_refused(name, reference, canary, tmp_path):
    path, _ = reference
    # consistent: code.py generated again for the new name, so that the name itself is what is refused
    forged = forge_consistently(path, tmp_path / "f.lowered", lambda d: _method_name(d, name))
    refused(forged, f"a LoweredModule has an attribute {name!r}")


class Halving(torch.nn.Module):
    def forward(self, x):
        return x

    def half(self, x):
        return x / 2


def test_a_method_named_like_a_module_attribute_is_refused_when_lowering():
    with pytest.raises(pipeline.LoweringError, match="a LoweredModule has an attribute 'half'"):
        pipeline.to_backend("reference", Halving(), {"half": {}})
    with pytest.raises(pipeline.LoweringError, match="__dunder__"):
        pipeline.to_backend("reference", Halving(), {"__call__": {}})


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').getpid()",
        "1_0",
        "float('inf')",
        "{1, 2}",
        "1+2j",
        "b'x'",
        "[" * 300 + "]" * 300,
        "x",
        "2.50",
        " 2.0",
        "-(-1)",
        "1e400",
        "'a' 'b'",
        2.0,
        None,
        "9" * 20000,
    ],
)
def test_defaults_outside_the_closed_set_are_refused(text, reference, canary, tmp_path):
    path, _ = reference
    refused(forge(path, tmp_path / "f.lowered", manifest=lambda d: _param(d, 2, "default", text)), "default")


@pytest.mark.parametrize(
    "text",
    [
        "os.system",
        "Optional[os]",
        "'str'",
        "lambda: 1",
        "int()",
        "List[int",
        "torch.load",
        "typing.cast",
        "Optional[int].__class__",
        "x" * 400,
        3,
    ],
)
def test_annotations_outside_the_allow_list_are_refused(text, reference, canary, tmp_path):
    path, _ = reference
    refused(forge(path, tmp_path / "f.lowered", manifest=lambda d: _param(d, 1, "annotation", text)), "annotation")


def test_annotations_and_defaults_in_the_closed_set_load_as_they_were_lowered(reference):
    path, lowered = reference
    loaded = pipeline.load_lowered(path)
    assert loaded.code == lowered.code
    assert (
        str(loaded.signatures["forward"])
        == str(lowered.signatures["forward"])
        == (
            "(x: torch.Tensor, y: Optional[torch.Tensor] = None, scale: float = 2.0, *, shift: int = 1)"
            " -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]"
        )
    )
    x, y = canary_inputs()
    assert loaded(x, y, shift=1)["pair"][1].equal(lowered(x, y)["pair"][1])


class UserTyped(torch.nn.Module):
    def forward(self, x: "UserTensor", k: int = 2) -> "os.PathLike":  # noqa: F821 (names no artifact may hold)
        return x * k


def test_annotations_outside_the_allow_list_are_left_out_of_the_artifact_not_pasted(tmp_path):
    x = torch.randn(3)
    lowered = pipeline.to_backend("reference", UserTyped(), {"forward": {}}, example_inputs={"forward": (x,)})
    loaded = pipeline.load_lowered(pipeline.save_lowered(lowered, tmp_path / "typed.lowered"))
    assert str(loaded.signatures["forward"]) == str(lowered.signatures["forward"]) == "(x, k: int = 2)"
    assert loaded.code == lowered.code and "UserTensor" not in loaded.code
    assert loaded(x).equal(x * 2)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: _param(d, 2, "default", "3.0"),
        lambda d: _param(d, 0, "name", "z"),
        lambda d: _param(d, 3, "kind", "positional"),
        lambda d: _param(d, 1, "annotation", "Tensor"),
        lambda d: d["outputs"]["forward"].__setitem__(
            "spec", d["outputs"]["forward"]["spec"].replace('\\"sum\\"', '\\"total\\"')
        ),
        lambda d: d["outputs"]["forward"].__setitem__("leaf_kinds", ["Tensor", "int", "Tensor"]),
    ],
    ids=["default", "name", "kind", "annotation", "dict key", "leaf kind"],
)
def test_an_edited_manifest_no_longer_matches_code_py(edit, reference, canary, tmp_path):
    path, _ = reference
    refused(forge(path, tmp_path / "f.lowered", manifest=edit), "code.py does not match")


def _spec(node) -> str:
    return json.dumps([1, node])


LEAF = {"type": None, "context": None, "children_spec": []}


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            _spec(
                {
                    "type": "builtins.dict",
                    "children_spec": [LEAF],
                    "context": json.dumps([{"__enum__": True, "fqn": f"{CANARY_MODULE}:Key", "name": "A"}]),
                }
            ),
            "keys",
        ),
        (
            _spec(
                {
                    "type": "collections.defaultdict",
                    "children_spec": [LEAF],
                    "context": json.dumps(
                        {
                            "default_factory_module": CANARY_MODULE,
                            "default_factory_name": "factory",
                            "dict_context": ["a"],
                        }
                    ),
                }
            ),
            "not supported",
        ),
        (_spec({"type": "foo.Bar", "context": "null", "children_spec": []}), "not a registered pytree node type"),
        # A registered tuple type that is no namedtuple (it has no _fields).
        (_spec({"type": "collections.namedtuple", "context": "builtins.tuple", "children_spec": []}), "namedtuple"),
        (_spec({"type": "builtins.tuple", "context": "null", "children_spec": [LEAF] * 2}), "2 leaf kinds|leaf kinds"),
        (_spec({"type": "builtins.dict", "context": '["a", "a", "b"]', "children_spec": [LEAF] * 3}), "distinct"),
        (_spec({"type": "builtins.dict", "context": '["a"]', "children_spec": [LEAF] * 3}), "children"),
        ("[2, {}]", "protocol 1"),
        ("not json", "not valid JSON"),
        ("[" * 5000 + "]" * 5000, "nested deeper"),
        (json.dumps([1, json.loads(_spec(LEAF))[1] | {"extra": 1}]), "unknown field"),
    ],
)
def test_output_structures_come_from_a_closed_set_and_never_import(spec, message, reference, canary, tmp_path):
    path, _ = reference
    forged = forge(path, tmp_path / "f.lowered", manifest=lambda d: d["outputs"]["forward"].__setitem__("spec", spec))
    refused(forged, message)


def test_the_one_literal_helper_round_trips_the_closed_set_and_nothing_else():
    for value in [None, True, 0, -7, 2.5, -0.0, "a'\"b\n", (1, "x"), [1.5, None], {"k": [1, 2], 3: (True,)}, ()]:
        text = literals.literal_source(value)
        assert literals.read_literal(text, "default") == value and type(literals.read_literal(text, "d")) is type(value)
    for value in [float("nan"), float("inf"), {1, 2}, b"x", torch.zeros(1), 1 + 2j, object(), [[[]]] * 1 + [set()]]:
        assert literals.literal_source(value) is None


def test_read_artifact_returns_the_manifest_digest_and_artifact_digests_covers_the_file(reference, tmp_path):
    path, _ = reference
    digests = pipeline.artifact_digests(path)
    manifest_bytes = dict(members(path))["manifest.json"]
    assert digests == {
        "artifact": hashlib.sha256(path.read_bytes()).hexdigest(),
        "manifest": hashlib.sha256(manifest_bytes).hexdigest(),
    }
    assert pipeline.read_artifact(path)["manifest_sha256"] == digests["manifest"]
    # A consistent edit that loading cannot see (a field shown in messages only) changes the manifest digest.
    forged = forge(path, tmp_path / "f.lowered", manifest=lambda d: d.__setitem__("original_type", "Other"))
    pipeline.load_lowered(forged)
    assert pipeline.artifact_digests(forged)["manifest"] != digests["manifest"]


# -- 3. every malformed artifact is an ArtifactError, quickly and in bounded memory -------------------


def members_of_bytes(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def zip_bytes(items, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    write_members(buffer, items, compression)
    return buffer.getvalue()


def _patch_central(data: bytes, name: str, offset: int, fmt: str, value: int) -> bytes:
    """Set a field of ``name``'s central-directory record (offsets per APPNOTE 4.3.12)."""
    at = data.index(b"PK\x01\x02")
    while True:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + length].decode() == name:
            return data[: at + offset] + struct.pack(fmt, value) + data[at + offset + struct.calcsize(fmt) :]
        at = data.index(b"PK\x01\x02", at + 46)


def _patch_end_record(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    at = data.rindex(b"PK\x05\x06")
    return data[: at + offset] + struct.pack(fmt, value) + data[at + offset + struct.calcsize(fmt) :]


def _corrupt_deflate(data: bytes, name: str) -> bytes:
    """Garbage in place of ``name``'s deflate stream (its sizes and CRC unchanged): zlib.error on read."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    return data[:start] + b"\xff" * info.compress_size + data[start + info.compress_size :]


def _with(items, name, data):
    return [(n, data if n == name else d) for n, d in items]


def _manifest_edit(edit):
    def apply(items):
        document = json.loads(dict(items)["manifest.json"])
        document = edit(document) or document
        return zip_bytes(_with(items, "manifest.json", json.dumps(document).encode()))

    return apply


def _part_edit(name, data):
    """Replace a part and its hash: the edit reaches the checks behind the hash check."""

    def apply(items):
        document = json.loads(dict(items)["manifest.json"])
        document["sha256"][name] = hashlib.sha256(data).hexdigest()
        return zip_bytes(_with(_with(items, name, data), "manifest.json", json.dumps(document).encode()))

    return apply


MALFORMED = {
    "not a zip": (lambda items: b"not a zip", "not a readable zip archive"),
    "empty file": (lambda items: b"", "not a readable zip archive"),
    "truncated": (lambda items: zip_bytes(items)[: len(zip_bytes(items)) // 2], "not a readable zip archive"),
    "end record cut": (lambda items: zip_bytes(items)[:-5], "not a readable zip archive"),
    "zlib.error": (lambda items: _corrupt_deflate(zip_bytes(items), "manifest.json"), "manifest.json cannot be read"),
    "bad CRC": (lambda items: _patch_central(zip_bytes(items), "code.py", 16, "<L", 0), "code.py cannot be read"),
    "RecursionError: deep JSON": (
        lambda items: zip_bytes(_with(items, "manifest.json", b"[" * 100_000)),
        "nested deeper",
    ),
    "AttributeError: manifest a list": (_manifest_edit(lambda d: [d]), "manifest.json must be an object"),
    "manifest a string": (_manifest_edit(lambda d: "manifest"), "manifest.json must be an object"),
    "AttributeError: sha256 a list": (
        _manifest_edit(lambda d: d.__setitem__("sha256", [])),
        "sha256 must be an object",
    ),
    "sha256 entry a list": (_manifest_edit(lambda d: d["sha256"].__setitem__("code.py", [1])), "must be a string"),
    "UnicodeDecodeError: manifest": (
        lambda items: zip_bytes(_with(items, "manifest.json", b'{"a": "\xff\xfe"}')),
        "not valid JSON",
    ),
    "UnicodeDecodeError: code.py": (_part_edit("code.py", b"\xff\xfe"), "code.py is not UTF-8"),
    "NotImplementedError: treespec": (
        _manifest_edit(
            lambda d: d["outputs"]["forward"].__setitem__(
                "spec", _spec({"type": "no.Such", "context": "null", "children_spec": []})
            )
        ),
        "not a registered",
    ),
    "ValueError: parameter name": (_manifest_edit(lambda d: _param(d, 0, "name", "x y")), "not a Python identifier"),
    "two manifest.json": (lambda items: zip_bytes(items + [("manifest.json", b"{}")]), "occurs more than once"),
    "two payload.bin": (lambda items: zip_bytes(items + [("payload.bin", b"")]), "occurs more than once"),
    "a missing part": (lambda items: zip_bytes(items[:-1]), "missing"),
    "an unknown member": (lambda items: zip_bytes(items + [("evil.py", b"")]), "unexpected members"),
    "too many members": (lambda items: zip_bytes(items + [(f"m{i}", b"") for i in range(20)]), "limits are 8 members"),
    "lzma": (lambda items: zip_bytes(items, zipfile.ZIP_LZMA), "compression method 14"),
    "bzip2": (lambda items: zip_bytes(items, zipfile.ZIP_BZIP2), "compression method 12"),
    "unknown method": (lambda items: _patch_central(zip_bytes(items), "payload.bin", 10, "<H", 99), "method 99"),
    "encrypted": (lambda items: _patch_central(zip_bytes(items), "payload.bin", 8, "<H", 1), "encrypted"),
    "directory claims 60000 members": (
        lambda items: _patch_end_record(zip_bytes(items), 10, "<H", 60000),
        "the zip directory declares 60000 members",
    ),
    "directory claims 1 GB": (
        lambda items: _patch_end_record(zip_bytes(items), 12, "<L", GIB),
        "the zip directory declares",
    ),
    "declared size smaller than content": (
        lambda items: _patch_central(zip_bytes(items), "payload.bin", 24, "<L", 10),
        "payload.bin cannot be read",
    ),
    "a manifest that declares 3 GB": (
        lambda items: _patch_central(zip_bytes(items), "manifest.json", 24, "<L", 3 * GIB),
        "more than the limit|zip bomb",
    ),
    "format missing": (_manifest_edit(lambda d: d.__delitem__("format")), "format None"),
    "format version a string": (_manifest_edit(lambda d: d.__setitem__("format_version", "2")), "format version '2'"),
    "no methods": (_manifest_edit(lambda d: d.__setitem__("methods", [])), "1 to 1000 distinct"),
    "a method twice": (_manifest_edit(lambda d: d.__setitem__("methods", ["forward", "forward"])), "distinct"),
    "compile spec a list": (
        _manifest_edit(lambda d: d["compile_spec"].__setitem__("forward", [])),
        "must be an object",
    ),
    "compile spec of no method": (_manifest_edit(lambda d: d.__setitem__("compile_spec", {})), "exactly the methods"),
    "an unknown compile-spec option": (
        _manifest_edit(lambda d: d["compile_spec"]["forward"].__setitem__("evil", 1)),
        "backend 'reference' cannot compile payload.bin",
    ),
    "frontend pickle": (_manifest_edit(lambda d: d.__setitem__("frontend", "pickle")), "frontend 'pickle'"),
    "positional after keyword-only": (
        _manifest_edit(lambda d: d["signatures"]["forward"]["params"].reverse()),
        "follows a keyword-only",
    ),
    "handles.json a list": (_part_edit("handles.json", b"[]"), "handles.json must be an object"),
    "a handle a string": (
        _part_edit(
            "handles.json",
            json.dumps(
                {
                    "handles": [
                        {
                            "handle": "1",
                            "method": "forward",
                            "op": "aten::add",
                            "node": "add",
                            "source": None,
                            "module_hierarchy": "top",
                        }
                    ]
                }
            ).encode(),
        ),
        "handle must be an integer",
    ),
    "backend map of strings": (
        _part_edit("handles.json", json.dumps({"backend_map": {"a": ["x"]}}).encode()),
        "must be an integer",
    ),
    "a corrupt payload, hash recomputed": (
        _part_edit("payload.bin", b"PLREFBE\0" + b"\xff" * 40),
        "backend 'reference' cannot compile payload.bin",
    ),
    "a directory, not a file": (None, "cannot read lowered-module artifact"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_every_malformed_artifact_is_an_artifact_error_naming_the_part(case, reference, canary, tmp_path):
    path, _ = reference
    make, message = MALFORMED[case]
    target = tmp_path / "bad.lowered"
    if make is None:
        target.mkdir()
    else:
        target.write_bytes(make(members(path)))
    with time_limit():  # a hang guard: each case is refused in milliseconds, from the bytes it has
        refused(target, message)


@functools.cache
def _deflated_zeros(inflated: int) -> "tuple[bytes, int]":
    """A deflate stream of ``inflated`` zero bytes (about 1000:1) and their CRC-32, made without
    compressing them all: after a full flush every MiB of zeros deflates to the same bytes."""
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated >> 20):
        crc = zlib.crc32(zeros, crc)
    return block * (inflated >> 20) + compressor.flush(), crc


def _bomb_zip(items, name: str, inflated: int, declared: int) -> bytes:
    """A zip whose member ``name`` inflates to ``inflated`` zero bytes and declares ``declared``; the other
    members as given, stored."""
    stream, crc = _deflated_zeros(inflated)
    local, central, offset = [], [], 0
    for member_name, data in [(n, d) for n, d in items if n != name] + [(name, None)]:
        name_bytes = member_name.encode()
        if data is None:
            body, method, size, member_crc = stream, 8, declared, crc
        else:
            body, method, size, member_crc = data, 0, len(data), zlib.crc32(data)
        header = struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, member_crc, len(body), size, len(name_bytes), 0
        )
        local.append(header + name_bytes + body)
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0x21,
                member_crc,
                len(body),
                size,
                len(name_bytes),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name_bytes
        )
        offset += len(local[-1])
    directory = b"".join(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(directory), offset, 0)
    return b"".join(local) + directory + end


@pytest.fixture(scope="module")
def bombs(reference, tmp_path_factory):
    path, _ = reference
    items = members(path)
    directory = tmp_path_factory.mktemp("bombs")
    made = {}
    for label, declared in [("honest", 3 * GIB), ("lying", 3 << 20)]:
        made[label] = directory / f"{label}.lowered"
        made[label].write_bytes(_bomb_zip(items, "payload.bin", 3 * GIB, declared))
    return made


def _peak_extra_rss():
    """Reset the kernel's peak-RSS mark (Linux) and return a function that reads how far the resident
    set has risen above its size now; None where the mark cannot be reset."""

    def status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = status("VmRSS:")
    return lambda: status("VmHWM:") - before


def _count_inflated(monkeypatch) -> "list[int]":
    """From now on, ``[n]``: how many bytes zlib has inflated (zipfile inflates through ``zlib.decompressobj``)."""
    inflated = [0]
    decompressobj = zlib.decompressobj

    class Counting:
        def __init__(self, *args, **kwargs):
            self._inner = decompressobj(*args, **kwargs)

        def decompress(self, data, max_length=0):
            out = self._inner.decompress(data, max_length)
            inflated[0] += len(out)
            return out

        def flush(self, *args):
            out = self._inner.flush(*args)
            inflated[0] += len(out)
            return out

        def __getattr__(self, name):  # eof, unconsumed_tail, unused_data
            return getattr(self._inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    return inflated


@pytest.mark.parametrize("label", ["honest", "lying"])
def test_a_3_mb_zip_that_inflates_to_3_gb_is_refused_before_inflating_past_its_declared_size_in_256_mib(
    label, bombs, canary, monkeypatch
):
    path = bombs[label]
    assert path.stat().st_size < 4 << 20
    gc.collect()
    extra_rss = _peak_extra_rss()
    inflated = _count_inflated(monkeypatch)
    tracemalloc.start()
    with pytest.raises(pipeline.ArtifactError, match="zip bomb" if label == "honest" else "payload.bin cannot be read"):
        pipeline.load_lowered(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"\n{label} bomb: refused after inflating {inflated[0] / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB traced"
        + (f", {extra_rss() / 2**20:.1f} MiB extra RSS" if extra_rss else "")
    )
    # The work done, not the time taken (which a busy machine stretches): the honest bomb is refused from its
    # declared sizes before one byte is inflated, the lying one within a read chunk past the 3 MiB it declares.
    if label == "honest":
        assert inflated[0] == 0
    else:
        assert 0 < inflated[0] <= (3 << 20) + (1 << 20)
    assert peak < 256 << 20
    if extra_rss:
        assert extra_rss() < 256 << 20


def test_the_writer_stores_what_would_deflate_like_a_bomb_so_the_reader_accepts_it(tmp_path):
    class Zeros(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("zeros", torch.zeros(3_000_000))  # 12 MB that deflate about 1000:1

        def forward(self, x):
            return x + self.zeros

    x = torch.randn(3_000_000)
    lowered = pipeline.to_backend("reference", Zeros(), {"forward": {}}, example_inputs={"forward": (x,)})
    path = pipeline.save_lowered(lowered, tmp_path / "zeros.lowered")
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("payload.bin").compress_type == zipfile.ZIP_STORED
        assert archive.getinfo("manifest.json").compress_type == zipfile.ZIP_DEFLATED
    assert pipeline.load_lowered(path)(x).equal(x)


BAD_PAYLOADS = {
    "not bytes": "PLPARTS1",
    "empty": b"",
    "magic only": b"PLPARTS1",
    "header length past the end": b"PLPARTS1" + (10**12).to_bytes(8, "little") + b"{}",
    "header not JSON": b"PLPARTS1" + (3).to_bytes(8, "little") + b"{x}",
    "header not UTF-8": b"PLPARTS1" + (2).to_bytes(8, "little") + b"\xff\xfe",
    "header nested 100000 deep": b"PLPARTS1" + (100_000).to_bytes(8, "little") + b"[" * 100_000,
    "header a list": b"PLPARTS1" + (2).to_bytes(8, "little") + b"[]",
    "another kind": pack_parts("inductor", {}, {}),
    "parts a dict": b"PLPARTS1" + (33).to_bytes(8, "little") + b'{"kind": "onnxruntime", "parts": {}}',
    "meta a list": b"PLPARTS1" + (32).to_bytes(8, "little") + b'{"kind": "onnxruntime", "meta": []}',
}


def _header_payload(parts, tail=b""):
    header = json.dumps({"kind": "onnxruntime", "meta": {}, "parts": parts}).encode()
    return b"PLPARTS1" + len(header).to_bytes(8, "little") + header + tail


BAD_PAYLOADS.update(
    {
        "a part of negative size": _header_payload([{"name": "a", "size": -1, "sha256": ""}]),
        "a size that is true": _header_payload([{"name": "a", "size": True, "sha256": ""}], b"x"),
        "a size that is a string": _header_payload([{"name": "a", "size": "1", "sha256": ""}], b"x"),
        "a part name twice": _header_payload([{"name": "a", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}] * 2),
        "a sha256 that is a list": _header_payload([{"name": "a", "size": 1, "sha256": [1]}], b"x"),
        "a part that is a string": _header_payload(["a"]),
        "a wrong hash": _header_payload([{"name": "a", "size": 1, "sha256": "0" * 64}], b"x"),
        "trailing bytes": _header_payload([], b"x"),
        "a truncated part": _header_payload([{"name": "a", "size": 5, "sha256": "0" * 64}], b"x"),
    }
)


@pytest.mark.parametrize("case", BAD_PAYLOADS)
def test_unpack_parts_answers_any_bytes_with_a_lowering_error_only(case):
    with pytest.raises(pipeline.LoweringError, match="Backend 'onnxruntime'"):
        unpack_parts(BAD_PAYLOADS[case], "onnxruntime")
