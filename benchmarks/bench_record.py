"""The record stage's artifact write on HF BERT-base (`transformers.BertConfig()`, seeded weights) lowered to
onnxruntime: the streamed writer (`write_artifact`) against the writer before issue #24 (a deflated zip built in
memory, `getvalue()`, then written and fsynced), alternating, in one process after one lowering; each side's
traced peak of Python allocations too.

    .venv/bin/python benchmarks/bench_record.py [--rounds 2] [--out benchmarks/results/record.json]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import torch
import transformers
from results_file import results_path, write_results

import pipeline
from pipeline.core import artifact
from pipeline.core.files import write_atomic
from pipeline.core.hashing import canonical_json, sha256_bytes


def before_issue_24(lowered, path: Path) -> None:
    """The old record: every member deflated into a BytesIO, copied out, written and fsynced."""
    parts = {
        "payload.bin": lowered.payload,
        "handles.json": canonical_json(lowered.handle_map.to_json()),
        "code.py": lowered.code.encode(),
    }
    manifest = artifact._manifest(lowered, {name: sha256_bytes(data) for name, data in parts.items()})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in {"manifest.json": canonical_json(manifest), **parts}.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = buffer.getvalue()
    write_atomic(path, data)
    sha256_bytes(data)  # the report's digest of the file


def streamed(lowered, path: Path) -> None:
    artifact.write_artifact(lowered, path)


def timed(write, lowered, path: Path) -> tuple[float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    write(lowered, path)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=results_path("record.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig()).eval()
    ids = torch.randint(0, 30522, (1, 128))
    lowered = pipeline.to_backend("onnxruntime", model, {"forward": {}}, example_inputs={"forward": (ids,)})
    sides = {"before (deflated, in memory)": before_issue_24, "streamed (stored)": streamed}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.rounds):
            for name, write in sides.items():
                results[name].append(timed(write, lowered, Path(directory) / "bert.lowered"))
    print(f"payload {len(lowered.payload) / 2**20:.0f} MiB")
    print(f"{'writer':32} {'seconds (min)':>14} {'traced peak MiB':>16}")
    for name, runs in results.items():
        print(f"{name:32} {min(s for s, _ in runs):14.2f} {max(p for _, p in runs):16.0f}")
    write_results(
        args.out,
        {
            "model": "BertModel(BertConfig())",
            "backend": "onnxruntime",
            "payload_bytes": len(lowered.payload),
            "sides": {name: [{"seconds": s, "traced_peak_mib": p} for s, p in runs] for name, runs in results.items()},
        },
    )


if __name__ == "__main__":
    main()
