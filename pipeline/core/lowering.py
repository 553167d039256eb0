"""The core flow: `lower`, and the entry points that call it (`codegen_backend_module`, `to_backend`,
`to_backend_selective`).

`lower` reads as the steps it takes, in the original's order: resolve the compile specs, take the
captured record, make the debug-handle generator, run the backend's preprocess (which issues the handles),
generate the methods, compile the payload into runners. ``load_lowered`` runs the last two, `build_module`,
on what an artifact holds.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.core import progress, toolchain_output
from pipeline.core.backend import MethodRunner, PreprocessResult
from pipeline.core.binding import source_error
from pipeline.core.codegen import generate_methods
from pipeline.core.debug_handles import DebugHandleGenerator, HandleMap
from pipeline.core.dynamic_checks import backend_refusal
from pipeline.core.errors import BackendRuntimeError, LoweringError, format_choices
from pipeline.core.frontends import (
    CapturedProgram,
    DynamicShapes,
    ExampleInputs,
    as_captured,
    call_arguments,
    capture,
    model_methods,
    type_name,
)
from pipeline.core.lowered_module import LoweredModule, Runtime, check_method_name
from pipeline.core.partitioning import (
    PartitionedModule,
    PartitionedRuntime,
    mark_handles,
    partition_record,
    partitioned_payload,
    split_program,
)
from pipeline.core.registry import BackendInfo, get_backend
from pipeline.core.signature import MethodSignature, OutputStructure
from pipeline.core.source import HierarchyPath, torchscript_call_sites
from pipeline.core.spec import SpecError, options_of, parse_compile_spec

MethodCompileSpec = Mapping[str, Any]


@dataclass
class StepSeconds:
    """The seconds each step of `lower` took. ``debug_handles`` is the time spent issuing handles, which
    happens inside preprocess (and the split): ``preprocess`` and ``partition`` leave it out."""

    resolve: float = 0.0
    capture: float = 0.0
    handles: float = 0.0
    partition: float | None = None  # None: not a partitioned lowering
    preprocess: float = 0.0
    debug_handles: float = 0.0
    codegen: float = 0.0
    compile: float = 0.0

    @contextmanager
    def step(self, name: str, less: HandleClock | None = None) -> Iterator[None]:
        """Add the time of the block to step ``name``, less the handles ``less`` timed meanwhile."""
        start, issued = time.perf_counter(), less.seconds if less is not None else 0.0
        try:
            yield
        finally:
            spent = time.perf_counter() - start - ((less.seconds - issued) if less is not None else 0.0)
            setattr(self, name, (getattr(self, name) or 0.0) + spent)

    def reported(self) -> dict[str, float]:
        """The steps a run's report lists under ``lower.``: the backend's own work."""
        names = ["debug_handles", "preprocess", "compile", "codegen"] + ["partition"] * (self.partition is not None)
        return {name: getattr(self, name) for name in names}


@dataclass
class Lowering:
    """What `lower` gives: the module, and the seconds of each step."""

    module: LoweredModule
    seconds: StepSeconds = field(default_factory=StepSeconds)


def lower(
    backend_name: str,
    program: Any,
    method_compile_spec: MethodCompileSpec,
    *,
    debug_handles: str = "sequential",
    original_methods: Sequence[str] = (),
    hierarchy_prefix: HierarchyPath = (),
    top_type: str | None = None,
    partition: bool = False,
    min_nodes: int = 1,
) -> Lowering:
    """Lower a captured program (a ScriptModule, a dict of ExportedPrograms, or a `CapturedProgram`).

    ``partition=True`` (export frontend only) lowers the groups of at least ``min_nodes`` nodes that the
    backend ``supports`` and runs the rest in PyTorch (`pipeline.core.partitioning`); the module is then a
    `PartitionedModule`.
    """
    seconds = StepSeconds()
    with seconds.step("resolve"):
        backend = get_backend(backend_name)
        try:
            specs, options = resolve_specs(backend, method_compile_spec)
        except SpecError as error:
            raise SpecError(f"Backend {backend_name!r}: {error}") from None
    with seconds.step("capture"):
        captured = _accepted(backend, as_captured(program, list(specs)))
        _keeps_dynamic(backend, captured, specs)
    with seconds.step("handles"):
        clock = HandleClock()
        generator = clock.timed(_handle_generator(captured, specs, debug_handles, hierarchy_prefix, top_type))
    if partition:
        preprocessed, runtime = _preprocess_partitioned(backend, captured, specs, generator, clock, min_nodes, seconds)
    else:
        with seconds.step("preprocess", less=clock):
            preprocessed = _preprocess(backend, _own_copy(captured.program), specs, generator)
        runtime = backend.runtime()
    seconds.debug_handles = clock.seconds
    handle_map = generator.handle_map
    handle_map.backend_map = {str(k): [int(h) for h in v] for k, v in preprocessed.result.backend_map.items()}
    module = build_module(
        backend,
        runtime,
        specs,
        seconds,
        partition=preprocessed.partition,
        frontend=captured.frontend,
        method_compile_spec=options,
        payload=preprocessed.payload,
        handle_map=handle_map,
        notes=preprocessed.result.notes,
        signatures=captured.signatures,
        outputs=captured.outputs,
        shapes=captured.shapes,
        original_type=captured.top_type,
        original_methods=original_methods or list(specs),
    )
    return Lowering(module, seconds)


def codegen_backend_module(
    backend_name: str, program: Any, method_compile_spec: MethodCompileSpec, **options: Any
) -> LoweredModule:
    """The original's name for lowering a captured program: `lower`'s module (``options`` as `lower` takes
    them: ``debug_handles``, ``original_methods``, ``hierarchy_prefix``, ``top_type``, ``partition``,
    ``min_nodes``)."""
    return lower(backend_name, program, method_compile_spec, **options).module


def build_module(
    backend: BackendInfo,
    runtime: Runtime,
    specs: dict[str, Any],
    seconds: StepSeconds,
    *,
    partition: dict[str, Any] | None,
    signatures: dict[str, MethodSignature],
    outputs: dict[str, OutputStructure],
    handle_map: HandleMap,
    **held: Any,
) -> LoweredModule:
    """The last two steps, which loading runs too: generate the methods, compile the payload into
    runners; then the module that holds them and what it was built from."""
    with seconds.step("codegen"):
        generated = generate_methods(backend.name, {m: (signatures[m], outputs[m]) for m in specs})
    with seconds.step("compile"):
        runners = compile_runners(backend.name, runtime, held["payload"], specs, handle_map)
    module_type: type[LoweredModule] = LoweredModule if partition is None else PartitionedModule
    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    return module_type(
        backend_name=backend.name,
        backend_version=backend.version,
        runtime=runtime,
        runners=runners,
        generated=generated,
        signatures=signatures,
        outputs=outputs,
        handle_map=handle_map,
        **extra,
        **held,
    )


def compile_runners(
    backend_name: str, runtime: Runtime, payload: bytes, specs: dict[str, Any], handle_map: HandleMap
) -> dict[str, MethodRunner] | None:
    """One runner per method, or None (with a warning) where the backend is not available."""
    with toolchain_output.logged():  # asking imports the runtime, and some print as they load
        available = bool(runtime.is_available())
    if not available:
        warnings.warn(
            f"Backend {backend_name!r} is not available on this machine. Lowering succeeded; "
            "calling the module raises until it is loaded where the backend is available.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    try:
        with toolchain_output.logged():  # runtimes log as they load (ExecuTorch's cpuinfo): to the log
            runners = runtime.compile(payload, specs)
    except BackendRuntimeError as error:
        raise source_error(handle_map, backend_name, error, "compile") from error
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(f"Backend {backend_name!r} failed to compile: {error}") from error
    missing = [m for m in specs if m not in runners]
    if missing:
        raise LoweringError(
            f"Backend {backend_name!r}: compile() returned no runner for method(s) {missing}; "
            f"it returned runners for {format_choices(runners)}."
        )
    return {method: runners[method] for method in specs}


@dataclass
class _Preprocessed:
    payload: bytes
    result: PreprocessResult
    partition: dict[str, Any] | None = None


class HandleClock:
    """The time spent issuing debug handles, by every generator it times."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, generator: Callable[..., dict[Any, int]]) -> _TimedGenerator:
        return _TimedGenerator(generator, self)


