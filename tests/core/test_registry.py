"""The registry keeps the original's contract: names are unique, lookups say what exists."""

import sys
import textwrap

import pytest

import pipeline
from pipeline.core import registry


def noop_preprocess(program, spec, generate_debug_handles):
    return b""


class NoopBackend(pipeline.Backend):
    def compile(self, processed, spec):
        return {m: m for m in spec}

    def execute(self, handle, inputs):
        return list(inputs)


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
    package.write_text(textwrap.dedent("""
        import pipeline
        class ExtBackend(pipeline.Backend):
            def compile(self, processed, spec):
                return {m: m for m in spec}
            def execute(self, handle, inputs):
                return [inputs[0] * 2]
        def register():
            pipeline.register_backend("ext", ExtBackend, preprocess=lambda p, s, g: b"ext")
    """))
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
