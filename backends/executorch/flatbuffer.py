"""A bounds-checked flatbuffer reader for the fields `pte_check` reads, with field slots from the installed schemas.

ExecuTorch's runtime verifies a program's flatbuffer itself, but in the same
native call that goes on to log what it read (a named-data key, an operator
name) through pybind11, which cannot decode text that is not UTF-8 and aborts
the process. So the fields whose text can reach a log are read here, in
Python, before the runtime sees the bytes: every offset, length and alignment
is checked, a file can make the reader visit only as many tables as it has
bytes for, and every problem is a `LoweringError` naming the part and what is
wrong.

Field slots are not written here by hand: `slots` reads them from the ``.fbs``
schemas the installed ExecuTorch ships (a field takes the next slot; a union
field takes two, its type and its value), so that a schema that gains a field
moves the slots with it.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.backend import LoweringError

MAX_STRING_BYTES = 1 << 16


class Buffer:
    """One flatbuffer (``data``), named ``where`` in errors; counts the tables read against a budget."""

    def __init__(self, data: bytes, where: str):
        self.data, self.where = data, where
        self.tables_left = len(data) // 4 + 1  # a table takes at least 4 bytes: more visits means shared tables

    def fail(self, what: str) -> LoweringError:
        return LoweringError(f"{self.where}: {what}")

    def _read(self, fmt: str, at: int, what: str) -> int:
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.data):
            raise self.fail(f"{what} at byte {at} is outside the {len(self.data)}-byte flatbuffer.")
        return struct.unpack_from(fmt, self.data, at)[0]

    def uoffset(self, at: int, what: str) -> int:
        """The position an offset at ``at`` points to (offsets are 4-aligned and point forward)."""
        if at % 4:
            raise self.fail(f"{what} at byte {at} is not 4-byte aligned.")
        return at + self._read("<I", at, what)

    def root(self, identifiers: tuple[bytes, ...], name: str) -> Table:
        found = self.data[4:8]
        if found not in identifiers:
            raise self.fail(
                f"file identifier {found!r} is not one the installed runtime reads "
                f"({', '.join(repr(i) for i in identifiers)})."
            )
        return self.table(self.uoffset(0, "the root offset"), name)

    def table(self, at: int, what: str) -> Table:
        self.tables_left -= 1
        if self.tables_left < 0:
            raise self.fail(f"{what}: more tables than the flatbuffer has bytes for (shared tables).")
        if at % 4:
            raise self.fail(f"{what} at byte {at} is not 4-byte aligned.")
        vtable = at - self._read("<i", at, f"{what}'s vtable offset")
        if vtable % 2:
            raise self.fail(f"{what}'s vtable at byte {vtable} is not 2-byte aligned.")
        vtable_size = self._read("<H", vtable, f"{what}'s vtable size")
        table_size = self._read("<H", vtable + 2, f"{what}'s size")
        if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > len(self.data):
            raise self.fail(f"{what}'s vtable (byte {vtable}, {vtable_size} bytes) is malformed.")
        if table_size < 4 or at + table_size > len(self.data):
            raise self.fail(f"{what} (byte {at}, {table_size} bytes) runs past the end of the flatbuffer.")
        return Table(self, at, vtable, vtable_size, table_size, what)


class Table:
    def __init__(self, buffer: Buffer, at: int, vtable: int, vtable_size: int, size: int, what: str):
        self.buffer, self.at, self.vtable, self.vtable_size, self.size, self.what = (
            buffer,
            at,
            vtable,
            vtable_size,
            size,
            what,
        )

    def _field(self, slot: int, width: int, name: str) -> int | None:
        """The position of the field in ``slot``, or None if it is absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vtable_size:
            return None
        offset = self.buffer._read("<H", self.vtable + entry, f"{self.what}.{name}'s vtable entry")
        if not offset:
            return None
        if offset + width > self.size:
            raise self.buffer.fail(f"{self.what}.{name} lies outside its table.")
        return self.at + offset

    def scalar(self, slot: int, fmt: str, name: str, default: int = 0) -> int:
        at = self._field(slot, struct.calcsize(fmt), name)
        return default if at is None else self.buffer._read(fmt, at, f"{self.what}.{name}")

    def table(self, slot: int, name: str) -> Table | None:
        at = self._field(slot, 4, name)
        return (
            None
            if at is None
            else self.buffer.table(self.buffer.uoffset(at, f"{self.what}.{name}"), f"{self.what}.{name}")
        )

    def string(self, slot: int, name: str, limit: int = MAX_STRING_BYTES) -> str | None:
        """The UTF-8 text in ``slot`` (None if absent); text that is not UTF-8, or longer than ``limit``
        bytes, is an error."""
        at = self._field(slot, 4, name)
        return (
            None
            if at is None
            else self.buffer_string(self.buffer.uoffset(at, f"{self.what}.{name}"), f"{self.what}.{name}", limit)
        )

    def buffer_string(self, at: int, what: str, limit: int) -> str:
        buffer = self.buffer
        length = buffer._read("<I", at, f"{what}'s length")
        if length > limit:
            raise buffer.fail(f"{what} is {length} bytes long; at most {limit} are allowed.")
        end = at + 4 + length
        if end + 1 > len(buffer.data) or buffer.data[end] != 0:
            raise buffer.fail(f"{what} ({length} bytes at byte {at}) runs past the flatbuffer or is not terminated.")
        raw = buffer.data[at + 4 : end]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise buffer.fail(
                f"{what} is not UTF-8 text ({error.reason} at byte {error.start}: "
                f"{raw[max(0, error.start - 8) : error.start + 8]!r})."
            ) from None

    def vector(self, slot: int, name: str, width: int) -> list[int]:
        """The element positions of the vector in ``slot`` (empty if absent)."""
        at = self._field(slot, 4, name)
        if at is None:
            return []
        what = f"{self.what}.{name}"
        start = self.buffer.uoffset(at, what)
        length = self.buffer._read("<I", start, f"{what}'s length")
        if start + 4 + length * width > len(self.buffer.data):
            raise self.buffer.fail(f"{what} claims {length} elements, past the end of the flatbuffer.")
        return [start + 4 + i * width for i in range(length)]

    def tables(self, slot: int, name: str) -> Iterator[Table]:
        for i, at in enumerate(self.vector(slot, name, 4)):
            yield self.buffer.table(self.buffer.uoffset(at, f"{self.what}.{name}[{i}]"), f"{self.what}.{name}[{i}]")

    def strings(self, slot: int, name: str, limit: int = MAX_STRING_BYTES) -> Iterator[str]:
        for i, at in enumerate(self.vector(slot, name, 4)):
            what = f"{self.what}.{name}[{i}]"
            yield self.buffer_string(self.buffer.uoffset(at, what), what, limit)


