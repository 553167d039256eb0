"""Fuzzing artifacts: every mutant of a valid artifact loads and gives the same outputs, or is an ArtifactError.

Never another exception, a hang (each load runs under a 60 s alarm), or code
execution (the mutations inject texts that would create a canary file, and
treespec contexts that would import a module that creates it). The base is a
reference-backend artifact of `CanaryModel`, whose manifest has every kind of
field (names, annotations, defaults, keyword-only arguments, a nested output).

Mutations: bit flips, truncation and inserted bytes in the file; members
renamed, duplicated, dropped, reordered, resized or recompressed; manifest
fields replaced, deleted or added (inside the output treespec too); the handle
map edited with its hash recomputed. A consistent forgery of the payload
(bytes changed, hash recomputed) is a program of its own, which the hashes
cannot tell from the real one: its test asks only that loading and running it
raise nothing but the pipeline's errors.

Hypothesis draws new examples every run (no example database is kept); a
failure prints the seed to reproduce it. ``PIPELINE_FUZZ_SCALE=20`` runs
twenty times as many examples, for a campaign longer than CI's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch.utils._pytree as pytree
from artifact_forgery import (
    CANARY_MODULE,
    CanaryModel,
    canary_inputs,
    injections,
    members,
    time_limit,
    write_canary_module,
    write_members,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline

FUZZ = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)
SCALE = int(os.environ.get("PIPELINE_FUZZ_SCALE", "1"))  # more examples for a longer campaign than CI's
OUTCOMES: Counter = Counter()


class Base(dict):
    def __repr__(self) -> str:  # what a failing example prints for this argument
        return "<the valid artifact>"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The valid artifact's members, its outputs, the canary and a path for mutants."""
    directory = tmp_path_factory.mktemp("fuzz")
    canary = directory / "canary-ran"
    write_canary_module(directory, canary)
    sys.path.insert(0, str(directory))
    inputs = canary_inputs()
    lowered = pipeline.to_backend("reference", CanaryModel(), {"forward": {}}, example_inputs={"forward": inputs})
    path = pipeline.save_lowered(lowered, directory / "base.lowered")
    yield Base(
        members=members(path),
        inputs=inputs,
        expected=lowered(*inputs),
        canary=canary,
        mutant=directory / "mutant.lowered",
        bytes=path.read_bytes(),
    )
    sys.path.remove(str(directory))
    print(f"\nfuzz outcomes: {dict(OUTCOMES)}")


def check(base, data: bytes, family: str) -> str:
    """Load the mutant: same outputs, or ArtifactError (or, for a shape contract edited into another valid
    one, a ShapeError on the call: the record binds the calls); never another exception, a hang or code run."""
    base["mutant"].write_bytes(data)
    try:
        with time_limit():
            loaded = pipeline.load_lowered(base["mutant"])
            outputs = loaded(*base["inputs"])
    except (pipeline.ArtifactError, pipeline.ShapeError):
        result = "refused"
    else:
        assert pytree.tree_structure(outputs) == pytree.tree_structure(base["expected"])
        assert all(a.equal(b) for a, b in zip(pytree.tree_leaves(outputs), pytree.tree_leaves(base["expected"])))
        result = "loaded"
    assert not base["canary"].exists(), "code from an artifact ran"
    assert CANARY_MODULE not in sys.modules, "an artifact imported a module"
    OUTCOMES[f"{family} {result}"] += 1
    return result


def zipped(items, compression=zipfile.ZIP_DEFLATED) -> bytes:
    import io

    buffer = io.BytesIO()
    write_members(buffer, items, compression)
    return buffer.getvalue()


# -- bytes of the file ------------------------------------------------------------------------------


@settings(**FUZZ, max_examples=200 * SCALE)
@given(data=st.data())
def test_flipped_truncated_or_inserted_bytes(base, data):
    raw = bytearray(base["bytes"])
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if kind == "flip":
        for position, bit in data.draw(
            st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 7)), min_size=1, max_size=8)
        ):
            raw[position] ^= 1 << bit
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        position = data.draw(st.integers(0, len(raw)))
        raw[position:position] = data.draw(st.binary(min_size=1, max_size=64))
    check(base, bytes(raw), f"bytes/{kind}")


# -- members of the zip -----------------------------------------------------------------------------

NAMES = [
    "manifest.json",
    "payload.bin",
    "handles.json",
    "code.py",
    "evil.py",
    "../manifest.json",
    "/code.py",
    "MANIFEST.JSON",
    "manifest.json/",
    "./code.py",
]


@settings(**FUZZ, max_examples=150 * SCALE)
@given(data=st.data())
def test_renamed_duplicated_dropped_resized_or_recompressed_members(base, data):
    items = list(base["members"])
    original = dict(items)["manifest.json"]
    document = json.loads(original)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["rename", "duplicate", "drop", "resize", "reorder", "swap"]))
        index = data.draw(st.integers(0, len(items) - 1)) if items else None
        if index is None:
            break
        name, content = items[index]
        if kind == "rename":
            items[index] = (data.draw(st.sampled_from(NAMES)), content)
        elif kind == "duplicate":
            items.insert(data.draw(st.integers(0, len(items))), (name, data.draw(st.sampled_from([content, b"{}"]))))
        elif kind == "drop":
            items.pop(index)
        elif kind == "resize":
            size = data.draw(st.integers(0, len(content) + 64))
            content = content[:size] + bytes(max(0, size - len(content)))
            items[index] = (name, content)
            if name != "payload.bin" and name in document.get("sha256", {}) and data.draw(st.booleans()):
                document["sha256"][name] = hashlib.sha256(content).hexdigest()  # past the hash check
        elif kind == "reorder":
            items.insert(data.draw(st.integers(0, len(items) - 1)), items.pop(index))
        else:  # two members' contents swapped
            other = data.draw(st.integers(0, len(items) - 1))
            items[index], items[other] = (name, items[other][1]), (items[other][0], content)
    # the manifest with any recomputed hash, wherever the original manifest bytes still are
    items = [(n, json.dumps(document).encode() if c == original else c) for n, c in items]
    compression = data.draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_LZMA]))
    check(base, zipped(items, compression), "members")


