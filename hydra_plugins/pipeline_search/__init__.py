"""Hydra finds sweepers only in the ``hydra_plugins`` namespace package, so the search sweeper is named here.

The sweeper itself lives in `pipeline.app.search`; this module gives Hydra the
class it may instantiate (``hydra.sweeper._target_``) and registers the config
``hydra/sweeper=search`` with its options and their defaults.
"""

from hydra.core.config_store import ConfigStore

from pipeline.app.search.config import SearchSweeperConf
from pipeline.app.search.sweeper import Search


class SearchSweeper(Search):
    """`pipeline.app.search.sweeper.Search`, under the name Hydra's plugin discovery accepts."""


ConfigStore.instance().store(group="hydra/sweeper", name="search", node=SearchSweeperConf, provider="pipeline")
