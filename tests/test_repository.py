"""The repository's own promises: the README's test command is the one CI runs, the checks run before the
tests with pinned tools, and the package ships as typed."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def ci_command() -> str:
    return (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]


def test_the_readmes_test_command_is_the_one_ci_runs():
    command = ci_command()
    assert command.startswith("python3 -m venv .venv && ") and '-m pytest -q -rs -m "not slow"' in command
    assert f"```bash\n{command}\n```" in (ROOT / "README.md").read_text()


def test_ci_runs_the_pinned_linter_formatter_and_type_checker_before_the_tests():
    command = ci_command()
    steps = ["ruff check .", "ruff format --check .", ".venv/bin/mypy &&", "-m pytest"]
    positions = [command.index(step) for step in steps]
    assert positions == sorted(positions)
    test_extra = PYPROJECT["project"]["optional-dependencies"]["test"]
    assert "ruff==0.17.6" in test_extra and "mypy==2.4.1" in test_extra


def test_the_package_ships_its_type_marker_and_license():
    assert (ROOT / "pipeline" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["pipeline"]
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause" and (ROOT / "LICENSE").is_file()


def test_mypy_reads_the_backends_where_python_imports_them():
    # backends/ installs as pipeline.backends; mypy finds it through this link.
    link = ROOT / ".mypy_path" / "pipeline" / "backends"
    assert link.is_symlink() and link.resolve() == (ROOT / "backends").resolve()
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["pipeline.backends"] == "backends"
