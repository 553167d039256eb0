"""One way to hash, and canonical JSON (sorted keys, no timestamps) so that equal values hash equal."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    """The digest of the chunks' concatenation, without holding it in memory."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return sha256_chunks(iter(lambda: handle.read(1 << 20), b""))


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and a trailing newline: equal values give equal bytes.

    Strict JSON: a float that is not finite (an infinite error) is written as the
    string ``"Infinity"``, ``"-Infinity"`` or ``"NaN"``, which every JSON reader accepts.
    """
    return (json.dumps(_finite(value), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
