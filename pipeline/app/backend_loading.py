"""Register the backend a config names, from its ``_target_``.

``_target_`` is either a function that registers the backend (as the built-in
backends' ``register``), or a `pipeline.Backend` subclass that carries its own
``preprocess`` (a staticmethod) and, optionally, ``accepts`` and ``CompileSpec``.
So a user's backend is a Python class plus a YAML file, with no edit to this repo.
"""

from __future__ import annotations

import pipeline
from pipeline.core.backend import FRONTENDS, Backend, BackendInfo
from pipeline.core.errors import LoweringError
from pipeline.core.registry import get_backend, is_registered


def register_from_target(name: str, target: str) -> BackendInfo:
    from pipeline.app.config import ConfigError

    if is_registered(name):
        return _get_or_explain(name, "it is registered in this process")
    if not target or target == "None":
        return _get_or_explain(name, "backend._target_ is missing")
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as error:
        raise ConfigError(f"backend._target_: cannot import {target!r}: {error}") from None
    if isinstance(obj, type) and issubclass(obj, Backend):
        preprocess = getattr(obj, "preprocess", None)
        if preprocess is None:
            raise ConfigError(f"backend._target_: {target} has no preprocess staticmethod to register.")
        pipeline.register_backend(name, obj, preprocess=preprocess, accepts=getattr(obj, "accepts", FRONTENDS),
                                  compile_spec=getattr(obj, "CompileSpec", None),
                                  version=getattr(obj, "version", None),
                                  reproducible=getattr(obj, "reproducible", True))
    elif callable(obj):
        obj()
    else:
        raise ConfigError(f"backend._target_: {target} is neither a Backend subclass nor a registering function.")
    return _get_or_explain(name, f"backend._target_ {target} ran but did not register backend {name!r}")


def _get_or_explain(name: str, reason: str) -> BackendInfo:
    from pipeline.app.config import ConfigError

    try:
        return get_backend(name)
    except LoweringError as error:
        raise ConfigError(f"backend.name={name!r}: {reason}. {error}") from None
