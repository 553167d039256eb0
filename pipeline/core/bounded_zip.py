"""Reading zip archives that came from elsewhere, in bounded time and memory.

``zipfile`` trusts the archive: it parses a central directory of any size,
inflates a member to whatever size it turns out to have, and raises a dozen
exception types (``zlib.error``, ``NotImplementedError`` for an unknown
compression method, ``RuntimeError`` for an encrypted member, ...). An
`open_zip` archive checks before anything is inflated:

* the central directory's size and entry count, read from its end record
  (before ``zipfile`` parses the directory);
* that no name occurs twice (``zipfile`` would silently read the last one);
* each member's compression method (stored or deflated), encryption, declared
  size, and compression ratio (a 3 MB member that inflates to 3 GB is refused
  from its declared sizes, before one byte is inflated);

and `BoundedZip.read` reads a member no further than its declared size or limit.
`check_extractable` adds what matters before a zip is unpacked onto disk: no
absolute names, no ``..``, no symlinks. Every problem is a `MalformedInput`
that names the archive and the member.
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.core.errors import LoweringError, MalformedInput


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 16
    max_directory_bytes: int = 1 << 20
    max_member_bytes: int = 1 << 36  # 64 GiB: a payload holds the model's weights
    max_ratio: int = 200  # weights deflate about 1.1:1, JSON about 20:1; a zip bomb about 1000:1
    ratio_applies_above: int = 4 << 20  # small members may compress as well as they like


_STORED_OR_DEFLATED = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# What zipfile and zlib raise on a damaged or hostile archive.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OverflowError,
    KeyError,
)
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIGNATURE = b"PK\x06\x06"


class BoundedZip:
    """An open archive whose members passed the checks in the module docstring."""

    def __init__(self, source: str | Path | bytes, what: str, limits: ZipLimits = ZipLimits()):
        self.what = what
        self._at = f"{what}: " if what else ""  # the prefix of every message
        self.limits = limits
        handle: BinaryIO = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
        try:
            _check_directory_extent(handle, what, limits)
            self._archive = zipfile.ZipFile(handle)
        except MalformedInput:
            handle.close()
            raise
        except _ZIP_ERRORS as error:
            handle.close()
            raise MalformedInput(
                f"{what + ': ' if what else ''}not a readable zip archive: {type(error).__name__}: {error}"
            ) from None
        self._handle = handle
        try:
            self.members = self._checked_members()
        except MalformedInput:
            self.close()
            raise

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def read(self, name: str, max_bytes: int) -> bytes:
        """A member's bytes: refused past ``max_bytes``, and read no further than its declared size.

        The member is read in one call, so that its bytes are allocated once (chunks joined would hold
        it twice): a stored member comes from the file straight into the bytes returned. The size read
        is bounded by the declared size, which the limits have already accepted."""
        info = self.members[name]
        limit = min(max_bytes, self.limits.max_member_bytes)
        if info.file_size > limit:
            raise MalformedInput(f"{self._at}{name} declares {info.file_size} bytes, more than the limit of {limit}.")
        try:
            with self._archive.open(info) as stream:  # zipfile stops at the declared size, checking the CRC
                data = stream.read(info.file_size)
        except _ZIP_ERRORS as error:
            raise MalformedInput(f"{self._at}{name} cannot be read: {type(error).__name__}: {error}") from None
        if len(data) != info.file_size:
            raise MalformedInput(f"{self._at}{name} holds {len(data)} bytes, not the {info.file_size} it declares.")
        return data

    def close(self) -> None:
        self._archive.close()
        self._handle.close()

    def __enter__(self) -> BoundedZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checked_members(self) -> dict[str, zipfile.ZipInfo]:
        infos = self._archive.infolist()
        if len(infos) > self.limits.max_members:
            raise MalformedInput(f"{self._at}{len(infos)} members, more than the limit of {self.limits.max_members}.")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if name in members:
                raise MalformedInput(f"{self._at}the member name {name!r} occurs more than once.")
            if info.flag_bits & 0x1:
                raise MalformedInput(f"{self._at}{name} is encrypted.")
            if info.compress_type not in _STORED_OR_DEFLATED:
                raise MalformedInput(
                    f"{self._at}{name} uses compression method {info.compress_type}; allowed: stored (0), deflated (8)."
                )
            if info.file_size > self.limits.max_member_bytes:
                raise MalformedInput(
                    f"{self._at}{name} declares {info.file_size} bytes, more than the limit of "
                    f"{self.limits.max_member_bytes}."
                )
            if info.file_size > self.limits.ratio_applies_above and (
                info.file_size > self.limits.max_ratio * max(info.compress_size, 1)
            ):
                raise MalformedInput(
                    f"{self._at}{name} would inflate {info.compress_size} bytes to {info.file_size} "
                    f"(more than {self.limits.max_ratio}:1): refused as a zip bomb."
                )
            members[name] = info
        return members


def open_zip(source: str | Path | bytes, what: str, limits: ZipLimits = ZipLimits()) -> BoundedZip:
    """`BoundedZip` of a path or bytes; use it as a context manager."""
    return BoundedZip(source, what, limits)


PACKAGE_LIMITS = ZipLimits(max_members=10_000, max_directory_bytes=16 << 20)


def check_extractable(data: bytes, what: str, limits: ZipLimits = PACKAGE_LIMITS) -> None:
    """Refuse (`LoweringError`) a zip that would write outside the directory it is unpacked into, or that
    holds symlinks or bombs: for a backend to call before a loader of its own unpacks the zip."""
    try:
        with open_zip(data, what, limits) as archive:
            for name, info in archive.members.items():
                problem = unsafe_name(name)
                if problem is None and stat.S_ISLNK(info.external_attr >> 16):
                    problem = "is a symbolic link"
                if problem is not None:
                    raise MalformedInput(f"{what}: the member {name!r} {problem}; it is not unpacked.")
    except MalformedInput as error:
        raise LoweringError(str(error)) from None


def unsafe_name(name: str) -> str | None:
    """Why a member name could land outside the extraction directory, or None if it cannot."""
    if not name or "\x00" in name:
        return "is empty or holds a NUL byte"
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path (or uses backslashes)"
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' component"
    return None


def _check_directory_extent(handle: BinaryIO, what: str, limits: ZipLimits) -> None:
    """Refuse a central directory bigger than the limit before zipfile reads and parses all of it."""
    extent = _directory_extent(handle)
    handle.seek(0)
    if extent is None:
        return  # no end record: zipfile says so in its own words
    entries, size = extent
    if entries > limits.max_members or size > limits.max_directory_bytes:
        raise MalformedInput(
            f"{what + ': ' if what else ''}the zip directory declares {entries} members in {size} bytes; "
            "the limits are "
            f"{limits.max_members} members and {limits.max_directory_bytes} bytes."
        )


def _directory_extent(handle: BinaryIO) -> tuple[int, int] | None:
    """(entry count, directory size) from the end record, as zipfile finds it (ZIP64 included)."""
    handle.seek(0, io.SEEK_END)
    file_size = handle.tell()
    tail_size = min(file_size, _EOCD.size + 0xFFFF)
    handle.seek(file_size - tail_size)
    tail = handle.read(tail_size)
    if tail[-_EOCD.size : -_EOCD.size + 4] == _EOCD_SIGNATURE and tail[-2:] == b"\0\0":
        at = len(tail) - _EOCD.size  # zipfile first looks for a record without a comment
    else:
        at = tail.rfind(_EOCD_SIGNATURE)
        if at < 0 or at + _EOCD.size > len(tail):
            return None
    _, _, _, _, entries, size, _, _ = _EOCD.unpack_from(tail, at)
    locator = at - 20
    record = locator - _EOCD64.size
    if locator >= 0 and tail[locator : locator + 4] == _EOCD64_LOCATOR_SIGNATURE:
        if record < 0 or tail[record : record + 4] != _EOCD64_SIGNATURE:
            return None
        fields = _EOCD64.unpack_from(tail, record)
        entries, size = fields[7], fields[8]
    return entries, size
