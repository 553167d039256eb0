"""One set of cases that every built-in backend is held to, run per backend by parametrization.

As ExecuTorch's per-backend "flow" suites do, each case is one function taking the
``backend`` fixture: the `Facts` of one backend from `BACKENDS` below, the one table
that says what differs between them (which zoo models and frontends, which errors it
can attribute to a source line, what its ``supports()`` answers). A backend's own
test file keeps only what is its own (its payload format, its options reaching its
runtime, its quantization).

The cases use the public API only (``pipeline.to_backend``, ``save_lowered``,
``load_lowered``, the registry, ``LoweredModule.profile``, the class declarations and
the error types), never a backend's handles, so that they hold whatever a backend's
runtime looks like inside.

To add a case: write one ``test_...(backend)`` function here; to add a backend fact,
add a field to `Facts` with a default and set it where it differs. A lowered zoo
model is shared across the session (``lowered_zoo`` in tests/conftest.py), so a new
case on the zoo costs no extra lowering.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import backend_checks
import pytest
import torch
from backend_checks import FRONTEND_OPTIONS, line_of
from output_kinds import KINDS, Returns
from torch import nn

import pipeline
from pipeline import zoo
from pipeline.core.backend import FRONTENDS, Backend
from pipeline.core.errors import ArgumentError, BackendRuntimeError, LoweringError, ShapeError
from pipeline.core.lowered_module import LoweredModule

Spec = dict[str, Any]
SpecCase = tuple[Spec, str]
Inputs = dict[str, tuple[Any, ...]]  # {method: example args}
LowerZoo = Callable[..., LoweredModule]  # the session's lowered_zoo fixture (tests/conftest.py)
TinyPrograms = dict[str, Any]  # FRONTEND_OPTIONS key -> a captured program


@dataclass(frozen=True)
class Facts:
    """What the cases need to know about one backend."""

    name: str
    frontend: str  # the FRONTEND_OPTIONS key the cases lower with by default ("export", "script", "trace")
    declared: dict[str, Any]  # what check_registration expects of the registry entry (besides name and class)
    version: Callable[[], str]  # the version the backend records in artifacts and reports
    zoo: tuple[tuple[str, str], ...]  # (frontend, zoo model) lowered, checked against eager, saved and loaded
    runtime: Optional[str] = None  # the module a backend needs; without it, its cases skip naming it
    slow_zoo: tuple[tuple[str, str], ...] = ()  # the same, marked slow
    heavy: bool = False  # every lowering is slow (inductor): its cases that lower are marked slow
    spec: Callable[[str, tuple[Any, ...]], Spec] = lambda frontend, args: {}  # options each zoo lowering needs
    invalid_specs: tuple[SpecCase, ...] = ()  # (options, message regex): refused before anything is lowered
    reproducible_zoo: tuple[tuple[str, str], ...] = ()  # lowered twice: byte-identical artifacts
    doc_phrases: tuple[str, ...] = ()  # what the package docstring must say (beyond listing every option)
    index_error: Optional[str] = None  # an index out of range at run time: the message (regex) naming its op
    profile_names_backend_map: bool = True  # each profile event is named by its backend_map key first
    profile_coverage: float = 1.0  # the share of profile events that carry debug handles
    supports: dict[str, Any] = field(default_factory=dict)  # node name -> True or part of the reason
    refused_output_kinds: dict[str, str] = field(default_factory=dict)  # output dtype -> why lowering refuses

    def lowering_spec(self, frontend: str, inputs: Inputs) -> dict[str, Spec]:
        return {method: self.spec(frontend, args) for method, args in inputs.items()}

    @property
    def cases_mark(self) -> tuple[Any, ...]:
        return (pytest.mark.slow,) if self.heavy else ()


LinearRelu = Callable[[Facts], tuple[nn.Module, LoweredModule]]  # the linear_relu fixture
ZooModel = tuple[Facts, nn.Module, Inputs, LoweredModule]  # facts, eager model, example inputs, lowered


def _onnx_input_shapes(frontend: str, args: tuple[Any, ...]) -> Spec:
    # a scripted graph does not record argument shapes: the spec gives them
    return {"input_shapes": [list(a.shape) for a in args]} if frontend == "script" else {}


def _runtime_version(module: str, version: Callable[[Any], str] = lambda m: m.__version__) -> Callable[[], str]:
    return lambda: f"0.1.0+{module}.{version(importlib.import_module(module))}"


ALL_FOUR = ("basic", "mlp", "cnn", "transformer")

BACKENDS: tuple[Facts, ...] = (
    Facts(
        name="reference",
        frontend="export",
        declared=dict(accepts=("torchscript", "export"), reproducible=True, carries_code=False),
        version=lambda: "0.1.0",
        zoo=tuple((frontend, name) for frontend in ("export", "script", "trace") for name in ALL_FOUR),
        reproducible_zoo=tuple((frontend, "transformer") for frontend in ("export", "script", "trace")),
        invalid_specs=(
            ({"constant_fold": True}, r"constant_fold: unknown key; allowed: 'check_inputs', 'constant_folding'"),
            ({"check_inputs": "yes"}, r"check_inputs: expected true or false"),
        ),
        index_error=r"forward/\d+ aten::index.Tensor failed: IndexError: index 10 is out of bounds",
        supports={
            "linear": True,
            "relu": True,
            "fft_fft": "not in the reference backend's op table",
            "dropout": "captured in training mode",
        },
    ),
    Facts(
        name="inductor",
        frontend="export",
        declared=dict(accepts=("export",), reproducible=False, carries_code=True),
        version=_runtime_version("torch"),
        zoo=(("export", "mlp"),),  # the session's one unmarked AOTInductor compile (tests/conftest.py)
        slow_zoo=(("export", "basic"), ("export", "cnn"), ("export", "transformer")),
        heavy=True,
        spec=lambda frontend, args: {"cpp_enable_kernel_profile": True},
        invalid_specs=(
            ({"max_autotun": True}, r"compile_spec.forward.max_autotun: unknown key.*Did you mean 'max_autotune'"),
            (
                {"options": {"epilogue_fusoin": False}},
                r"no inductor option 'epilogue_fusoin'.*Did you mean 'epilogue_fusion'",
            ),
            ({"options": {"cpp": {"simdln": 256}}}, r"no inductor option 'cpp.simdln'.*Did you mean 'cpp.simdlen'"),
            ({"options": {"epilogue_fusion": 3}}, r"options.epilogue_fusion: expected a bool"),
            ({"options": {"max_autotune": True}}, r"set it with the field 'max_autotune'"),
            (
                {"cpp_threads": 0},
                r"compile_spec.forward.cpp_threads: must be -1 \(torch's thread count\) or in 1\.\.256, not 0",
            ),
            ({"cpp_threads": 100000}, r"compile_spec.forward.cpp_threads: must be -1 .* or in 1\.\.256, not 100000"),
            (
                {"cpp_simdlen": 1 << 20},
                r"compile_spec.forward.cpp_simdlen: must be null \(the CPU's\) or in 1\.\.2048 bits",
            ),
            ({"freezing": "sometimes"}, r"compile_spec.forward.freezing: expected true or false"),
        ),
        doc_phrases=("Loading this payload loads native code.", "shared library"),
    ),
    Facts(
        name="torchscript",
        frontend="script",
        declared=dict(accepts=("torchscript",), reproducible=False, carries_code=True),
        version=_runtime_version("torch"),
        zoo=tuple((mode, name) for mode in ("script", "trace") for name in ALL_FOUR),
        invalid_specs=(
            ({"freze": False}, r"compile_spec.forward.freze: unknown key.*Did you mean 'freeze'"),
            ({"freeze": False, "optimize_for_inference": True}, r"optimize_for_inference=True needs freeze=True"),
            (
                {"optimize_for_inference": "often"},
                r"compile_spec.forward.optimize_for_inference: expected true or false",
            ),
        ),
        doc_phrases=("restricted unpickler", "not arbitrary Python"),
        index_error="The following operation failed in the TorchScript interpreter",
        supports={"linear": True, "fft_fft": True, "eigh": True, "dropout": True},
    ),
    Facts(
        name="openvino",
        runtime="openvino",
        frontend="export",
        declared=dict(accepts=("export",), reproducible=True, carries_code=False),
        version=_runtime_version("openvino", lambda m: m.__version__.split("-")[0]),
        zoo=tuple(("export", name) for name in ALL_FOUR),
        reproducible_zoo=(("export", "cnn"),),
        invalid_specs=(
            ({"precision": "f32"}, r"compile_spec.forward.precision: unknown key.*Did you mean 'inference_precision'"),
            (
                {"inference_precision": "fp32"},
                r"inference_precision: 'fp32' is not allowed; allowed: 'bf16', 'f16', 'f32'",
            ),
            (
                {"performance_hint": "FAST"},
                r"performance_hint.*allowed: 'CUMULATIVE_THROUGHPUT', 'LATENCY', 'THROUGHPUT'",
            ),
            ({"threads": -1}, r"compile_spec.forward.threads: must be in 0\.\.256 \(0: the plugin's choice\), not -1"),
            (
                {"threads": 100000},
                r"compile_spec.forward.threads: must be in 0\.\.256 \(0: the plugin's choice\), not 100000",
            ),
            ({"num_streams": -2}, r"compile_spec.forward.num_streams: must be in 0\.\.256"),
            ({"num_streams": 100000}, r"compile_spec.forward.num_streams: must be in 0\.\.256"),
            ({"threads": "two"}, r"compile_spec.forward.threads: expected an integer"),
        ),
        # the IR has the program's static shapes, and OpenVINO's Gather answers an index out of range with
        # zeros: test_openvino checks a node failing at run time on a program with a dynamic dimension
        profile_names_backend_map=False,  # events are the plugin's executed nodes, which fuse IR nodes
    ),
    Facts(
        name="executorch",
        runtime="executorch",
        frontend="export",
        declared=dict(accepts=("export",), reproducible=True, carries_code=False),
        version=lambda: f"0.1.0+executorch.{importlib.metadata.version('executorch')}",
        zoo=(("export", "mlp"), ("export", "cnn"), ("export", "transformer")),
        slow_zoo=(("export", "basic"),),
        invalid_specs=(
            ({"thread": 1}, r"compile_spec.forward.thread: unknown key.*Did you mean 'threads'"),
            (
                {"threads": -1},
                r"compile_spec.forward.threads: must be in 0\.\.256 \(0: the runtime's default\), not -1",
            ),
            ({"threads": 100000}, r"compile_spec.forward.threads: must be in 0\.\.256"),
            ({"threads": "two"}, r"compile_spec.forward.threads: expected an integer"),
            (
                {"partitioner": "coreml"},
                r"compile_spec.forward.partitioner: 'coreml' is not allowed; allowed: 'none', 'xnnpack'",
            ),
            (
                {"quantize": "int4"},
                r"quantize: 'int4' is not allowed; allowed: 'int8_dynamic', 'int8_static', 'none'",
            ),
            (
                {"calibration_samples": -2},
                r"compile_spec.forward.calibration_samples: must be in 0\.\.10000, not -2",
            ),
            ({"quantize": "int8_static", "partitioner": "none"}, r"quantize=int8_static needs partitioner=xnnpack"),
        ),
        index_error=r"at instruction \d+ \(aten::index.Tensor_out\)",
        profile_names_backend_map=False,  # events are XNNPACK's operators and the portable kernels
    ),
    Facts(
        name="onnxruntime",
        runtime="onnxruntime",
        frontend="export",
        declared=dict(accepts=("torchscript", "export"), reproducible=True, carries_code=False),
        version=_runtime_version("onnxruntime"),
        zoo=tuple(("export", name) for name in ALL_FOUR)
        + tuple((frontend, name) for frontend in ("trace", "script") for name in ("basic", "mlp", "cnn")),
        reproducible_zoo=(("export", "cnn"),),
        spec=_onnx_input_shapes,
        invalid_specs=(
            (
                {"intra_op_threads": 2},
                r"compile_spec.forward.intra_op_threads: unknown key.*Did you mean 'intra_op_num_threads'",
            ),
            (
                {"graph_optimization_level": "fast"},
                r"graph_optimization_level.*allowed: 'all', 'basic', 'disable', 'extended', 'layout'",
            ),
            ({"execution_mode": "async"}, r"execution_mode.*allowed: 'parallel', 'sequential'"),
            (
                {"intra_op_num_threads": -1},
                r"intra_op_num_threads must be in 0\.\.256 \(0: onnxruntime's default\), not -1",
            ),
            ({"intra_op_num_threads": 100000}, r"intra_op_num_threads must be in 0\.\.256 .*, not 100000"),
            ({"inter_op_num_threads": 100000}, r"inter_op_num_threads must be in 0\.\.256 .*, not 100000"),
            ({"intra_op_num_threads": "two"}, r"compile_spec.forward.intra_op_num_threads: expected an integer"),
            ({"opset": 3}, r"opset must be in 7\.\."),
            ({"input_dtypes": ["float32"]}, r"input_dtypes needs input_shapes"),
            ({"providers": []}, r"providers must name at least one"),
            (
                {"quantize": "int4"},
                r"quantize: 'int4' is not allowed; allowed: 'int8_dynamic', 'int8_static', 'none'",
            ),
            ({"calibration_samples": -1}, r"calibration_samples must be in 0\.\.10000, not -1"),
        ),
        index_error="invalid index",
        supports={
            "linear": True,
            "matmul": True,
            "fft_fft": "complex tensor",
            "eigh": "no translation in the ONNX exporter",
        },
        refused_output_kinds={"bfloat16": "numpy arrays, which have no bfloat16"},
    ),
)

pytestmark = [  # tracing the zoo warns about what it does; the cases check the results instead
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning"),
]


def _backend_class(name: str) -> type[Backend]:
    """The class the registry holds for ``name`` (the one place the cases read a registry entry)."""
    backend_cls: type[Backend] = pipeline.get_backend(name).backend_cls
    return backend_cls


def _compile_spec(name: str) -> type[Any]:
    schema = _backend_class(name).CompileSpec
    assert schema is not None, f"{name} declares a CompileSpec"
    return schema


def _declares_supports(backend_cls: type[Backend]) -> bool:
    return next(k for k in backend_cls.__mro__ if "supports" in vars(k)) is not Backend


def _installed(facts: Facts) -> bool:
    return facts.runtime is None or importlib.util.find_spec(facts.runtime) is not None


def _skip_unless_installed(facts: Facts) -> None:
    if not _installed(facts):
        pytest.skip(f"backend {facts.name!r} needs the {facts.runtime!r} package, which is not installed")


def _backend_params(heavy_is_slow: bool, where: Callable[[Facts], bool] = lambda facts: True) -> list[Any]:
    return [
        pytest.param(facts, id=facts.name, marks=facts.cases_mark if heavy_is_slow else ())
        for facts in BACKENDS
        if where(facts)
    ]


def backends_where(where: Callable[[Facts], bool], heavy_is_slow: bool = False) -> Any:
    """Runs a case on the backends ``where`` picks only: a case that does not apply is not collected."""
    name = "lowering_backend" if heavy_is_slow else "backend"
    return pytest.mark.parametrize(name, _backend_params(heavy_is_slow, where), indirect=True)


def _zoo_params() -> list[Any]:
    return [
        pytest.param((facts, frontend, name), id=f"{facts.name}-{frontend}-{name}", marks=marks)
        for facts in BACKENDS
        for cases, marks in ((facts.zoo, ()), (facts.slow_zoo, (pytest.mark.slow,)))
        for frontend, name in cases
    ]


@pytest.fixture(params=_backend_params(heavy_is_slow=False))
def backend(request: pytest.FixtureRequest) -> Facts:
    """A backend's facts, for cases that lower nothing (cheap on every backend)."""
    facts: Facts = request.param
    _skip_unless_installed(facts)
    return facts


