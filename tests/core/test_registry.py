"""The registry keeps the original's contract: names are unique, lookups say what exists."""

import sys
import textwrap

import pytest

import pipeline
from pipeline.core import registry


def noop_preprocess(program, spec, generate_debug_handles):
    return b""


class NoopBackend(pipeline.Backend):
    def compile(self, payload, spec):
        return {m: list for m in spec}


@pytest.fixture
def scratch_backend():
    names = []
    yield names
    for name in names:
        pipeline.unregister_backend(name)


def test_registering_a_preprocess_function_twice_names_it(scratch_backend):
    scratch_backend.append("twice")
    pipeline.register_backend_preprocess_function("twice", noop_preprocess)
    with pytest.raises(pipeline.LoweringError, match="'twice' is already registered"):
        pipeline.register_backend_preprocess_function("twice", noop_preprocess)


def test_missing_preprocess_function_names_backend_and_lists_registered():
    assert not pipeline.has_backend_preprocess_function("nope")
    with pytest.raises(pipeline.UnknownBackendError) as error:
        pipeline.get_backend_preprocess_function("nope")
    assert "'nope' is not registered" in str(error.value)
    assert "'test_backend'" in str(error.value)


def test_register_backend_as_decorator_registers_both_halves(scratch_backend):
    scratch_backend.append("decorated")

    @pipeline.register_backend("decorated", preprocess=noop_preprocess, accepts=("export",))
    class Decorated(NoopBackend):
        pass

    assert "decorated" in pipeline.list_backends()
    assert pipeline.get_backend_preprocess_function("decorated") is noop_preprocess
    assert pipeline.get_backend("decorated").backend_cls is Decorated
    assert pipeline.get_backend("decorated").accepts == ("export",)


def test_unknown_frontend_in_accepts_is_rejected(scratch_backend):
    with pytest.raises(pipeline.LoweringError, match="unknown frontend"):
        pipeline.register_backend("badfront", NoopBackend, preprocess=noop_preprocess, accepts=("onnx",))


def test_lowering_with_a_frontend_the_backend_does_not_accept_is_an_error(scratch_backend, basic, xh):
    scratch_backend.append("export_only")
    pipeline.register_backend("export_only", NoopBackend, preprocess=noop_preprocess, accepts=("export",))
    with pytest.raises(pipeline.LoweringError, match="does not accept the 'torchscript' frontend"):
        pipeline.to_backend("export_only", basic, {"accum": {}}, frontend="torchscript")


def test_unknown_backend_suggests_the_closest_name(basic, xh):
    with pytest.raises(pipeline.UnknownBackendError, match="Did you mean 'test_backend'"):
        pipeline.to_backend("test_bakend", basic, {"accum": {}}, example_inputs={"accum": xh})


def test_installed_package_adds_a_backend_through_an_entry_point(tmp_path, monkeypatch, basic, xh):
    package = tmp_path / "ext_backend_pkg.py"
    package.write_text(
        textwrap.dedent("""
        import pipeline
        class ExtBackend(pipeline.Backend):
            def compile(self, payload, spec):
                return {m: (lambda inputs: [inputs[0] * 2]) for m in spec}
        def register():
            pipeline.register_backend("ext", ExtBackend, preprocess=lambda p, s, g: b"ext")
    """)
    )
    dist = tmp_path / "ext_backend_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-backend-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pipeline.backends]\next = ext_backend_pkg:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points", None)
    try:
        assert "ext" in pipeline.list_backends()
        lowered = pipeline.to_backend("ext", basic, {"accum": {}}, example_inputs={"accum": xh})
        assert lowered.accum(*xh).equal(xh[0] * 2)
    finally:
        pipeline.unregister_backend("ext")
        sys.modules.pop("ext_backend_pkg", None)
    monkeypatch.setattr(registry, "_entry_points", None)


class Declared(NoopBackend):
    name = "declared"
    accepts = ("export",)
    version = "2.0"
    carries_code = True

    @staticmethod
    def preprocess(program, spec, generate_debug_handles):
        return b"declared"


def test_a_backend_class_declares_everything_the_registry_needs(scratch_backend):
    scratch_backend.append("declared")
    assert pipeline.register_backend(Declared) is Declared
    info = pipeline.get_backend("declared")
    assert (info.backend_cls, info.accepts, info.version, info.carries_code, info.reproducible) == (
        Declared,
        ("export",),
        "2.0",
        True,
        True,
    )
    assert pipeline.get_backend_preprocess_function("declared") is Declared.preprocess


def test_keyword_arguments_override_what_the_class_declares(scratch_backend):
    scratch_backend.append("renamed")
    pipeline.register_backend("renamed", Declared, accepts=("torchscript", "export"), version="3.0")
    info = pipeline.get_backend("renamed")
    assert info.name == "renamed" and info.accepts == ("torchscript", "export") and info.version == "3.0"


class NoPreprocess(pipeline.Backend):
    def compile(self, payload, spec):
        return {m: m for m in spec}


def test_a_class_without_preprocess_or_name_is_refused_naming_what_is_missing():
    with pytest.raises(pipeline.LoweringError, match="declares no name"):
        pipeline.register_backend(NoPreprocess)
    with pytest.raises(pipeline.LoweringError, match="has no preprocess staticmethod"):
        pipeline.register_backend("nameless", NoPreprocess)


def test_preprocess_gets_its_own_copy_of_the_program(scratch_backend, basic, xh):
    """The contract: preprocess may change the program it gets; the caller's program never changes."""
    scratch_backend.append("vandal")

    def vandalize(program, spec, generate_debug_handles):
        for method in spec:
            if isinstance(program, dict):
                graph = program[method].graph
                for node in [n for n in graph.nodes if n.op == "call_function"]:
                    node.replace_all_uses_with(next(iter(graph.nodes)))
                    graph.erase_node(node)
            else:
                program.vandalized = True
        return b""

    pipeline.register_backend("vandal", NoopBackend, preprocess=vandalize)
    for frontend in ("export", "torchscript"):
        captured = pipeline.capture(basic, ["accum"], frontend, {"accum": xh})
        before = str(captured.program["accum"].graph) if frontend == "export" else None
        pipeline.codegen_backend_module("vandal", captured, {"accum": {}})
        if frontend == "export":
            assert str(captured.program["accum"].graph) == before
        else:
            assert not hasattr(captured.program, "vandalized")


def test_registering_with_overrides_leaves_the_class_as_it_is(scratch_backend):
    scratch_backend.append("overridden")
    before = dict(vars(NoopBackend))
    pipeline.register_backend("overridden", NoopBackend, preprocess=noop_preprocess, version="9.9")
    info = pipeline.get_backend("overridden")
    assert info.backend_cls is NoopBackend and info.preprocess is noop_preprocess and info.version == "9.9"
    assert dict(vars(NoopBackend)) == before and NoopBackend.preprocess is pipeline.Backend.preprocess


def test_a_backend_version_is_the_pipelines_with_its_runtime_packages():
    from pipeline.core.backend_kit import backend_version
    from pipeline.core.environment import package_version

    class OnTorch(NoopBackend):
        runtime_packages = ("torch",)

    project = package_version("lowering-pipeline")
    assert NoopBackend.version == project and OnTorch.version == f"{project}+torch.{package_version('torch')}"
    assert backend_version(("no-such-package",)) == f"{project}+no-such-package.missing"
