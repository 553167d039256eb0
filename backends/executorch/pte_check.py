"""Checks on a ``.pte`` from an artifact, before ExecuTorch's runtime reads it: `check_program`.

The runtime verifies the program's flatbuffer (``Verification.InternalConsistency``,
which `runtime` asks for by name), and XNNPACK verifies its own, but both
log what they read while they load, and the Python bindings turn each log line
into a Python string: a line that is not UTF-8 throws through C++ and aborts
the interpreter (one byte 0xff in a named-data key was enough). So before the
runtime sees a program, this reads, with the bounds-checked reader of
`flatbuffer`:

* the extended header: the program's size, where the segments start and how
  many bytes they take, all inside the file;
* the segment table: every segment inside the segment data, none overlapping;
* every text the runtime may log: method names, operator names and overloads,
  delegate ids and compile-spec keys, tensor names, named-data keys (UTF-8,
  bounded, named-data keys unique and non-empty);
* every index into the segments (named data, constants, mutable data,
  delegates) and into the inline delegate data;
* each XNNPACK delegate's blob: its header (``XH00``: where its flatbuffer and
  constant data are, inside the blob, in that order), its flatbuffer's
  identifier and the named keys of its constants, each of which must be
  UTF-8, bounded and one of the program's named-data keys (what XNNPACK looks
  them up in), and the offsets of constants it stores itself.

What it cannot judge (a weight's values, a graph that computes something else)
is left to the runtime's verifiers; loading in a child process
(``load_lowered(isolate=...)``) covers the rest.
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Iterator
from pathlib import Path

from pipeline.backends.executorch.compile_spec import NAME
from pipeline.backends.executorch.flatbuffer import Buffer, Table, file_identifier, slots, union_members
from pipeline.core.backend import LoweringError

EXTENDED_HEADER = b"eh00"
XNNPACK_HEADER = b"XH00"
XNNPACK_ID = "XnnpackBackend"
MAX_KEY_BYTES = 4096  # named-data keys are sha256 digests or tensor names
MAX_NAME_BYTES = 4096
INLINE, SEGMENT = 0, 1  # DataLocation


def _package_dir() -> Path:
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise LoweringError(f"Backend {NAME!r}: ExecuTorch is not installed, so its schemas cannot be read.")
    return Path(list(spec.submodule_search_locations)[0])


def program_schema() -> Path:
    return _package_dir() / "schema" / "program.fbs"


def xnnpack_schemas() -> list[Path]:
    directory = _package_dir() / "backends" / "xnnpack" / "serialization"
    return [directory / "schema.fbs", directory / "runtime_schema.fbs"]


def check_program(pte: bytes, method: str) -> None:
    """Raise a `LoweringError` naming the part and what is wrong, unless ``pte`` is safe to hand to the runtime."""
    where = f"Backend {NAME!r}: the .pte of method {method!r}"
    if len(pte) < 8:
        raise LoweringError(f"{where} is {len(pte)} bytes long, too short for a program.")
    program_size, base, data_size = _extended_header(pte, where)
    schema = program_schema()
    program = Buffer(pte[:program_size], f"{where}, program flatbuffer")
    root = program.root((file_identifier(schema),), "Program")
    fields = slots(schema, "Program")
    segments = _segments(root, fields, base, data_size, program)
    keys = _named_data(root, fields, len(segments), program)
    inline = len(root.vector(fields["backend_delegate_data"], "backend_delegate_data", 4))
    _subsegments(root, fields, segments, program)
    for plan in root.tables(fields["execution_plan"], "execution_plan"):
        for index in _plan_delegates(plan, schema, len(segments), inline, program):
            if index is not None:
                offset, size = segments[index]
                blob = pte[base + offset : base + offset + size]
                check_xnnpack_blob(blob, keys, f"{where}, XNNPACK delegate in segment {index}")


def _extended_header(pte: bytes, where: str) -> tuple[int, int, int]:
    """``(program size, segment base offset, segment data size)``, each checked against the file."""
    if pte[8:12] != EXTENDED_HEADER:
        return len(pte), 0, 0  # no segments: the whole file is the flatbuffer
    if len(pte) < 32:
        raise LoweringError(f"{where}: the extended header is cut off ({len(pte)} bytes in the file).")
    length, program_size, base = struct.unpack_from("<IQQ", pte, 12)
    data_size = struct.unpack_from("<Q", pte, 32)[0] if length >= 32 and len(pte) >= 40 else 0
    if length < 24 or length > 64:
        raise LoweringError(f"{where}: the extended header claims {length} bytes; ExecuTorch writes 24 to 64.")
    if not 8 + length <= program_size <= len(pte):
        raise LoweringError(
            f"{where}: the extended header puts the program's end at byte {program_size}, "
            f"outside the {len(pte)}-byte file."
        )
    if base and not program_size <= base <= len(pte):
        raise LoweringError(
            f"{where}: the segments start at byte {base}, not between the program's end "
            f"({program_size}) and the file's ({len(pte)})."
        )
    if base and data_size and base + data_size > len(pte):
        raise LoweringError(
            f"{where}: the extended header claims {data_size} bytes of segments from byte "
            f"{base}, past the {len(pte)}-byte file."
        )
    return program_size, base, (data_size or len(pte) - base) if base else 0


def _segments(root: Table, fields: dict[str, int], base: int, data_size: int, program: Buffer) -> list[tuple[int, int]]:
    """``[(offset, size)]`` of every segment, relative to the segment base, inside the segment data and
    not overlapping."""
    schema = program_schema()
    segment = slots(schema, "DataSegment")
    found = []
    for i, table in enumerate(root.tables(fields["segments"], "segments")):
        offset = table.scalar(segment["offset"], "<Q", "offset")
        size = table.scalar(segment["size"], "<Q", "size")
        if (size and not base) or offset + size > data_size:  # an empty segment needs no segment data
            raise program.fail(
                f"segments[{i}] (offset {offset}, {size} bytes) lies outside the file's "
                f"{data_size} bytes of segment data."
            )
        found.append((offset, size))
    ordered = sorted((offset, size, i) for i, (offset, size) in enumerate(found))
    for (offset, size, i), (next_offset, _, j) in zip(ordered, ordered[1:]):
        if offset + size > next_offset:
            raise program.fail(f"segments[{i}] (offset {offset}, {size} bytes) overlaps segments[{j}].")
    return found


def _named_data(root: Table, fields: dict[str, int], segments: int, program: Buffer) -> set[str]:
    named = slots(program_schema(), "NamedData")
    keys: set[str] = set()
    for i, entry in enumerate(root.tables(fields["named_data"], "named_data")):
        key = entry.string(named["key"], "key", MAX_KEY_BYTES)
        if not key or key in keys:
            raise program.fail(f"named_data[{i}] has {'an empty' if not key else 'a repeated'} key {key!r}.")
        index = entry.scalar(named["segment_index"], "<I", "segment_index")
        if index >= segments:
            raise program.fail(f"named_data[{i}] ({key!r}) points at segment {index}; there are {segments}.")
        keys.add(key)
    return keys


def _subsegments(root: Table, fields: dict[str, int], segments: list[tuple[int, int]], program: Buffer) -> None:
    """The constant segment and the mutable data segments: indices into the segments, offsets inside them."""
    sub = slots(program_schema(), "SubsegmentOffsets")
    tables = [("constant_segment", root.table(fields["constant_segment"], "constant_segment"))]
    tables += [
        (f"mutable_data_segments[{i}]", t)
        for i, t in enumerate(root.tables(fields["mutable_data_segments"], "mutable_data_segments"))
    ]
    for name, table in tables:
        if table is None:
            continue
        offsets = table.vector(sub["offsets"], "offsets", 8)
        if not offsets:
            continue
        index = table.scalar(sub["segment_index"], "<I", "segment_index")
        if index >= len(segments):
            raise program.fail(f"{name} points at segment {index}; there are {len(segments)}.")
        for at in offsets:
            value = struct.unpack_from("<Q", program.data, at)[0]
            if value > segments[index][1]:
                raise program.fail(f"{name} has an offset {value} past its segment's {segments[index][1]} bytes.")


def _plan_delegates(plan: Table, schema: Path, segments: int, inline: int, program: Buffer) -> Iterator[int | None]:
    """Check one execution plan's texts and delegate references; yield the segment index of each XNNPACK
    delegate stored in a segment (None for other delegates)."""
    fields = slots(schema, "ExecutionPlan")
    plan.string(fields["name"], "name", MAX_NAME_BYTES)
    operator = slots(schema, "Operator")
    for op in plan.tables(fields["operators"], "operators"):
        op.string(operator["name"], "name", MAX_NAME_BYTES)
        op.string(operator["overload"], "overload", MAX_NAME_BYTES)
    _value_texts(plan, fields, schema)
    delegate, reference, spec = (
        slots(schema, "BackendDelegate"),
        slots(schema, "BackendDelegateDataReference"),
        slots(schema, "CompileSpec"),
    )
    for i, entry in enumerate(plan.tables(fields["delegates"], "delegates")):
        backend = entry.string(delegate["id"], "id", MAX_NAME_BYTES)
        for compile_spec in entry.tables(delegate["compile_specs"], "compile_specs"):
            compile_spec.string(spec["key"], "key", MAX_NAME_BYTES)
        processed = entry.table(delegate["processed"], "processed")
        if processed is None:
            raise program.fail(f"delegates[{i}] ({backend!r}) has no processed data.")
        location = processed.scalar(reference["location"], "<B", "location")
        index = processed.scalar(reference["index"], "<I", "index")
        limit = {INLINE: inline, SEGMENT: segments}.get(location)
        if limit is None or index >= limit:
            raise program.fail(
                f"delegates[{i}] ({backend!r}) points at {'segment' if location else 'inline data'} "
                f"{index} (location {location}); there are {limit or 0}."
            )
        yield index if location == SEGMENT and backend == XNNPACK_ID else None


def _value_texts(plan: Table, fields: dict[str, int], schema: Path) -> None:
    """The texts among the plan's values: string values and tensors' names."""
    kinds = union_members(schema, "KernelTypes")
    value, text, tensor, extra = (
        slots(schema, "EValue"),
        slots(schema, "String"),
        slots(schema, "Tensor"),
        slots(schema, "ExtraTensorInfo"),
    )
    for entry in plan.tables(fields["values"], "values"):
        kind = entry.scalar(value["val_type"], "<B", "val_type")
        if kind not in (kinds["String"], kinds["Tensor"]):
            continue
        payload = entry.table(value["val"], "val")
        if payload is None:
            continue
        if kind == kinds["String"]:
            payload.string(text["string_val"], "string_val")
            continue
        info = payload.table(tensor["extra_tensor_info"], "extra_tensor_info")
        if info is not None:
            info.string(extra["fully_qualified_name"], "fully_qualified_name", MAX_KEY_BYTES)


def check_xnnpack_blob(blob: bytes, keys: set[str], where: str) -> None:
    """An XNNPACK delegate's blob: header, flatbuffer identifier, the named keys and offsets of its constants."""
    if len(blob) < 8:
        raise LoweringError(f"{where}: {len(blob)} bytes, too short for an XNNPACK blob.")
    constants = b""
    if blob[4:8] == XNNPACK_HEADER:
        if len(blob) < 30:
            raise LoweringError(f"{where}: the XNNPACK header is cut off ({len(blob)} bytes).")
        length, fb_offset, fb_size, constant_offset, constant_size = struct.unpack_from("<HIIIQ", blob, 8)
        if (
            length < 30
            or not length <= fb_offset <= fb_offset + fb_size <= constant_offset
            or constant_offset + constant_size > len(blob)
        ):
            raise LoweringError(
                f"{where}: the XNNPACK header ({length} bytes) places the flatbuffer at {fb_offset}+{fb_size} and "
                f"the constants at {constant_offset}+{constant_size}; they must follow the header, in that order, "
                f"inside the {len(blob)}-byte blob."
            )
        flat, constants = blob[fb_offset : fb_offset + fb_size], blob[constant_offset : constant_offset + constant_size]
    else:
        flat = blob
    schemas = xnnpack_schemas()
    graph = Buffer(flat, f"{where}, XNNPACK flatbuffer")
    root = graph.root(tuple(file_identifier(s) for s in schemas), "XNNGraph")
    schema = schemas[0] if flat[4:8] == file_identifier(schemas[0]) else schemas[1]
    fields, offset = slots(schema, "XNNGraph"), slots(schema, "ConstantDataOffset")
    root.string(fields["version"], "version", MAX_NAME_BYTES)
    for i, entry in enumerate(root.tables(fields["constant_data"], "constant_data")):
        key = entry.string(offset["named_key"], "named_key", MAX_KEY_BYTES)
        if key:
            if key not in keys:
                raise graph.fail(
                    f"constant_data[{i}] names the key {key!r}, which the program's named data does not have."
                )
            continue
        start, size = entry.scalar(offset["offset"], "<Q", "offset"), entry.scalar(offset["size"], "<Q", "size")
        if start + size > len(constants):
            raise graph.fail(
                f"constant_data[{i}] ({start}+{size}) lies outside the {len(constants)} bytes of constant data."
            )