@pytest.fixture(params=_backend_params(heavy_is_slow=True))
def lowering_backend(request: pytest.FixtureRequest) -> Facts:
    """A backend's facts, for cases that lower a small model (slow on a backend whose compiles are)."""
    facts: Facts = request.param
    _skip_unless_installed(facts)
    return facts


@pytest.fixture
def zoo_model(
    lowered_zoo: LowerZoo, backend_zoo_case: tuple[Facts, str, str]
) -> tuple[Facts, nn.Module, Inputs, LoweredModule]:
    facts, frontend, name = backend_zoo_case
    _skip_unless_installed(facts)
    inputs = zoo.example_inputs(name)
    lowered = lowered_zoo(facts.name, name, frontend, facts.lowering_spec(frontend, inputs))
    return facts, zoo.build(name), inputs, lowered


@pytest.fixture(params=_zoo_params())
def backend_zoo_case(request: pytest.FixtureRequest) -> tuple[Facts, str, str]:
    case: tuple[Facts, str, str] = request.param
    return case


def _mlp(lowered_zoo: LowerZoo, facts: Facts) -> tuple[nn.Module, Inputs, LoweredModule]:
    """The zoo's MLP on the backend's default frontend: the session's shared lowering."""
    inputs = zoo.example_inputs("mlp")
    return (
        zoo.build("mlp"),
        inputs,
        lowered_zoo(facts.name, "mlp", facts.frontend, facts.lowering_spec(facts.frontend, inputs)),
    )


