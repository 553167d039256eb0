"""The pipeline's Hydra configs, shipped as the package ``pipeline.conf``.

Hydra imports this package when it reads ``pkg://pipeline.conf``, so the
ConfigStore schemas the YAML files build on are registered here
(`pipeline.app.store`).
"""

from pipeline.app.store import register_configs

register_configs()
