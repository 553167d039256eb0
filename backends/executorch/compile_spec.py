"""`ExecuTorchCompileSpec`: the options of one lowered method.

They arrive as a plain dict ``{option: value}`` (``{}`` means all defaults);
enum options take their names as strings::

    pipeline.to_backend("executorch", model, {"forward": {"quantize": "int8_static", "threads": 1}}, ...)
"""

import enum
from dataclasses import dataclass

from pipeline.core.backend import MAX_CALIBRATION_SAMPLES, MAX_THREADS, FieldError, out_of_range

NAME = "executorch"


class Partitioner(enum.Enum):
    """Which nodes go into a delegate; the rest run on ExecuTorch's portable kernels."""

    xnnpack = "xnnpack"  # XNNPACK takes every node it supports
    none = "none"  # no delegate: portable kernels only


class Quantize(enum.Enum):
    """int8 quantization through PT2E with the XNNPACK quantizer (symmetric, per-channel weights)."""

    none = "none"
    int8_dynamic = "int8_dynamic"  # weights int8; activations quantized per call from their own range
    int8_static = "int8_static"  # weights and activations int8, activation ranges calibrated ahead of time


@dataclass
class ExecuTorchCompileSpec:
    partitioner: Partitioner = Partitioner.xnnpack
    # The runtime's thread pool (XNNPACK's threads). It is one pool per process: 0 leaves it as it is
    # (ExecuTorch sizes it to the cores); set it for fair timing. 0..MAX_THREADS (256): ExecuTorch makes
    # as many threads as it is told (100,000 took 5 s).
    threads: int = 0
    quantize: Quantize = Quantize.none
    # int8_static: random inputs, of the example inputs' shapes and dtypes, that calibrate the activation
    # ranges together with the example inputs (seeded, so the same model gives the same payload);
    # 0..MAX_CALIBRATION_SAMPLES (10,000).
    calibration_samples: int = 16

    def __post_init__(self) -> None:
        for name, high, meaning in (
            ("threads", MAX_THREADS, "0: the runtime's default"),
            ("calibration_samples", MAX_CALIBRATION_SAMPLES, ""),
        ):
            problem = out_of_range(getattr(self, name), 0, high, meaning)
            if problem:
                raise FieldError(name, problem + ".")
        if self.quantize is not Quantize.none and self.partitioner is not Partitioner.xnnpack:
            # ExecuTorch's portable kernels have no quantize/dequantize ops (to_executorch fails with
            # "Missing out variants"): quantized programs run inside the XNNPACK delegate.
            raise ValueError(
                f"quantize={self.quantize.value} needs partitioner=xnnpack: the portable kernels "
                "have no quantized ops; allowed with partitioner=none: quantize=none."
            )
