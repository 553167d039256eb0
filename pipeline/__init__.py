"""A declarative, config-driven lowering pipeline for PyTorch.

The core library is the Python counterpart of PyTorch's TorchScript backend API::

    import pipeline
    lowered = pipeline.to_backend("reference", model, {"forward": {}},
                                  example_inputs={"forward": (x,)})
    lowered(x)
    pipeline.save_lowered(lowered, "model.lowered")
    again = pipeline.load_lowered("model.lowered")

The Hydra app (``python -m pipeline``) drives the same functions from config files.
"""

from pipeline.artifact import load_lowered, read_artifact, save_lowered
from pipeline.backend import Backend, BackendInfo, PreprocessResult, ProfileEvent
from pipeline.debug_handles import DebugHandleGenerator, HandleMap, HandleRecord, generate_debug_handles
from pipeline.errors import (
    ArtifactError,
    BackendNotAvailableError,
    BackendRuntimeError,
    LoweringError,
    UnknownBackendError,
    UnsupportedOpError,
)
from pipeline.frontends import CapturedProgram, capture
from pipeline.lowered_module import LoweredModule
from pipeline.lowering import codegen_backend_module, to_backend, to_backend_selective
from pipeline.registry import (
    get_backend,
    get_backend_preprocess_function,
    has_backend_preprocess_function,
    list_backends,
    register_backend,
    register_backend_preprocess_function,
    unregister_backend,
)

__all__ = [
    "ArtifactError", "Backend", "BackendInfo", "BackendNotAvailableError", "BackendRuntimeError",
    "CapturedProgram", "DebugHandleGenerator", "HandleMap", "HandleRecord", "LoweredModule", "LoweringError",
    "PreprocessResult", "ProfileEvent", "UnknownBackendError", "UnsupportedOpError", "capture",
    "codegen_backend_module", "generate_debug_handles", "get_backend", "get_backend_preprocess_function",
    "has_backend_preprocess_function", "list_backends", "load_lowered", "read_artifact", "register_backend",
    "register_backend_preprocess_function", "save_lowered", "to_backend", "to_backend_selective",
    "unregister_backend",
]
