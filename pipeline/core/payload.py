"""A deterministic container for several named byte strings (one per lowered method).

Used by the backends whose payload is one opaque blob per method (ONNX models,
AOTInductor packages)::

    data = pack_parts("onnxruntime", {"methods": {...}}, {"forward": model_bytes})
    meta, parts = unpack_parts(data, "onnxruntime")

Layout: 8 magic bytes, the header length as 8 little-endian bytes, the header
as canonical JSON (``kind``, the caller's ``meta``, and each part's name, size
and sha256, in the caller's order), then the parts back to back. Equal inputs
give equal bytes; nothing in it is pickled, and reading it checks every length
and hash, so a truncated or edited payload is rejected with a `LoweringError`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Mapping, Tuple

from pipeline.core.errors import LoweringError, format_choices
from pipeline.core.hashing import canonical_json

MAGIC = b"PLPARTS1"
_LENGTH_BYTES = 8


def pack_parts(kind: str, meta: Mapping[str, Any], parts: Mapping[str, bytes]) -> bytes:
    header = {
        "kind": kind,
        "meta": dict(meta),
        "parts": [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in parts.items()],
    }
    encoded = canonical_json(header)
    return b"".join([MAGIC, len(encoded).to_bytes(_LENGTH_BYTES, "little"), encoded, *parts.values()])


def unpack_parts(data: bytes, kind: str) -> Tuple[Dict[str, Any], Dict[str, bytes]]:
    """``(meta, {name: bytes})``; raises `LoweringError` naming what is wrong."""
    start = len(MAGIC) + _LENGTH_BYTES
    if not isinstance(data, (bytes, bytearray)) or data[:len(MAGIC)] != MAGIC or len(data) < start:
        raise LoweringError(f"Backend {kind!r}: the payload is not a {kind} payload (bad magic bytes).")
    length = int.from_bytes(data[len(MAGIC):start], "little")
    try:
        header = json.loads(data[start:start + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LoweringError(f"Backend {kind!r}: the payload header is not valid JSON: {error}.") from None
    if not isinstance(header, dict) or header.get("kind") != kind:
        found = header.get("kind") if isinstance(header, dict) else None
        raise LoweringError(f"Backend {kind!r}: the payload was written by backend {found!r}, not {kind!r}.")
    parts: Dict[str, bytes] = {}
    offset = start + length
    for part in header.get("parts", []):
        chunk = bytes(data[offset:offset + part["size"]])
        if len(chunk) != part["size"] or hashlib.sha256(chunk).hexdigest() != part["sha256"]:
            raise LoweringError(
                f"Backend {kind!r}: part {part['name']!r} of the payload is truncated or corrupt "
                f"(expected {part['size']} bytes with sha256 {part['sha256'][:12]}...)."
            )
        parts[part["name"]] = chunk
        offset += part["size"]
    if offset != len(data):
        raise LoweringError(f"Backend {kind!r}: the payload has {len(data) - offset} unexpected trailing bytes.")
    return header.get("meta", {}), parts


def method_part(parts: Mapping[str, bytes], method: str, kind: str) -> bytes:
    """The part of one method, or an error that names what the payload does have."""
    if method not in parts:
        raise LoweringError(f"Backend {kind!r}: the payload has no method {method!r}; it has {format_choices(parts)}.")
    return parts[method]
