"""The search sweeper: ``python -m pipeline -m hydra/sweeper=search [SPACE]``, the fastest lowering that stays correct.

Instead of one job per combination, a seeded optuna sampler (TPE by default)
proposes trials; each trial is an ordinary sweep job, launched through
whichever Hydra launcher is chosen, and its own ``report.json`` says how it
went. The modules, one job each:

* `config`: the sweeper's options (``hydra.sweeper.*``) and their checks.
* `space`: the search space from Hydra's override grammar (``choice``,
  ``range``, ``interval``); options of one backend are sampled only when that
  backend is chosen.
* `objective`: a trial's outcome from its report: feasible (it ran and passed
  verify) with its objective values, or infeasible with the reason.
* `study`: the optuna study in the sweep directory (journal file storage), so
  running the same command again continues it.
* `results`: ``summary.*``, ``search.png``, ``best.yaml`` and the command that
  reproduces the best trial.
* `sweeper`: the Hydra `Sweeper` that drives them (ask, launch, tell).

Hydra instantiates sweepers only from the ``hydra_plugins`` package, so
``hydra_plugins.pipeline_search`` names the class and registers the config.
"""
