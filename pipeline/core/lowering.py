"""Lowering entry points: `codegen_backend_module`, `to_backend`, `to_backend_selective`.

The order is the original's: find the backend, run its preprocess (which
issues debug handles), then build the `LoweredModule`, which compiles the
payload if the backend is available and generates one method per spec key.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pipeline.core import toolchain_output
from pipeline.core.backend import BackendInfo, PreprocessResult
from pipeline.core.debug_handles import DebugHandleGenerator
from pipeline.core.errors import LoweringError, format_choices
from pipeline.core.frontends import ExampleInputs, as_captured, call_arguments, capture, model_methods, type_name
from pipeline.core.lowered_module import LoweredModule, check_method_name
from pipeline.core.partitioned import (
    PartitionedModule,
    mark_handles,
    partition_record,
    partitioned_payload,
    split_program,
)
from pipeline.core.registry import get_backend
from pipeline.core.source import HierarchyPath, torchscript_call_sites
from pipeline.core.spec import SpecError, options_of, parse_compile_spec

MethodCompileSpec = Mapping[str, Any]


def codegen_backend_module(
    backend_name: str,
    program: Any,
    method_compile_spec: MethodCompileSpec,
    *,
    debug_handles: str = "sequential",
    original_methods: Sequence[str] = (),
    hierarchy_prefix: HierarchyPath = (),
    top_type: str | None = None,
    timings: dict[str, float] | None = None,
    partition: bool = False,
    min_nodes: int = 1,
) -> LoweredModule:
    """Lower a captured program: a ScriptModule, a dict of ExportedPrograms, or a `CapturedProgram`.

    ``timings``, if given, receives the seconds spent issuing debug handles, in
    the rest of preprocess, in compile and in codegen. ``partition=True``
    (export frontend only) lowers the groups of at least ``min_nodes`` nodes
    that the backend ``supports`` and runs the rest in PyTorch
    (`pipeline.core.partitioned`); the result is a `PartitionedModule`.
    """
    timings = {} if timings is None else timings
    backend = get_backend(backend_name)
    try:
        spec = resolve_compile_spec(backend, method_compile_spec)
    except SpecError as error:
        raise SpecError(f"Backend {backend_name!r}: {error}") from None
    captured = as_captured(program, list(spec))
    if captured.frontend not in backend.accepts:
        raise LoweringError(
            f"Backend {backend_name!r} does not accept the {captured.frontend!r} frontend; "
            f"it accepts: {format_choices(backend.accepts)}."
        )
    call_sites = torchscript_call_sites(captured.program, list(spec)) if captured.frontend == "torchscript" else {}
    generator = _TimedGenerator(
        DebugHandleGenerator(
            debug_handles, top_type=top_type or captured.top_type, prefix=hierarchy_prefix, call_sites=call_sites
        )
    )
    module_kwargs = dict(
        frontend=captured.frontend,
        method_compile_spec=spec,
        signatures=captured.signatures,
        outputs=captured.outputs,
        original_type=captured.top_type,
        original_methods=original_methods or list(spec),
        timings=timings,
    )
    if partition:
        return _partitioned(backend, captured, spec, generator, min_nodes, timings, module_kwargs)
    result = _preprocess(backend, _own_copy(captured.program), spec, generator, timings)
    handle_map = generator.handle_map
    handle_map.backend_map = {str(k): [int(h) for h in v] for k, v in result.backend_map.items()}
    return LoweredModule(backend, payload=result.payload, notes=result.notes, handle_map=handle_map, **module_kwargs)


def _preprocess(
    backend: BackendInfo,
    program: Any,
    spec: dict[str, dict[str, Any]],
    generator: _TimedGenerator,
    timings: dict[str, float],
) -> PreprocessResult:
    """The backend's preprocess on its own copy of the program, timed, its failures as `LoweringError`."""
    start = time.perf_counter()
    before = generator.seconds
    try:
        with toolchain_output.logged():  # exporters and compilers print as they work; that belongs in the log
            result = backend.preprocess(program, spec, generator)
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(f"Backend {backend.name!r}: preprocess failed: {type(error).__name__}: {error}") from error
    timings["debug_handles"] = generator.seconds
    timings["preprocess"] = time.perf_counter() - start - (generator.seconds - before)
    return _as_preprocess_result(backend.name, result)


