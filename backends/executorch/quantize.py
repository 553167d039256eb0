"""int8 quantization of an exported method through PT2E, with the XNNPACK quantizer.

``quantize(exported, spec)`` returns a new ExportedProgram whose linear,
convolution and other XNNPACK-quantizable ops compute in int8:

* ``prepare_pt2e`` inserts observers (torchao's PT2E, which ExecuTorch 1.x
  uses; ``torch.ao.quantization`` is the deprecated copy);
* the prepared module runs on calibration inputs: the method's example inputs
  (``int8_dynamic``: only those, weight ranges need nothing more) and, for
  ``int8_static``, ``calibration_samples`` random inputs of the same shapes
  and dtypes, drawn from a generator seeded with `CALIBRATION_SEED` so that the
  same model gives the same payload;
* ``convert_pt2e`` folds the observed ranges into quantize/dequantize pairs,
  and the result is exported again (XNNPACK's partitioner fuses each pair with
  its op into one int8 kernel).

Nodes keep their ``meta``, so the debug handles preprocess put there survive;
the quantize/dequantize nodes convert inserts have none (`partition` gives them
the handles of the op they feed).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from pipeline.backends.executorch.compile_spec import NAME, ExecuTorchCompileSpec, Quantize
from pipeline.backends.executorch.installed import executorch_module
from pipeline.core.backend import LoweringError

CALIBRATION_SEED = 0


def quantize(
    exported: torch.export.ExportedProgram, spec: ExecuTorchCompileSpec, method: str
) -> torch.export.ExportedProgram:
    pt2e = executorch_module("torchao.quantization.pt2e.quantize_pt2e")
    xnnpack = executorch_module("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    config = xnnpack.get_symmetric_quantization_config(
        is_per_channel=True, is_dynamic=spec.quantize is Quantize.int8_dynamic
    )
    quantizer = xnnpack.XNNPACKQuantizer().set_global(config)
    args, kwargs = example_inputs(exported, method)
    samples = spec.calibration_samples if spec.quantize is Quantize.int8_static else 0
    try:
        prepared = pt2e.prepare_pt2e(exported.module(), quantizer)
        with torch.no_grad():
            for sample_args, sample_kwargs in [(args, kwargs)] + calibration_inputs(args, kwargs, samples):
                prepared(*sample_args, **sample_kwargs)
        converted = pt2e.convert_pt2e(prepared)
        return torch.export.export(converted, args, kwargs)
    except Exception as error:
        raise LoweringError(
            f"Backend {NAME!r}: quantize={spec.quantize.value} failed for method {method!r}: "
            f"{type(error).__name__}: {error}"
        ) from error


def example_inputs(exported: torch.export.ExportedProgram, method: str) -> tuple[tuple, dict[str, Any]]:
    """The inputs the method was exported with (torch.export keeps them in the program)."""
    found = exported.example_inputs
    if found is None:
        raise LoweringError(
            f"Backend {NAME!r}: method {method!r} has no example inputs recorded in its ExportedProgram; "
            "quantization calibrates on them. Export it with example inputs (torch.export.export(model, args))."
        )
    args, kwargs = found
    return tuple(args), dict(kwargs or {})


def calibration_inputs(args: tuple, kwargs: dict[str, Any], count: int) -> list[tuple[tuple, dict[str, Any]]]:
    """``count`` random inputs like ``(args, kwargs)``: every tensor leaf replaced by a random one of
    its shape and dtype (floats normal, integers within the example's range, booleans fair coins)."""
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    samples = []
    for _ in range(count):
        leaves, spec = pytree.tree_flatten((args, kwargs))
        new_args, new_kwargs = pytree.tree_unflatten([_random_like(leaf, generator) for leaf in leaves], spec)
        samples.append((tuple(new_args), dict(new_kwargs)))
    return samples


def _random_like(value: Any, generator: torch.Generator) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if value.dtype.is_floating_point:
        return torch.randn(value.shape, generator=generator, dtype=value.dtype)
    if value.dtype == torch.bool:
        return torch.randint(0, 2, value.shape, generator=generator).bool()
    if value.numel() == 0:
        return value.clone()
    low, high = int(value.min()), int(value.max())
    return torch.randint(low, high + 1, value.shape, generator=generator, dtype=value.dtype)
