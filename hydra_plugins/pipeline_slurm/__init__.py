"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, which records every job, even one SLURM ended.

The plugin's own launcher collects the jobs' results in order and raises at the
first job that returned none: a job cancelled with ``scancel``, past its time
limit, killed for memory or on a lost node. The sweep then ends there, before
the later jobs have finished and before the summary is written. This one waits
for every job; a job with no result is recorded from its directory
(`pipeline.app.faults.record_lost_job`: its own report.json, which says
``interrupted`` with the stage when SLURM's SIGTERM reached it, plus SLURM's
state), so the summary lists it and the other jobs as they ended.

Hydra instantiates launchers only from the ``hydra_plugins`` package, hence
this module; ``conf/hydra/launcher/slurm.yaml`` names the class. Without the
``slurm`` extra there is nothing to subclass, and nothing is defined.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from pipeline.app.faults import record_lost_job

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # pip install -e '.[slurm]' brings it
    SubmititSlurmLauncher = None

log = logging.getLogger("pipeline")

if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            """Submit the batch as one job array, as the plugin's launcher does (hydra-submitit-launcher 1.2.0,
            pinned), then wait for every job and take each one's result or, failing that, its record."""
            import submitit

            from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

            assert self.config is not None and job_overrides
            executor = submitit.AutoExecutor(
                cluster="slurm",
                folder=self.params["submitit_folder"],
                slurm_max_num_timeout=self.params["max_num_timeout"],
            )
            shared = set(OmegaConf.structured(BaseQueueConf).keys())  # the rest are sbatch's, named slurm_*
            executor.update_parameters(
                **{
                    key if key in shared else f"slurm_{key}": value
                    for key, value in self.params.items()
                    if key not in ("submitit_folder", "max_num_timeout")
                }
            )
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            log.info("submitting %d SLURM jobs; their output is under %s", len(job_overrides), sweep_dir)
            nums = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
            for num, overrides in zip(nums, job_overrides):
                log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            count = len(nums)
            jobs = executor.map_array(
                self,
                [list(o) for o in job_overrides],
                ["hydra.sweep.dir"] * count,
                nums,
                [f"job_id_for_{num}" for num in nums],
                [Singleton.get_state()] * count,
            )
            return [
                self.result_of(job, num, list(overrides), sweep_dir)
                for job, num, overrides in zip(jobs, nums, job_overrides)
            ]

        @staticmethod
        def result_of(job: Any, num: int, overrides: list[str], sweep_dir: Path) -> JobReturn:
            """The job's JobReturn; for a job that returned none, its record, as the task's own return value
            would be (COMPLETED: the task records failures instead of raising, and so does this)."""
            from submitit.core.utils import FailedJobError, UncompletedJobError

            try:
                return job.results()[0]
            except (UncompletedJobError, FailedJobError) as error:
                cause = f"SLURM job {job.job_id} ended {job.state} without returning its result"
                report = record_lost_job(sweep_dir / str(num), cause, overrides)
                log.error(
                    "job %d: %s; recorded as %s in stage %s. submitit said: %s",
                    num,
                    cause,
                    report["status"],
                    report["stage"],
                    error,
                )
                return JobReturn(
                    overrides=overrides,
                    working_dir=str(sweep_dir / str(num)),
                    status=JobStatus.COMPLETED,
                    _return_value=report,
                )
