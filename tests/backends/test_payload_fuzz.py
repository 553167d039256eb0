"""The mutation campaign: no mutant of a native payload kills or hangs the process that loads it.

For each backend whose payload native code reads (executorch, onnxruntime,
openvino, torchscript, inductor), the zoo MLP is lowered and saved, and 1,000
seeded mutants of its payload are made (`native_mutants.mutant_artifact`: bit
flips, random bytes, truncation, extreme u32 values at aligned offsets,
insertions, in the blob or inside a stored zip member, with every hash of the
envelope recomputed). Each is loaded through the public ``load_lowered``, with
its default isolation, and called once on valid inputs if it loads, in a forked
child that reports how it ended (`native_mutants.load_and_call`). A death (a
signal, an exit without a report), a hang (no answer in `TIMEOUT` s), or a
load that fails with anything but an `ArtifactError` fails the test; a call of
a mutant that loaded may fail, with the pipeline's errors only. TorchScript and
AOTInductor payloads carry code, so they are loaded with ``trust_code=True``;
a mutated AOTInductor library can load and then crash when its code runs,
which isolating the load cannot catch (that is what trusting the code means):
such deaths in the call are counted and printed for the backends that carry
code, and fail the test for the others.

``PIPELINE_FUZZ_SCALE`` scales the number of mutants (0.1 for a quick look, 5
for a longer campaign) and ``PIPELINE_FUZZ_SEED`` moves the seeds, so a
campaign can explore mutants that earlier ones did not. Each backend prints
its outcomes and wall time.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from native_mutants import DEATH, HANG, load_and_call, mutant_artifact

import pipeline
from pipeline import zoo

SCALE = float(os.environ.get("PIPELINE_FUZZ_SCALE", "1"))
FIRST_SEED = int(os.environ.get("PIPELINE_FUZZ_SEED", "0"))
MUTANTS = max(1, round(1000 * SCALE))
TIMEOUT = 120  # s for one load and call; a valid one takes well under a second
CARRY_CODE = ("torchscript", "inductor")
CALL_ERRORS = ("BackendRuntimeError", "ArgumentError", "LoweringError")  # what a mutant's call may raise


def saved_mlp(backend: str, directory, inductor_mlp):
    if backend == "inductor":
        return inductor_mlp[3]  # the session's AOTInductor compile, shared with the inductor tests
    if not pipeline.get_backend(backend).backend_cls().is_available():
        pytest.skip(f"backend {backend!r} is not installed")
    model, inputs = zoo.build("mlp"), zoo.example_inputs("mlp")
    frontend = "torchscript" if backend == "torchscript" else "export"
    lowered = pipeline.to_backend(backend, model, {m: {} for m in inputs}, example_inputs=inputs, frontend=frontend)
    return pipeline.save_lowered(lowered, directory / f"{backend}.lowered")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["executorch", "onnxruntime", "openvino", "torchscript", "inductor"])
def test_no_mutant_of_a_native_payload_kills_or_hangs_the_loader(backend, tmp_path, request):
    base = saved_mlp(backend, tmp_path, request.getfixturevalue("inductor_mlp") if backend == "inductor" else None)
    inputs = zoo.example_inputs("mlp")["forward"]
    trust_code = backend in CARRY_CODE
    # Loaded once here first: the runtime is imported before the children fork (as in a process that loads
    # many files), and the valid artifact must load and run through the same harness.
    pipeline.load_lowered(base, trust_code=trust_code)(*inputs)
    assert load_and_call(base, inputs, trust_code=trust_code, timeout=TIMEOUT)["outcome"] == "loaded"
    outcomes, failures = Counter(), []
    start = time.perf_counter()
    mutant = tmp_path / "mutant.lowered"
    for seed in range(FIRST_SEED, FIRST_SEED + MUTANTS):
        what = mutant_artifact(base, mutant, backend, seed)
        report = load_and_call(mutant, inputs, trust_code=trust_code, timeout=TIMEOUT)
        outcome = report["outcome"]
        if outcome == DEATH and report["stage"] == "call" and trust_code:
            outcomes["death in the call (trusted code)"] += 1
            continue
        if outcome == "loaded":
            outcomes[f"loaded, call {report.get('call')}"] += 1
            bad = report.get("call") not in ("ran",) + CALL_ERRORS
        else:
            outcomes[outcome if outcome != DEATH else f"death while {report['stage']}ing"] += 1
            bad = outcome in (DEATH, HANG, "error")
        if bad:
            failures.append(f"seed {seed} ({what}): {report}")
    elapsed = time.perf_counter() - start
    print(f"\n{backend}: {MUTANTS} mutants in {elapsed:.0f} s: {dict(sorted(outcomes.items()))}")
    assert not failures, f"{len(failures)} of {MUTANTS} mutants:\n" + "\n".join(f[:600] for f in failures[:10])
