"""The schema of a run's config, and its validation before any work starts.

Hydra composes ``conf/``; `validate` turns the composed config into a
`RunRequest` of plain Python values, or raises `ConfigError` naming the key
path that is wrong and what is allowed. The core never sees Hydra: the runner
takes the `RunRequest`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.core.backend import FRONTENDS, BackendInfo
from pipeline.core.errors import LoweringError, did_you_mean, format_choices

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
MODEL_RESERVED_KEYS = ("_target_", "example_inputs", "seed")


class ConfigError(LoweringError):
    """A config that cannot run; the message names the key path and what is allowed."""


@dataclass
class InputSpec:
    """One example input: a tensor of this shape and dtype, uniform in [low, high)."""

    shape: List[int] = field(default_factory=list)
    dtype: str = "float32"
    low: float = -1.0
    high: float = 1.0


@dataclass
class Tolerance:
    atol: float = 1e-5
    rtol: float = 1e-5


@dataclass
class VerifyConfig:
    enabled: bool = True
    random_trials: int = 2  # fresh random inputs of the example shapes, besides the examples
    tolerance: Optional[Tolerance] = None  # None: the backend config's tolerance


@dataclass
class LatencyConfig:
    enabled: bool = True
    warmup: int = 5
    iterations: int = 20
    rounds: int = 5


@dataclass
class RunOptions:
    """The top-level keys of ``config.yaml`` besides the groups."""

    seed: int = 0
    threads: Optional[int] = None
    profile: bool = False
    artifact_name: str = "model.lowered"


@dataclass
class RunRequest:
    """Everything a run needs, as plain values (no Hydra, no OmegaConf)."""

    model_target: str
    model_kwargs: Dict[str, Any]
    example_inputs: Dict[str, List[InputSpec]]
    frontend: str
    torchscript_mode: str
    backend_name: str
    backend_target: str
    compile_spec: Dict[str, Dict[str, Any]]
    tolerance: Tolerance
    debug_handles: str
    verify: VerifyConfig
    latency: LatencyConfig
    profile: bool
    seed: int
    threads: Optional[int]
    artifact_name: str


def validate(cfg: DictConfig) -> RunRequest:
    """Check a composed config without building anything expensive."""
    from pipeline.app.backend_loading import register_from_target  # imports backend code, not models
    from pipeline.core.debug_handles import STRATEGIES
    from pipeline.core.frontends import class_methods

    model = _section(cfg, "model")
    target = model.get("_target_")
    if not target:
        raise ConfigError("model._target_ is missing: name the nn.Module class to lower, e.g. pipeline.zoo.MLP.")
    model_cls = _locate(str(target), "model._target_")
    example_inputs = _example_inputs(model)

    frontend_cfg = _section(cfg, "frontend")
    frontend = _choice(frontend_cfg.get("name"), FRONTENDS, "frontend.name")
    mode = _choice(frontend_cfg.get("mode", "script"), ("script", "trace"), "frontend.mode")

    backend_cfg = _section(cfg, "backend")
    backend = register_from_target(str(backend_cfg.get("name")), str(backend_cfg.get("_target_")))
    if frontend not in backend.accepts:
        raise ConfigError(
            f"backend {backend.name!r} does not accept frontend {frontend!r}; it accepts: "
            f"{format_choices(backend.accepts)}. Choose one with frontend=<name>."
        )
    raw_spec = OmegaConf.to_container(backend_cfg.get("compile_spec") or {}, resolve=True)
    methods = class_methods(model_cls) if isinstance(model_cls, type) else ["forward"]
    compile_spec = {
        method: _check_method_spec(backend, method, options, methods, str(target))
        for method, options in raw_spec.items()
    }
    if not compile_spec:
        raise ConfigError("backend.compile_spec is empty: name at least one method, e.g. backend.compile_spec.forward={}")
    for method in compile_spec:
        if method not in example_inputs:
            raise ConfigError(
                f"model.example_inputs has no inputs for method {method!r}; it has: {format_choices(example_inputs)}."
            )

    tolerance = typed_options(Tolerance, backend_cfg.get("tolerance") or {}, "backend.tolerance")
    verify = typed_options(VerifyConfig, cfg.get("verify") or {}, "verify")
    if verify.tolerance is not None:
        tolerance = verify.tolerance
    strategy = _choice(_section(cfg, "debug_handles").get("strategy"), STRATEGIES, "debug_handles.strategy")
    options = typed_options(RunOptions, {f.name: cfg.get(f.name) for f in dataclasses.fields(RunOptions)
                                  if cfg.get(f.name) is not None}, "")
    if options.threads is not None and options.threads < 1:
        raise ConfigError(f"threads: {options.threads} is not allowed; allowed: null (torch's default) or >= 1.")
    return RunRequest(
        model_target=str(target),
        model_kwargs={k: v for k, v in OmegaConf.to_container(model, resolve=True).items()
                      if k not in MODEL_RESERVED_KEYS},
        example_inputs={m: example_inputs[m] for m in compile_spec},
        frontend=frontend,
        torchscript_mode=mode,
        backend_name=backend.name,
        backend_target=str(backend_cfg.get("_target_")),
        compile_spec=compile_spec,
        tolerance=tolerance,
        debug_handles=strategy,
        verify=verify,
        latency=typed_options(LatencyConfig, cfg.get("latency") or {}, "latency"),
        profile=options.profile,
        seed=options.seed,
        threads=options.threads,
        artifact_name=options.artifact_name,
    )


def _section(cfg: DictConfig, key: str) -> DictConfig:
    value = cfg.get(key)
    if not isinstance(value, DictConfig):
        raise ConfigError(f"The config has no {key!r} section; choose one with {key}=<option>.")
    return value


def _choice(value: Any, allowed: Tuple[str, ...], path: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {format_choices(allowed)}.{did_you_mean(value, allowed)}")
    return str(value)


def _locate(target: str, path: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as error:
        raise ConfigError(f"{path}: cannot import {target!r}: {error}") from None


def _example_inputs(model: DictConfig) -> Dict[str, List[InputSpec]]:
    raw = model.get("example_inputs")
    if raw is None:
        raise ConfigError("model.example_inputs is missing: give {method: [{shape: [...], dtype: ...}, ...]}.")
    result = {}
    for method, inputs in raw.items():
        if not OmegaConf.is_list(inputs):
            raise ConfigError(f"model.example_inputs.{method}: expected a list of inputs, got {inputs!r}.")
        specs = []
        for i, item in enumerate(inputs):
            spec = typed_options(InputSpec, item, f"model.example_inputs.{method}[{i}]")
            _choice(spec.dtype, DTYPES, f"model.example_inputs.{method}[{i}].dtype")
            specs.append(spec)
        result[str(method)] = specs
    return result


def _check_method_spec(backend: BackendInfo, method: str, options: Any, methods: List[str], model: str) -> Dict[str, Any]:
    path = f"backend.compile_spec.{method}"
    if method not in methods:
        raise ConfigError(
            f"{path}: model {model} has no method {method!r}; it has: {format_choices(methods)}."
            + did_you_mean(method, methods)
        )
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: expected a mapping of options, got {options!r}.")
    if backend.compile_spec is None:
        return options
    spec = typed_options(backend.compile_spec, options, path)
    return {f.name: _plain(getattr(spec, f.name)) for f in dataclasses.fields(spec)}  # resolved: defaults filled


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def compile_spec_from_options(schema: type, options: Any, backend: str, method: str) -> Any:
    """One method's compile spec as an instance of a backend's dataclass; errors name the backend too.

    Enum members are accepted as their values, as in `pipeline.core.lowering.normalize_compile_spec`.
    """
    values = {k: v.value if isinstance(v, enum.Enum) else v for k, v in dict(options).items()}
    try:
        return typed_options(schema, values, f"compile_spec.{method}")
    except LoweringError as error:
        raise LoweringError(f"Backend {backend!r}: {error}") from None


def typed_options(schema: type, values: Any, path: str) -> Any:
    """Merge ``values`` into a dataclass schema; errors name the key path and the allowed keys or values.

    The one validator of dataclass-shaped options: configs here, compile specs in the backends.
    """
    allowed = [f.name for f in dataclasses.fields(schema)]
    prefix = f"{path}." if path else ""
    if isinstance(values, DictConfig):
        values = OmegaConf.to_container(values, resolve=True)
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {format_choices(allowed)}, got {values!r}.")
    for key in values:
        if key not in allowed:
            raise ConfigError(
                f"{prefix}{key}: unknown key; allowed: {format_choices(allowed)}.{did_you_mean(key, allowed)}"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "key", None) or ""
        field_type = {f.name: f.type for f in dataclasses.fields(schema)}.get(key)
        allowed_values = ""
        if isinstance(field_type, type) and issubclass(field_type, enum.Enum):
            allowed_values = f"; allowed: {format_choices(m.name for m in field_type)}"
        elif field_type is not None:
            allowed_values = f"; expected {getattr(field_type, '__name__', field_type)}"
        message = str(error).splitlines()[0]
        raise ConfigError(f"{prefix}{key}: {message}{allowed_values}") from None
