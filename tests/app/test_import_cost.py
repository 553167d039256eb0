"""Registering the configs imports no backend; a command imports only the backends it names."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BACKENDS_LOADED = """
import atexit, json, runpy, sys
def loaded():
    backends = sorted({m.split(".")[2] for m in sys.modules if m.startswith("pipeline.backends.")})
    sys.__stdout__.write("\\n" + json.dumps(backends) + "\\n")
atexit.register(loaded)
sys.argv = ["pipeline", *sys.argv[1:]]
{body}
"""


def backends_loaded(body: str, *argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", BACKENDS_LOADED.replace("{body}", body), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_registering_the_configs_imports_no_backend():
    assert backends_loaded("import pipeline.conf") == []


def test_help_imports_only_the_backend_of_the_default_config():
    assert backends_loaded("runpy.run_module('pipeline', run_name='__main__')", "--help") == ["reference"]


def test_a_composed_config_imports_the_backend_it_names_and_has_its_options():
    body = (
        "from pipeline.app.config import compose_config\n"
        "cfg = compose_config(['backend=torchscript'])\n"
        "assert cfg.backend.compile_spec.forward == {'freeze': True, 'optimize_for_inference': True}\n"
    )
    assert backends_loaded(body) == ["torchscript"]
