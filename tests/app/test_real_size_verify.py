"""ResNet-50, BERT-base and GPT-2 small at their default sizes (seeded random weights, built from their
``*Config()``), 224x224 images and 128 tokens, pass verify on onnxruntime and openvino at the backends' default
tolerance: the float32 rounding of fifty conv layers or twelve blocks is inside it. Slow: minutes each."""

import pytest

from pipeline.app.config import compose_config, validate
from pipeline.app.run import run

REAL_SIZE = {
    "resnet50": [
        "model._target_=transformers.ResNetModel",
        "model.example_inputs={forward:[{shape:[1,3,224,224]}]}",
    ],
    "bert_base": [
        "model._target_=transformers.BertModel",
        "model.example_inputs={forward:{args:[{shape:[1,128],dtype:int64,low:0,high:30522}]}}",
    ],
    "gpt2": [
        "model._target_=transformers.GPT2LMHeadModel",
        "model.example_inputs={forward:{args:[{shape:[1,128],dtype:int64,low:0,high:50257}],kwargs:{use_cache:false}}}",
    ],
}


def lower_real_size(model, backend, out_dir):
    overrides = ["model=custom", *REAL_SIZE[model], "+model.config={}", f"backend={backend}"]
    overrides += ["latency.enabled=false", "verify.random_trials=1", "threads=2"]
    return run(validate(compose_config(overrides)), out_dir)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("model", list(REAL_SIZE))
def test_real_size_models_verify_at_the_default_tolerance(model, backend, tmp_path):
    report = lower_real_size(model, backend, tmp_path)
    assert report["status"] == "ok", (report["stage"], report["error"])
    verified = report["verify"]
    assert verified["passed"] and verified["needed_atol"] <= verified["atol"] / 2  # a 2x margin at least