# -- fields of the manifest and of the handle map ---------------------------------------------------


def locations(value, path=()):
    """Every place in a JSON document: (path to the container, key or index)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((path, key))
            found += locations(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((path, index))
            found += locations(item, path + (index,))
    return found


def container(document, path):
    for key in path:
        document = document[key]
    return document


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@functools.cache
def values(canary: Path):
    """What a field may be replaced with: JSON of every type, texts that would run, names and literals
    at the edge of the closed sets, and nesting deep enough to overflow a recursive reader."""
    texts = st.sampled_from(
        injections(canary)
        + [
            "class",
            "self",
            "__class__",
            "__init__",
            "Tensor",
            "x y",
            "",
            "1_0",
            "2.0",
            "2.5",
            "None",
            "[1, 2]",
            "{'a': 1}",
            "float('nan')",
            "Optional[int]",
            "os.system",
            "torch.Tensor",
            "forward",
            "payload",
            "eval",
            "positional",
            "keyword_only",
            "\x00",
            "\udc80",
            "reference",
            "torchscript",
            "inductor",
            "export",
            "sequential",
            "lowering-pipeline/lowered-module",
            json.dumps(
                [
                    1,
                    {
                        "type": "collections.defaultdict",
                        "context": json.dumps(
                            {
                                "default_factory_module": CANARY_MODULE,
                                "default_factory_name": "factory",
                                "dict_context": [],
                            }
                        ),
                        "children_spec": [],
                    },
                ]
            ),
            json.dumps(
                [
                    1,
                    {
                        "type": "builtins.dict",
                        "children_spec": [{"type": None, "context": None, "children_spec": []}],
                        "context": json.dumps([{"__enum__": True, "fqn": f"{CANARY_MODULE}:Key", "name": "A"}]),
                    },
                ]
            ),
        ]
    )
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=12), texts
    )
    deep = st.integers(60, 500).map(nested)  # past every reader's limit, within json.dumps's own
    return st.one_of(
        deep,
        st.recursive(
            scalars,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
            max_leaves=6,
        ),
    )


def edit(data, document, canary: Path):
    """One replacement, deletion or addition somewhere in ``document`` (in place), if it has any place left."""
    places = locations(document)
    if not places:
        return
    path, key = data.draw(st.sampled_from(places))
    target = container(document, path)
    kind = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if kind == "replace":
        target[key] = data.draw(values(canary))
    elif kind == "delete":
        del target[key]
    elif isinstance(target, dict):
        target[data.draw(st.sampled_from(["extra", "default", "annotation", "returns", "__enum__", "sha256"]))] = (
            data.draw(values(canary))
        )
    else:
        target.insert(key, data.draw(values(canary)))


def _spec_of(document):
    """The parsed output treespec of forward, if the edits so far left one."""
    try:
        return json.loads(document["outputs"]["forward"]["spec"])
    except (KeyError, TypeError, ValueError):
        return None


@settings(**FUZZ, max_examples=400 * SCALE)
@given(data=st.data())
def test_edited_manifest_fields(base, data):
    document = json.loads(dict(base["members"])["manifest.json"])
    for _ in range(data.draw(st.integers(1, 3))):
        spec = _spec_of(document)
        if spec is not None and data.draw(st.booleans()):  # inside the output treespec, JSON within the manifest
            edit(data, spec, base["canary"])
            document["outputs"]["forward"]["spec"] = json.dumps(spec)
        else:
            edit(data, document, base["canary"])
    items = [(n, json.dumps(document).encode() if n == "manifest.json" else c) for n, c in base["members"]]
    check(base, zipped(items), "manifest")


@settings(**FUZZ, max_examples=100 * SCALE)
@given(data=st.data())
def test_edited_handle_maps_with_their_hash_recomputed(base, data):
    items = dict(base["members"])
    handles = json.loads(items["handles.json"])
    for _ in range(data.draw(st.integers(1, 3))):
        edit(data, handles, base["canary"])
    items["handles.json"] = json.dumps(handles).encode()
    document = json.loads(items["manifest.json"])
    document["sha256"]["handles.json"] = hashlib.sha256(items["handles.json"]).hexdigest()
    items["manifest.json"] = json.dumps(document).encode()
    check(base, zipped(list(items.items())), "handles")


@settings(**FUZZ, max_examples=100 * SCALE)
@given(data=st.data())
def test_forged_reference_payloads_raise_only_pipeline_errors(base, data):
    items = dict(base["members"])
    payload = bytearray(items["payload.bin"])
    for position, value in data.draw(
        st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 255)), min_size=1, max_size=6)
    ):
        payload[position] = value
    items["payload.bin"] = bytes(payload)
    document = json.loads(items["manifest.json"])
    document["sha256"]["payload.bin"] = hashlib.sha256(items["payload.bin"]).hexdigest()
    items["manifest.json"] = json.dumps(document).encode()
    base["mutant"].write_bytes(zipped(list(items.items())))
    try:
        with time_limit():
            loaded = pipeline.load_lowered(base["mutant"])
            loaded(*base["inputs"])  # a program of its own: its outputs may differ
        result = "ran"
    except (pipeline.ArtifactError, pipeline.BackendRuntimeError):
        result = "refused or failed"
    assert not base["canary"].exists()
    OUTCOMES[f"forged payload {result}"] += 1
