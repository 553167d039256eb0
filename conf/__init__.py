"""The pipeline's Hydra configs, shipped as the package ``pipeline.conf``.

Hydra imports this package when it reads ``pkg://pipeline.conf``, so the
ConfigStore entries the YAML files use are registered here.
"""

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

# A compile spec open to new keys: `backend.compile_spec.accum={}` adds a method and
# `backend.compile_spec.forward.<option>=<value>` sets any option without `+`; the
# backend's own schema then checks every key and value (pipeline.app.config.validate),
# with a message that lists what is allowed.
_open = OmegaConf.create({})
OmegaConf.set_struct(_open, False)
ConfigStore.instance().store(group="schema", name="compile_spec", node=_open)