@pytest.fixture(scope="module")
def tiny_programs() -> TinyPrograms:
    """A two-op model captured once per frontend: the spec cases are refused before its preprocess runs."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    inputs = {"forward": (torch.randn(2, 4),)}
    return {
        key: pipeline.capture(
            model, ["forward"], options["frontend"], inputs, options.get("torchscript_mode", "script")
        )
        for key, options in FRONTEND_OPTIONS.items()
    }


def _lower_tiny(tiny_programs: TinyPrograms, facts: Facts, options: Spec) -> LoweredModule:
    lowered: LoweredModule = pipeline.codegen_backend_module(
        facts.name, tiny_programs[facts.frontend], {"forward": options}
    )
    return lowered


# -- registration and declarations ----------------------------------------------------------------


def test_the_backend_is_found_by_name_as_its_class_declares_it(backend: Facts) -> None:
    backend_cls = _backend_class(backend.name)
    backend_checks.check_registration(backend.name, backend_cls, **backend.declared, version=backend.version())


def test_the_declarations_are_consistent(backend: Facts) -> None:
    backend_cls = _backend_class(backend.name)
    assert backend_cls.name == backend.name
    assert backend_cls.accepts and set(backend_cls.accepts) <= set(FRONTENDS)
    assert isinstance(backend_cls.reproducible, bool) and isinstance(backend_cls.carries_code, bool)
    # a payload that carries code is parsed by native code (a loader, a shared library): it loads in a child first
    assert backend_cls.native_payload or not backend_cls.carries_code
    assert backend_cls().is_available() is True
    assert inspect.getdoc(backend_cls), "the class says what the backend is"


def test_the_compile_spec_is_a_dataclass_whose_every_field_has_a_default(backend: Facts) -> None:
    schema = _compile_spec(backend.name)
    assert dataclasses.is_dataclass(schema)
    missing = [
        f.name
        for f in dataclasses.fields(schema)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    assert missing == []
    schema()  # the defaults are a valid spec


def test_the_package_docstring_lists_every_compile_spec_option(backend: Facts) -> None:
    backend_cls = _backend_class(backend.name)
    package = importlib.import_module(backend_cls.__module__.rsplit(".", 1)[0])
    doc = " ".join((package.__doc__ or "").split())
    assert doc, f"{package.__name__} has no docstring"
    assert [f.name for f in dataclasses.fields(_compile_spec(backend.name)) if f"``{f.name}``" not in doc] == []
    assert [phrase for phrase in backend.doc_phrases if phrase not in doc] == []


def test_a_frontend_it_does_not_accept_is_refused_naming_the_ones_it_does(
    backend: Facts, tiny_programs: TinyPrograms
) -> None:
    accepts = _backend_class(backend.name).accepts
    for frontend in sorted(set(FRONTENDS) - set(accepts)):
        program = tiny_programs["script" if frontend == "torchscript" else frontend]
        named = ", ".join(repr(accepted) for accepted in accepts)
        with pytest.raises(LoweringError, match=rf"does not accept the '{frontend}' frontend; it accepts: {named}"):
            pipeline.codegen_backend_module(backend.name, program, {"forward": {}})


# -- compile spec validation ---------------------------------------------------------------------


def test_an_unknown_option_is_refused_naming_it_and_every_allowed_one(
    backend: Facts, tiny_programs: TinyPrograms
) -> None:
    schema = _compile_spec(backend.name)
    with pytest.raises(LoweringError) as raised:
        _lower_tiny(tiny_programs, backend, {"zzz_not_an_option": 1})
    message = str(raised.value)
    assert "compile_spec.forward.zzz_not_an_option: unknown key; allowed: " in message
    assert [f.name for f in dataclasses.fields(schema) if f"'{f.name}'" not in message] == []


def test_a_value_of_the_wrong_type_is_refused_naming_the_option(backend: Facts, tiny_programs: TinyPrograms) -> None:
    schema = _compile_spec(backend.name)
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        wrong = {bool: ("yes", "expected true or false"), int: ("two", "expected an integer")}.get(hints[f.name])
        if wrong is None:
            continue
        with pytest.raises(LoweringError, match=rf"compile_spec.forward.{f.name}: {wrong[1]}"):
            _lower_tiny(tiny_programs, backend, {f.name: wrong[0]})


def _integer_fields(schema: type[Any]) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(schema)
    huge = 10**12
    found: list[tuple[str, Any]] = []
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if kind is int or kind == Optional[int]:
            found.append((f.name, huge))
        elif kind == Optional[list[list[int]]]:
            found.append((f.name, [[huge]]))
    return found


def test_every_integer_option_past_its_bound_is_refused_naming_the_field_and_the_range(
    backend: Facts, tiny_programs: TinyPrograms
) -> None:
    """A received manifest carries every option: an integer without a bound is a number an attacker chooses."""
    schema = _compile_spec(backend.name)
    for name, value in _integer_fields(schema):
        with pytest.raises(LoweringError) as raised:
            _lower_tiny(tiny_programs, backend, {name: value})
        message = str(raised.value)
        assert name in message and (".." in message or "at most" in message), message


@pytest.mark.parametrize(
    "facts, options, message",
    [
        pytest.param(facts, options, message, id=f"{facts.name}-{i}")
        for facts in BACKENDS
        for i, (options, message) in enumerate(facts.invalid_specs)
    ],
)
def test_an_invalid_compile_spec_is_refused_naming_the_option_and_what_is_allowed(
    facts: Facts, options: Spec, message: str, tiny_programs: TinyPrograms
) -> None:
    _skip_unless_installed(facts)
    with pytest.raises(LoweringError, match=message):
        _lower_tiny(tiny_programs, facts, options)


# -- the zoo: numerics, handles, save and load ------------------------------------------------------


def test_a_zoo_model_matches_eager_and_loads_back_with_the_same_outputs(zoo_model: ZooModel, tmp_path: Path) -> None:
    """Loading follows the trust policy: a data-only payload loads without an opt-in."""
    facts, model, inputs, lowered = zoo_model
    path = pipeline.save_lowered(lowered, tmp_path / "model.lowered")
    loaded = pipeline.load_lowered(path, trust_code=facts.declared["carries_code"])
    assert loaded.backend_name == facts.name and loaded.backend_version == lowered.backend_version
    assert loaded.payload == lowered.payload
    backend_checks.check_against_eager(model, inputs, lowered, **backend_checks.tolerance(facts.name), loaded=loaded)


def test_lowering_leaves_the_models_weights_as_they_were(zoo_model: ZooModel, lowered_zoo: LowerZoo) -> None:
    """Preprocess gets a copy of the graph that shares the model's weights: a backend never writes into them."""
    _, _, _, lowered = zoo_model
    assert lowered_zoo.changed_weights[id(lowered)] == []


