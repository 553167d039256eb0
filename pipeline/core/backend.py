"""The contract between the pipeline and a backend: read this file and one backend to write one.

A backend is one `Backend` subclass, in two halves as in PyTorch's TorchScript backend API: an
ahead-of-time **preprocess** and a **runtime**. It declares what the pipeline needs as class attributes::

    class MyBackend(Backend):
        name = "mybackend"                 # the registry name (backend=mybackend)
        accepts = ("export",)              # frontends whose programs preprocess reads
        runtime_packages = ("onnxruntime",)  # their versions go into `version`
        reproducible = True                # equal programs and specs give equal payload bytes
        carries_code = False               # compiling the payload can run code that came with it
        native_payload = False             # native code parses the payload: a received file loads in a child first
        dynamic_shapes = ("export",)       # frontends whose dynamic dimensions the backend keeps

        @dataclass
        class CompileSpec:                 # one method's options; each default written once, here
            fast: bool = True

        @staticmethod
        def preprocess(program, specs, generate_debug_handles) -> PreprocessResult | bytes: ...
        def compile(self, payload, specs) -> dict[str, MethodRunner]: ...

    pipeline.register_backend(MyBackend)

``specs`` is ``{method: CompileSpec instance}``, checked by the pipeline before either half sees it
(``CompileSpec.__post_init__`` for one method, ``check_compile_spec`` across methods); a backend that
declares no ``CompileSpec`` gets each method's options as the dict the user wrote.

**preprocess** runs once when a model is lowered, on the backend's own copy of ``program`` (a
``torch.jit.ScriptModule`` for the torchscript frontend, ``{method: ExportedProgram}`` for export), which
it may change. ``generate_debug_handles(graph, method)`` issues ``{node: handle}`` for a TorchScript or FX
graph and records where each node came from. The payload it returns is saved in the artifact, so it is
``bytes``: artifacts never hold pickles.

**compile** runs on the instance (created with no arguments) when the module is built, at lowering and at
load. It returns one `MethodRunner` per method: a callable on the method's flat inputs (positional, then
keyword-only, in signature order) that returns the flat output leaves (``torch.utils._pytree`` order), with
an optional ``profile(inputs) -> list[ProfileEvent]``. A failure inside the program is raised as
``BackendRuntimeError(message, debug_handles=[...])``: the pipeline resolves the handles to source lines.

**carries_code** is a promise to the people who load artifacts: ``load_lowered`` refuses such a payload
unless called with ``trust_code=True``. A data-only backend parses its payload as data: every problem a
`LoweringError`, nothing imported or run. **native_payload** makes ``load_lowered`` build the module in a
forked child first, so that a hostile file that crashes the runtime is an `ArtifactError`.

**dynamic_shapes** names the frontends on which the backend keeps the dimensions a lowering declares
dynamic (`pipeline.core.shapes`). An exported program then arrives with those sizes symbolic, as
torch.export makes them (``SymInt``, bounds in ``range_constraints``); ``input_shapes(program)`` reads them
back with their declared names. A backend that cannot keep them with some options (a quantized path with
static shapes only) says why in ``dynamic_refusal``. Either way the pipeline refuses the lowering before
preprocess runs, naming the backend, the dimension and the reason; and it checks every call against the
contract before a runner sees the inputs, so a runner only ever gets sizes in range.

``version`` is derived (`pipeline.core.backend_kit.backend_version`): the pipeline's version, plus each
runtime package's installed version. What a backend may use besides torch (node walking, payload containers,
spec bounds, error types, ...) is in `pipeline.core.backend_kit`, re-exported here.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from pipeline.core.backend_kit import *  # noqa: F403 (what a backend may use, importable from the contract)
from pipeline.core.backend_kit import FRONTENDS, LoweringError, backend_version
from pipeline.core.backend_kit import __all__ as _kit

__all__ = ["Backend", "MethodRunner", "PreprocessResult", "ProfileEvent", *_kit]


@dataclass
class PreprocessResult:
    """The payload, the backend's own handle map, and notes for the report.

    ``backend_map`` maps the backend's instruction or kernel ids (strings such as ``"forward/3"``) to the
    debug handles of the nodes they came from. ``notes`` are plain JSON facts about this lowering that a
    user should see in the run's report; they are kept in the artifact too.
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


class MethodRunner(Protocol):
    """One compiled method: called on the flat inputs, it returns the flat outputs. It may also have
    ``profile(inputs) -> list[ProfileEvent]``, per-instruction timings of one call."""

    def __call__(self, inputs: list[Any], /) -> list[Any]: ...


class Backend(abc.ABC):
    """A backend: class attributes declare it, `preprocess` lowers, the instance compiles runners."""

    name: ClassVar[str | None] = None
    accepts: ClassVar[tuple[str, ...]] = FRONTENDS
    CompileSpec: ClassVar[type | None] = None  # a dataclass of one method's options; None: options as dicts
    runtime_packages: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = backend_version(())
    reproducible: ClassVar[bool] = True
    carries_code: ClassVar[bool] = False
    native_payload: ClassVar[bool] = False
    dynamic_shapes: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "version" not in vars(cls):  # a class may still declare its own
            cls.version = backend_version(cls.runtime_packages)

    @staticmethod
    def preprocess(program: Any, specs: dict[str, Any], generate_debug_handles: Any) -> PreprocessResult | bytes:
        """Lower ``program`` ahead of time into the payload (see the module docstring)."""
        raise LoweringError("This backend class declares no preprocess; pass preprocess= to register_backend.")

    @classmethod  # noqa: B027 (an optional hook: by default there is no rule across methods)
    def check_compile_spec(cls, specs: dict[str, Any]) -> None:
        """Rules across methods, given ``{method: CompileSpec instance}``; raise `LoweringError`.

        Each method's own rules belong in ``CompileSpec.__post_init__``. Both run before preprocess, and
        in ``python -m pipeline.validate``.
        """

    @classmethod
    def dynamic_refusal(cls, method: str, spec: Any) -> str | None:
        """Why this backend cannot keep dynamic dimensions of ``method`` lowered with ``spec`` (its
        CompileSpec instance), as a short phrase; None when it can. Asked only on a frontend the backend
        names in ``dynamic_shapes``, before preprocess."""
        return None

    @classmethod
    def supports(cls, node: torch.fx.Node) -> bool | str:
        """Whether this backend lowers ``node`` (a ``call_function`` node of an exported program): True,
        or the reason it cannot, as a short phrase ("is not in the op table").

        Partitioned lowering (``to_backend(..., partition=True)``) lowers the connected groups a backend
        supports and runs the rest in PyTorch, so answer from what preprocess and the runtime really
        handle, never by trying. A backend that declares nothing supports everything.
        """
        return True

    def is_available(self) -> bool:
        return True

    @abc.abstractmethod
    def compile(self, payload: bytes, specs: dict[str, Any]) -> dict[str, MethodRunner]:
        """One runner per method of ``specs``, from the payload."""


def __getattr__(name: str) -> Any:
    if name == "BackendInfo":  # the registry's entry type, named here before the registry existed
        from pipeline.core.registry import BackendInfo

        return BackendInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
