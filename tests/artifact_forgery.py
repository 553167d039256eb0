"""Making bad artifacts on purpose, for the trust tests and the fuzzer.

`members` reads an artifact's members in order; `write_members` writes any
list of (name, bytes), duplicates and odd names included; `forge` edits the
manifest and parts of a valid artifact and puts the changed parts' sha256 back
into the manifest, so that an edit reaches the checks behind the hash check.
`CanaryModel` has annotations, defaults, a keyword-only argument and a nested
output, so that its manifest has every kind of field an edit can aim at.
`injections(canary)` are texts that create the file ``canary`` if they ever run.
`time_limit` is the hang guard a load of a bad artifact runs under: generous, so
that a busy machine never trips it, and a `Hang` (a BaseException) when it does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

PARTS = ("payload.bin", "handles.json", "code.py")


class CanaryModel(nn.Module):
    def forward(
        self, x: torch.Tensor, y: Optional[torch.Tensor] = None, scale: float = 2.0, *, shift: int = 1
    ) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        return {"sum": x + y, "pair": (x * scale, y + shift)}


def canary_inputs() -> tuple:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, generator=generator), torch.randn(4, generator=generator)


HANG_GUARD_S = 60.0  # loading a bad artifact takes milliseconds; this only tells a hang from an answer


class Hang(BaseException):
    """Raised by the alarm; a BaseException, so that no ``except Exception`` under test swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float = HANG_GUARD_S) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def members(path: Path) -> List[Tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_members(path, items: List[Tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED):
    """``items`` as a zip at ``path`` (a path or a binary file object)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as archive:
            for name, data in items:
                archive.writestr(name, data)
    return path


def forge(
    path: Path,
    out: Path,
    *,
    manifest: Optional[Callable[[dict], object]] = None,
    parts: Optional[Dict[str, bytes]] = None,
    raw_manifest: Optional[bytes] = None,
) -> Path:
    """``out``: the artifact at ``path`` with ``manifest(m)`` applied (in place, or its return value if not
    None), ``parts`` replaced, and the sha256 of replaced parts recomputed."""
    items = dict(members(path))
    document = json.loads(items["manifest.json"])
    for name, data in (parts or {}).items():
        items[name] = data
        if isinstance(document, dict) and isinstance(document.get("sha256"), dict):
            document["sha256"][name] = hashlib.sha256(data).hexdigest()
    if manifest is not None:
        returned = manifest(document)
        document = document if returned is None else returned
    items["manifest.json"] = raw_manifest if raw_manifest is not None else json.dumps(document).encode()
    return write_members(out, list(items.items()))


def forge_consistently(path: Path, out: Path, manifest: Callable[[dict], object]) -> Path:
    """A consistent forgery: the manifest edited, code.py generated again from it, both hashes in place,
    so that only what loading checks beyond the hashes and code.py can refuse it."""
    from pipeline.core.codegen import render_methods
    from pipeline.core.signature import MethodSignature, OutputStructure

    document = json.loads(dict(members(path))["manifest.json"])
    manifest(document)
    methods = {
        m: (MethodSignature.from_json(document["signatures"][m]), OutputStructure.from_json(document["outputs"][m]))
        for m in document["methods"]
    }
    code, _ = render_methods(document["backend"], methods)
    return forge(path, out, manifest=manifest, parts={"code.py": code.encode()})


def injections(canary: Path) -> List[str]:
    """Texts that create ``canary`` if they ever run as Python, in the places generated code has text."""
    touch = f"__import__('pathlib').Path({str(canary)!r}).touch()"
    return [
        touch,
        f'"""\n{touch}\n"""',  # closes a docstring
        f"'''; {touch}; '''",
        f"x):\n    pass\n{touch}\ndef f(x",  # closes a parameter list
        f"forward(self):\n    pass\n{touch}\ndef g",  # a method name
        f"(lambda: {touch})()",
        f"[{touch}][0]",
        f"{touch} or 1",
    ]


CANARY_MODULE = "pipeline_canary_module"


def write_canary_module(directory: Path, canary: Path) -> None:
    """A module whose import creates ``canary``: torch's treespec_loads imports any module an enum
    or defaultdict context names."""
    (directory / f"{CANARY_MODULE}.py").write_text(
        f"import enum, pathlib\npathlib.Path({str(canary)!r}).touch()\n"
        "class Key(enum.Enum):\n    A = 'a'\n"
        "def factory():\n    return 0\n"
    )
