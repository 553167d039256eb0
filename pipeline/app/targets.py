"""What a config's ``_target_`` names: imported for a run; for a received config, checked as a string first."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.app.schema import ConfigError


def locate(target: str, path: str) -> Any:
    """The object at dotted path ``target``; a `ConfigError` naming ``path`` if it cannot be imported."""
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as error:
        raise ConfigError(f"{path}: cannot import {target!r}: {error}") from None


def untrusted_targets(config: Mapping[str, Any]) -> list[str]:
    """Every ``_target_`` in a received config that a run may not call, with why, decided from the
    string alone: nothing is imported to judge it (importing runs a module's code).

    A run calls ``model._target_`` and registers ``backend._target_``. Allowed
    without trust: the project's own models (``pipeline.zoo.*``), the targets
    the packaged model presets name (`preset_model_targets`: the Hugging Face
    classes among them), and the class an installed backend's entry point names.
    Anything else, anywhere in the config, could be any callable: refused unless
    the user trusts the config.
    """
    from pipeline.core.registry import installed_backend_targets

    presets, backends = preset_model_targets(), installed_backend_targets()
    problems = []
    for path, target in _targets(config):
        problem: str | None
        if not isinstance(target, str) or not all(part.isidentifier() for part in target.split(".")):
            problem = "not a dotted name"
        elif path == "model._target_":
            problem = (
                None
                if target in presets or is_zoo_model(target)
                else (
                    f"not one of the project's own models ({ZOO}*) or a packaged preset's "
                    f"({', '.join(sorted(t for t in presets if not t.startswith(ZOO)))})"
                )
            )
        elif path == "backend._target_":
            problem = (
                None
                if target in backends
                else (f"not the class of an installed backend ({', '.join(sorted(backends))})")
            )
        else:
            problem = "only model._target_ and backend._target_ are called by a run"
        if problem:
            problems.append(f"{path}={target!r}: {problem}")
    return problems


ZOO = "pipeline.zoo."


def is_zoo_model(target: str) -> bool:
    """Whether ``target`` is an nn.Module class defined in ``pipeline.zoo``. Only modules inside
    ``pipeline.zoo`` are imported to tell, and the class must be defined there: a name the zoo merely
    imports (``pipeline.zoo.architectures.torch.load``) is not one of its models."""
    import importlib

    import torch

    if not target.startswith(ZOO):
        return False
    parts = target.split(".")
    for split in range(len(parts) - 1, 1, -1):  # the longest prefix that is a module of the zoo
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute, None)
        return isinstance(obj, type) and issubclass(obj, torch.nn.Module) and (obj.__module__ + ".").startswith(ZOO)
    return False


@functools.cache
def preset_model_targets() -> frozenset[str]:
    """The ``_target_`` of every packaged ``conf/model/*.yaml``, read as YAML data (the package
    ``pipeline.conf`` is found, not imported: importing it registers configs)."""
    import yaml

    spec = importlib.util.find_spec("pipeline.conf")
    targets = set()
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for preset in sorted(Path(folder, "model").glob("*.yaml")):
            target = (yaml.safe_load(preset.read_text()) or {}).get("_target_")
            if isinstance(target, str) and target != "???":
                targets.add(target)
    return frozenset(targets)


def _targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
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
