"""The two layers: the core library runs without Hydra; backends use only the contract module."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LOWER_WITHOUT_THE_APP = """
import sys, torch, pipeline
from pipeline import zoo
x = torch.randn(2, 64)
for backend, frontend in [("reference", "export"), ("onnxruntime", "export"), ("torchscript", "torchscript")]:
    model = zoo.MLP().eval()
    lowered = pipeline.to_backend(backend, model, {"forward": {}}, frontend=frontend, example_inputs={"forward": (x,)})
    torch.testing.assert_close(lowered(x), model(x), atol=1e-5, rtol=1e-4)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("hydra", "omegaconf") or m.startswith("pipeline.app"))
print(loaded)
"""


def test_the_core_lowers_and_runs_on_three_backends_without_importing_hydra_or_omegaconf():
    done = subprocess.run(
        [sys.executable, "-c", LOWER_WITHOUT_THE_APP], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_core_modules_import_neither_hydra_omegaconf_nor_the_app():
    offending = {
        str(path.relative_to(ROOT)): name
        for path in (ROOT / "pipeline" / "core").glob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in ("hydra", "omegaconf") or name.startswith("pipeline.app")
    }
    assert offending == {}


def test_backends_import_only_the_contract_module_from_the_pipeline():
    allowed = ("pipeline.core.backend", "pipeline.backends")
    offending = {
        str(path.relative_to(ROOT)): name
        for path in (ROOT / "backends").rglob("*.py")
        if path.name != "__main__.py"  # `python -m pipeline.backends`, a command of the app
        for name in imported_modules(path)
        if name.split(".")[0] == "pipeline" and not name.startswith(allowed)
    }
    assert offending == {}


CAPTURE_A_NOISY_MODEL = """
import logging, sys, warnings, torch, pipeline
class Noisy(torch.nn.Module):
    def forward(self, x):
        logging.getLogger("transformers.x").warning("a library warns on the root logger")
        logging.getLogger("torch._dynamo.x").warning("torch warns on its own logger")
        print("a library prints"); sys.stderr.write("and writes to stderr\\n"); warnings.warn("and warns")
        return x + 1
captured = pipeline.capture(Noisy(), ["forward"], "export", {"forward": (torch.randn(3),)})
print("captured", type(captured.program["forward"]).__name__)
"""


def test_torch_output_during_capture_goes_to_the_log_even_with_no_logging_configured():
    done = subprocess.run(
        [sys.executable, "-c", CAPTURE_A_NOISY_MODEL], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "captured ExportedProgram"
    assert "a library prints" not in done.stdout and "RecursionError" not in done.stderr