class _TimedGenerator:
    """A debug-handle generator whose time goes to its clock."""

    def __init__(self, generator: Callable[..., dict[Any, int]], clock: HandleClock):
        self.generator = generator
        self.clock = clock
        self.handle_map: HandleMap = getattr(generator, "handle_map", None)  # type: ignore[assignment]

    def __call__(self, graph: Any, method: str = "forward") -> dict[Any, int]:
        start = time.perf_counter()
        try:
            return self.generator(graph, method)
        finally:
            self.clock.seconds += time.perf_counter() - start


def _accepted(backend: BackendInfo, captured: CapturedProgram) -> CapturedProgram:
    if captured.frontend not in backend.accepts:
        raise LoweringError(
            f"Backend {backend.name!r} does not accept the {captured.frontend!r} frontend; "
            f"it accepts: {format_choices(backend.accepts)}."
        )
    return captured


def _keeps_dynamic(backend: BackendInfo, captured: CapturedProgram, specs: dict[str, Any]) -> None:
    """Refuse, before any work, a dynamic dimension the backend cannot keep."""
    for method, shapes in captured.shapes.items():
        dimensions = shapes.dimensions
        if not dimensions:
            continue
        first = next(iter(dimensions.values()))
        refusal = backend_refusal(
            backend, captured.frontend, method, specs[method], "dynamic_shapes", "dynamic_shapes=None", str(first)
        )
        if refusal:
            raise LoweringError(refusal)


