"""The contract between the pipeline and a backend: read this file to write one.

A backend has two halves, as in PyTorch's TorchScript backend API:

* an ahead-of-time **preprocess** function, run once when a model is lowered::

      def preprocess(program, method_compile_spec, generate_debug_handles) -> PreprocessResult | bytes

  ``program`` is a ``torch.jit.ScriptModule`` (torchscript frontend) or a dict
  ``{method: torch.export.ExportedProgram}`` (export frontend);
  ``method_compile_spec`` is ``{method: {option: value}}``;
  ``generate_debug_handles(graph, method=...)`` issues a ``{node: handle}`` map for a
  TorchScript or FX graph and records where each node came from. The result is
  the payload saved in the artifact: it must be ``bytes``, because artifacts
  never hold pickles.

* a **runtime** class, instantiated with no arguments, subclassing `Backend`:
  ``is_available()``, ``compile(processed, method_compile_spec) -> {method: handle}``
  and ``execute(handle, inputs) -> list``. ``execute`` receives the method's
  arguments in signature order (positional, then keyword-only) and returns the
  flat list of output leaves (``torch.utils._pytree`` order); the lowered module
  rebuilds the method's output structure from them.

A backend reports a failure inside the program with
``pipeline.BackendRuntimeError(message, debug_handles=[...])``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type

FRONTENDS: Tuple[str, ...] = ("torchscript", "export")


@dataclass
class PreprocessResult:
    """What preprocess hands back: the payload and the backend's own handle map.

    ``backend_map`` maps the backend's instruction or kernel ids (as strings,
    e.g. ``"forward/3"``) to the debug handles of the graph nodes they came from.
    """

    processed_bytes: bytes
    backend_map: Dict[str, List[int]] = field(default_factory=dict)


class Backend(abc.ABC):
    """The runtime half of a backend. Subclasses are created with no arguments."""

    def is_available(self) -> bool:
        return True

    @abc.abstractmethod
    def compile(self, processed: bytes, method_compile_spec: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        """Turn the payload into one executable handle per method of the spec."""

    @abc.abstractmethod
    def execute(self, handle: Any, inputs: List[Any]) -> List[Any]:
        """Run one method; return its output leaves as a list."""

    def profile(self, handle: Any, inputs: List[Any]) -> Optional[List["ProfileEvent"]]:
        """Per-instruction timings of one call, for backends that can report them."""
        return None


@dataclass(frozen=True)
class ProfileEvent:
    """One timed piece of a backend's work, tied back to source through handles."""

    name: str
    seconds: float
    debug_handles: Tuple[int, ...] = ()


@dataclass(frozen=True)
class BackendInfo:
    """A registry entry: everything the pipeline knows about a backend."""

    name: str
    backend_cls: Type[Backend]
    preprocess: Any
    accepts: Tuple[str, ...] = FRONTENDS
    compile_spec: Optional[type] = None  # dataclass describing one method's spec
    version: Optional[str] = None  # recorded in artifacts and reports
    reproducible: bool = True  # the same program and spec give byte-identical payloads
