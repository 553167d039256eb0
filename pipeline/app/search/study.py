"""The optuna study of a search, kept in the sweep directory so that the same command continues it.

Storage is optuna's journal file (``study.journal``): an append-only log of
operations, no database. Each trial carries user attributes the results are
built from: ``job`` (its job number and directory name), ``overrides``,
``status`` and ``reason``; a configuration already tried is not run again, and
its trial says ``duplicate_of``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import optuna

STUDY_FILE = "study.journal"


def open_study(sweep_dir: Path, name: str, sampler_name: str, seed: int, n_startup_trials: int,
               objectives: List[str]) -> optuna.Study:
    """Create the study, or load it if the sweep directory has one; the sampler is seeded from ``seed`` and the
    number of trials so far, so that a resumed search does not propose its first trials again."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper logs each trial itself
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / STUDY_FILE)))
    directions = ["minimize"] * len(objectives)
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
    recorded = study.user_attrs.get("objectives")
    if recorded is not None and recorded != objectives:
        raise ValueError(f"{sweep_dir / STUDY_FILE}: this study was run with objectives={recorded}, not "
                         f"{objectives}; continue it with the same objectives, or use another hydra.sweep.dir.")
    study.set_user_attr("objectives", objectives)
    study.sampler = make_sampler(sampler_name, seed + len(study.trials), n_startup_trials)
    return study


def make_sampler(name: str, seed: int, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)  # random; grid trials are enqueued, their sampler unused


def unfinished(study: optuna.Study) -> List[Any]:
    """Trials an earlier invocation asked for but never told: it was stopped while they ran."""
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]


def config_key(params: dict) -> str:
    """One configuration's identity, for finding trials that repeat it."""
    return repr(sorted((name, repr(value)) for name, value in params.items()))
