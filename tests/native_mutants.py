"""Hostile native payloads, and a harness that survives loading them: for the mutation campaign.

The adversary owns the whole artifact, so every hash and size in the envelope
is recomputed after a mutation (the payload container's part hashes by
`pack_parts`, the manifest's by `artifact_forgery.forge`): only the mutated
content of a backend's blob (a ``.pte``, an ONNX model, an OpenVINO ``.xml`` or
``.bin``, a TorchScript archive, an AOTInductor package) is left for the loader
to judge.

`mutate(blob, rng)` applies one of `KINDS` to a blob. A blob that is a zip of
stored members (TorchScript, AOTInductor) is also mutated *inside* a member,
with the member's CRC-32 patched in place (`mutate_member`), so that the mutant
reaches the reader behind the zip's own checksums.

`load_and_call(path, inputs, ...)` runs ``pipeline.load_lowered`` (with its
default isolation) and one call on valid inputs in a forked child of its own,
within a time limit, and says how it ended: a death (killed by a signal, or an
exit without a report) and a hang (no answer in time) are what the campaign
counts; anything else is a report from the child.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import random
import signal
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from artifact_forgery import forge, members

from pipeline.core.forked import fork
from pipeline.core.payload import MAGIC, pack_parts, unpack_parts

KINDS = ("flip", "random", "truncate", "u32", "insert")
# Headers, tables of contents and graphs sit at the start of these formats (and a zip's directory at its
# end), weights in the middle: half of the positions fall in these windows, or most mutants hit weights.
HEAD, TAIL = 8192, 1024
# u32 values that break sizes, offsets, counts and indices: zero, one, the sign bit, all ones, near-maxima
EXTREME_U32 = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x01000000)


def mutate(blob: bytes, rng: random.Random, kind: Optional[str] = None) -> Tuple[bytes, str]:
    """``(mutant, description)``: one mutation of ``blob`` of ``kind`` (drawn from `KINDS` if None)."""
    kind = kind or rng.choice(KINDS)
    data = bytearray(blob)
    if not data:
        return b"\0", "one byte for an empty blob"
    if kind == "flip":
        flips = [(position(len(data), rng), rng.randrange(8)) for _ in range(rng.randint(1, 8))]
        for at, bit in flips:
            data[at] ^= 1 << bit
        return bytes(data), f"flip {flips}"
    if kind == "random":
        at, size = position(len(data), rng), rng.randint(1, 16)
        data[at : at + size] = bytes(rng.randrange(256) for _ in range(size))[: len(data) - at]
        return bytes(data), f"random bytes at {at}+{size}"
    if kind == "truncate":
        size = position(len(data), rng)
        return bytes(data[:size]), f"truncated to {size} of {len(data)}"
    if kind == "u32":
        if len(data) < 4:
            return bytes(data), "u32 (blob too short)"
        at, value = position(len(data) - 3, rng) // 4 * 4, rng.choice(EXTREME_U32 + (len(data), len(data) + 1))
        data[at : at + 4] = struct.pack("<I", value)
        return bytes(data), f"u32 {value:#x} at {at}"
    if kind == "insert":
        at, size = position(len(data) + 1, rng), rng.randint(1, 64)
        data[at:at] = bytes(rng.randrange(256) for _ in range(size))
        return bytes(data), f"inserted {size} bytes at {at}"
    raise ValueError(f"unknown mutation kind {kind!r}; kinds: {KINDS}")


def position(size: int, rng: random.Random) -> int:
    """A position below ``size``: uniform, or (half of the time) in the first `HEAD` or last `TAIL` bytes."""
    if rng.random() < 0.5:
        return rng.randrange(size)
    if rng.random() < 0.8:
        return rng.randrange(min(size, HEAD))
    return rng.randrange(max(0, size - TAIL), size)


def stored_members(blob: bytes) -> List[zipfile.ZipInfo]:
    """The non-empty stored members of a zip blob (none if it is not a readable zip)."""
    try:
        with zipfile.ZipFile(BytesIO(blob)) as archive:
            return [
                info for info in archive.infolist() if info.compress_type == zipfile.ZIP_STORED and info.file_size >= 4
            ]
    except (zipfile.BadZipFile, ValueError, OSError):
        return []


def mutate_member(blob: bytes, rng: random.Random) -> Optional[Tuple[bytes, str]]:
    """A same-size mutation inside one stored member of a zip blob, its CRC-32 patched in the local and
    central headers; None if the blob has no stored member to mutate."""
    infos = stored_members(blob)
    if not infos:
        return None
    info = rng.choice(infos)
    data = bytearray(blob)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    content = bytes(data[start : start + info.file_size])
    mutant, description = mutate(content, rng, rng.choice(("flip", "random", "u32")))
    data[start : start + info.file_size] = mutant
    crc = zlib.crc32(mutant)
    struct.pack_into("<I", data, info.header_offset + 14, crc)
    with zipfile.ZipFile(BytesIO(blob)) as archive:
        central = archive.start_dir
    while data[central : central + 4] == b"PK\x01\x02":  # the central directory: find this member's entry
        (offset,) = struct.unpack_from("<I", data, central + 42)
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, central + 28)
        if data[central + 46 : central + 46 + name_length].decode("utf-8", "replace") == info.filename:
            struct.pack_into("<I", data, central + 16, crc)
        central += 46 + name_length + extra_length + comment_length
    return bytes(data), f"member {info.filename}: {description}"


@dataclass
class Payload:
    """A backend payload split into the blobs a mutation aims at, and put back together."""

    kind: Optional[str]  # the pack_parts kind, or None for a payload that is one blob (TorchScript)
    meta: Dict[str, Any]
    blobs: Dict[str, bytes]

    @classmethod
    def of(cls, payload: bytes, backend: str) -> "Payload":
        if payload.startswith(MAGIC):
            meta, parts = unpack_parts(payload, backend)
            return cls(backend, meta, dict(parts))
        return cls(None, {}, {"payload": payload})

    def with_blob(self, name: str, data: bytes) -> bytes:
        if self.kind is None:
            return data
        return pack_parts(self.kind, self.meta, {**self.blobs, name: data})  # part hashes recomputed


def mutant_artifact(base: Path, out: Path, backend: str, seed: int) -> str:
    """Write to ``out`` the mutant ``seed`` of the artifact ``base``; return what was mutated."""
    rng = random.Random(seed)
    payload = Payload.of(dict(members(base))["payload.bin"], backend)
    name = rng.choice(sorted(payload.blobs))
    blob = payload.blobs[name]
    inside = mutate_member(blob, rng) if rng.random() < 0.5 else None
    mutant, description = inside or mutate(blob, rng)
    forge(base, out, parts={"payload.bin": payload.with_blob(name, mutant)})  # the manifest's hash too
    return f"{name}: {description}"


# -- the harness ------------------------------------------------------------------------------------

DEATH, HANG = "death", "hang"


def load_and_call(
    path: Path,
    inputs: Sequence[Any],
    *,
    trust_code: bool,
    timeout: float,
    load: Optional[Callable[..., Any]] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Load ``path`` and call it once on ``inputs``, in a forked child; how that ended.

    ``{"outcome": "loaded" | "refused" | "error" | DEATH | HANG, ...}``: ``refused`` is an
    ArtifactError from loading, ``error`` any other exception from loading (its type is
    ``error_type``); ``loaded`` has ``call``, "ran" or the type of what the call raised. A death
    carries the signal or exit code, and ``stage``: whether it came while loading or in the call.
    The child leads a process group of its own, so that a hang is killed with whatever it started.
    """
    import pipeline

    load = load or pipeline.load_lowered
    read_end, write_end = os.pipe()
    pid = fork()  # the parent's garbage stays out of the child's collector, as in load_lowered's own child
    if pid == 0:
        os.setpgid(0, 0)
        faulthandler.disable()  # deaths are expected here: counted, not dumped
        torch.set_num_threads(1)  # OpenMP's thread team stayed in the parent: a team op here would wait forever
        os.close(read_end)
        report: Dict[str, Any] = {"outcome": "error", "stage": "load"}
        try:
            module = load(path, trust_code=trust_code, **options)
            os.write(write_end, b"loaded\n")  # so that a death from here on is known to be the call's
            report = {"outcome": "loaded", "stage": "call"}
            module(*inputs)
            report["call"] = "ran"
        except pipeline.ArtifactError as error:
            report = {"outcome": "refused", "message": str(error)[:2000]}
        except BaseException as error:  # noqa: BLE001 - reported to the parent, which judges it
            if report["outcome"] == "loaded":
                report["call"] = type(error).__name__
            else:
                report.update(error_type=f"{type(error).__module__}.{type(error).__name__}", message=str(error)[:2000])
        os.write(write_end, json.dumps(report).encode() + b"\n")
        os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    status = None
    while status is None:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
        elif time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            return {"outcome": HANG, "message": f"no answer in {timeout} s"}
        else:
            time.sleep(0.002)
    with os.fdopen(read_end, "rb") as channel:
        lines = channel.read().splitlines()
    stage = "call" if b"loaded" in lines else "load"
    if os.WIFSIGNALED(status):
        return {"outcome": DEATH, "stage": stage, "message": f"killed by {signal.Signals(os.WTERMSIG(status)).name}"}
    if len(lines) < 1 + (stage == "call") or os.WEXITSTATUS(status) != 0:
        return {
            "outcome": DEATH,
            "stage": stage,
            "message": f"exited with code {os.WEXITSTATUS(status)} without a report",
        }
    return json.loads(lines[-1])