def test_every_backend_map_handle_is_issued_and_the_handles_point_at_source_lines(zoo_model: ZooModel) -> None:
    _, _, _, lowered = zoo_model
    handles, backend_map = lowered.handle_map.handles, lowered.handle_map.backend_map
    assert backend_map, "the backend says which of its instructions came from which nodes"
    assert [key for key, issued in backend_map.items() if not set(issued) <= set(handles)] == []
    frames = [frame for record in handles.values() for frame in (record.source, *record.call_stack) if frame]
    assert frames and all(frame.line >= 1 and frame.text for frame in frames)
    assert any(frame.file.endswith("pipeline/zoo/__init__.py") for frame in frames)


@backends_where(lambda facts: facts.declared["carries_code"])  # a data-only payload loads without trust
def test_a_carries_code_payload_loads_only_with_the_trust_opt_in(
    backend: Facts, lowered_zoo: LowerZoo, tmp_path: Path
) -> None:
    _, _, lowered = _mlp(lowered_zoo, backend)
    path = pipeline.save_lowered(lowered, tmp_path / "mlp.lowered")
    with pytest.raises(pipeline.ArtifactError, match=r"trust_code=True"):
        pipeline.load_lowered(path)


@pytest.mark.parametrize(
    "facts, frontend, name",
    [
        pytest.param(facts, frontend, name, id=f"{facts.name}-{frontend}-{name}")
        for facts in BACKENDS
        for frontend, name in facts.reproducible_zoo
    ],
)
def test_a_reproducible_backend_lowers_one_model_twice_to_identical_artifacts(
    facts: Facts, frontend: str, name: str, lowered_zoo: LowerZoo, tmp_path: Path
) -> None:
    _skip_unless_installed(facts)
    inputs = zoo.example_inputs(name)
    spec = facts.lowering_spec(frontend, inputs)
    again = pipeline.to_backend(facts.name, zoo.build(name), spec, example_inputs=inputs, **FRONTEND_OPTIONS[frontend])
    first = pipeline.save_lowered(lowered_zoo(facts.name, name, frontend, spec), tmp_path / "a.lowered")
    assert again.payload == lowered_zoo(facts.name, name, frontend, spec).payload
    assert first.read_bytes() == pipeline.save_lowered(again, tmp_path / "b.lowered").read_bytes()


