"""The real-model matrix: architectures people lower, on every backend, run as the app runs them.

One list serves the tests (``tests/app/test_real_models.py``) and the README's
table (``benchmarks/bench_real_models.py``): each model is a config in
``conf/model/`` (built from code with seeded random weights; nothing is
downloaded), each backend a set of overrides. `lower` composes the config and
runs every stage but latency, so a cell is the same record a user gets from
``python -m pipeline model=<model> <overrides>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# conf/model/<name>.yaml: a ResNet-like CNN, MobileNetV3 and EfficientNet blocks, recurrent taggers, attention
# with a padding mask, torch.cond, and Hugging Face models as they come (encoder, decoder, encoder-decoder, vision).
REAL_MODELS = (
    "resnet",
    "mobilenet_v3",
    "efficientnet",
    "lstm_tagger",
    "gru_tagger",
    "attention_encoder",
    "cond_gate",
    "hf_bert",
    "hf_distilbert",
    "hf_gpt2",
    "hf_t5",
    "hf_vit",
)

# backend -> the overrides that choose it and the frontend it is lowered from.
BACKENDS: dict[str, list[str]] = {
    "reference": ["backend=reference", "frontend=export"],
    "onnxruntime": ["backend=onnxruntime", "frontend=export"],
    "torchscript": [
        "backend=torchscript",
        "frontend=torchscript",
        "frontend.mode=trace",
        "++model.dynamic_shapes=null",
    ],
    "inductor": ["backend=inductor", "frontend=export"],
    "executorch": ["backend=executorch", "frontend=export"],
    "openvino": ["backend=openvino", "frontend=export"],
}
QUICK = ["latency.enabled=false", "verify.random_trials=2", "threads=1"]

# (model, backend) -> the stage it fails in, why, and the advice its error gives (if any).
# torch.cond can be exported but neither traced nor scripted, and XNNPACK does not delegate inside
# its branches. GPT-2 with a dynamic batch on executorch lowers, and verify finds that the runtime's arange
# kernel cannot resize its output at a batch of 1 (error 0x12): an upstream limitation.
EXPECTED_FAILURES = {
    ("cond_gate", "torchscript"): ("capture", "torch.jit.trace failed for CondGate", "frontend=export"),
    ("cond_gate", "executorch"): ("lower", "XNNPACK does not delegate inside its branches", "partitioner=none"),
    ("hf_gpt2", "executorch"): ("verify", "failed with error 0x12 at instruction 9 (aten::arange.start_out)", None),
}


def lower(model: str, backend: str, out_dir: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``model`` on ``backend`` into ``out_dir``; the run's report."""
    from pipeline.app.config import compose_config, validate
    from pipeline.app.run import run

    overrides = [f"model={model}", *BACKENDS[backend], *QUICK, *extra]
    request = validate(compose_config(overrides))
    return run(request, out_dir, extra_record={"overrides": overrides})
