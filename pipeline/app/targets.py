"""What a config's ``_target_`` names: imported for a run, checked before anything in a received config runs."""

from __future__ import annotations

import importlib
from typing import Any, Iterator, List, Mapping, Optional, Tuple

from pipeline.app.schema import ConfigError


def locate(target: str, path: str) -> Any:
    """The object at dotted path ``target``; a `ConfigError` naming ``path`` if it cannot be imported."""
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as error:
        raise ConfigError(f"{path}: cannot import {target!r}: {error}") from None


def untrusted_targets(config: Mapping[str, Any]) -> List[str]:
    """Every ``_target_`` in a received config that is not what a run may call, with why.

    A run calls ``model._target_`` (it must be a class that subclasses
    ``torch.nn.Module``) and registers ``backend._target_`` (a `Backend`
    subclass, or the class of a registered or installed backend). Anything
    else, anywhere in the config, could be any callable: it is refused unless
    the user trusts the config. Checking imports the named module (code that
    is installed here) but calls nothing.
    """
    problems = []
    for path, target in _targets(config):
        if path == "model._target_":
            problem = _not_a_subclass(target, "torch.nn", "Module")
        elif path == "backend._target_":
            backend = config.get("backend")
            problem = _not_a_backend(target, backend.get("name") if isinstance(backend, Mapping) else None)
        else:
            problem = "only model._target_ and backend._target_ are called by a run"
        if problem:
            problems.append(f"{path}={target!r}: {problem}")
    return problems


def _targets(node: Any, path: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield child, value
            else:
                yield from _targets(value, child)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _targets(value, f"{path}[{index}]")


def _resolve(target: Any) -> Tuple[Any, Optional[str]]:
    """The object ``target`` names, imported without calling anything; or why it cannot be."""
    if not isinstance(target, str) or not all(part.isidentifier() for part in target.split(".")):
        return None, "not a dotted name"
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return None, "cannot be found"
        return obj, None
    return None, "cannot be imported"


def _not_a_subclass(target: Any, module: str, name: str) -> Optional[str]:
    obj, problem = _resolve(target)
    if problem:
        return problem
    base = getattr(importlib.import_module(module), name)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        return f"not a class that subclasses {module}.{name} (it is {_kind(obj)})"
    return None


def _not_a_backend(target: Any, name: Any) -> Optional[str]:
    from pipeline.core.backend import Backend
    from pipeline.core.registry import entry_point_target, is_registered

    if isinstance(name, str) and (is_registered(name) or entry_point_target(name) == target):
        return None
    obj, problem = _resolve(target)
    if problem:
        return problem
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        return f"not a pipeline.Backend subclass (it is {_kind(obj)})"
    return None


def _kind(obj: Any) -> str:
    return f"the {type(obj).__name__} {getattr(obj, '__qualname__', obj)!r}"