def test_lowering_a_scripted_model_leaves_later_captures_of_its_class_unchanged() -> None:
    _skip_unless_installed(next(facts for facts in BACKENDS if facts.name == "onnxruntime"))

    def model_lines(backend: str, spec: Spec) -> set[int]:
        lowered = pipeline.to_backend(
            backend,
            zoo.build("mlp"),
            {"forward": spec},
            example_inputs=zoo.example_inputs("mlp"),
            frontend="torchscript",
        )
        frames = [f for record in lowered.handle_map.handles.values() for f in (record.source, *record.call_stack) if f]
        return {f.line for f in frames if f.file.endswith("pipeline/zoo/__init__.py")}

    before = model_lines("reference", {})
    model_lines("onnxruntime", {"input_shapes": [[2, 64]]})
    assert before and model_lines("reference", {}) == before


# -- errors at run time point at the source ---------------------------------------------------------


class Pick(nn.Module):
    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        doubled = x * 2
        return doubled[index]


@backends_where(lambda facts: facts.index_error is not None, heavy_is_slow=True)
def test_a_failing_op_at_run_time_names_its_handle_and_source_line(lowering_backend: Facts) -> None:
    x, index = torch.randn(5), torch.tensor([1, 3])
    lowered = pipeline.to_backend(
        lowering_backend.name,
        Pick(),
        {"forward": {}},
        example_inputs={"forward": (x, index)},
        **FRONTEND_OPTIONS[lowering_backend.frontend],
    )
    assert torch.equal(lowered(x, index), Pick()(x, index))
    with pytest.raises(BackendRuntimeError, match=lowering_backend.index_error) as raised:
        lowered(x, torch.tensor([1, 10]))
    error = raised.value
    scripted = FRONTEND_OPTIONS[lowering_backend.frontend]["frontend"] == "torchscript"
    op = "aten::index" if scripted else "aten::index.Tensor"  # a TorchScript graph names no overloads
    assert [lowered.handle_map.handles[h].op for h in error.debug_handles] == [op]
    assert f"line {line_of(Pick.forward, 'doubled[index]')}" in str(error)


