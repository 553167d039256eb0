"""The contract between the pipeline and a backend: read this file to write one.

A backend is one `Backend` subclass. As in PyTorch's TorchScript backend API it
has two halves, an ahead-of-time **preprocess** and a **runtime**, and it
declares what the pipeline needs to know as class attributes::

    class MyBackend(Backend):
        name = "mybackend"              # the registry name (backend=mybackend)
        accepts = ("export",)           # frontends whose programs preprocess reads
        version = "1.0"                 # recorded in artifacts and reports
        reproducible = True             # equal programs and specs give equal payload bytes
        carries_code = False            # the payload holds executable code (native or TorchScript)
        native_payload = False          # native code parses the payload: received files load in a child first

        @dataclass
        class CompileSpec:              # one method's options; each default written once, here
            fast: bool = True

        @staticmethod
        def preprocess(program, method_compile_spec, generate_debug_handles) -> PreprocessResult | bytes: ...
        def compile(self, payload, method_compile_spec) -> dict: ...   # {method: handle}
        def execute(self, handle, inputs) -> list: ...

    pipeline.register_backend(MyBackend)

**preprocess** runs once when a model is lowered. ``program`` is a
``torch.jit.ScriptModule`` (torchscript frontend) or a dict
``{method: torch.export.ExportedProgram}`` (export frontend). It is the
backend's own copy: preprocess may change it (inline, freeze, run passes), and
the caller's program is never affected. ``method_compile_spec`` is
``{method: {option: value}}`` with every option of ``CompileSpec`` filled in
and checked (`parse_compile_spec` turns one method's options back into the
dataclass; ``check_compile_spec`` holds rules across methods).
``supports(node)`` (a classmethod; default True) says whether the backend
lowers one FX node, True or a reason: partitioned lowering
(``to_backend(..., partition=True)``) lowers the connected groups a backend
supports and runs the rest in PyTorch.
``generate_debug_handles(graph, method)`` issues a ``{node: handle}`` map for a
TorchScript or FX graph and records where each node came from. The result is
the **payload** saved in the artifact: it must be ``bytes``, because artifacts
never hold pickles.

The **runtime** half is the instance, created with no arguments:
``is_available()``; ``compile(payload, method_compile_spec) -> {method: handle}``;
``execute(handle, inputs) -> list``, which receives the method's arguments in
signature order (positional, then keyword-only) and returns the flat list of
output leaves (``torch.utils._pytree`` order); and optionally
``profile(handle, inputs)``. A backend whose handles have ``run(inputs)`` (and
``profile(inputs)``) need not write either: the defaults call them. A failure inside the program is raised as
``BackendRuntimeError(message, debug_handles=[...])``.

This module also re-exports what a backend may use, so that a backend imports
only it and torch: node walking and description (`walk_nodes`,
`describe_node`, and `handles_by_origin` for graphs an exporter derives from the
program), the installed version of a runtime (`package_version`), silencing a
runtime's log noise (`quiet_logs_from`, `quiet`), payload containers
(`pack_parts`, `unpack_parts`, `method_part`), `canonical_json`, tensors and torch
constants as JSON beside raw bytes (`TensorTable`, `read_tensor`, `torch_constant`,
`read_torch_constant`; `pipeline.core.operands`),
`parse_compile_spec` and the bounds of spec fields (`out_of_range`,
`MAX_THREADS`, `MAX_CALIBRATION_SAMPLES`), `exported_method` (one method's ExportedProgram, for
export-only backends), `check_extractable` (member names and sizes of a zip that
a loader of the backend's will unpack), the size limit on tensors a program
from a file may ask for (`MAX_TENSOR_BYTES`, `size_problem`, `sized`,
`guarded`, `UNKNOWN`; `pipeline.core.op_policy`), and the error types.

**carries_code** is a promise to the people who load artifacts: declare it
True when compiling the payload can run code that came with it (a native
library, a TorchScript archive, anything unpickled). ``load_lowered`` then
refuses such a payload unless the caller passes ``trust_code=True``. A
data-only backend must parse its payload as data: every problem a
`LoweringError`, nothing imported or run.

**native_payload** says that ``compile`` hands the payload's bytes to native
code (a runtime's parser, a shared library). Such code can crash the process
on a hostile file, so ``load_lowered`` builds the module in a forked child
first (``isolate``, on by default for these backends) and raises an
`ArtifactError` if the child dies. A payload that only Python reads (the
reference backend's JSON) needs no child.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from pipeline.core.bounded_zip import check_extractable
from pipeline.core.debug_handles import UNKNOWN_HANDLE, handles_by_origin, walk_nodes
from pipeline.core.environment import package_version
from pipeline.core.errors import BackendRuntimeError, LoweringError, UnsupportedOpError, did_you_mean, format_choices
from pipeline.core.hashing import canonical_json
from pipeline.core.op_policy import MAX_TENSOR_BYTES, UNKNOWN, guarded, size_problem, sized
from pipeline.core.operands import TensorTable, read_tensor, read_torch_constant, torch_constant
from pipeline.core.payload import method_part, pack_parts, unpack_parts
from pipeline.core.signature import argument_leaves
from pipeline.core.source import Frame, NodeSource, describe_node, portable_path
from pipeline.core.spec import (
    MAX_CALIBRATION_SAMPLES,
    MAX_THREADS,
    FieldError,
    SpecError,
    options_of,
    out_of_range,
    parse_compile_spec,
    parse_method_specs,
)
from pipeline.core.tensor_data import tensor_bytes
from pipeline.core.toolchain_output import quiet, quiet_logs_from

FRONTENDS: tuple[str, ...] = ("torchscript", "export")

__all__ = [
    "Backend",
    "BackendInfo",
    "FRONTENDS",
    "MethodRunner",
    "PreprocessResult",
    "ProfileEvent",
    # for backends
    "BackendRuntimeError",
    "FieldError",
    "Frame",
    "LoweringError",
    "MAX_CALIBRATION_SAMPLES",
    "MAX_TENSOR_BYTES",
    "MAX_THREADS",
    "NodeSource",
    "UNKNOWN",
    "SpecError",
    "TensorTable",
    "UNKNOWN_HANDLE",
    "UnsupportedOpError",
    "argument_leaves",
    "canonical_json",
    "check_extractable",
    "describe_node",
    "did_you_mean",
    "exported_method",
    "format_choices",
    "guarded",
    "handles_by_origin",
    "method_part",
    "options_of",
    "out_of_range",
    "pack_parts",
    "package_version",
    "parse_compile_spec",
    "parse_method_specs",
    "portable_path",
    "quiet",
    "quiet_logs_from",
    "read_tensor",
    "read_torch_constant",
    "size_problem",
    "sized",
    "tensor_bytes",
    "torch_constant",
    "unpack_parts",
    "walk_nodes",
]


@dataclass
class PreprocessResult:
    """What preprocess hands back: the payload, the backend's own handle map, and notes for the report.

    ``backend_map`` maps the backend's instruction or kernel ids (as strings,
    e.g. ``"forward/3"``) to the debug handles of the graph nodes they came from.
    ``notes`` are facts about this lowering that a user should see in the run's
    report (plain JSON values, e.g. ``{"forward": {"retried_on": "run_decompositions()"}}``
    or a partition); they are kept in the artifact too.
    """

    payload: bytes
    backend_map: dict[str, list[int]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileEvent:
    """One timed piece of a backend's work, tied back to source through handles."""

    name: str
    seconds: float
    debug_handles: tuple[int, ...] = ()


