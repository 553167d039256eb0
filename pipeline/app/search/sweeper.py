"""`Search`: the Hydra sweeper behind ``hydra/sweeper=search``: ask the study, launch a batch, tell the outcomes.

Each batch of trials goes through ``self.launcher.launch`` like the basic
sweeper's, so the search runs under the basic, joblib and submitit launchers
alike; job numbers continue across invocations, so a resumed search adds job
directories instead of overwriting them. A trial is judged by the report.json
its job wrote (`objective.outcome_of`), never by what the launcher returned,
which under some launchers never reaches this process. When the search ends
the sweeper writes the results (`results.write_results`) and exits 1 if no
trial was feasible.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from pipeline.app.logs import TOTAL_ENV
from pipeline.app.search.config import SearchConfigError, check_options
from pipeline.app.search.objective import Outcome, outcome_of, read_report

if TYPE_CHECKING:  # optuna is imported when a search starts: Hydra imports this module at every start-up
    import optuna

    from pipeline.app.search.space import SearchSpace

log = logging.getLogger("pipeline")

MAX_REPEATS = 100  # proposals in a row that repeat a tried configuration: the sampler has nothing new to offer
_ABSENT = object()


class Search(Sweeper):
    def __init__(
        self,
        n_trials: int = 20,
        timeout: float | None = None,
        n_jobs: int = 1,
        seed: int = 0,
        sampler: str = "tpe",
        n_startup_trials: int = 4,
        objectives: Sequence[str] = ("latency",),
        study_name: str = "search",
        params: dict[str, Any] | None = None,
        backend_params: dict[str, dict[str, Any]] | None = None,
        **unknown: Any,
    ):
        if unknown:  # the ConfigStore schema catches typos on the command line; this, a hand-written _target_
            raise TypeError(f"hydra.sweeper: unknown option(s) {sorted(unknown)}")
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise ImportError("hydra/sweeper=search needs optuna: pip install 'lowering-pipeline[search]'")
        self.objectives = [str(o) for o in objectives]
        check_options(n_trials, timeout, n_jobs, sampler, n_startup_trials, self.objectives)
        self.n_trials, self.timeout, self.n_jobs, self.seed = n_trials, timeout, n_jobs, seed
        self.sampler, self.n_startup_trials, self.study_name = sampler, n_startup_trials, study_name
        self.params = dict(params or {})
        self.backend_params = {str(b): dict(p or {}) for b, p in (backend_params or {}).items()}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from pipeline.app.search.results import write_results
        from pipeline.app.search.study import open_study

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        space = self.search_space(arguments)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = open_study(sweep_dir, self.study_name, self.sampler, self.seed, self.n_startup_trials, self.objectives)
        self.finish_interrupted(study, sweep_dir)
        next_job = next_job_number(study, sweep_dir)
        os.environ[TOTAL_ENV] = str(next_job + self.n_trials)  # the "[job k/N]" log tags
        if self.sampler == "grid":
            for values in space.configurations():
                study.enqueue_trial(values, skip_if_exists=True)
        size = space.size()
        log.info(
            "search: %d trials (sampler %s, seed %d, %s) into %s; %d trials so far%s",
            self.n_trials,
            self.sampler,
            self.seed,
            "+".join(self.objectives),
            sweep_dir,
            len(study.trials),
            f"; {size} configurations in all" if size is not None else "",
        )
        returns = self.run_trials(study, space, sweep_dir, next_job, size)
        results = write_results(sweep_dir, study, self.objectives)
        if results["best"] is None:
            log.error("no trial was feasible (%d trials); see %s", len(results["trials"]), sweep_dir / "summary.md")
            sys.exit(1)
        return returns

    def search_space(self, arguments: list[str]) -> SearchSpace:
        """``hydra.sweeper.params``, then the command line (which wins for a key given in both)."""
        from pipeline.app.search.space import build_space

        assert self.config is not None and self.hydra_context is not None  # setup() ran
        config_loader, config = self.hydra_context.config_loader, self.config
        parser = OverridesParser.create(config_loader=config_loader)
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        latest: dict[str, Override] = {}
        for override in parser.parse_overrides(lines):
            latest.pop(override.get_key_element(), None)
            latest[override.get_key_element()] = override
        overrides = list(latest.values())
        per_backend = {
            backend: parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
            for backend, params in self.backend_params.items()
        }
        # A parsed override keeps the line it was parsed from.
        fixed = [o.input_line for o in overrides if not o.is_sweep_override() and o.input_line is not None]
        composed: dict[str, DictConfig] = {}

        def has_key(backend: str, key: str) -> bool:
            if backend not in composed:
                composed[backend] = config_loader.load_sweep_config(config, fixed + [f"backend={backend}"])
            return OmegaConf.select(composed[backend], key, default=_ABSENT) is not _ABSENT

        return build_space(overrides, per_backend, has_key)

    def run_trials(
        self, study: optuna.Study, space: SearchSpace, sweep_dir: Path, next_job: int, size: int | None
    ) -> list[Sequence[JobReturn]]:
        from pipeline.app.search.study import config_key

        tried = {
            config_key(t.params): t.number
            for t in study.trials
            if t.state.is_finished() and "duplicate_of" not in t.user_attrs
        }
        returns: list[Sequence[JobReturn]] = []
        started, launched, repeats = time.monotonic(), 0, 0
        while launched < self.n_trials:
            if self.timeout is not None and time.monotonic() - started > self.timeout:
                log.info("search: timeout of %gs reached after %d trials", self.timeout, launched)
                break
            batch: list[tuple[optuna.trial.Trial, dict[str, Any]]] = []
            repeated: list[tuple[optuna.trial.Trial, int]] = []  # (trial, the trial number it repeats)
            while len(batch) < min(self.n_jobs, self.n_trials - launched) and repeats < MAX_REPEATS:
                if size is not None and len(tried) >= size:
                    break
                trial = study.ask()
                values = space.suggest(trial)
                key = config_key(values)
                if key in tried:
                    repeated.append((trial, tried[key]))
                    repeats += 1
                    continue
                tried[key] = trial.number
                batch.append((trial, values))
                repeats = 0
            if batch:
                returns.append(self.launch_batch(study, space, sweep_dir, batch, next_job))
                next_job += len(batch)
                launched += len(batch)
            for trial, earlier in repeated:
                tell_repeat(study, trial, earlier)
            if not batch:
                log.info(
                    "search: every configuration has been tried (%s)",
                    f"{size} in all"
                    if size is not None
                    else f"{MAX_REPEATS} proposals in a row repeated earlier trials",
                )
                break
        return returns

    def launch_batch(
        self,
        study: optuna.Study,
        space: SearchSpace,
        sweep_dir: Path,
        batch: list[tuple[optuna.trial.Trial, dict[str, Any]]],
        first_job: int,
    ) -> Sequence[JobReturn]:
        from pipeline.app.search.results import describe

        overrides = [space.overrides(values) for _, values in batch]
        for index, ((trial, _), lines) in enumerate(zip(batch, overrides)):
            trial.set_user_attr("job", first_job + index)
            trial.set_user_attr("overrides", lines)
        try:  # as the basic sweeper does: a space that does not compose is the user's to fix, not a trial's result
            self.validate_batch_is_legal(overrides)
        except Exception as error:
            for trial, _ in batch:
                tell(study, trial, Outcome(False, "config", f"does not compose: {error}"), self.objectives)
            raise SearchConfigError(
                f"the search space gives a config that does not compose: {' '.join(overrides[0])}: {error}"
            ) from None
        launcher_error = None
        try:
            job_returns: Sequence[JobReturn | None] = self.launcher.launch(overrides, initial_job_idx=first_job)
        except Exception as error:  # e.g. a launcher whose workers died: the trials fail, the search goes on
            log.error("search: the launcher failed for jobs %d-%d: %s", first_job, first_job + len(batch) - 1, error)
            job_returns, launcher_error = [None] * len(batch), f"the launcher failed: {error}"
        for index, ((trial, _), job_return) in enumerate(zip(batch, job_returns)):
            outcome = outcome_of(
                read_report(job_dir(sweep_dir, job_return, first_job + index)),
                self.objectives,
                launcher_error or job_error(job_return),
            )
            tell(study, trial, outcome, self.objectives)
            log.info("trial %d (job %d): %s", trial.number, first_job + index, describe(outcome, self.objectives))
        return [r for r in job_returns if r is not None]

    def finish_interrupted(self, study: optuna.Study, sweep_dir: Path) -> None:
        """Trials an earlier invocation launched but never told (it was stopped): told from their reports."""
        import optuna

        from pipeline.app.search.study import unfinished

        for trial in unfinished(study):
            job = trial.user_attrs.get("job")
            report = read_report(sweep_dir / str(job)) if job is not None else None
            outcome = outcome_of(report, self.objectives, "the search stopped before this trial finished")
            tell(study, optuna.trial.Trial(study, trial._trial_id), outcome, self.objectives)


def tell(study: optuna.Study, trial: optuna.trial.Trial, outcome: Outcome, objectives: list[str]) -> None:
    """Feasible: complete, with its objective values. Infeasible: failed, so the sampler learns nothing from a
    latency it should not have; the reason is kept with the trial either way."""
    import optuna

    trial.set_user_attr(
        "outcome",
        {"status": outcome.status, "reason": outcome.reason, "values": outcome.values, "feasible": outcome.feasible},
    )
    if outcome.feasible:
        study.tell(trial, outcome.objective_values(objectives))
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def tell_repeat(study: optuna.Study, trial: optuna.trial.Trial, earlier: int) -> None:
    """A proposal that repeats trial ``earlier`` is not run again: it gets that trial's outcome."""
    import optuna

    previous = study.trials[earlier]
    trial.set_user_attr("duplicate_of", earlier)
    if previous.state == optuna.trial.TrialState.COMPLETE:
        study.tell(trial, previous.values)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def job_dir(sweep_dir: Path, job_return: JobReturn | None, num: int) -> Path:
    """Where the job wrote: the run_dir its report names if it returned one, else ``<sweep dir>/<num>``."""
    value = job_return._return_value if job_return is not None and job_return.status == JobStatus.COMPLETED else None
    if isinstance(value, dict) and value.get("run_dir"):
        return Path(value["run_dir"])
    return sweep_dir / str(num)


def job_error(job_return: JobReturn | None) -> str | None:
    if job_return is None:
        return "the launcher returned nothing for this job"
    if job_return.status == JobStatus.FAILED:
        return f"the job raised {type(job_return._return_value).__name__}: {job_return._return_value}"
    return None


def next_job_number(study: optuna.Study, sweep_dir: Path) -> int:
    jobs = [t.user_attrs["job"] for t in study.trials if "job" in t.user_attrs]
    dirs = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(jobs + dirs, default=-1) + 1
