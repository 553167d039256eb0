"""Atomic file writes: a temporary file beside the target, then a rename, so no half-written file looks complete.

`atomic_file` is the one way: the block writes into the temporary file (as much
as it likes, a piece at a time), and only a block that ends without an error
renames it into place, after an fsync. `write_atomic` and `write_json` write
one byte string that way. `HashingWriter` hashes what is written while it is
written, so that a large file is never held whole nor read back for its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.core.hashing import canonical_json


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A temporary file beside ``path`` to write into; renamed to ``path`` (after an fsync) when the block
    ends, removed if it raises: ``path`` is either the whole new file or what it was before."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file what open() would
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    with atomic_file(path) as handle:
        handle.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, value: Any) -> None:
    write_atomic(path, canonical_json(value))


class HashingWriter:
    """A write-only, forward-only view of a file that counts and hashes every byte passed on to it.

    It has no ``seek`` on purpose: ``zipfile`` then writes each member's CRC and sizes after its data
    (a data descriptor) instead of going back to patch the member's header, so the bytes hashed are the
    bytes on disk, in order, and the file's sha256 is known when the last byte is written.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self._handle.write(view)
        self._size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        """Flush only: the file is its opener's to close (after its fsync)."""
        self._handle.flush()

    @property
    def size(self) -> int:
        return self._size

    def sha256(self) -> str:
        return self._digest.hexdigest()