class Backend(abc.ABC):
    """A backend: class attributes declare it, `preprocess` lowers, the instance runs."""

    name: ClassVar[str | None] = None
    accepts: ClassVar[tuple[str, ...]] = FRONTENDS
    CompileSpec: ClassVar[type | None] = None  # dataclass of one method's options; None: any dict
    version: ClassVar[str | None] = None
    reproducible: ClassVar[bool] = True
    carries_code: ClassVar[bool] = False
    native_payload: ClassVar[bool] = False

    @staticmethod
    @abc.abstractmethod
    def preprocess(
        program: Any, method_compile_spec: dict[str, dict[str, Any]], generate_debug_handles: Any
    ) -> PreprocessResult | bytes:
        """Lower ``program`` ahead of time into the payload (see the module docstring)."""

    @classmethod  # noqa: B027 (an optional hook: by default there is no rule across methods)
    def check_compile_spec(cls, specs: dict[str, Any]) -> None:
        """Rules across methods, given ``{method: CompileSpec instance}``; raise `LoweringError`.

        Each method's own rules belong in ``CompileSpec.__post_init__``. Both run
        before preprocess, and in ``python -m pipeline.validate``.
        """

    @classmethod
    def supports(cls, node: torch.fx.Node) -> bool | str:
        """Whether this backend can lower ``node`` (an FX ``call_function`` node of an exported program):
        True, or the reason it cannot, as a short phrase ("is not in the op table").

        Partitioned lowering (``to_backend(..., partition=True)``) asks it of every
        node, lowers the supported groups and runs the rest in PyTorch, so answer
        from what ``preprocess`` and the runtime really handle (an op table, a list
        of ops the exporter fails on), never by trying. A backend that declares
        nothing supports everything: its unsupported ops then fail in preprocess,
        as without partitioning.
        """
        return True

    def is_available(self) -> bool:
        return True

    @abc.abstractmethod
    def compile(self, payload: bytes, method_compile_spec: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Turn the payload into one executable handle per method of the spec."""

    def execute(self, handle: Any, inputs: list[Any]) -> list[Any]:
        """Run one method; return its output leaves as a list.

        The default runs handles that are `MethodRunner`s (``handle.run(inputs)``),
        so a backend whose ``compile`` returns such objects needs no ``execute``.
        """
        return handle.run(inputs)

    def profile(self, handle: Any, inputs: list[Any]) -> list[ProfileEvent] | None:
        """Per-instruction timings of one call, for backends that can report them (default: the
        handle's own ``profile(inputs)`` if it has one, else None)."""
        method_profile = getattr(handle, "profile", None)
        return method_profile(inputs) if method_profile is not None else None


def exported_method(program: Any, method: str, backend: str) -> torch.export.ExportedProgram:
    """``program[method]`` of an export-frontend program, or a `LoweringError` saying that ``backend``
    lowers exported programs only."""
    exported = program.get(method) if isinstance(program, dict) else None
    if not isinstance(exported, torch.export.ExportedProgram):
        raise LoweringError(
            f"Backend {backend!r} lowers exported programs (the export frontend); method {method!r} of a "
            f"{type(program).__name__} is not one."
        )
    return exported


class MethodRunner(Protocol):
    """What a backend's ``compile`` may return per method, so that the default ``execute`` runs it."""

    def run(self, inputs: list[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class BackendInfo:
    """A registry entry: what a backend class declares, with any overrides given at registration."""

    name: str
    backend_cls: type[Backend]
    preprocess: Any
    accepts: tuple[str, ...] = FRONTENDS
    compile_spec: type | None = None
    version: str | None = None
    reproducible: bool = True
    carries_code: bool = False
    native_payload: bool = False