# -- field slots from the installed schemas -----------------------------------------------------------


def schema_text(path: Path) -> str:
    """A ``.fbs`` file without its comments."""
    return re.sub(r"//[^\n]*", "", path.read_text())


@functools.cache
def slots(path: Path, table: str) -> dict[str, int]:
    """``{field: slot}`` of ``table`` in the schema at ``path``; a union field ``f`` has ``f_type`` too."""
    text = schema_text(path)
    unions = set(re.findall(r"\bunion\s+(\w+)", text))
    block = re.search(rf"\btable\s+{table}\s*\{{([^}}]*)\}}", text)
    if block is None:
        raise LoweringError(f"The installed ExecuTorch schema {path} has no table {table!r}.")
    found: dict[str, int] = {}
    slot = 0
    for name, kind in re.findall(r"(\w+)\s*:\s*(\[?[\w.]+\]?)[^;]*;", block.group(1)):
        if kind in unions:
            found[f"{name}_type"], found[name] = slot, slot + 1
            slot += 2
        else:
            found[name], slot = slot, slot + 1
    return found


@functools.cache
def union_members(path: Path, union: str) -> dict[str, int]:
    """``{member: type value}`` of ``union`` (the first member is 1; 0 is NONE)."""
    block = re.search(rf"\bunion\s+{union}\s*\{{([^}}]*)\}}", schema_text(path))
    if block is None:
        raise LoweringError(f"The installed ExecuTorch schema {path} has no union {union!r}.")
    return {name: i + 1 for i, name in enumerate(re.findall(r"\w+", block.group(1)))}


@functools.cache
def file_identifier(path: Path) -> bytes:
    found = re.search(r'file_identifier\s+"(\w{4})"', schema_text(path))
    if found is None:
        raise LoweringError(f"The installed ExecuTorch schema {path} declares no file identifier.")
    return found.group(1).encode()
