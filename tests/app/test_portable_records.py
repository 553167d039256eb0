"""Records anyone can reproduce: the same config in two checkouts at different paths gives the same bytes."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lower_in_a_clone(clone: Path) -> dict:
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=120)
    # The clone's own pipeline package (core, zoo, app) is imported: its files sit at another path.
    env = {**os.environ, "PYTHONPATH": str(clone)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "model=cnn",
            "frontend=torchscript",
            f"hydra.run.dir={clone / 'run'}",
            "latency.enabled=false",
            "verify.random_trials=0",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    files = {name: (clone / "run" / name).read_bytes() for name in ("model.lowered", "handles.json")}
    assert b"<project>/pipeline/zoo/__init__.py" in files["handles.json"]
    assert str(clone).encode() not in files["handles.json"] and str(clone).encode() not in files["model.lowered"]
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_two_checkouts_at_different_paths_give_byte_identical_artifacts_and_handles(tmp_path):
    if not (ROOT / ".git").exists():
        import pytest

        pytest.skip("needs a git checkout to clone")
    first = lower_in_a_clone(tmp_path / "a" / "checkout")
    second = lower_in_a_clone(tmp_path / "elsewhere" / "deeper" / "checkout")
    assert first == second
