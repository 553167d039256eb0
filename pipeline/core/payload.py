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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.core.bounded_json import member, parse_json
from pipeline.core.errors import LoweringError, MalformedInput, format_choices
from pipeline.core.hashing import canonical_json, sha256_bytes

MAGIC = b"PLPARTS1"
MAX_HEADER_BYTES = 64 << 20
_LENGTH_BYTES = 8


def pack_parts(kind: str, meta: Mapping[str, Any], parts: Mapping[str, bytes]) -> bytes:
    header = {
        "kind": kind,
        "meta": dict(meta),
        "parts": [{"name": name, "size": len(data), "sha256": sha256_bytes(data)} for name, data in parts.items()],
    }
    encoded = canonical_json(header)
    return b"".join([MAGIC, len(encoded).to_bytes(_LENGTH_BYTES, "little"), encoded, *parts.values()])


def unpack_parts(data: bytes, kind: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(meta, {name: bytes})``; raises `LoweringError` naming what is wrong, and nothing else, whatever the bytes."""
    try:
        return _unpack(data, kind)
    except MalformedInput as error:
        raise LoweringError(f"Backend {kind!r}: the payload is corrupt: {error}") from None


def _unpack(data: bytes, kind: str) -> tuple[dict[str, Any], dict[str, bytes]]:
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
    parts: dict[str, bytes] = {}
    offset = start + length
    for i, part in enumerate(member(header, "parts", list, "header", default=[])):
        where = f"header.parts[{i}]"
        name = member(part, "name", str, where)
        size = member(part, "size", int, where)
        digest = member(part, "sha256", str, where)
        if name in parts:
            raise MalformedInput(f"{where}: the part name {name!r} occurs twice.")
        chunk = bytes(data[offset : offset + size]) if size >= 0 else b""
        if size < 0 or len(chunk) != size or sha256_bytes(chunk) != digest:
            raise LoweringError(
                f"Backend {kind!r}: part {name!r} of the payload is truncated or corrupt "
                f"(expected {size} bytes with sha256 {digest[:12]}...)."
            )
        parts[name] = chunk
        offset += size
    if offset != len(data):
        raise LoweringError(f"Backend {kind!r}: the payload has {len(data) - offset} unexpected trailing bytes.")
    return meta, parts


def method_part(parts: Mapping[str, bytes], method: str, kind: str) -> bytes:
    """The part of one method, or an error that names what the payload does have."""
    if method not in parts:
        raise LoweringError(f"Backend {kind!r}: the payload has no method {method!r}; it has {format_choices(parts)}.")
    return parts[method]
