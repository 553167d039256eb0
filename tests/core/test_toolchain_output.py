"""The library is quiet: what toolchains and native runtimes print goes to the ``pipeline.torch`` logger,
never to the terminal of a user of `to_backend`, `load_lowered` or a lowered module's call."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.core import toolchain_output

LOWER_AND_SAVE = """
    import sys, torch, pipeline
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    x = torch.randn(2, 4)
    lowered = pipeline.to_backend(sys.argv[1], model, {"forward": {}}, example_inputs={"forward": (x,)})
    lowered(x)
    pipeline.save_lowered(lowered, sys.argv[2])
"""
LOAD_AND_CALL = """
    import sys, torch, pipeline
    pipeline.load_lowered(sys.argv[2])(torch.randn(2, 4))
"""


def test_native_writes_to_stderr_become_log_records_and_not_output(capfd, caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.torch"), toolchain_output.logged():
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        print("a toolchain's print")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    logged = [r.getMessage() for r in caplog.records if r.name == "pipeline.torch"]
    assert "[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version" in logged
    assert "a toolchain's print" in logged


def test_stderr_is_restored_after_the_block(capfd):
    with toolchain_output.logged():
        pass
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


@pytest.mark.parametrize("backend", ["executorch", "openvino", "onnxruntime"])
def test_lowering_saving_loading_and_calling_print_nothing(tmp_path, backend):
    """Each step in a fresh process: runtimes print as they are first imported and loaded."""
    path = tmp_path / "model.lowered"
    for script in (LOWER_AND_SAVE, LOAD_AND_CALL):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), backend, str(path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout == "" and done.stderr == "", (done.stdout + done.stderr)[-3000:]
