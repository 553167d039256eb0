"""A one-node SLURM cluster for the tests in this folder: `slurm.sh start` once per session, `slurm.sh stop` after.

The tests skip only when the script says this machine cannot have the cluster
(exit 77: not root, or apt-get cannot install slurm-wlm and munge); any other
failure to start is a failure, with the script's account of it.
"""

import os
import subprocess
from pathlib import Path

import pytest
from slurm_helpers import Cluster

SCRIPT = Path(__file__).resolve().with_name("slurm.sh")
CANNOT = 77


@pytest.fixture(scope="session")
def slurm_cluster():
    started = subprocess.run(
        [str(SCRIPT), "start"], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
    )
    if started.returncode == CANNOT:
        pytest.skip(f"no SLURM cluster on this machine: {started.stderr.strip().splitlines()[-1]}")
    try:
        assert started.returncode == 0, f"tests/cluster/slurm.sh start failed:\n{started.stderr[-3000:]}"
        # `export NAME=VALUE` lines: SLURM_CONF, which every client (sbatch, squeue, sacct) needs, and the partition.
        exported = dict(
            line.removeprefix("export ").split("=", 1)
            for line in started.stdout.splitlines()
            if line.startswith("export ")
        )
        previous = {name: os.environ.get(name) for name in exported}
        os.environ.update(exported)  # the sweeps run in subprocesses that inherit it, and so do their SLURM jobs
        try:
            yield Cluster(exported["PIPELINE_SLURM_PARTITION"])
        finally:
            for name, value in previous.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value
    finally:
        stopped = subprocess.run(
            [str(SCRIPT), "stop"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )
        assert stopped.returncode == 0, f"tests/cluster/slurm.sh stop failed:\n{stopped.stderr[-3000:]}"
