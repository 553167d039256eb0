"""The schema of a run's config: each option and its default, written once.

`store.register_configs` puts these dataclasses in Hydra's ConfigStore, so
``--cfg job`` and ``--help`` show every option with its default and the YAML
files in ``conf/`` state only what differs. `config.validate` checks a composed
config against them (with the same parser the backends' compile specs use) and
returns a `RunRequest` of plain values: the runner never sees Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.core.errors import FieldError, LoweringError, format_choices

MAX_ELEMENTS_BOUND = 2**30  # verify.max_elements: an input of 4 GiB of float32 at most
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")


class ConfigError(LoweringError):
    """A config that cannot run; the message names the key path and what is allowed."""


@dataclass
class InputSpec:
    """One example input: a tensor of this shape and dtype, uniform in [low, high)."""

    shape: list[int] = field(default_factory=list)
    dtype: str = "float32"
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise FieldError("dtype", f"{self.dtype!r} is not allowed; allowed: {format_choices(DTYPES)}.")
        if any(size < 0 for size in self.shape):
            raise FieldError("shape", f"{self.shape} has a negative size.")
        if not self.low < self.high:
            raise FieldError("high", f"must be above low ({self.low}), not {self.high}.")


@dataclass
class MethodInputs:
    """One method's example call: positional and keyword arguments, each an `InputSpec` (a seeded random
    tensor) or a plain value (None, a bool, a number, a string) passed as it is."""

    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


def _check_non_negative(options: Any, names: tuple[str, ...]) -> None:
    """Each named field that is set (not None) is >= 0; NaN is not."""
    for name in names:
        value = getattr(options, name)
        if value is not None and not value >= 0:
            raise FieldError(name, f"must be >= 0, not {value}.")


@dataclass
class Tolerance:
    """How far lowered outputs may be from eager: |lowered - eager| <= atol + rtol * |eager|."""

    atol: float = 1e-5
    rtol: float = 1e-5

    def __post_init__(self) -> None:
        _check_non_negative(self, ("atol", "rtol"))


@dataclass
class ToleranceOverride:
    """``verify.tolerance``: a field that is set replaces the backend's; one left null keeps it."""

    atol: float | None = None
    rtol: float | None = None

    def __post_init__(self) -> None:
        _check_non_negative(self, ("atol", "rtol"))


@dataclass
class VerifyConfig:
    enabled: bool = True
    random_trials: int = 2  # fresh random inputs of the example shapes, besides the examples
    # Overrides the backend config's tolerance field by field: verify.tolerance.atol=0 alone keeps its rtol.
    tolerance: ToleranceOverride | None = field(default_factory=ToleranceOverride)
    # With dynamic dimensions: the largest input (in elements) a bound is checked at; a bound whose input
    # would be bigger is checked at the biggest size that fits, and report.json's verify.shapes says so.
    max_elements: int = 2**20

    def __post_init__(self) -> None:
        if self.random_trials < 0:
            raise FieldError("random_trials", f"must be >= 0, not {self.random_trials}.")
        if not 1 <= self.max_elements <= MAX_ELEMENTS_BOUND:
            raise FieldError("max_elements", f"must be 1..{MAX_ELEMENTS_BOUND}, not {self.max_elements}.")


@dataclass
class LatencyConfig:
    enabled: bool = True
    warmup: int = 5  # calls before timing, per side
    iterations: int = 20  # calls per timed round
    rounds: int = 5  # rounds, eager and lowered interleaved; medians are taken over them
    # With dynamic dimensions: the shapes to measure besides the example's, each {dimension name: size},
    # e.g. [{batch: 1}, {batch: 8}]; a dimension a point leaves out keeps its example size.
    shapes: list[dict[str, int]] | None = None

    def __post_init__(self) -> None:
        for name, least in (("warmup", 0), ("iterations", 1), ("rounds", 1)):
            if getattr(self, name) < least:
                raise FieldError(name, f"must be >= {least}, not {getattr(self, name)}.")
        for index, point in enumerate(self.shapes or ()):
            if not point:
                raise FieldError(f"shapes[{index}]", "is empty; give {dimension name: size}, e.g. {batch: 8}.")
            for name, size in point.items():
                if size < 0:
                    raise FieldError(f"shapes[{index}].{name}", f"must be >= 0, not {size}.")


@dataclass
class ConfigGroups:
    """The primary config's nodes of the config groups, as composed; `config.validate` resolves them."""

    model: Any = None  # conf/model: `_target_`, constructor arguments, `example_inputs`, `dynamic_shapes`
    frontend: Any = None  # conf/frontend: `name`, and `mode` for torchscript
    backend: Any = None  # conf/backend: `name`, `_target_`, `tolerance`, `compile_spec`
    debug_handles: Any = None  # conf/debug_handles: `strategy`


@dataclass
class RunOptions:
    """The run's own options: written here once, for the config (`RunConfig`) and the run (`RunRequest`)."""

    seed: int = 0  # weights (torch.manual_seed before the model is built) and example inputs
    # torch.set_num_threads for the run. 1 by default: on a shared machine more threads make timings noise
    # (a 2-core machine measured 0.01x to 6.2x for the same run); null leaves torch's default.
    threads: int | None = 1
    profile: bool = False  # per-instruction times mapped to source, written to profile.json
    artifact_name: str = "model.lowered"  # the artifact's file name in the run directory
    # Lower the groups of nodes the backend supports and run the rest in PyTorch (export frontend only);
    # report.json's `partition` says which node went where.
    partition: bool = False
    min_nodes: int = 1  # with partition=true: smaller supported groups run in PyTorch too
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass
class RunConfig(RunOptions, ConfigGroups):
    """The primary config: one node per config group, then the run's own options."""


GROUPS = tuple(group.name for group in fields(ConfigGroups))


@dataclass(kw_only=True)
class RunRequest(RunOptions):
    """Everything a run needs, as plain values (no Hydra, no OmegaConf): the config groups resolved,
    and the run's options as validated."""

    model_target: str
    model_kwargs: dict[str, Any]
    # model.checkpoint as an absolute path (`checkpoint.resolve_checkpoint`); None: the seeded random weights
    checkpoint: str | None = None
    example_inputs: dict[str, MethodInputs]
    # model.dynamic_shapes as `dynamic_config.declaration` read it: {method: "auto" | {argument: {dim: ...}}};
    # None: every dimension static, as captured
    dynamic_shapes: dict[str, Any] | None = None
    frontend: str
    torchscript_mode: str
    strict: bool = True  # frontend.strict: torch.export tries strict (Dynamo) capture first
    backend_name: str
    backend_target: str
    compile_spec: dict[str, dict[str, Any]]
    tolerance: Tolerance
    debug_handles: str