@backends_where(lambda facts: facts.frontend == "export")
def test_a_size_the_program_was_not_captured_with_is_a_shape_error_before_the_runtime_sees_it(
    backend: Facts, lowered_zoo: LowerZoo
) -> None:
    """An exported program has the example's static shapes: every backend refuses others the same way,
    never with its runtime's own words (issue 19)."""
    _, _, lowered = _mlp(lowered_zoo, backend)
    for shape, dim, captured in (((3, 64), 0, 2), ((2, 65), 1, 64)):  # another batch, another width
        with pytest.raises(ShapeError) as raised:
            lowered(torch.randn(shape))
        assert f"argument 'x' has size {shape[dim]} in dimension {dim}, which the program was captured with as " in (
            str(raised.value)
        ) and f"as {captured} (static)" in str(raised.value)


# -- running -------------------------------------------------------------------------------------


def test_inputs_that_require_grad_or_are_not_contiguous_are_accepted(backend: Facts, lowered_zoo: LowerZoo) -> None:
    model, inputs, lowered = _mlp(lowered_zoo, backend)
    x = inputs["forward"][0]
    with torch.no_grad():
        expected = model(x)
    tolerance = backend_checks.tolerance(backend.name)
    backend_checks.assert_same_outputs(expected, lowered(x.clone().requires_grad_()), **tolerance)
    strided = torch.empty(64, 2).t()  # (2, 64) with strides (1, 2)
    strided.copy_(x)
    assert not strided.is_contiguous()
    backend_checks.assert_same_outputs(expected, lowered(strided), **tolerance)


