"""One way for a benchmark to write its results: the record plus where it ran, as canonical JSON."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from pipeline.core.environment import git_state, package_versions
from pipeline.core.files import write_json

RESULTS = Path(__file__).resolve().parent / "results"  # wherever the script is run from


def results_path(name: str) -> str:
    """The default ``--out`` of a benchmark: ``benchmarks/results/<name>``."""
    return str(RESULTS / name)


def write_results(path: str, record: dict[str, Any]) -> None:
    """``record`` with an ``env`` entry (package versions, git state, machine, torch threads), written to ``path``."""
    env = {
        **package_versions(),
        "git": git_state(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    write_json(Path(path), {**record, "env": env})
    print(f"\nwrote {path}")
