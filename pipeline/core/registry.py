"""The backend registry: backends by name.

Three ways to add a backend:

1. Register its class; the class declares its name, frontends, compile spec and
   preprocess (see `pipeline.core.backend.Backend`)::

       pipeline.register_backend(MyBackend)

   or, as a class decorator, ``@pipeline.register_backend`` over the class.

2. The original API's form, a name and a class with keyword arguments that
   override what the class declares (a class without ``preprocess`` takes it here;
   the entry holds the overrides, the class is never changed)::

       pipeline.register_backend("mybackend", MyBackend, preprocess=my_preprocess, accepts=("export",))

3. From a separately installed package, through the ``pipeline.backends``
   entry-point group (``name = "pkg.module:MyBackend"``): the entry point is
   loaded the first time the name is looked up, and the class it names is
   registered under that name. (A function that registers the backend itself
   is accepted too.)

The preprocess-only calls keep the names and semantics of the original
(``registerBackendPreprocessFunction`` and friends): registering a name twice
raises, and looking up a missing one names it and lists the registered ones.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.core import toolchain_output
from pipeline.core.backend import FRONTENDS, Backend
from pipeline.core.errors import LoweringError, UnknownBackendError, did_you_mean, format_choices

ENTRY_POINT_GROUP = "pipeline.backends"

_preprocess_functions: dict[str, Callable[..., Any]] = {}
_backends: dict[str, BackendInfo] = {}
_entry_points: dict[str, importlib.metadata.EntryPoint] | None = None


def register_backend_preprocess_function(name: str, fn: Callable[..., Any]) -> None:
    if name in _preprocess_functions:
        raise LoweringError(
            f"Preprocessing function for backend {name!r} is already registered. "
            "Ensure that registration is only called once."
        )
    _preprocess_functions[name] = fn


def has_backend_preprocess_function(name: str) -> bool:
    return name in _preprocess_functions or _load_entry_point(name)


def get_backend_preprocess_function(name: str) -> Callable[..., Any]:
    if not has_backend_preprocess_function(name):
        raise _unknown(name, "Preprocessing function for backend {name!r} is not registered.")
    return _preprocess_functions[name]


_OVERRIDABLE = (
    "preprocess",
    "accepts",
    "compile_spec",
    "version",
    "reproducible",
    "carries_code",
    "native_payload",
)


class BackendInfo:
    """A registry entry: the registered class itself, read through the overrides given at registration.

    Nothing is copied from the class and nothing is written onto it: each declaration is the override
    given to `register_backend`, else the class's own attribute (``compile_spec`` is its ``CompileSpec``).
    """

    __slots__ = ("name", "backend_cls", "overrides")

    def __init__(self, name: str, backend_cls: type[Backend], overrides: Mapping[str, Any]):
        self.name = name
        self.backend_cls = backend_cls
        self.overrides = dict(overrides)

    def _declared(self, key: str, attribute: str) -> Any:
        return self.overrides[key] if key in self.overrides else getattr(self.backend_cls, attribute)

    @property
    def preprocess(self) -> Callable[..., Any]:
        return self._declared("preprocess", "preprocess")  # type: ignore[no-any-return]

    @property
    def accepts(self) -> tuple[str, ...]:
        return tuple(self._declared("accepts", "accepts"))

    @property
    def compile_spec(self) -> type | None:
        return self._declared("compile_spec", "CompileSpec")  # type: ignore[no-any-return]

    @property
    def version(self) -> str:
        return str(self._declared("version", "version"))

    @property
    def reproducible(self) -> bool:
        return bool(self._declared("reproducible", "reproducible"))

    @property
    def carries_code(self) -> bool:
        return bool(self._declared("carries_code", "carries_code"))

    @property
    def dynamic_shapes(self) -> tuple[str, ...]:
        """The frontends on which the backend keeps dynamic dimensions."""
        return tuple(self.backend_cls.dynamic_shapes)

    @property
    def native_payload(self) -> bool:
        return bool(self._declared("native_payload", "native_payload"))

    def runtime(self) -> Backend:
        """A new runtime instance of the class."""
        return self.backend_cls()

    def __repr__(self) -> str:
        return f"BackendInfo({self.name!r}, {self.backend_cls.__qualname__}, overrides={sorted(self.overrides)})"


def register_backend(
    name_or_cls: str | type[Backend] | None = None,
    backend_cls: type[Backend] | None = None,
    *,
    preprocess: Callable[..., Any] | None = None,
    accepts: Sequence[str] | None = None,
    compile_spec: type | None = None,
    version: str | None = None,
    reproducible: bool | None = None,
    carries_code: bool | None = None,
    native_payload: bool | None = None,
) -> Any:
    """Register a backend class: ``register_backend(Cls)``, or ``register_backend(name, Cls, **overrides)``.

    Without a class (``register_backend("name", preprocess=...)``) it returns a
    class decorator; bare ``@register_backend`` works too. Keyword arguments
    override the class's declarations. Returns the class.
    """
    overrides = dict(  # backend_info keeps the ones given (not None)
        preprocess=preprocess,
        accepts=accepts,
        compile_spec=compile_spec,
        version=version,
        reproducible=reproducible,
        carries_code=carries_code,
        native_payload=native_payload,
    )
    if isinstance(name_or_cls, type):
        return _register(None, name_or_cls, overrides)
    if backend_cls is None:
        return lambda cls: _register(name_or_cls, cls, overrides)
    return _register(name_or_cls, backend_cls, overrides)


def _register(name: str | None, backend_cls: type[Backend], overrides: dict[str, Any]) -> type[Backend]:
    if not (isinstance(backend_cls, type) and issubclass(backend_cls, Backend)):
        raise LoweringError(f"register_backend needs a pipeline.Backend subclass, not {backend_cls!r}.")
    info = backend_info(backend_cls, name, **overrides)
    if info.name in _backends:
        raise LoweringError(
            f"Backend {info.name!r} is already registered. Ensure that registration is only called once."
        )
    register_backend_preprocess_function(info.name, info.preprocess)
    _backends[info.name] = info
    return backend_cls


def backend_info(backend_cls: type[Backend], name: str | None = None, **overrides: Any) -> BackendInfo:
    """The entry of ``backend_cls`` with the non-None ``overrides``, checked as registration checks it."""
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise LoweringError(
            f"register_backend: unknown declaration(s) {unknown}; allowed: {format_choices(_OVERRIDABLE)}"
        )
    chosen = name or backend_cls.name
    if not chosen:
        raise LoweringError(f"Backend class {backend_cls.__qualname__} declares no name; set its `name` attribute.")
    info = BackendInfo(chosen, backend_cls, {k: v for k, v in overrides.items() if v is not None})
    label = f"Backend {chosen!r}"
    if info.preprocess is Backend.preprocess:
        raise LoweringError(
            f"{label}: {backend_cls.__qualname__} has no preprocess staticmethod; define one "
            "or pass preprocess= to register_backend."
        )
    if getattr(backend_cls, "__abstractmethods__", None):
        raise LoweringError(
            f"{label}: {backend_cls.__qualname__} does not define {sorted(backend_cls.__abstractmethods__)}."
        )
    unknown_frontends = [f for f in info.accepts if f not in FRONTENDS]
    if unknown_frontends:
        raise LoweringError(
            f"{label} accepts unknown frontend(s) {unknown_frontends}; allowed: {format_choices(FRONTENDS)}"
        )
    spec = info.compile_spec
    if spec is not None and not dataclasses.is_dataclass(spec):
        raise LoweringError(f"{label}: CompileSpec must be a dataclass, not {spec!r}.")
    return info


def is_registered(name: str) -> bool:
    """Whether ``name`` is registered in this process; unlike the lookups, loads no entry point.

    A backend's own ``register()`` uses it to be harmless when called twice: it is
    the entry point being loaded, so it must not trigger entry-point loading itself.
    """
    return name in _preprocess_functions


def get_backend(name: str) -> BackendInfo:
    """The registry entry of a backend that has both halves registered."""
    if name not in _backends and not _load_entry_point(name):
        raise _unknown(name, "Backend {name!r} is not registered.")
    if name not in _backends:
        raise UnknownBackendError(
            f"Backend {name!r} has a preprocess function but no runtime class; register both with register_backend()."
        )
    return _backends[name]


def list_backends() -> list[str]:
    """Names of registered backends and of backends installed as entry points."""
    return sorted(set(_backends) | set(_discover_entry_points()))


def entry_point_target(name: str) -> str | None:
    """The dotted path an installed backend's entry point names (``pkg.module.Class``), if there is one."""
    entry_point = _discover_entry_points().get(name)
    return entry_point.value.replace(":", ".") if entry_point is not None else None