def _handle_generator(
    captured: CapturedProgram,
    specs: dict[str, Any],
    debug_handles: str,
    hierarchy_prefix: HierarchyPath,
    top_type: str | None,
) -> DebugHandleGenerator:
    call_sites = torchscript_call_sites(captured.program, list(specs)) if captured.frontend == "torchscript" else {}
    return DebugHandleGenerator(
        debug_handles, top_type=top_type or captured.top_type, prefix=hierarchy_prefix, call_sites=call_sites
    )


def _preprocess(
    backend: BackendInfo, program: Any, specs: dict[str, Any], generator: Callable[..., Any]
) -> _Preprocessed:
    """The backend's preprocess on its own copy of the program, its failures as `LoweringError`."""
    try:
        with toolchain_output.logged():  # exporters and compilers print as they work; that belongs in the log
            with progress.step(f"{backend.name}: preprocess"):
                result = backend.preprocess(program, specs, generator)
    except LoweringError:
        raise
    except Exception as error:
        raise LoweringError(f"Backend {backend.name!r}: preprocess failed: {type(error).__name__}: {error}") from error
    checked = _as_preprocess_result(backend.name, result)
    return _Preprocessed(checked.payload, checked)


def _preprocess_partitioned(
    backend: BackendInfo,
    captured: CapturedProgram,
    specs: dict[str, Any],
    generator: _TimedGenerator,
    clock: HandleClock,
    min_nodes: int,
    seconds: StepSeconds,
) -> tuple[_Preprocessed, Runtime]:
    """Split (`pipeline.core.partitioning`), lower the supported groups in one preprocess, record the split."""
    with seconds.step("partition", less=clock):
        with toolchain_output.logged():  # functionalizing re-traces the program, and torch talks as it does
            with progress.step(f"{backend.name}: partition"):
                split = split_program(backend, captured, specs, generator, min_nodes)
    with seconds.step("preprocess", less=clock):
        inner = (
            _preprocess(backend, _own_copy(split.programs), split.spec, clock.timed(split.generator))
            if split.programs
            else _Preprocessed(b"", PreprocessResult(b""))
        )
    mark_handles(generator.handle_map, split)
    record = partition_record(split, backend.name, min_nodes)
    payload = partitioned_payload(split, inner.payload)
    return _Preprocessed(payload, inner.result, record), PartitionedRuntime(backend)


