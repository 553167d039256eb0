"""Lowered-module artifacts: one zip file, no pickle anywhere.

Layout (every entry written with a fixed timestamp, in a fixed order, so two
identical lowerings give byte-identical files)::

    manifest.json   format and version, backend, frontend, methods, compile spec,
                    method signatures, output structures, package versions,
                    and the sha256 of every other part
    payload.bin     the backend's preprocessed bytes
    handles.json    the debug-handle map and the backend's own map
    code.py         the generated source of the lowered methods (for people)

Loading reads JSON and bytes only: it finds the backend in the registry and
compiles the payload again, as the original does on ``torch.jit.load``.
"""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, Union

from pipeline.core.debug_handles import HandleMap
from pipeline.core.environment import package_versions
from pipeline.core.errors import ArtifactError, BackendNotAvailableError, UnknownBackendError
from pipeline.core.hashing import canonical_json, sha256_bytes
from pipeline.core.files import write_atomic
from pipeline.core.lowered_module import LoweredModule
from pipeline.core.registry import get_backend
from pipeline.core.signature import MethodSignature, OutputStructure

FORMAT = "lowering-pipeline/lowered-module"
FORMAT_VERSION = 1
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_PARTS = ("payload.bin", "handles.json", "code.py")


def artifact_bytes(lowered: LoweredModule) -> bytes:
    parts = {
        "payload.bin": lowered.payload,
        "handles.json": canonical_json(lowered.handle_map.to_json()),
        "code.py": lowered.code.encode(),
    }
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
        "versions": package_versions(("torch", "lowering-pipeline")),
        "sha256": {name: sha256_bytes(data) for name, data in parts.items()},
    }
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in [("manifest.json", canonical_json(manifest)), *parts.items()]:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def save_lowered(lowered: LoweredModule, path: Union[str, Path]) -> Path:
    """Write the artifact atomically (temporary file, then rename)."""
    if not isinstance(lowered, LoweredModule):
        raise ArtifactError(f"save_lowered needs a pipeline.LoweredModule, not a {type(lowered).__name__}.")
    path = Path(path)
    write_atomic(path, artifact_bytes(lowered))
    return path


def read_artifact(path: Union[str, Path]) -> Dict[str, Any]:
    """The manifest and verified parts of an artifact, without compiling anything."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [n for n in ("manifest.json", *_PARTS) if n not in names]
            if missing:
                raise ArtifactError(f"{path}: not a lowered-module artifact; missing {missing}.")
            manifest = json.loads(archive.read("manifest.json"))
            parts = {name: archive.read(name) for name in _PARTS}
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: cannot read lowered-module artifact: {error}") from error
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a lowered-module artifact (format {manifest.get('format')!r}).")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {manifest.get('format_version')!r} is not supported; "
            f"this pipeline reads version {FORMAT_VERSION}."
        )
    for name, data in parts.items():
        expected = manifest.get("sha256", {}).get(name)
        actual = sha256_bytes(data)
        if expected != actual:
            raise ArtifactError(f"{path}: sha256 mismatch in {name}: manifest says {expected}, content is {actual}.")
    return {"manifest": manifest, **parts}


def load_lowered(path: Union[str, Path]) -> LoweredModule:
    """Rebuild a lowered module: look up its backend, compile the payload again."""
    contents = read_artifact(path)
    manifest = contents["manifest"]
    try:
        backend = get_backend(manifest["backend"])
    except UnknownBackendError as error:
        raise ArtifactError(f"{path}: cannot load: {error}") from None
    if not backend.backend_cls().is_available():
        raise BackendNotAvailableError(
            f"{path}: backend {backend.name!r} is not available on this machine, so the artifact cannot be loaded."
        )
    try:
        methods = manifest["methods"]
        fields = dict(
            frontend=manifest["frontend"],
            method_compile_spec={m: manifest["compile_spec"][m] for m in methods},
            handle_map=HandleMap.from_json(json.loads(contents["handles.json"])),
            signatures={m: MethodSignature.from_json(manifest["signatures"][m]) for m in methods},
            outputs={m: OutputStructure.from_json(manifest["outputs"][m]) for m in methods},
            original_type=manifest["original_type"],
            original_methods=manifest["original_methods"],
            notes=manifest.get("notes", {}),
        )
    except (KeyError, TypeError, ValueError, SyntaxError) as error:
        raise ArtifactError(f"{path}: malformed manifest: {type(error).__name__}: {error}") from error
    return LoweredModule(backend, payload=contents["payload.bin"], **fields)
