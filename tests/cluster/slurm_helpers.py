"""The one-node SLURM cluster the tests in this folder run on, as they see it: its partition, squeue and sacct."""

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import yaml

UNFINISHED = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED"}


@dataclass
class Cluster:
    partition: str

    def launcher(self) -> List[str]:
        """``hydra/launcher=slurm`` with what a user sets for their cluster: partition, CPUs, memory, time limit."""
        return [
            "hydra/launcher=slurm",
            f"hydra.launcher.partition={self.partition}",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=15",
        ]

    def sacct(self, job_ids: List[str]) -> Dict[str, Dict[str, str]]:
        """Each job's record in SLURM's accounting once it has ended (waiting for that, 2 minutes at most:
        a sweep takes a job's result as soon as it is written, while the job may still be completing)."""
        deadline = time.monotonic() + 120
        while True:
            done = run(
                "sacct",
                "-X",
                "-n",
                "-P",
                "-o",
                "JobID,State,Partition,AllocCPUS",
                *[arg for job_id in job_ids for arg in ("-j", job_id)],
            )
            rows = {
                row[0]: dict(zip(("state", "partition", "cpus"), row[1:]))
                for row in (line.split("|") for line in done.stdout.splitlines() if line)
            }
            ended = all(job_id in rows and rows[job_id]["state"].split()[0] not in UNFINISHED for job_id in job_ids)
            if ended or time.monotonic() > deadline:
                return {job_id: rows.get(job_id, {}) for job_id in job_ids}
            time.sleep(1)

    def running(self) -> List[str]:
        return run("squeue", "-h", "-t", "RUNNING", "-o", "%i").stdout.split()


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def slurm_job_id(job_dir: Path) -> str:
    """The SLURM job id a sweep job ran as (``ARRAY_TASK``), as Hydra recorded it in the job's directory."""
    return str(yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])
