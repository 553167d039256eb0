"""Find the backend a config names: registered, installed, or imported from its ``_target_``.

``backend._target_`` names a `pipeline.core.backend.Backend` subclass, which is
registered under ``backend.name`` (so one class can serve under several names).
A function that registers the backend itself is accepted too. So a user's
backend is a Python class and, optionally, a YAML file, with no edit to this
repository.
"""

from __future__ import annotations

from pipeline.app.schema import ConfigError
from pipeline.app.targets import locate
from pipeline.core.backend import Backend, BackendInfo
from pipeline.core.errors import LoweringError
from pipeline.core.registry import get_backend, is_registered, register_backend


def load_backend(name: str, target: str | None) -> BackendInfo:
    """The registry entry of backend ``name``, registering ``target`` first if needed."""
    if is_registered(name) or not target:
        return _get_or_explain(
            name, "it is registered in this process" if is_registered(name) else "backend._target_ is missing"
        )
    obj = locate(target, "backend._target_")
    if isinstance(obj, type) and issubclass(obj, Backend):
        try:
            register_backend(name, obj)
        except LoweringError as error:
            raise ConfigError(f"backend._target_: {error}") from None
    elif callable(obj):
        obj()
    else:
        raise ConfigError(f"backend._target_: {target} is neither a Backend subclass nor a registering function.")
    return _get_or_explain(name, f"backend._target_ {target} ran but did not register backend {name!r}")


def _get_or_explain(name: str, reason: str) -> BackendInfo:
    try:
        return get_backend(name)
    except LoweringError as error:
        raise ConfigError(f"backend.name={name!r}: {reason}. {error}") from None
