"""`OpenVinoCompileSpec`: the options of one lowered method, and the CPU plugin config they make.

They arrive as a plain dict ``{option: value}`` (``{}`` means all defaults);
values of the enum options are their names as strings::

    pipeline.to_backend("openvino", model, {"forward": {"threads": 1, "performance_hint": "LATENCY"}}, ...)

openvino itself is imported only when it is needed (`require_openvino`), so that
the backend is listed, and its options shown, where the optional extra is not
installed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pipeline.core.backend import MAX_THREADS, FieldError, LoweringError, out_of_range

NAME = "openvino"
EXTRA = "openvino"  # pip install 'lowering-pipeline[openvino]'
DEVICE = "CPU"


class InferencePrecision(enum.Enum):
    """The precision the CPU plugin computes in (``INFERENCE_PRECISION_HINT``)."""

    f32 = "f32"
    bf16 = "bf16"
    f16 = "f16"


class PerformanceHint(enum.Enum):
    """What the plugin tunes streams and threads for (``PERFORMANCE_HINT``)."""

    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"
    CUMULATIVE_THROUGHPUT = "CUMULATIVE_THROUGHPUT"


@dataclass
class OpenVinoCompileSpec:
    # f32 by default: on CPUs with AVX-512 BF16 or AMX the plugin's own default is bf16, which
    # differs from eager by ~1e-3 on the zoo models; the lower precisions are a deliberate choice.
    inference_precision: InferencePrecision = InferencePrecision.f32
    performance_hint: PerformanceHint = PerformanceHint.LATENCY
    # Parallel inference streams (NUM_STREAMS); 0: as many as the performance hint chooses; 0..MAX_THREADS (256).
    num_streams: int = 0
    # Threads of the CPU plugin (INFERENCE_NUM_THREADS); 0: the plugin's default (every core); 0..MAX_THREADS (256).
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("num_streams", "threads"):
            problem = out_of_range(getattr(self, name), 0, MAX_THREADS, "0: the plugin's choice")
            if problem:
                raise FieldError(name, problem + ".")

    def plugin_config(self) -> dict[str, Any]:
        """The ``compile_model`` config: only what the spec sets, so 0 leaves the plugin's choice."""
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.inference_precision.value,
            "PERFORMANCE_HINT": self.performance_hint.value,
        }
        if self.num_streams:
            config["NUM_STREAMS"] = self.num_streams
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config


def require_openvino() -> Any:
    """The ``openvino`` module, or an error that names the extra that installs it."""
    try:
        import openvino
    except ImportError as error:
        raise LoweringError(
            f"Backend {NAME!r} needs the openvino package, which is not installed ({error}). Install the "
            f"optional extra: pip install 'lowering-pipeline[{EXTRA}]'."
        ) from None
    return openvino
