"""Read the JSON records a run directory holds, as data from someone else: checked, never followed.

Run directories travel between people, so every file in one is treated as
hostile: a record is read only up to a size limit, parsed as JSON (deep
nesting is an error, not a crash), and checked against its JSON Schema in
``pipeline/app/schemas/`` before anything reads a field. A file that fails is
a `RecordError` with one line naming the file and what is wrong. A path that a
record names (the artifact) must be a plain file name inside the directory.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import LoweringError

MAX_RECORD_BYTES = 256 << 20  # handles.json of a 100k-node graph is tens of MB
SCHEMAS = Path(__file__).resolve().parent / "schemas"


class RecordError(LoweringError):
    """A record file that cannot be read as what it claims to be; the message names the file."""


def read_record(path: Path, kind: str) -> dict[str, Any]:
    """The JSON object in ``path``, checked against ``schemas/<kind>.schema.json``."""
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            raise RecordError(f"{path}: {size} bytes is more than a {kind} record may have ({MAX_RECORD_BYTES}).")
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file.") from None
    except OSError as error:
        raise RecordError(f"{path}: cannot be read: {error}") from None
    return parse_record(data, str(path), kind)


def parse_record(data: bytes, where: str, kind: str) -> dict[str, Any]:
    """``data`` parsed as JSON and checked as a ``kind`` record; errors name ``where``."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:  # ValueError: JSONDecodeError
        raise RecordError(f"{where}: not valid JSON: {error}") from None
    except RecursionError:
        raise RecordError(f"{where}: nested too deeply to be a {kind} record.") from None
    problem = _first_problem(value, kind)
    if problem:
        raise RecordError(f"{where}: not a {kind} record this pipeline writes: {problem}")
    return value


def named_file(directory: Path, name: Any, what: str) -> Path | None:
    """``directory / name`` if ``name`` is a plain file name; a `RecordError` for anything that leaves it."""
    if name is None:
        return None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..") or "\\" in name:
        raise RecordError(
            f"{directory}: the {what} path {name!r} is not a plain file name in the run "
            "directory; records are never followed out of it."
        )
    return directory / name


def _first_problem(value: Any, kind: str) -> str | None:
    errors = sorted(_validator(kind).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    error = errors[0]
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"at {where}: {message}"


@functools.cache
def _validator(kind: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)
