"""Validate a composed config before any work starts: the checks lowering would make, and more.

`validate` turns the composed config into a `RunRequest` of plain Python
values, or raises `ConfigError` naming the key path that is wrong and what is
allowed. It imports the model class (to bind its constructor arguments and
find its methods) and the backend (to run its compile-spec checks, the same
function lowering runs), but builds and captures nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.app.backend_loading import load_backend
from pipeline.app.checkpoint import resolve_checkpoint
from pipeline.app.dynamic_config import check_latency_shapes, declaration
from pipeline.app.run_files import RUN_FILES
from pipeline.app.schema import (
    GROUPS,
    ConfigError,
    InputSpec,
    LatencyConfig,
    MethodInputs,
    RunConfig,
    RunOptions,
    RunRequest,
    Tolerance,
    ToleranceOverride,
    VerifyConfig,
)
from pipeline.app.targets import locate
from pipeline.core.backend import FRONTENDS
from pipeline.core.errors import LoweringError, did_you_mean, format_choices
from pipeline.core.frontends import TORCHSCRIPT_MODES
from pipeline.core.spec import MAX_THREADS, SpecError, parse_compile_spec

MODEL_RESERVED_KEYS = ("_target_", "example_inputs", "dynamic_shapes", "checkpoint")

__all__ = [
    "ConfigError",
    "InputSpec",
    "LatencyConfig",
    "RunRequest",
    "Tolerance",
    "VerifyConfig",
    "compose_config",
    "validate",
]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The packaged config composed with ``overrides``, as ``python -m pipeline OVERRIDES`` composes it
    (without Hydra's own ``hydra`` node, and running nothing)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("pipeline.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def validate(cfg: DictConfig) -> RunRequest:
    """Check a composed config without building anything expensive."""
    from pipeline.core.debug_handles import STRATEGIES
    from pipeline.core.frontends import class_methods
    from pipeline.core.lowering import resolve_specs

    _check_top_level_keys(cfg)
    model = _section(cfg, "model")
    target = model.get("_target_")
    if not target or target == "???":
        raise ConfigError("model._target_ is missing: name the nn.Module class to lower, e.g. pipeline.zoo.MLP.")
    model_cls = locate(str(target), "model._target_")
    model_kwargs = {k: v for k, v in _plain(model, "model").items() if k not in MODEL_RESERVED_KEYS}
    _bind_constructor(model_cls, str(target), model_kwargs)
    example_inputs = _example_inputs(model)
    checkpoint = resolve_checkpoint(model.get("checkpoint"))

    frontend_cfg = _section(cfg, "frontend")
    frontend = _choice(frontend_cfg.get("name"), FRONTENDS, "frontend.name")
    mode = _choice(frontend_cfg.get("mode", "script"), TORCHSCRIPT_MODES, "frontend.mode")
    strict = _export_strict(frontend_cfg, frontend)

    backend_cfg = _section(cfg, "backend")
    backend = load_backend(str(backend_cfg.get("name")), backend_cfg.get("_target_"))
    if frontend not in backend.accepts:
        raise ConfigError(
            f"backend {backend.name!r} does not accept frontend {frontend!r}; it accepts: "
            f"{format_choices(backend.accepts)}. Choose one with frontend=<name>."
        )
    raw_spec = _plain(backend_cfg.get("compile_spec") or {}, "backend.compile_spec")
    if not raw_spec:
        raise ConfigError(
            "backend.compile_spec is empty: name at least one method, e.g. backend.compile_spec.forward={}"
        )
    methods = class_methods(model_cls) if isinstance(model_cls, type) else ["forward"]
    for method, options in raw_spec.items():
        _check_method(method, options, methods, str(target))
        if method not in example_inputs:
            raise ConfigError(
                f"model.example_inputs has no inputs for method {method!r}; it has: {format_choices(example_inputs)}."
            )
    try:
        typed_specs, compile_spec = resolve_specs(backend, raw_spec, path="backend.compile_spec")
    except LoweringError as error:
        raise ConfigError(str(error)) from None
    dynamic_shapes = declaration(
        _plain(model.get("dynamic_shapes"), "model.dynamic_shapes"),
        model_cls,
        example_inputs,
        list(compile_spec),
        frontend,
        mode,
        backend,
        typed_specs,
    )

    options = _parse(RunOptions, {k: v for k, v in _plain(cfg, "").items() if k not in GROUPS}, "")
    tolerance = _backend_tolerance(backend_cfg, backend.name, compile_spec, options.verify)
    if options.threads is not None and not 1 <= options.threads <= MAX_THREADS:
        raise ConfigError(
            f"threads: {options.threads} is not allowed; allowed: null (torch's default) or 1..{MAX_THREADS}."
        )
    _check_artifact_name(options.artifact_name)
    check_latency_shapes(options.latency.shapes, dynamic_shapes, timed_method(list(compile_spec)))
    if options.partition and frontend != "export":
        raise ConfigError(
            f"partition=true splits exported programs; frontend {frontend!r} cannot be partitioned "
            "(allowed with partition=true: 'export'). Choose frontend=export."
        )
    if options.min_nodes < 1:
        raise ConfigError(f"min_nodes: {options.min_nodes} is not allowed; allowed: 1 or more.")
    strategy = _choice(_section(cfg, "debug_handles").get("strategy"), STRATEGIES, "debug_handles.strategy")
    return RunRequest(
        model_target=str(target),
        model_kwargs=model_kwargs,
        checkpoint=str(checkpoint) if checkpoint else None,
        example_inputs={m: example_inputs[m] for m in compile_spec},
        dynamic_shapes=dynamic_shapes,
        frontend=frontend,
        torchscript_mode=mode,
        strict=strict,
        backend_name=backend.name,
        backend_target=str(backend_cfg.get("_target_")),
        compile_spec=compile_spec,
        tolerance=tolerance,
        debug_handles=strategy,
        **{option.name: getattr(options, option.name) for option in dataclasses.fields(RunOptions)},
    )


def timed_method(methods: list[str]) -> str:
    """The method the latency stage times: forward if it is lowered, else the first."""
    return "forward" if "forward" in methods else methods[0]


def _backend_tolerance(
    backend_cfg: DictConfig, name: str, compile_spec: dict[str, dict[str, Any]], verify: VerifyConfig
) -> Tolerance:
    """The backend's tolerance, with each field that verify.tolerance sets replaced."""
    given = {k: v for k, v in dataclasses.asdict(verify.tolerance or ToleranceOverride()).items() if v is not None}
    if set(given) == {"atol", "rtol"}:
        return Tolerance(**given)
    return dataclasses.replace(_backends_own_tolerance(backend_cfg, name, compile_spec), **given)


