"""The progress marks a long stage's heartbeat reports (`pipeline.core.progress`)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from pipeline.app.run import Stages
from pipeline.core import progress


def test_no_step_marked_describes_nothing() -> None:
    assert progress.describe() is None


def test_innermost_step_named_with_every_enclosing_detail() -> None:
    with progress.step("executorch: preprocess", method="forward"):
        with progress.step("executorch: to_edge_transform_and_lower", partition="2/3"):
            started = progress.current()[-1].started
            text = progress.describe(now=started + 35.2)
    assert text == "executorch: to_edge_transform_and_lower (method forward, partition 2/3), step running 35 s"
    assert progress.current() == ()


def test_a_failing_step_is_unmarked() -> None:
    with pytest.raises(RuntimeError), progress.step("onnxruntime: torch.onnx.export", method="forward"):
        raise RuntimeError("exporter failed")
    assert progress.describe() is None


def test_steps_of_another_thread_are_seen() -> None:
    entered, leave = threading.Event(), threading.Event()

    def work() -> None:
        with progress.step("inductor: aoti_compile_and_package", method="forward"):
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert entered.wait(5)
        assert (progress.describe() or "").startswith("inductor: aoti_compile_and_package (method forward)")
    finally:
        leave.set()
        thread.join()


def test_heartbeat_line_without_a_step_says_still_running() -> None:
    line = Stages.heartbeat_line("lower", time.perf_counter() - 42.4)
    assert line == "lower        42 s: still running"


def test_heartbeat_of_a_slow_stage_names_its_step(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(Stages, "HEARTBEAT_S", 0.05)
    stages = Stages()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        with stages("lower"), progress.step("executorch: to_executorch", method="forward"):
            time.sleep(0.3)
    beats = [r.getMessage() for r in caplog.records if "step running" in r.getMessage()]
    assert beats, caplog.text
    assert beats[0].startswith("lower        0 s: executorch: to_executorch (method forward), step running 0 s")


def test_short_stage_stays_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline"):
        with Stages()("capture"):
            pass
    assert not [r for r in caplog.records if "running" in r.getMessage()]
