"""Lowered-module artifacts: one zip file, no pickle anywhere, read as data within limits.

Layout (every entry written with a fixed timestamp, in a fixed order, so two
identical lowerings give byte-identical files)::

    payload.bin     the backend's preprocessed bytes (stored: weights barely deflate)
    handles.json    the debug-handle map and the backend's own map
    code.py         the generated source of the lowered methods (for people)
    manifest.json   format and version, backend, frontend, methods, compile spec,
                    method signatures, output structures, package versions,
                    and the sha256 of every other part

`write_artifact` streams the file: each member goes to a temporary file in
chunks, with its sha256 and the file's computed as it is written (so the
manifest, which lists the parts' digests, is written last, and each member's
CRC and sizes follow its data), and the file is renamed into place only once
complete. The order of members and how each is compressed are the writer's
choice, not the format's: a reader looks members up by name, and files written
with the manifest first and a deflated payload (before issue #24) read the same.

A partitioned lowering (``to_backend(..., partition=True)``) adds ``partition``
to the manifest (the record of the split; format version 3) and its
payload.bin is a container of the backend's payload, each method's fallback as
JSON and the tensors it reads (`pipeline.core.partitioning`); loading runs the
fallback's ATen ops and the backend's runners, nothing else. In format version 4
``code.py`` calls the module's `pipeline.core.binding.RuntimeBinding` (version 1),
where versions 2 and 3 called private methods of the module: their ``code.py`` is
checked against that older rendering (`pipeline.core.codegen.TEMPLATES`), and the
module loaded from them runs today's, generated from the same manifest. Version-2
files (no partition) and version-3 files still load.

Reading (`read_artifact`) takes the file as data from elsewhere: the zip within
limits (`pipeline.core.bounded_zip`), JSON within limits
(`pipeline.core.bounded_json`), every manifest field checked for its type,
names, defaults and annotations from a closed set (`pipeline.core.literals`),
each part's sha256 checked, and the manifest checked against ``code.py``
(rendered again from the manifest, it must be the same text). Anything else is
an `ArtifactError` naming the file and the part.

The hashes catch accidents and partial edits. They cannot catch a consistent
forgery (edit, then hash again), so loading also takes a trust decision:
`load_lowered` refuses a backend whose payload carries code (``carries_code``:
a native library, a TorchScript archive) unless called with ``trust_code=True``,
in the spirit of ``torch.load(weights_only=True)``. A data-only payload is
compiled again by its backend, as the original does on ``torch.jit.load``.
A payload that native code parses is compiled in a forked child first
(``isolate``; `pipeline.core.isolation`), so that one that crashes its
runtime is an `ArtifactError`, not the end of the process.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import isolation, toolchain_output
from pipeline.core.backend import FRONTENDS
from pipeline.core.bounded_json import expect, member, parse_json
from pipeline.core.bounded_zip import ZipLimits, open_zip
from pipeline.core.codegen import render_methods
from pipeline.core.debug_handles import HandleMap
from pipeline.core.environment import package_versions
from pipeline.core.errors import (
    ArtifactError,
    BackendNotAvailableError,
    BackendRuntimeError,
    LoweringError,
    MalformedInput,
    UnknownBackendError,
)
from pipeline.core.files import HashingWriter, atomic_file
from pipeline.core.hashing import canonical_json, sha256_bytes, sha256_file
from pipeline.core.literals import check_name
from pipeline.core.lowered_module import LoweredModule
from pipeline.core.lowering import StepSeconds, build_module, resolve_specs
from pipeline.core.partitioning import PartitionedModule, PartitionedRuntime
from pipeline.core.registry import get_backend
from pipeline.core.shape_check import runner_positions
from pipeline.core.shapes import MethodShapes, contract_from_json, contract_to_json
from pipeline.core.signature import MethodSignature, OutputStructure

FORMAT = "lowering-pipeline/lowered-module"
# 2: code.py must match the manifest; docstrings are repr'd strings; 3: "partition"; 4: code.py calls the
# runtime binding (version 1) instead of the module's private methods; 5: "shapes", each method's shape
# contract (an older file has none: its program takes the shapes it was captured with, unchecked).
FORMAT_VERSION = 5
BINDING_OF_VERSION = {2: 0, 3: 0, 4: 1, 5: 1}  # the codegen template each version's code.py was rendered with
READABLE_VERSIONS = tuple(BINDING_OF_VERSION)  # a version-2 file is a version-3 file without a partition
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_PARTS = ("payload.bin", "handles.json", "code.py")
_MEMBERS = ("manifest.json", *_PARTS)
_DEFLATED = ("manifest.json", "handles.json", "code.py")  # text; every other member holds weights
_WRITE_CHUNK = 16 << 20
# Bytes each member may hold; the payload holds the weights, so only the zip limits bound it.
_MAX_BYTES = {"manifest.json": 16 << 20, "handles.json": 1 << 30, "code.py": 64 << 20, "payload.bin": 1 << 36}
LIMITS = ZipLimits(max_members=8, max_directory_bytes=1 << 16)  # room for a duplicate or stray member to be named
MAX_METHODS = 1000


@dataclass(frozen=True)
class WrittenArtifact:
    """Where `write_artifact` put the file, its size and its sha256 (hashed as it was written)."""

    path: Path
    size: int
    sha256: str


def write_artifact(lowered: LoweredModule, path: str | Path) -> WrittenArtifact:
    """Write the artifact member by member into a temporary file beside ``path``, then rename it into place.

    Nothing is held but what the module holds already: each part goes to the file in chunks, its sha256
    and the file's computed on the way, and the manifest, which lists the parts' digests, comes last.
    """
    if not isinstance(lowered, LoweredModule):
        raise ArtifactError(f"save_lowered needs a pipeline.LoweredModule, not a {type(lowered).__name__}.")
    path = Path(path)
    parts = {
        "payload.bin": lowered.payload,
        "handles.json": canonical_json(lowered.handle_map.to_json()),
        "code.py": lowered.code.encode(),
    }
    with atomic_file(path) as handle:
        written = HashingWriter(handle)
        with zipfile.ZipFile(written, "w") as archive:  # not seekable: a data descriptor after each member
            digests = {name: _write_member(archive, name, data) for name, data in parts.items()}
            _write_member(archive, "manifest.json", canonical_json(_manifest(lowered, digests)))
    return WrittenArtifact(path, written.size, written.sha256())


def save_lowered(lowered: LoweredModule, path: str | Path) -> Path:
    """Write the artifact atomically (temporary file, then rename); see `write_artifact`."""
    return write_artifact(lowered, path).path


def _manifest(lowered: LoweredModule, digests: dict[str, str]) -> dict[str, Any]:
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": lowered.backend_name,
        "backend_version": lowered.backend_version,
        "frontend": lowered.frontend,
        "original_type": lowered.original_type,
        "original_methods": lowered.original_methods,
        "methods": lowered.methods,
        "compile_spec": lowered.method_compile_spec,
        "notes": lowered.notes,
        "signatures": {m: lowered.signatures[m].to_json() for m in lowered.methods},
        "outputs": {m: lowered.outputs[m].to_json() for m in lowered.methods},
        "shapes": {m: contract_to_json(lowered.shapes[m]) for m in lowered.methods if m in lowered.shapes},
        "versions": package_versions(("torch", "lowering-pipeline")),
        "sha256": digests,
    }
    if isinstance(lowered, PartitionedModule):  # the payload is a partitioned container: load must know
        manifest["partition"] = lowered.partition
    return manifest


def _write_member(archive: zipfile.ZipFile, name: str, data: bytes) -> str:
    """Write one member with a fixed timestamp, a chunk at a time; its sha256."""
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = _compression(name, data)
    info.external_attr = 0o644 << 16
    info.file_size = len(data)  # zipfile decides on ZIP64 from it, before the data
    digest = hashlib.sha256()
    view = memoryview(data)
    with archive.open(info, "w") as member:
        for start in range(0, len(view), _WRITE_CHUNK):
            chunk = view[start : start + _WRITE_CHUNK]
            digest.update(chunk)
            member.write(chunk)
    return digest.hexdigest()


def _compression(name: str, data: bytes) -> int:
    """Weights (the payload) are stored: they deflate by a few percent at the cost of most of the save.
    Text deflates, unless it would deflate past the reader's bomb limit (a handle map of one line
    repeated), so that every artifact this writer makes is one the reader accepts."""
    if name not in _DEFLATED:
        return zipfile.ZIP_STORED
    if len(data) > LIMITS.ratio_applies_above:
        deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)  # as zipfile deflates
        deflated = len(deflater.compress(data)) + len(deflater.flush())
        if len(data) > LIMITS.max_ratio * max(deflated, 1):
            return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


@dataclass
class _Contents:
    """An artifact read and checked: the raw manifest, its parsed fields and the parts."""

    manifest: dict[str, Any]
    manifest_sha256: str
    parts: dict[str, bytes]
    compile_spec: dict[str, dict[str, Any]]
    signatures: dict[str, MethodSignature]
    outputs: dict[str, OutputStructure]
    handle_map: HandleMap
    shapes: dict[str, MethodShapes]


def read_artifact(path: str | Path) -> dict[str, Any]:
    """The manifest, its sha256 and the verified parts of an artifact, without compiling anything.

    ``{"manifest": {...}, "manifest_sha256": "...", "payload.bin": b"...", "handles.json": b"...",
    "code.py": b"..."}``; an `ArtifactError` naming the file and the part if anything is malformed.
    """
    contents = _read(Path(path))
    return {"manifest": contents.manifest, "manifest_sha256": contents.manifest_sha256, **contents.parts}


def artifact_digests(path: str | Path) -> dict[str, str]:
    """``{"artifact": sha256 of the file, "manifest": sha256 of its manifest.json}``, for records and replays.

    The manifest digest covers what the part hashes inside the file cannot: the
    manifest itself. Recorded beside a run, it tells a replay that the file it
    finds is the one the run wrote.
    """
    path = Path(path)
    contents = _read(path)
    return {"artifact": sha256_file(path), "manifest": contents.manifest_sha256}


def load_lowered(path: str | Path, *, trust_code: bool = False, isolate: bool | None = None) -> LoweredModule:
    """Rebuild a lowered module: check the file, look up its backend, compile the payload again.

    A backend whose payload carries executable code (``carries_code``) is refused
    unless ``trust_code=True``: say so only for files from someone you trust.

    ``isolate``: compile the payload in a forked child first, so that a payload
    that crashes its runtime is an `ArtifactError` instead of the end of this
    process (`pipeline.core.isolation`). None (the default) isolates backends
    whose payload native code parses (``native_payload``); False loads in this
    process only, for files you trust or load many times.
    """
    path = Path(path)
    contents = _read(path)
    name = contents.manifest["backend"]
    try:
        backend = get_backend(name)
    except UnknownBackendError as error:
        raise ArtifactError(f"{path}: cannot load: {error}") from None
    if backend.carries_code and not trust_code:
        raise ArtifactError(
            f"{path}: backend {name!r} payloads carry executable code, which loading would run. Load it only "
            f"if you trust whoever made the file: load_lowered({str(path)!r}, trust_code=True)."
        )
    partition = contents.manifest.get("partition")
    runtime = backend.runtime() if partition is None else PartitionedRuntime(backend)
    with toolchain_output.logged():  # asking imports the runtime, and some print as they load
        available = runtime.is_available()
    if not available:
        raise BackendNotAvailableError(
            f"{path}: backend {name!r} is not available on this machine, so the artifact cannot be loaded."
        )
    try:
        specs, _ = resolve_specs(backend, contents.compile_spec, "manifest.json: compile_spec")
    except LoweringError as error:
        raise ArtifactError(
            f"{path}: backend {name!r} cannot compile payload.bin with the manifest's compile_spec: {error}"
        ) from error
    build = functools.partial(
        build_module,
        backend,
        runtime,
        specs,
        StepSeconds(),
        partition=partition,
        frontend=contents.manifest["frontend"],
        method_compile_spec=contents.compile_spec,
        payload=contents.parts["payload.bin"],
        handle_map=contents.handle_map,
        signatures=contents.signatures,
        outputs=contents.outputs,
        shapes=contents.shapes,
        original_type=contents.manifest["original_type"],
        original_methods=contents.manifest["original_methods"],
        notes=contents.manifest.get("notes", {}),
    )
    if isolation.wanted(isolate, backend, path):
        isolation.load_in_child(path, name, build)
    try:
        return build()
    except (LoweringError, BackendRuntimeError) as error:
        raise ArtifactError(
            f"{path}: backend {name!r} cannot compile payload.bin with the manifest's compile_spec: {error}"
        ) from error


def _read(path: Path) -> _Contents:
    try:
        with open_zip(path, "", LIMITS) as archive:
            unknown = sorted(set(archive.names) - set(_MEMBERS))
            missing = [name for name in _MEMBERS if name not in archive.names]
            if unknown or missing:
                problems = [f"missing {missing}"] * bool(missing) + [f"unexpected members {unknown}"] * bool(unknown)
                raise MalformedInput(
                    f"not a lowered-module artifact: {'; '.join(problems)}; an artifact holds exactly {list(_MEMBERS)}."
                )
            raw = {name: archive.read(name, _MAX_BYTES[name]) for name in _MEMBERS}
        manifest = parse_json(raw["manifest.json"], "manifest.json", max_bytes=_MAX_BYTES["manifest.json"])
        _check_format(manifest)
        for name in _PARTS:
            expected = member(member(manifest, "sha256", dict, "manifest.json"), name, str, "manifest.json: sha256")
            actual = sha256_bytes(raw[name])
            if expected != actual:
                raise MalformedInput(f"sha256 mismatch in {name}: manifest says {expected}, content is {actual}.")
        contents = _parse(manifest, raw)
    except (OSError, MalformedInput, LoweringError) as error:
        raise ArtifactError(f"{path}: cannot read lowered-module artifact: {error}") from None
    return contents


def _check_format(manifest: Any) -> None:
    found = expect(manifest, dict, "manifest.json").get("format")
    if found != FORMAT:
        raise MalformedInput(f"not a lowered-module artifact (format {found!r}).")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise MalformedInput(
            f"artifact format version {version!r} is not supported; this pipeline reads versions "
            f"{list(READABLE_VERSIONS)}. Lower the model again."
        )
    if version < 5 and "shapes" in manifest:
        raise MalformedInput(f"a version-{version} manifest has no 'shapes' (shape contracts are version 5).")
    if version < 3 and "partition" in manifest:
        raise MalformedInput(f"a version-{version} manifest has no 'partition' (partitioned artifacts are version 3).")


def _parse(manifest: dict[str, Any], raw: dict[str, bytes]) -> _Contents:
    """Every manifest field, checked for its type and closed-set contents; then code.py against the manifest."""
    where = "manifest.json"
    member(manifest, "backend", str, where)
    member(manifest, "backend_version", (str, type(None)), where)
    member(manifest, "original_type", str, where)
    member(manifest, "versions", dict, where)
    expect(manifest.get("notes", {}), dict, f"{where}: notes")
    expect(manifest.get("partition", {}), dict, f"{where}: partition")
    if member(manifest, "frontend", str, where) not in FRONTENDS:
        raise MalformedInput(f"{where}: frontend {manifest['frontend']!r} is not one of {list(FRONTENDS)}.")
    for i, name in enumerate(member(manifest, "original_methods", list, where)):
        expect(name, str, f"{where}: original_methods[{i}]")
    methods = member(manifest, "methods", list, where)
    for i, name in enumerate(methods):
        check_name(expect(name, str, f"{where}: methods[{i}]"), f"method name at {where}: methods[{i}]")
    if not 0 < len(methods) <= MAX_METHODS or len(set(methods)) != len(methods):
        raise MalformedInput(f"{where}: methods must list 1 to {MAX_METHODS} distinct names.")
    sections = {key: member(manifest, key, dict, where) for key in ("compile_spec", "signatures", "outputs")}
    for key, section in sections.items():
        if sorted(section) != sorted(methods):
            raise MalformedInput(f"{where}: {key} must have exactly the methods {methods}, not {sorted(section)}.")
    compile_spec = {m: expect(sections["compile_spec"][m], dict, f"{where}: compile_spec.{m}") for m in methods}
    signatures = {m: MethodSignature.from_json(sections["signatures"][m], f"{where}: signatures.{m}") for m in methods}
    outputs = {m: OutputStructure.from_json(sections["outputs"][m], f"{where}: outputs.{m}") for m in methods}
    recorded = member(manifest, "shapes", dict, where, default={})
    unknown = sorted(set(recorded) - set(methods))
    if unknown:
        raise MalformedInput(f"{where}: shapes names methods {unknown} that are not lowered ({methods}).")
    shapes = {
        m: contract_from_json(recorded[m], list(runner_positions(signatures[m])), f"{where}: shapes.{m}")
        for m in methods
        if m in recorded
    }
    handles = parse_json(raw["handles.json"], "handles.json", max_bytes=_MAX_BYTES["handles.json"])
    handle_map = HandleMap.from_json(handles, "handles.json")
    try:
        code = raw["code.py"].decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedInput(f"code.py is not UTF-8 text: {error}") from None
    expected, _ = render_methods(
        manifest["backend"],
        {m: (signatures[m], outputs[m]) for m in methods},
        binding=BINDING_OF_VERSION[manifest["format_version"]],
    )
    try:
        compile(expected, "<code.py>", "exec")  # compiled only, not run: the module runs it once all checks pass
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise MalformedInput(f"the methods the manifest describes do not compile: {error}") from None
    if code != expected:
        raise MalformedInput(
            "code.py does not match the methods the manifest describes (an edited manifest or code.py): "
            "loading generates the methods from the manifest, and they must be the code the artifact shows."
        )
    return _Contents(
        manifest,
        sha256_bytes(raw["manifest.json"]),
        {name: raw[name] for name in _PARTS},
        compile_spec,
        signatures,
        outputs,
        handle_map,
        shapes,
    )
