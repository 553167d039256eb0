"""Import what a config's ``_target_`` names, with errors that name the key."""

from __future__ import annotations

from typing import Any

from pipeline.app.schema import ConfigError


def locate(target: str, path: str) -> Any:
    """The object at dotted path ``target``; a `ConfigError` naming ``path`` if it cannot be imported."""
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as error:
        raise ConfigError(f"{path}: cannot import {target!r}: {error}") from None
