"""The search sweeper's options, ``hydra.sweeper.*`` under ``hydra/sweeper=search``, and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.errors import CompactHydraException

from pipeline.core.errors import PipelineError

SAMPLERS = ("tpe", "random", "grid")
# What a trial can be scored on, each taken from its report.json, each minimized.
OBJECTIVES = {
    "latency": "median lowered latency in microseconds (report latency.lowered_us)",
    "max_abs_err": "largest absolute error against eager (report verify.max_abs_err)",
    "artifact_bytes": "size of the lowered artifact (report artifact.bytes)",
}


@dataclass
class SearchSweeperConf:
    _target_: str = "hydra_plugins.pipeline_search.SearchSweeper"
    n_trials: int = 20  # trials to run in this invocation; running the command again adds as many more
    timeout: float | None = None  # seconds; no new batch of trials starts after it
    n_jobs: int = 1  # trials per batch, launched together (in parallel under joblib or submitit)
    seed: int = 0  # the sampler's seed
    sampler: str = "tpe"  # tpe, random, or grid (every configuration once; choice() and range() only)
    n_startup_trials: int = 4  # TPE samples at random until this many trials are feasible
    objectives: list[str] = field(default_factory=lambda: ["latency"])  # more than one: a Pareto front
    study_name: str = "search"
    # KEY: SPEC in Hydra's override grammar, like the basic sweeper's params; the command line wins.
    params: dict[str, Any] | None = None
    # BACKEND: {KEY: SPEC}: sampled (or set) only in trials that choose that backend. None rather than {}, so
    # that hydra.sweeper.backend_params={onnxruntime:{...}} on the command line sets it (Hydra merges into a dict).
    backend_params: Any = None


class SearchConfigError(CompactHydraException, ValueError, PipelineError):
    """A ``hydra.sweeper.*`` option or a search parameter that cannot be used, and what is allowed.
    (Hydra prints a compact exception's message alone, without a traceback.)"""


def check_options(
    n_trials: object,
    timeout: float | None,
    n_jobs: object,
    sampler: str,
    n_startup_trials: object,
    objectives: list[str],
) -> None:
    """The options as Hydra composed them: the integers are checked here, whatever YAML or the command line gave."""
    from pipeline.core.errors import did_you_mean

    if sampler not in SAMPLERS:
        raise SearchConfigError(
            f"hydra.sweeper.sampler={sampler!r}: allowed: {', '.join(SAMPLERS)}.{did_you_mean(sampler, list(SAMPLERS))}"
        )
    for name, value, low in (
        ("n_trials", n_trials, 1),
        ("n_jobs", n_jobs, 1),
        ("n_startup_trials", n_startup_trials, 0),
    ):
        if not isinstance(value, int) or value < low:
            raise SearchConfigError(f"hydra.sweeper.{name}={value!r}: must be an integer >= {low}.")
    if timeout is not None and not timeout > 0:
        raise SearchConfigError(f"hydra.sweeper.timeout={timeout!r}: must be a number of seconds > 0, or null.")
    if not objectives or len(set(objectives)) != len(objectives):
        raise SearchConfigError(
            f"hydra.sweeper.objectives={objectives!r}: name each objective once; allowed: {', '.join(OBJECTIVES)}."
        )
    for objective in objectives:
        if objective not in OBJECTIVES:
            raise SearchConfigError(
                f"hydra.sweeper.objectives: {objective!r} is not an objective; allowed: "
                f"{', '.join(OBJECTIVES)}.{did_you_mean(objective, list(OBJECTIVES))}"
            )
    if objectives[0] != "latency":
        raise SearchConfigError(
            f"hydra.sweeper.objectives={objectives!r}: the first objective must be latency "
            "(the search is for the fastest correct lowering; the others break ties)."
        )


def is_search(config: Any) -> bool:
    """Whether a composed config (with its ``hydra`` node) runs a search."""
    return str(config.hydra.sweeper.get("_target_", "")) == SearchSweeperConf._target_
