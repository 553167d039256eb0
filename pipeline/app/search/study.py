"""The optuna study of a search, kept in the sweep directory so that the same command continues it.

Storage is optuna's journal file (``study.journal``): an append-only log of
operations, no database. Each trial carries user attributes the results are
built from: ``job`` (its job number and directory name), ``overrides``,
``status`` and ``reason``; a configuration already tried is not run again, and
its trial says ``duplicate_of``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from pipeline.app.search.config import SearchConfigError

STUDY_FILE = "study.journal"


def open_study(
    sweep_dir: Path, name: str, sampler_name: str, seed: int, n_startup_trials: int, objectives: list[str]
) -> optuna.Study:
    """Create the study, or load it if the sweep directory has one; the sampler is seeded from ``seed`` and the
    number of trials so far, so that a resumed search does not propose its first trials again."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper logs each trial itself
    check_journal(sweep_dir / STUDY_FILE)
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / STUDY_FILE)))
    directions = [optuna.study.StudyDirection.MINIMIZE] * len(objectives)
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
    recorded = study.user_attrs.get("objectives")
    if recorded is not None and recorded != objectives:
        raise ValueError(
            f"{sweep_dir / STUDY_FILE}: this study was run with objectives={recorded}, not "
            f"{objectives}; continue it with the same objectives, or use another hydra.sweep.dir."
        )
    study.set_user_attr("objectives", objectives)
    study.sampler = make_sampler(sampler_name, seed + len(study.trials), n_startup_trials)
    return study


class JournalError(SearchConfigError):
    """A study journal that is not one a search wrote: the message names the file and the line."""


MAX_JOURNAL_LINE = 1 << 20
# The user attributes a search sets on a trial, and the type each must have: a received journal is data.
TRIAL_ATTRIBUTES: dict[str, type[Any]] = {"job": int, "overrides": list, "outcome": dict, "duplicate_of": int}


def check_journal(path: Path) -> None:
    """Read a journal as data before optuna replays it: every line a JSON object with an operation code, and
    every trial attribute of the search's own of the type the search writes (``job`` a job number, and so on).
    optuna would otherwise replay any value into the study, and the search would trip over it later."""
    import json

    from optuna.storages.journal._storage import JournalOperation

    if not path.exists():
        return
    codes = {operation.value for operation in JournalOperation}
    with path.open("rb") as journal:
        for number, line in enumerate(journal, start=1):
            where = f"{path}, line {number}"
            if len(line) > MAX_JOURNAL_LINE:
                raise JournalError(f"{where}: a line of over {MAX_JOURNAL_LINE} bytes is not a journal entry.")
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as error:
                raise JournalError(f"{where}: not JSON: {error}") from None
            if not isinstance(entry, dict) or entry.get("op_code") not in codes:
                raise JournalError(f"{where}: not a journal entry (an object with an optuna op_code).")
            attributes = entry.get("user_attr")
            for name, value in attributes.items() if isinstance(attributes, dict) else ():
                kind = TRIAL_ATTRIBUTES.get(name)
                if kind is not None and (
                    not isinstance(value, kind)
                    or isinstance(value, bool)
                    or (kind is int and value < 0)
                    or (name == "overrides" and not all(isinstance(o, str) for o in value))
                ):
                    raise JournalError(
                        f"{where}: trial attribute {name!r} is {value!r}; the search writes "
                        f"{'a list of override strings' if kind is list else 'a ' + kind.__name__}"
                        f"{' >= 0' if kind is int else ''}."
                    )


def make_sampler(name: str, seed: int, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    return optuna.samplers.RandomSampler(seed=seed)  # random; grid trials are enqueued, their sampler unused


def unfinished(study: optuna.Study) -> list[Any]:
    """Trials an earlier invocation asked for but never told: it was stopped while they ran."""
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]


def config_key(params: dict) -> str:
    """One configuration's identity, for finding trials that repeat it."""
    return repr(sorted((name, repr(value)) for name, value in params.items()))