def test_outputs_are_not_overwritten_by_the_next_call(backend: Facts, lowered_zoo: LowerZoo) -> None:
    _, inputs, lowered = _mlp(lowered_zoo, backend)
    first_input, second_input = (backend_checks.fresh_like(inputs["forward"], seed)[0] for seed in (5, 6))
    first = lowered(first_input)
    kept = first.clone()
    lowered(second_input)
    assert torch.equal(first, kept)


# -- profiles ------------------------------------------------------------------------------------


def test_a_profile_times_the_run_and_ties_each_event_to_issued_handles(backend: Facts, lowered_zoo: LowerZoo) -> None:
    _, inputs, lowered = _mlp(lowered_zoo, backend)
    events = lowered.profile("forward", *inputs["forward"])
    assert events, f"{backend.name} profiles"
    assert all(e.seconds >= 0 for e in events)
    handles = lowered.handle_map.handles
    assert all(set(e.debug_handles) <= set(handles) for e in events)
    assert sum(1 for e in events if e.debug_handles) >= backend.profile_coverage * len(events)
    if backend.profile_names_backend_map:
        backend_map = lowered.handle_map.backend_map
        assert [list(e.debug_handles) for e in events] == [backend_map[e.name.split()[0]] for e in events]


# -- supports() and partitioning ------------------------------------------------------------------


class Mixed(nn.Module):
    """Ops every backend runs, an FFT (complex values), an op ONNX has no translation for, a training-mode op."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.relu(self.linear(x))
        spectrum = torch.fft.fft(h)
        values = torch.linalg.eigh(h @ h.T)[0]
        dropped = torch.nn.functional.dropout(h, 0.5, training=True)
        return spectrum.real, values, dropped


@pytest.fixture(scope="module")
def mixed_nodes() -> dict[str, torch.fx.Node]:
    program = torch.export.export(Mixed().eval(), (torch.randn(3, 4),)).run_decompositions({})
    return {node.name: node for node in program.graph.nodes if node.op == "call_function"}


def _node(nodes: dict[str, torch.fx.Node], name: str) -> torch.fx.Node:
    return nodes[name] if name in nodes else next(n for key, n in nodes.items() if name in key)


def test_supports_answers_true_or_a_reason_for_every_node(
    backend: Facts, mixed_nodes: dict[str, torch.fx.Node]
) -> None:
    backend_cls = _backend_class(backend.name)
    answers = {name: backend_cls.supports(node) for name, node in mixed_nodes.items()}
    assert all(answer is True or (isinstance(answer, str) and answer) for answer in answers.values()), answers
    if not _declares_supports(backend_cls):  # declares nothing: supports everything
        assert all(answer is True for answer in answers.values())
    for name, expected in backend.supports.items():
        answer = backend_cls.supports(_node(mixed_nodes, name))
        assert answer is True if expected is True else isinstance(answer, str) and expected in answer, (name, answer)


def _partitions(facts: Facts) -> bool:
    """Partitioning splits exported programs, by what the backend's supports() refuses."""
    if not _installed(facts):
        return False
    backend_cls = _backend_class(facts.name)
    return "export" in backend_cls.accepts and _declares_supports(backend_cls)


