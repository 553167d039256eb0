"""The backend registry: preprocess functions and runtime classes by name.

Three ways to add a backend:

1. One call registers both halves::

       register_backend("mybackend", MyBackend, preprocess=my_preprocess)

2. The same as a class decorator::

       @register_backend("mybackend", preprocess=my_preprocess, accepts=("export",))
       class MyBackend(pipeline.Backend): ...

3. From a separately installed package, through the ``pipeline.backends``
   entry-point group (``name = "pkg.module:register"``): the entry point is loaded
   the first time the name is looked up; loading it must register ``name``
   (a callable target is called with no arguments).

The preprocess-only calls keep the names and semantics of the original
(``registerBackendPreprocessFunction`` and friends): registering a name twice
raises, and looking up a missing one names it and lists the registered ones.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from pipeline.core.backend import FRONTENDS, Backend, BackendInfo
from pipeline.core.errors import LoweringError, UnknownBackendError, did_you_mean, format_choices

ENTRY_POINT_GROUP = "pipeline.backends"

_preprocess_functions: Dict[str, Callable] = {}
_backends: Dict[str, BackendInfo] = {}
_entry_points: Optional[Dict[str, importlib.metadata.EntryPoint]] = None


def register_backend_preprocess_function(name: str, fn: Callable) -> None:
    if name in _preprocess_functions:
        raise LoweringError(
            f"Preprocessing function for backend {name!r} is already registered. "
            "Ensure that registration is only called once."
        )
    _preprocess_functions[name] = fn


def has_backend_preprocess_function(name: str) -> bool:
    return name in _preprocess_functions or _load_entry_point(name)


def get_backend_preprocess_function(name: str) -> Callable:
    if not has_backend_preprocess_function(name):
        raise _unknown(name, "Preprocessing function for backend {name!r} is not registered.")
    return _preprocess_functions[name]


def register_backend(
    name: str,
    backend_cls: Optional[Type[Backend]] = None,
    *,
    preprocess: Callable,
    accepts: Sequence[str] = FRONTENDS,
    compile_spec: Optional[type] = None,
    version: Optional[str] = None,
    reproducible: bool = True,
):
    """Register a backend's preprocess function and runtime class under ``name``.

    Usable as a call or, without ``backend_cls``, as a class decorator.
    ``compile_spec`` is an optional dataclass describing one method's options;
    ``reproducible=False`` says the payload is not byte-identical across
    identical lowerings (e.g. native code), which reports and replays take into account.
    """
    if backend_cls is None:
        def decorator(cls: Type[Backend]) -> Type[Backend]:
            register_backend(name, cls, preprocess=preprocess, accepts=accepts,
                             compile_spec=compile_spec, version=version, reproducible=reproducible)
            return cls
        return decorator

    unknown_frontends = [f for f in accepts if f not in FRONTENDS]
    if unknown_frontends:
        raise LoweringError(
            f"Backend {name!r} accepts unknown frontend(s) {unknown_frontends}; "
            f"allowed: {format_choices(FRONTENDS)}"
        )
    if name in _backends:
        raise LoweringError(f"Backend {name!r} is already registered. Ensure that registration is only called once.")
    register_backend_preprocess_function(name, preprocess)
    _backends[name] = BackendInfo(name, backend_cls, preprocess, tuple(accepts), compile_spec, version, reproducible)
    return backend_cls


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
            f"Backend {name!r} has a preprocess function but no runtime class; "
            "register both with register_backend()."
        )
    return _backends[name]


def list_backends() -> List[str]:
    """Names of registered backends and of backends installed as entry points."""
    return sorted(set(_backends) | set(_discover_entry_points()))


def unregister_backend(name: str) -> None:
    """Remove a backend (for tests and interactive sessions)."""
    _backends.pop(name, None)
    _preprocess_functions.pop(name, None)


def _unknown(name: str, template: str) -> UnknownBackendError:
    known = list_backends()
    return UnknownBackendError(
        template.format(name=name) + f" Registered backends: {format_choices(known)}."
        + did_you_mean(name, known)
    )


def _discover_entry_points() -> Dict[str, importlib.metadata.EntryPoint]:
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
        target: Any = entry_point.load()
    except Exception as error:
        raise LoweringError(
            f"Backend {name!r}: loading entry point {entry_point.value!r} failed: {error}"
        ) from error
    if callable(target) and not isinstance(target, type) and name not in _preprocess_functions:
        target()
    if name not in _preprocess_functions:
        raise LoweringError(
            f"Backend {name!r}: entry point {entry_point.value!r} loaded but did not register {name!r}."
        )
    return True