def _backends_own_tolerance(backend_cfg: DictConfig, name: str, compile_spec: dict[str, dict[str, Any]]) -> Tolerance:
    """The backend's ``quantized_tolerance`` when a method is quantized (``quantize`` other than none), which
    the backend must then declare; else its ``tolerance``."""
    quantized = {
        method: spec["quantize"] for method, spec in compile_spec.items() if spec.get("quantize") not in (None, "none")
    }
    if not quantized:
        return _parse(Tolerance, backend_cfg.get("tolerance") or {}, "backend.tolerance")
    if backend_cfg.get("quantized_tolerance") is None:
        method, how = next(iter(quantized.items()))
        raise ConfigError(
            f"backend.compile_spec.{method}.quantize={how!r}: backend {name!r} declares no quantized_tolerance, so "
            "a quantized run has nothing to verify against (its tolerance is for unquantized runs). Add "
            f"`quantized_tolerance: {{atol: ..., rtol: ...}}` to conf/backend/{name}.yaml, or give "
            "verify.tolerance={atol: ..., rtol: ...}."
        )
    return _parse(Tolerance, backend_cfg.get("quantized_tolerance"), "backend.quantized_tolerance")


def _check_top_level_keys(cfg: DictConfig) -> None:
    """Hydra's ``+key=value`` adds keys the schema does not have; a misspelt option must not pass silently."""
    allowed = [f.name for f in dataclasses.fields(RunConfig)] + ["hydra"]
    # A composed config's keys are the YAML's and the overrides' names, str; str() would name any other.
    for key in map(str, cfg):
        if key not in allowed:
            raise ConfigError(
                f"{key}: unknown top-level key; allowed: {format_choices(allowed)}." + did_you_mean(key, allowed)
            )


def _parse(schema: type, values: Any, path: str) -> Any:
    try:
        return parse_compile_spec(schema, _plain(values, path), path)
    except SpecError as error:
        raise ConfigError(str(error)) from None


def _plain(value: Any, path: str) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
        except Exception as error:  # an interpolation that does not resolve
            raise ConfigError(f"{path or 'config'}: {str(error).splitlines()[0]}") from None
    return value


def _section(cfg: DictConfig, key: str) -> DictConfig:
    value = cfg.get(key)
    if not isinstance(value, DictConfig):
        raise ConfigError(f"The config has no {key!r} section; choose one with {key}=<option>.")
    return value


def _choice(value: Any, allowed: tuple[str, ...], path: str) -> str:
    if value not in allowed:
        raise ConfigError(
            f"{path}: {value!r} is not allowed; allowed: {format_choices(allowed)}." + did_you_mean(value, allowed)
        )
    return str(value)


