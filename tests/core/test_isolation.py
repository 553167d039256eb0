"""Isolation: a received payload that kills its runtime is an ArtifactError, and this process lives on.

``crashing_backend`` declares ``native_payload``; its compile aborts the
process (after writing a line to stderr, as a runtime does) when the payload
says ``abort``. Lowering writes a good payload; the test forges ``abort`` into
the artifact with every hash recomputed, as an adversary would. What an
unisolated load of it does is seen through `native_mutants.load_and_call`,
which loads in a forked child of its own.
"""

from __future__ import annotations

import functools
import gc
import os
import signal

import pytest
import torch
from artifact_forgery import forge
from native_mutants import DEATH, load_and_call

import pipeline
from pipeline import zoo
from pipeline.core import isolation

NAME = "crashing_backend"


class CrashingBackend(pipeline.Backend):
    """Runs BasicModule's forward (its sum and difference); compiling the payload ``abort`` aborts,
    ``raise`` raises."""

    __test__ = False
    name = NAME
    native_payload = True

    @staticmethod
    def preprocess(program, method_compile_spec, generate_debug_handles):
        return b"fine"

    def compile(self, payload, method_compile_spec):
        if payload == b"abort":
            os.write(2, b"crashing_backend: hostile payload\n")
            os.abort()
        if payload == b"collect":  # a runtime that collects garbage while it loads
            gc.collect()
        if payload == b"matmul":  # a runtime that runs a parallel torch op while it loads
            torch.randn(512, 512) @ torch.randn(512, 512)
        if payload == b"raise":
            raise pipeline.LoweringError("crashing_backend: this payload is refused")
        return {method: functools.partial(self.run, method) for method in method_compile_spec}

    def run(self, handle, inputs):
        return [inputs[0] + inputs[1], inputs[0] - inputs[1]]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """``{"fine" | "abort" | "raise" | "collect" | "matmul" | "reference": path}``."""
    if NAME not in pipeline.list_backends():
        pipeline.register_backend(CrashingBackend)
    directory = tmp_path_factory.mktemp("isolation")
    model, inputs = zoo.BasicModule(), {"forward": (torch.randn(5), torch.randn(5))}
    fine = pipeline.save_lowered(
        pipeline.to_backend(NAME, model, {"forward": {}}, example_inputs=inputs), directory / "fine.lowered"
    )
    paths = {
        "fine": fine,
        "reference": pipeline.save_lowered(
            pipeline.to_backend("reference", model, {"forward": {}}, example_inputs=inputs), directory / "ref.lowered"
        ),
    }
    for payload in ("abort", "raise", "collect", "matmul"):
        paths[payload] = forge(fine, directory / f"{payload}.lowered", parts={"payload.bin": payload.encode()})
    return paths


def test_a_payload_that_aborts_its_runtime_is_an_artifact_error_naming_the_file_the_signal_and_the_output(artifacts):
    with pytest.raises(pipeline.ArtifactError) as raised:
        pipeline.load_lowered(artifacts["abort"])
    message = str(raised.value)
    assert str(artifacts["abort"]) in message and repr(NAME) in message and "payload.bin" in message
    assert "SIGABRT" in message and "not loaded into this process" in message
    assert "crashing_backend: hostile payload" in message  # the runtime's last words


def test_without_isolation_the_same_file_kills_the_process_that_loads_it(artifacts):
    inputs = (torch.randn(5), torch.randn(5))
    unisolated = load_and_call(artifacts["abort"], inputs, trust_code=False, timeout=60, isolate=False)
    assert unisolated["outcome"] == DEATH and "SIGABRT" in unisolated["message"]
    isolated = load_and_call(artifacts["abort"], inputs, trust_code=False, timeout=60)
    assert isolated["outcome"] == "refused" and "SIGABRT" in isolated["message"]


def test_a_good_payload_loads_and_runs_in_this_process_after_the_child_loaded_it(artifacts):
    x, h = torch.randn(5), torch.randn(5)
    total, difference = pipeline.load_lowered(artifacts["fine"])(x, h)
    assert total.equal(x + h) and difference.equal(x - h)


def test_an_ordinary_error_in_the_child_is_raised_as_an_unisolated_load_raises_it(artifacts):
    errors = []
    for isolate in (None, False):
        with pytest.raises(pipeline.ArtifactError) as raised:
            pipeline.load_lowered(artifacts["raise"], isolate=isolate)
        errors.append(str(raised.value))
    assert errors[0] == errors[1] and "this payload is refused" in errors[0]


def test_only_native_payloads_are_isolated_by_default_and_isolate_overrides_it(artifacts, monkeypatch):
    children = []
    monkeypatch.setattr(isolation, "load_in_child", lambda path, backend, build: children.append(backend))
    pipeline.load_lowered(artifacts["reference"])
    pipeline.load_lowered(artifacts["fine"], isolate=False)
    assert children == []
    pipeline.load_lowered(artifacts["fine"])
    pipeline.load_lowered(artifacts["reference"], isolate=True)
    assert children == [NAME, "reference"]
    assert {
        name: pipeline.get_backend(name).native_payload
        for name in ("reference", "executorch", "onnxruntime", "openvino", "torchscript", "inductor")
    } == {
        "reference": False,
        "executorch": True,
        "onnxruntime": True,
        "openvino": True,
        "torchscript": True,
        "inductor": True,
    }


def test_isolate_true_without_fork_is_refused_and_the_default_loads_in_process(artifacts, monkeypatch):
    monkeypatch.setattr(isolation, "can_fork", lambda: False)
    with pytest.raises(pipeline.ArtifactError, match="isolate=True needs os.fork.*isolate=False"):
        pipeline.load_lowered(artifacts["fine"], isolate=True)
    assert pipeline.load_lowered(artifacts["fine"]).methods == ["forward"]


class Finalized:
    """Garbage whose destructor records the process that ran it (a runtime object's, in a real parent)."""

    def __init__(self, record):
        self.record, self.cycle = record, self

    def __del__(self):
        with open(self.record, "a") as handle:
            handle.write(f"{os.getpid()}\n")


def test_the_child_never_collects_the_parents_garbage(artifacts, tmp_path):
    """A forked child that ran the parent's destructors would hang on an OpenVINO model's executor, whose
    worker threads it does not have: objects that exist at the fork are frozen for the child."""
    record = tmp_path / "finalized-by"
    gc.disable()
    try:
        Finalized(record)  # a cycle: only the collector frees it
        pipeline.load_lowered(artifacts["collect"])  # the child's compile collects garbage, then this process's
    finally:
        gc.enable()
    assert record.read_text().split() == [str(os.getpid())]


class Hang(BaseException):
    pass


def test_a_parallel_torch_op_in_the_child_does_not_wait_for_the_parents_openmp_threads(artifacts):
    def alarm(signum, frame):
        raise Hang("the isolated load did not finish in 60 s")

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    torch.randn(512, 512) @ torch.randn(512, 512)  # OpenMP's team of threads now exists, in this process only
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    try:
        loaded = pipeline.load_lowered(artifacts["matmul"])  # waiting, interrupted, kills the child
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        torch.set_num_threads(threads)
    assert loaded.methods == ["forward"]
