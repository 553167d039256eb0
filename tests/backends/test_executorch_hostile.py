"""Hostile ExecuTorch programs: each is an ArtifactError naming what is wrong, never the death of the process.

Each mutant edits the MLP's ``.pte`` inside a valid artifact and recomputes
every hash of the envelope, as an adversary would. It is loaded twice through
`native_mutants.load_and_call`, a forked child that reports how the load
ended: once as users load (isolated by default) and once with ``isolate=False``,
so that the checks of `pte_check` alone must stop it. The 0xff in an XNNPACK
named-data key is the mutant of issue 27, which aborted the interpreter.
"""

from __future__ import annotations

import struct

import pytest
from artifact_forgery import forge, members
from native_mutants import DEATH, Payload, load_and_call

import pipeline
import pipeline.backends.executorch.runtime as et_runtime
from pipeline import zoo
from pipeline.backends.executorch.flatbuffer import Buffer
from pipeline.backends.executorch.pte_check import program_schema, slots

pytest.importorskip("executorch.runtime")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """``(path of the MLP's artifact, its .pte, the example inputs)``."""
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    lowered = pipeline.to_backend("executorch", model, {"forward": {}}, example_inputs=inputs)
    path = pipeline.save_lowered(lowered, tmp_path_factory.mktemp("hostile") / "mlp.lowered")
    return path, Payload.of(lowered.payload, "executorch").blobs["forward"], inputs["forward"]


def occurrences(data: bytes, needle: bytes) -> list:
    found, at = [], data.find(needle)
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def named_key(pte: bytearray, which: int) -> None:
    """0xff into the first named-data key (64 hex digits): ``which`` 0 is the program's copy, 1 the
    XNNPACK graph's."""
    hexdigits = b"0123456789abcdef"
    start = next(at for at in range(len(pte) - 64) if all(c in hexdigits for c in pte[at : at + 64]))
    pte[occurrences(bytes(pte), bytes(pte[start : start + 64]))[which] + 3] = 0xFF


def program_end_past_the_file(pte: bytearray) -> None:
    struct.pack_into("<Q", pte, 16, len(pte) + 1)


def segments_start_past_the_file(pte: bytearray) -> None:
    struct.pack_into("<Q", pte, 24, len(pte) + 8)


def segment_size(pte: bytearray, size) -> None:
    """The size field of the program's first non-empty segment, set to ``size(old size)``."""
    program_size = struct.unpack_from("<Q", pte, 16)[0]
    root = Buffer(bytes(pte[:program_size]), "pte").root((bytes(pte[4:8]),), "Program")
    field = slots(program_schema(), "DataSegment")["size"]
    segments = root.tables(slots(program_schema(), "Program")["segments"], "segments")
    at = next(at for at in (segment._field(field, 8, "size") for segment in segments) if at is not None)
    struct.pack_into("<Q", pte, at, size(struct.unpack_from("<Q", pte, at)[0]))


def xnnpack_constants_past_the_blob(pte: bytearray) -> None:
    blob = pte.index(b"XH00") - 4
    struct.pack_into("<I", pte, blob + 18, 0xFFFFFFF0)


MUTANTS = {
    "0xff in an XNNPACK named-data key": (
        lambda pte: named_key(pte, 1),
        r"XNNGraph\.constant_data\[\d+\]\.named_key is not UTF-8 text",
    ),
    "0xff in a program named-data key": (
        lambda pte: named_key(pte, 0),
        r"Program\.named_data\[\d+\]\.key is not UTF-8 text",
    ),
    "program end past the file": (program_end_past_the_file, "puts the program's end at byte"),
    "segments past the file": (segments_start_past_the_file, "the segments start at byte"),
    "a segment past the segment data": (
        lambda pte: segment_size(pte, lambda old: 0xFFFFFFFF),
        r"segments\[\d+\] .*lies outside",
    ),
    "segments that overlap": (lambda pte: segment_size(pte, lambda old: old + 65), r"overlaps segments\[\d+\]"),
    "XNNPACK constants past the blob": (xnnpack_constants_past_the_blob, "the XNNPACK header .* places"),
}


def mutant(base, tmp_path, edit):
    """The artifact with ``edit`` applied to its .pte, every hash recomputed."""
    path, pte, _ = base
    data = bytearray(pte)
    edit(data)
    payload = Payload.of(dict(members(path))["payload.bin"], "executorch")
    return forge(path, tmp_path / "mutant.lowered", parts={"payload.bin": payload.with_blob("forward", bytes(data))})


@pytest.mark.parametrize("name", MUTANTS)
def test_a_hostile_program_is_an_artifact_error_naming_what_is_wrong_even_without_isolation(name, base, tmp_path):
    edit, message = MUTANTS[name]
    path = mutant(base, tmp_path, edit)
    with pytest.raises(pipeline.ArtifactError, match=message) as raised:
        pipeline.load_lowered(path)
    assert str(path) in str(raised.value) and "the .pte of method 'forward'" in str(raised.value)
    unisolated = load_and_call(path, base[2], trust_code=False, timeout=120, isolate=False)
    assert unisolated["outcome"] == "refused", unisolated


def test_without_the_checks_isolation_turns_the_abort_into_an_artifact_error(base, tmp_path, monkeypatch):
    path = mutant(base, tmp_path, MUTANTS["0xff in an XNNPACK named-data key"][0])
    monkeypatch.setattr(et_runtime, "check_program", lambda pte, method: None)  # forked children inherit it
    unisolated = load_and_call(path, base[2], trust_code=False, timeout=120, isolate=False)
    assert unisolated["outcome"] == DEATH and "SIGABRT" in unisolated["message"]  # ExecuTorch 1.5.1's abort
    isolated = load_and_call(path, base[2], trust_code=False, timeout=120)
    assert isolated["outcome"] == "refused", isolated
    assert "SIGABRT" in isolated["message"] and "UnicodeDecodeError" in isolated["message"]


def test_the_valid_program_passes_the_checks_and_runs(base):
    path, _, inputs = base
    assert load_and_call(path, inputs, trust_code=False, timeout=120) == {
        "outcome": "loaded",
        "stage": "call",
        "call": "ran",
    }