@backends_where(_partitions)
def test_partitioning_falls_back_on_exactly_the_nodes_supports_refuses(backend: Facts) -> None:
    backend_cls = _backend_class(backend.name)
    model, x = backend_checks.FftInTheMiddle().eval(), torch.randn(3, 4)
    program = torch.export.export(model, (x,))  # the graph the partitioner splits
    refused = {n.name for n in program.graph.nodes if n.op == "call_function" and backend_cls.supports(n) is not True}
    lowered = pipeline.to_backend(
        backend.name, model, {"forward": {}}, example_inputs={"forward": (x,)}, partition=True
    )
    assert refused and {entry["node"] for entry in lowered.partition["fallback"]} == refused
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), **backend_checks.tolerance(backend.name))


# -- what a call may raise (issue 27, item 7) -----------------------------------------------------

DOCUMENTED = (ArgumentError, BackendRuntimeError, LoweringError, ShapeError)
BAD_INPUTS: dict[str, Callable[[], Any]] = {
    "float64": lambda: torch.randn(2, 4, dtype=torch.float64),
    "int64": lambda: torch.ones(2, 4, dtype=torch.int64),
    "bfloat16": lambda: torch.randn(2, 4, dtype=torch.bfloat16),
    "wrong rank": lambda: torch.randn(2, 4, 1),
    "other batch": lambda: torch.randn(5, 4),
    "meta": lambda: torch.empty(2, 4, device="meta"),
    "non-contiguous": lambda: torch.randn(4, 2).t(),
    "NaN": lambda: torch.full((2, 4), float("nan")),
    "empty": lambda: torch.empty(0, 4),
    "expanded": lambda: torch.randn(1, 4).expand(2, 4),
    "requires_grad": lambda: torch.randn(2, 4, requires_grad=True),
    "None": lambda: None,
    "a string": lambda: "x",
}


@pytest.fixture(scope="module")
def linear_relu() -> LinearRelu:
    """A Linear and a ReLU lowered once per backend, on first use."""
    cache: dict[str, tuple[nn.Module, LoweredModule]] = {}

    def get(facts: Facts) -> tuple[nn.Module, LoweredModule]:
        if facts.name not in cache:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
            inputs = {"forward": (torch.randn(2, 4),)}
            cache[facts.name] = (
                model,
                pipeline.to_backend(
                    facts.name, model, {"forward": {}}, example_inputs=inputs, **FRONTEND_OPTIONS[facts.frontend]
                ),
            )
        return cache[facts.name]

    return get


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_answers_as_eager_or_raises_a_documented_error(
    lowering_backend: Facts, case: str, linear_relu: LinearRelu
) -> None:
    model, module = linear_relu(lowering_backend)
    value = BAD_INPUTS[case]()
    try:
        actual = module(value)
    except DOCUMENTED as error:
        assert str(error)  # says what is wrong
        return
    with torch.no_grad():
        expected = model(value)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if case != "NaN":  # runtimes differ on what relu(NaN) is (OpenVINO: 0); the error set is what this checks
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


# -- output kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_lowered_output_has_eagers_dtype_shape_and_values(lowering_backend: Facts, kind: str) -> None:
    """A backend that cannot exchange a dtype refuses it when lowering, not on every call."""
    model, x = Returns(kind).eval(), torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    lower = dict(example_inputs={"forward": (x,)}, **FRONTEND_OPTIONS[lowering_backend.frontend])
    refused = lowering_backend.refused_output_kinds.get(kind)
    if refused is not None:
        with pytest.raises(LoweringError, match=refused):
            pipeline.to_backend(lowering_backend.name, model, {"forward": {}}, **lower)
        return
    lowered = pipeline.to_backend(lowering_backend.name, model, {"forward": {}}, **lower)
    expected, actual = model(x), lowered(x)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-2 if kind in ("float16", "bfloat16") else 1e-5, rtol=1e-2)