def _export_strict(frontend_cfg: DictConfig, frontend: str) -> bool:
    """``frontend.strict``: whether torch.export tries strict (Dynamo) capture before non-strict (the
    default on export: only strict's stack traces reach the lines inside methods a model calls on itself)."""
    strict = frontend_cfg.get("strict", frontend == "export")
    if not isinstance(strict, bool):
        raise ConfigError(f"frontend.strict: {strict!r} is not allowed; allowed: true or false.")
    if strict and frontend != "export":
        raise ConfigError(
            f"frontend.strict=true is an option of torch.export; frontend {frontend!r} does not take it "
            "(allowed with frontend.strict=true: 'export'). Choose frontend=export or drop frontend.strict."
        )
    return strict


def _bind_constructor(model_cls: Any, target: str, kwargs: dict[str, Any]) -> None:
    """Bind the constructor arguments as the build stage will pass them: a typo fails here, not after an hour."""
    if not callable(model_cls):
        raise ConfigError(f"model._target_: {target} is a {type(model_cls).__name__}, not a class.")
    try:
        signature = inspect.signature(model_cls)
    except (TypeError, ValueError):
        return  # a builtin or extension type: nothing to bind against
    try:
        signature.bind(**kwargs)
    except TypeError as error:
        accepted = [
            name for name, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        unknown = [k for k in kwargs if k not in signature.parameters]
        hint = f" Unknown: {format_choices(unknown)}.{did_you_mean(unknown[0], accepted)}" if unknown else ""
        raise ConfigError(
            f"model: {target}{signature} does not accept these arguments: {error}.{hint} "
            f"It takes: {format_choices(accepted)}."
        ) from None


def _example_inputs(model: DictConfig) -> dict[str, MethodInputs]:
    raw = model.get("example_inputs")
    if raw is None or raw == "???":
        raise ConfigError(
            "model.example_inputs is missing: give {method: [{shape: [...], dtype: ...}, ...]}, "
            "or {method: {args: [...], kwargs: {name: ...}}}."
        )
    raw = _plain(raw, "model.example_inputs")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"model.example_inputs: expected {{method: [inputs]}}, got {raw!r}.")
    return {str(method): _method_inputs(f"model.example_inputs.{method}", inputs) for method, inputs in raw.items()}


def _method_inputs(path: str, inputs: Any) -> MethodInputs:
    """A list of positional inputs, or ``{args: [...], kwargs: {...}}``."""
    if isinstance(inputs, Mapping) and set(inputs) <= {"args", "kwargs"}:
        args, kwargs = inputs.get("args") or [], inputs.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, Mapping):
            raise ConfigError(f"{path}: expected {{args: [inputs], kwargs: {{name: input}}}}, got {inputs!r}.")
        return MethodInputs(
            [_input(f"{path}.args[{i}]", item) for i, item in enumerate(args)],
            {str(k): _input(f"{path}.kwargs.{k}", v) for k, v in kwargs.items()},
        )
    if not isinstance(inputs, list):
        raise ConfigError(f"{path}: expected a list of inputs or {{args: [...], kwargs: {{...}}}}, got {inputs!r}.")
    return MethodInputs([_input(f"{path}[{i}]", item) for i, item in enumerate(inputs)])


def _input(path: str, item: Any) -> Any:
    """A tensor's `InputSpec` (a mapping), or a plain value passed as it is."""
    if isinstance(item, Mapping):
        return _parse(InputSpec, item, path)
    if item is None or isinstance(item, (bool, int, float, str)):
        return item
    raise ConfigError(
        f"{path}: expected a tensor {{shape: [...], dtype: ...}} or a plain value "
        f"(null, a bool, a number, a string), got {item!r}."
    )


def _check_method(method: str, options: Any, methods: list[str], model: str) -> None:
    path = f"backend.compile_spec.{method}"
    if method not in methods:
        raise ConfigError(
            f"{path}: model {model} has no method {method!r}; it has: {format_choices(methods)}."
            + did_you_mean(method, methods)
        )
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"{path}: expected a mapping of options, got {options!r}.")


def _check_artifact_name(name: str) -> None:
    path = PurePath(name)
    if path.name != name or name in (".", "..") or not name or "\\" in name:
        raise ConfigError(
            f"artifact_name: {name!r} is not a plain file name; it is written inside the run "
            "directory, e.g. artifact_name=mlp.lowered."
        )
    if name in RUN_FILES or name.startswith("."):
        raise ConfigError(
            f"artifact_name: {name!r} would overwrite the run's own records "
            f"({format_choices(RUN_FILES)}); choose another name."
        )