def to_backend(
    backend_name: str,
    module: torch.nn.Module,
    method_compile_spec: MethodCompileSpec,
    *,
    frontend: str | None = None,
    example_inputs: ExampleInputs | None = None,
    debug_handles: str = "sequential",
    torchscript_mode: str = "script",
    strict: bool = True,
    hierarchy_prefix: HierarchyPath = (),
    top_type: str | None = None,
    partition: bool = False,
    min_nodes: int = 1,
    dynamic_shapes: DynamicShapes = None,
) -> LoweredModule:
    """Capture ``module`` with a frontend and lower the methods named in the spec.

    ``frontend=None`` means torchscript for a ScriptModule and export otherwise;
    ``example_inputs`` is ``{method: tuple of args}``. ``dynamic_shapes`` declares the dimensions that
    vary, ``{method: {argument: {dimension: {"name", "min", "max"} | name | torch.export.Dim}}}`` or
    ``"auto"`` (`pipeline.core.shapes`); every other dimension is the example's size, and every call is
    checked against them (`pipeline.ShapeError`). The export frontend runs torch.export strict, and
    non-strict if that fails; ``strict=False`` tries non-strict first (`pipeline.core.frontends.capture`).
    ``partition=True`` lowers what the backend supports and runs the rest in PyTorch (export frontend
    only; see `codegen_backend_module`).
    """
    spec = normalize_compile_spec(method_compile_spec)
    if partition and frontend not in (None, "export"):
        raise LoweringError(
            f"Partitioned lowering splits exported programs; frontend {frontend!r} cannot be "
            "partitioned (allowed with partition=True: 'export')."
        )
    captured = capture(module, list(spec), frontend, example_inputs, torchscript_mode, dynamic_shapes, strict)
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
    """Every method's options checked as lowering checks them, defaults filled in, as plain JSON values.

    The checks are the backend's ``CompileSpec`` (types, ``__post_init__``) and
    its ``check_compile_spec`` across methods; ``python -m pipeline.validate``
    runs this same function. Errors name ``path.<method>.<key>``.
    """
    return resolve_specs(backend, method_compile_spec, path)[1]


def resolve_specs(
    backend: BackendInfo, method_compile_spec: MethodCompileSpec, path: str = "compile_spec"
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``({method: CompileSpec instance}, {method: options})``: what preprocess and compile receive, and
    what the module and its artifact keep. A backend without a ``CompileSpec`` receives the options."""
    options = normalize_compile_spec(method_compile_spec)
    if backend.compile_spec is None:
        return options, options
    typed = {
        method: parse_compile_spec(backend.compile_spec, given, f"{path}.{method}") for method, given in options.items()
    }
    try:
        backend.backend_cls.check_compile_spec(typed)
    except LoweringError as error:
        raise SpecError(f"{path}: {error}") from None
    return typed, {method: options_of(value) for method, value in typed.items()}


def _own_copy(program: Any) -> Any:
    """The copy preprocess gets: the contract lets it change the program, never the caller's."""
    if isinstance(program, dict):
        return {method: _copy_exported(exported) for method, exported in program.items()}
    return copy.deepcopy(program)


def _copy_exported(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """A copy of the graph that shares the weights: a backend may rewrite the graph, and no backend writes
    into a weight (the conformance suite checks the model's weights after every zoo lowering), so copying
    them would only hold a model's size twice while preprocess runs."""
    weights = [*program.state_dict.values(), *program.constants.values()]
    shared: dict[int, Any] = {id(weight): weight for weight in weights}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, inside deepcopy
        copied = copy.deepcopy(program, shared)
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
    try:
        plain: dict[str, Any] = json.loads(json.dumps(notes, sort_keys=True, allow_nan=False))
        return plain
    except (TypeError, ValueError) as error:
        raise LoweringError(
            f"Backend {backend_name!r}: PreprocessResult.notes must be plain JSON values: {error}"
        ) from None


def _submodule(root: torch.nn.Module, path: str) -> tuple[torch.nn.Module, str, torch.nn.Module]:
    """(parent, attribute, submodule) for a dotted path, with errors that name the path."""
    if not path:
        raise LoweringError("Selective lowering needs non-empty dotted paths to submodules, e.g. 'sub1.submodule'.")
    parent, current = root, root  # the loop runs at least once: the path is not empty
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

        def hook(
            mod: torch.nn.Module, call_args: tuple[Any, ...], call_kwargs: dict[str, Any], path: str = path
        ) -> None:
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