def _partitioned(
    backend: BackendInfo,
    captured: Any,
    spec: dict[str, dict[str, Any]],
    generator: _TimedGenerator,
    min_nodes: int,
    timings: dict[str, float],
    module_kwargs: dict[str, Any],
) -> PartitionedModule:
    """Split (`pipeline.core.partitioned`), lower the supported groups in one preprocess, record the split."""
    start = time.perf_counter()
    with toolchain_output.logged():  # functionalizing re-traces the program, and torch talks as it does
        split = split_program(backend, captured, spec, generator, min_nodes)
    timings["partition"] = time.perf_counter() - start - generator.seconds
    timed = _TimedGenerator(split.generator)
    timed.seconds = generator.seconds
    result = (
        _preprocess(backend, _own_copy(split.programs), split.spec, timed, timings)
        if split.programs
        else PreprocessResult(b"")
    )
    handle_map = generator.handle_map
    mark_handles(handle_map, split)
    handle_map.backend_map = {str(k): [int(h) for h in v] for k, v in result.backend_map.items()}
    record = partition_record(split, backend.name, min_nodes)
    return PartitionedModule(
        backend,
        partition=record,
        payload=partitioned_payload(split, result.payload),
        notes=result.notes,
        handle_map=handle_map,
        **module_kwargs,
    )


class _TimedGenerator:
    """A debug-handle generator that adds up the time spent in it."""

    def __init__(self, generator: Any):
        self.generator = generator
        self.handle_map = getattr(generator, "handle_map", None)
        self.seconds = 0.0

    def __call__(self, graph: Any, method: str = "forward") -> dict[Any, int]:
        start = time.perf_counter()
        try:
            return self.generator(graph, method)
        finally:
            self.seconds += time.perf_counter() - start


def to_backend(
    backend_name: str,
    module: torch.nn.Module,
    method_compile_spec: MethodCompileSpec,
    *,
    frontend: str | None = None,
    example_inputs: ExampleInputs | None = None,
    debug_handles: str = "sequential",
    torchscript_mode: str = "script",
    hierarchy_prefix: HierarchyPath = (),
    top_type: str | None = None,
    partition: bool = False,
    min_nodes: int = 1,
) -> LoweredModule:
    """Capture ``module`` with a frontend and lower the methods named in the spec.

    ``frontend=None`` means torchscript for a ScriptModule and export otherwise;
    ``example_inputs`` is ``{method: tuple of args}``. ``partition=True`` lowers
    what the backend supports and runs the rest in PyTorch (export frontend only;
    see `codegen_backend_module`).
    """
    spec = normalize_compile_spec(method_compile_spec)
    if partition and frontend not in (None, "export"):
        raise LoweringError(
            f"Partitioned lowering splits exported programs; frontend {frontend!r} cannot be "
            "partitioned (allowed with partition=True: 'export')."
        )
    captured = capture(module, list(spec), frontend, example_inputs, torchscript_mode)
    return codegen_backend_module(
        backend_name,
        captured,
        spec,
        debug_handles=debug_handles,
        original_methods=model_methods(module),
        hierarchy_prefix=hierarchy_prefix,
        top_type=top_type,
        partition=partition,
        min_nodes=min_nodes,
    )


def to_backend_selective(
    backend_name: str,
    module: torch.nn.Module,
    paths: Sequence[str],
    method_compile_spec: MethodCompileSpec | None = None,
    *,
    example_inputs: Any | None = None,
    debug_handles: str = "sequential",
) -> torch.nn.Module:
    """A copy of ``module`` whose submodules at ``paths`` are lowered; ``module`` is not changed.

    Submodules are captured with torchscript, or with export when
    ``example_inputs`` are given for the whole model's ``forward``, as
    `to_backend` takes them (``{"forward": args}``; a tuple of positional
    arguments works too): the model runs once to record each submodule's inputs.
    """
    spec = normalize_compile_spec(method_compile_spec or {"forward": {}})
    result = copy.deepcopy(module)
    targets = {path: _submodule(result, path) for path in paths}
    recorded = _record_inputs(result, targets, example_inputs) if example_inputs is not None else None
    for path, (parent, attribute, submodule) in targets.items():
        prefix = _hierarchy_of(result, path)
        lowered = to_backend(
            backend_name,
            submodule,
            spec,
            frontend="export" if recorded is not None else "torchscript",
            example_inputs={m: recorded[path] for m in spec} if recorded is not None else None,
            debug_handles=debug_handles,
            hierarchy_prefix=prefix,
            top_type=type_name(module),
        )
        setattr(parent, attribute, lowered)
    return result


def normalize_compile_spec(spec: MethodCompileSpec) -> dict[str, dict[str, Any]]:
    """``{method: {option: value}}`` as plain dicts; dataclass values become dicts."""
    if not isinstance(spec, Mapping):
        raise LoweringError(
            f"A method compile spec is a dict {{method: {{option: value}}}}, not a {type(spec).__name__}."
        )
    normalized = {}
    for method, options in spec.items():
        if not isinstance(method, str):
            raise LoweringError(f"Compile-spec keys are method names (str); got {method!r}.")
        check_method_name(method)
        if dataclasses.is_dataclass(options) and not isinstance(options, type):
            options = dataclasses.asdict(options)
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise LoweringError(f"Compile spec for method {method!r} must be a dict of options, not {options!r}.")
        # Enum members become their values, so specs stay plain JSON in artifacts and reports.
        normalized[method] = {k: v.value if isinstance(v, enum.Enum) else v for k, v in options.items()}
    return normalized


