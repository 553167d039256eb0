"""The models the backend benchmark runs, each with its inputs at a batch size.

The zoo's MLP, CNN and Transformer come from `pipeline.zoo`; ``hf_bert`` is
the Hugging Face BertModel of ``conf/model/hf_bert.yaml`` (a tiny BertConfig,
seeded random weights, ``input_ids`` and ``attention_mask`` of sequence length
8), composed through the app so that it is the model a user lowers with
``python -m pipeline model=hf_bert``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from pipeline import zoo

ZOO = ("mlp", "cnn", "transformer")
MODELS = (*ZOO, "hf_bert")


class Workload(NamedTuple):
    name: str
    model: torch.nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    torchscript_mode: str  # how the torchscript backend captures it: HF models trace, they do not script

    @property
    def example_inputs(self) -> dict[str, dict[str, Any]]:
        return {"forward": {"args": self.args, "kwargs": self.kwargs}}


def workload(name: str, batch: int) -> Workload:
    if name in ZOO:
        return Workload(name, zoo.build(name), zoo.example_inputs(name, batch=batch)["forward"], {}, "script")
    return _from_config(name, batch)


def _from_config(name: str, batch: int) -> Workload:
    from pipeline.app.config import compose_config, validate
    from pipeline.app.inputs import make_call
    from pipeline.app.run import build_model

    request = validate(compose_config([f"model={name}"]))
    spec = request.example_inputs["forward"]
    spec = dataclasses.replace(
        spec,
        args=[_batched(item, batch) for item in spec.args],
        kwargs={key: _batched(item, batch) for key, item in spec.kwargs.items()},
    )
    args, kwargs = make_call(spec, request.seed)
    return Workload(name, build_model(request), args, kwargs, "trace")


def _batched(item: Any, batch: int) -> Any:
    """An input spec with its first dimension set to ``batch`` (other values as they are)."""
    if not dataclasses.is_dataclass(item) or not getattr(item, "shape", None):
        return item
    return dataclasses.replace(item, shape=[batch, *item.shape[1:]])
