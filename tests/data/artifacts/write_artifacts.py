"""Write the committed artifacts of this directory with the pipeline that is importable (see README.md).

    python tests/data/artifacts/write_artifacts.py VERSION_LABEL

writes ``mlp-<label>.lowered`` and ``basic-<label>.lowered`` (reference backend) and, beside each,
``<name>.io.json``: the inputs and the outputs the lowered module gave, as float32 values in JSON.
"""

import json
import sys
from pathlib import Path

import torch

import pipeline
from pipeline.zoo import MLP, BasicModule

HERE = Path(__file__).resolve().parent


def values(tensor: torch.Tensor) -> dict:
    return {
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "shape": list(tensor.shape),
        "values": tensor.flatten().tolist(),
    }


def write(name: str, model: torch.nn.Module, frontend: str, inputs: dict[str, tuple[torch.Tensor, ...]]) -> None:
    example = inputs if frontend == "export" else None
    lowered = pipeline.to_backend(
        "reference", model, {m: {} for m in inputs}, frontend=frontend, example_inputs=example
    )
    pipeline.save_lowered(lowered, HERE / f"{name}.lowered")
    record = {}
    for method, args in inputs.items():
        outputs = getattr(lowered, method)(*args)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        record[method] = {"inputs": [values(a) for a in args], "outputs": [values(o) for o in outputs]}
    (HERE / f"{name}.io.json").write_text(json.dumps(record, indent=1) + "\n")


def main(label: str) -> None:
    torch.manual_seed(0)
    mlp = MLP(in_features=4, hidden=8, out_features=3, layers=1).eval()
    write(f"mlp-{label}", mlp, "export", {"forward": (torch.randn(2, 4),)})
    x, h = torch.randn(2, 3), torch.randn(2, 3)
    write(f"basic-{label}", BasicModule(), "torchscript", {"forward": (x, h), "accum": (x, h), "sub_accum": (x, h)})


if __name__ == "__main__":
    main(sys.argv[1])