def resolve_compile_spec(
    backend: BackendInfo, method_compile_spec: MethodCompileSpec, path: str = "compile_spec"
) -> dict[str, dict[str, Any]]:
    """Every method's options checked as lowering checks them, defaults filled in.

    The checks are the backend's ``CompileSpec`` (types, ``__post_init__``) and
    its ``check_compile_spec`` across methods; ``python -m pipeline.validate``
    runs this same function. Errors name ``path.<method>.<key>``.
    """
    spec = normalize_compile_spec(method_compile_spec)
    if backend.compile_spec is None:
        return spec
    typed = {
        method: parse_compile_spec(backend.compile_spec, options, f"{path}.{method}")
        for method, options in spec.items()
    }
    try:
        backend.backend_cls.check_compile_spec(typed)
    except LoweringError as error:
        raise SpecError(f"{path}: {error}") from None
    return {method: options_of(value) for method, value in typed.items()}


def _own_copy(program: Any) -> Any:
    """The copy preprocess gets: the contract lets it change the program, never the caller's."""
    if isinstance(program, dict):
        return {method: _copy_exported(exported) for method, exported in program.items()}
    return copy.deepcopy(program)


def _copy_exported(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, inside deepcopy
        copied = copy.deepcopy(program)
    # Copying an FX graph renames nodes whose names shadow Python builtins (`input` -> `input_1`), while
    # the graph signature keeps the old names; give the nodes back the names the signature uses.
    for original, node in zip(program.graph.nodes, copied.graph.nodes):
        if node.name != original.name:
            node.name = original.name
    copied.graph_module.recompile()
    return copied


def _as_preprocess_result(backend_name: str, result: Any) -> PreprocessResult:
    if isinstance(result, (bytes, bytearray)):
        return PreprocessResult(bytes(result))
    if isinstance(result, PreprocessResult) and isinstance(result.payload, (bytes, bytearray)):
        return PreprocessResult(
            bytes(result.payload), dict(result.backend_map), _json_notes(backend_name, result.notes)
        )
    raise LoweringError(
        f"Backend {backend_name!r}: preprocess must return bytes or a PreprocessResult with bytes "
        f"(artifacts hold no pickles); it returned {type(result).__name__}."
    )


def _json_notes(backend_name: str, notes: Any) -> dict[str, Any]:
    """The backend's notes, checked to be plain JSON (they go into reports and artifacts)."""
    import json

    try:
        return json.loads(json.dumps(notes, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise LoweringError(
            f"Backend {backend_name!r}: PreprocessResult.notes must be plain JSON values: {error}"
        ) from None


def _submodule(root: torch.nn.Module, path: str):
    """(parent, attribute, submodule) for a dotted path, with errors that name the path."""
    if not path:
        raise LoweringError("Selective lowering needs non-empty dotted paths to submodules, e.g. 'sub1.submodule'.")
    parent, current = None, root
    atoms = path.split(".")
    for depth, atom in enumerate(atoms):
        prefix = ".".join(atoms[:depth]) or type(root).__name__
        if not hasattr(current, atom):
            children = [name for name, _ in current.named_children()]
            raise LoweringError(
                f"Selective lowering: {prefix!r} has no attribute {atom!r} (path {path!r}); "
                f"its submodules: {format_choices(children)}."
            )
        parent, current = current, getattr(current, atom)
        if not isinstance(current, torch.nn.Module):
            raise LoweringError(
                f"Selective lowering: attribute {'.'.join(atoms[: depth + 1])!r} is a {type(current).__name__}, "
                "not a Module."
            )
    return parent, atoms[-1], current


def _hierarchy_of(root: torch.nn.Module, path: str) -> HierarchyPath:
    levels, current = [], root
    for atom in path.split("."):
        current = getattr(current, atom)
        levels.append((atom, type(current).__name__))
    return tuple(levels)


def _record_inputs(model: torch.nn.Module, targets: dict[str, Any], example_inputs: Any) -> dict[str, Any]:
    """Run the model once and record each target submodule's call (``{"args":, "kwargs":}``)."""
    if isinstance(example_inputs, Mapping):
        if set(example_inputs) != {"forward"}:
            raise LoweringError(
                "Selective lowering runs the whole model's forward: give example_inputs as "
                f"{{'forward': args}}, not for {sorted(map(str, example_inputs))}."
            )
        example_inputs = example_inputs["forward"]
    args, kwargs = call_arguments(example_inputs, "forward")
    recorded: dict[str, Any] = {}
    hooks = []
    for path, (_, _, submodule) in targets.items():

        def hook(mod, call_args, call_kwargs, path=path):
            recorded.setdefault(path, {"args": tuple(call_args), "kwargs": dict(call_kwargs)})

        hooks.append(submodule.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in hooks:
            handle.remove()
    never_called = [p for p in targets if p not in recorded]
    if never_called:
        raise LoweringError(f"Selective lowering: submodule(s) {never_called} did not run on the example inputs.")
    return recorded
