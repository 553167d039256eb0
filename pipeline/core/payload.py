"""A deterministic container for several named byte strings (one per lowered method).

Used by the backends whose payload is one opaque blob per method (ONNX models,
AOTInductor packages)::

    data = pack_parts("onnxruntime", {"methods": {...}}, {"forward": model_bytes})
    meta, parts = unpack_parts(data, "onnxruntime")

Layout: 8 magic bytes, the header length as 8 little-endian bytes, the header
as canonical JSON (``kind``, the caller's ``meta``, and each part's name, size
and sha256, in the caller's order), then the parts back to back. Equal inputs
give equal bytes; nothing in it is pickled, and reading it checks every length
and hash, within limits (header size, JSON depth), so a truncated or edited
payload is rejected with a `LoweringError` and never another exception.

A part may also be given as a file (a `pathlib.Path`: a model's weights, which
an exporter writes to disk): the payload is then put together in an anonymous
temporary file, the part copied in chunks, and read back once, so weights past
a few GiB cost one payload in memory rather than the part and the payload. The
bytes are the same either way. ``unpack_parts(..., views=True)`` gives each part
as a `memoryview` of the payload instead of a copy, for runtimes that copy what
they need anyway (onnxruntime's in-memory external data, OpenVINO's weights).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, overload

from pipeline.core.bounded_json import member, parse_json
from pipeline.core.errors import LoweringError, MalformedInput, format_choices
from pipeline.core.hashing import canonical_json, sha256_bytes, sha256_file

MAGIC = b"PLPARTS1"
MAX_HEADER_BYTES = 64 << 20
_LENGTH_BYTES = 8
_COPY_CHUNK = 16 << 20


def pack_parts(kind: str, meta: Mapping[str, Any], parts: Mapping[str, bytes | Path]) -> bytes:
    files = {name: data for name, data in parts.items() if isinstance(data, Path)}
    header = {
        "kind": kind,
        "meta": dict(meta),
        "parts": [
            {"name": name, "size": data.stat().st_size, "sha256": sha256_file(data)}
            if isinstance(data, Path)
            else {"name": name, "size": len(data), "sha256": sha256_bytes(data)}
            for name, data in parts.items()
        ],
    }
    encoded = canonical_json(header)
    start = [MAGIC, len(encoded).to_bytes(_LENGTH_BYTES, "little"), encoded]
    if not files:
        return b"".join([*start, *parts.values()])  # type: ignore[list-item]  # no Path among them
    with tempfile.TemporaryFile(prefix="pipeline-payload-") as assembled:
        assembled.write(b"".join(start))
        for data in parts.values():
            if isinstance(data, Path):
                with open(data, "rb") as part:
                    shutil.copyfileobj(part, assembled, _COPY_CHUNK)
            else:
                assembled.write(data)
        assembled.seek(0)
        return assembled.read()


@overload
def unpack_parts(data: bytes, kind: str) -> tuple[dict[str, Any], dict[str, bytes]]: ...
@overload
def unpack_parts(data: bytes, kind: str, *, views: bool) -> tuple[dict[str, Any], dict[str, Any]]: ...
def unpack_parts(data: bytes, kind: str, *, views: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, {name: bytes})``, or ``{name: memoryview}`` of ``data`` with ``views``; raises `LoweringError`
    naming what is wrong, and nothing else, whatever the bytes."""
    try:
        return _unpack(data, kind, views)
    except MalformedInput as error:
        raise LoweringError(f"Backend {kind!r}: the payload is corrupt: {error}") from None


def _unpack(data: bytes, kind: str, views: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    start = len(MAGIC) + _LENGTH_BYTES
    if not isinstance(data, (bytes, bytearray)) or len(data) < start or data[: len(MAGIC)] != MAGIC:
        raise LoweringError(f"Backend {kind!r}: the payload is not a {kind} payload (bad magic bytes).")
    length = int.from_bytes(data[len(MAGIC) : start], "little")
    if length > len(data) - start:
        raise MalformedInput(f"the header claims {length} bytes; only {len(data) - start} follow.")
    header = parse_json(bytes(data[start : start + length]), "header", max_bytes=MAX_HEADER_BYTES)
    found = header.get("kind") if isinstance(header, dict) else None
    if found != kind:
        raise LoweringError(f"Backend {kind!r}: the payload was written by backend {found!r}, not {kind!r}.")
    meta = member(header, "meta", dict, "header", default={})
    parts: dict[str, Any] = {}
    whole = memoryview(data)
    offset = start + length
    for i, part in enumerate(member(header, "parts", list, "header", default=[])):
        where = f"header.parts[{i}]"
        name = member(part, "name", str, where)
        size = member(part, "size", int, where)
        digest = member(part, "sha256", str, where)
        if name in parts:
            raise MalformedInput(f"{where}: the part name {name!r} occurs twice.")
        chunk = whole[offset : offset + size] if size >= 0 else whole[:0]
        # hashlib reads any buffer: the part is hashed where it lies, not copied first
        if size < 0 or len(chunk) != size or sha256_bytes(chunk) != digest:  # type: ignore[arg-type]
            raise LoweringError(
                f"Backend {kind!r}: part {name!r} of the payload is truncated or corrupt "
                f"(expected {size} bytes with sha256 {digest[:12]}...)."
            )
        parts[name] = chunk if views else bytes(chunk)
        offset += size
    if offset != len(data):
        raise LoweringError(f"Backend {kind!r}: the payload has {len(data) - offset} unexpected trailing bytes.")
    return meta, parts


def method_part(parts: Mapping[str, bytes], method: str, kind: str) -> bytes:
    """The part of one method, or an error that names what the payload does have."""
    if method not in parts:
        raise LoweringError(f"Backend {kind!r}: the payload has no method {method!r}; it has {format_choices(parts)}.")
    return parts[method]