def installed_backend_targets() -> set[str]:
    """The dotted path of every installed backend's class, read from the entry points' metadata (nothing is
    imported): what a received config's ``backend._target_`` may name without trust."""
    return {target for name in _discover_entry_points() if (target := entry_point_target(name))}


def unregister_backend(name: str) -> None:
    """Remove a backend (for tests and interactive sessions)."""
    _backends.pop(name, None)
    _preprocess_functions.pop(name, None)


def _unknown(name: str, template: str) -> UnknownBackendError:
    known = list_backends()
    return UnknownBackendError(
        template.format(name=name) + f" Registered backends: {format_choices(known)}." + did_you_mean(name, known)
    )


def _discover_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    global _entry_points
    if _entry_points is None:
        _entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def _load_entry_point(name: str) -> bool:
    """Load the entry point named ``name``, if any; True if ``name`` is now registered."""
    if name in _preprocess_functions:
        return True
    entry_point = _discover_entry_points().get(name)
    if entry_point is None:
        return False
    try:
        with toolchain_output.logged():  # a runtime may print as it is imported (torchao's missing kernels)
            target: Any = entry_point.load()
    except Exception as error:
        raise LoweringError(f"Backend {name!r}: loading entry point {entry_point.value!r} failed: {error}") from error
    if isinstance(target, type) and issubclass(target, Backend):
        if name not in _preprocess_functions:
            _register(name, target, {})
    elif callable(target) and name not in _preprocess_functions:
        target()
    if name not in _preprocess_functions:
        raise LoweringError(
            f"Backend {name!r}: entry point {entry_point.value!r} loaded but did not register {name!r}."
        )
    return True
