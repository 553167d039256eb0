"""Hydra's ConfigStore entries: the schemas the YAML files in ``conf/`` build on.

``conf/__init__.py`` calls `register_configs` when Hydra reads
``pkg://pipeline.conf``. Each default is written once, in a dataclass:

* ``run_config``: the primary config's own options (`schema.RunConfig`: seed,
  threads, verify, latency, ...), first in ``config.yaml``'s defaults list;
* ``schema/backend/<name>``: one per installed backend, made from its class when
  a config first names it (registering imports no backend):
  ``name``, ``_target_`` and ``compile_spec.forward`` with every option of the
  backend's ``CompileSpec`` at its default. ``conf/backend/<name>.yaml`` puts it
  first and states only what differs (its tolerance). The same node is stored
  as ``backend/<name>`` too, so that an installed backend with no YAML file can
  be chosen with ``backend=<name>``;
* ``schema/compile_spec``: an open node for a user's backend whose class Hydra
  cannot know while composing; its options are checked by `config.validate`.

Compile specs stay open dicts in the composed config, so that
``backend.compile_spec.accum={}`` adds a method without ``+``; every key and
value is then checked by the backend's own ``CompileSpec`` before any work.
"""

from __future__ import annotations

import functools
from typing import Any

from hydra.core.config_store import ConfigNode, ConfigStore
from omegaconf import OmegaConf

from pipeline.app.schema import ConfigError, RunConfig
from pipeline.core.backend import BackendInfo
from pipeline.core.errors import LoweringError
from pipeline.core.registry import entry_point_target, get_backend, list_backends
from pipeline.core.spec import default_options


def register_configs() -> None:
    store = ConfigStore.instance()
    # Plain values, not the dataclass: `config.validate` checks types with did-you-mean messages,
    # where a typed node would fail inside Hydra's composition with OmegaConf's.
    store.store(name="run_config", node=OmegaConf.create(default_options(RunConfig)))
    store.store(group="schema", name="compile_spec", node=_open({}))
    for name in list_backends():  # names only: the registry reads entry points without importing them
        _store_lazily(store, "schema/backend", name)
        if not _has_yaml("backend", name):  # `backend=<name>` for an installed backend with no YAML file
            _store_lazily(store, "backend", name)


class _BackendConfigNode(ConfigNode):
    """A ConfigStore entry whose node is made from the backend's class the first time Hydra reads it.

    So registering the configs imports no backend: ``--help`` or a run imports
    the one it composes, and listing a group's options reads only names. (Hydra
    reads an entry's ``node`` when it loads it, and copies the entry first.)
    """

    def __init__(self, name: str, group: str, backend: str) -> None:  # ConfigNode's fields, but `node` comes later
        self.name, self.group, self.package, self.provider = name, group, None, None
        self._backend = backend
        self._node: Any = None

    @property
    def node(self) -> Any:
        if self._node is None:
            self._node = backend_config(self._backend)
        return self._node

    @node.setter
    def node(self, value: Any) -> None:
        self._node = value


def _store_lazily(store: ConfigStore, group: str, backend: str) -> None:
    # ConfigStore.store makes its node at once; its repo is the tree Hydra reads, one dict a group.
    entries = store.repo
    for level in group.split("/"):
        entries = entries.setdefault(level, {})
    entries[f"{backend}.yaml"] = _BackendConfigNode(f"{backend}.yaml", group, backend)


@functools.cache
def backend_config(name: str) -> Any:
    """The config node of the backend registered or installed as ``name`` (imported here, once)."""
    try:
        backend = get_backend(name)
    except LoweringError as error:  # a broken third-party backend breaks only the configs that name it
        raise ConfigError(f"backend={name}: the backend cannot be loaded for its config: {error}") from None
    return backend_node(backend)


def backend_node(backend: BackendInfo) -> Any:
    """The config node of a backend: its name, class and every compile-spec option at its default."""
    target = entry_point_target(backend.name) or f"{backend.backend_cls.__module__}.{backend.backend_cls.__qualname__}"
    forward: dict[str, Any] = default_options(backend.compile_spec) if backend.compile_spec else {}
    node = OmegaConf.create({"name": backend.name, "_target_": target, "compile_spec": {"forward": forward}})
    OmegaConf.set_struct(node.compile_spec, False)
    return node


def _has_yaml(group: str, name: str) -> bool:
    from importlib.resources import files

    return files("pipeline.conf").joinpath(group, f"{name}.yaml").is_file()


def _open(value: dict[str, Any]) -> Any:
    node = OmegaConf.create(value)
    OmegaConf.set_struct(node, False)
    return node
