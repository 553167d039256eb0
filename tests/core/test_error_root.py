"""Every error the pipeline defines has one root, `pipeline.PipelineError`, and keeps its built-in base."""

import importlib
import inspect
import pkgutil

import pytest

import pipeline
from pipeline.app.faults import Interrupted
from pipeline.backends.reference.ops import ModelRaised
from pipeline.core.errors import PipelineError

OUTSIDE_THE_ROOT = {
    Interrupted,  # a signal asking the run to stop is not an error of the pipeline (see pipeline.core.errors)
    ModelRaised,  # the interpreter's own, always re-raised as a BackendRuntimeError naming the instruction
}


def _modules():
    for package in ("pipeline", "pipeline.backends"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            try:
                yield importlib.import_module(info.name)
            except ImportError as error:  # a backend whose runtime is not installed here
                if not (error.name or "").startswith(("pipeline.", "backends.")):
                    continue
                raise


def _defined_exceptions():
    for module in _modules():
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                yield value


def test_every_error_the_pipeline_defines_is_a_pipeline_error():
    found = set(_defined_exceptions())
    assert len(found) > 15  # the walk reached the app and the backends, not just pipeline.core
    strays = sorted(c.__qualname__ for c in found - OUTSIDE_THE_ROOT if not issubclass(c, PipelineError))
    assert strays == []
    assert not any(issubclass(c, PipelineError) for c in OUTSIDE_THE_ROOT)


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("LoweringError", ValueError),
        ("UnknownBackendError", KeyError),
        ("ArtifactError", ValueError),
        ("SpecError", ValueError),
        ("ArgumentError", TypeError),
        ("BackendRuntimeError", RuntimeError),
        ("BackendNotAvailableError", RuntimeError),
    ],
)
def test_public_errors_keep_their_builtin_base(name, builtin):
    error = getattr(pipeline, name)
    assert issubclass(error, PipelineError) and issubclass(error, builtin)


def test_errors_stay_importable_where_they_were():
    from pipeline.app.records import RecordError
    from pipeline.app.replay import UntrustedConfigError
    from pipeline.app.run_lock import RunDirectoryBusy
    from pipeline.app.schema import ConfigError
    from pipeline.app.search.study import JournalError
    from pipeline.core.errors import MalformedInput
    from pipeline.core.spec import FieldError, SpecError

    assert SpecError is pipeline.SpecError
    for error in (RecordError, UntrustedConfigError, RunDirectoryBusy, ConfigError, JournalError, MalformedInput):
        assert issubclass(error, PipelineError)
    assert issubclass(FieldError, ValueError) and issubclass(JournalError, ValueError)
