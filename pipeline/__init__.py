"""A declarative, config-driven lowering pipeline for PyTorch.

The core library is the Python counterpart of PyTorch's TorchScript backend API::

    import pipeline
    lowered = pipeline.to_backend("reference", model, {"forward": {}},
                                  example_inputs={"forward": (x,)})
    lowered(x)
    pipeline.save_lowered(lowered, "model.lowered")
    again = pipeline.load_lowered("model.lowered")

The Hydra app (``python -m pipeline``) drives the same functions from config files.
Names are imported on first use, so that tools which never touch a model (the
sweep launcher's parent process, ``pipeline.app.compare``) start without importing torch.
"""

import importlib
from typing import Any

_EXPORTS = {
    "pipeline.core.artifact": ["artifact_digests", "load_lowered", "read_artifact", "save_lowered"],
    "pipeline.core.backend": ["Backend", "BackendInfo", "PreprocessResult", "ProfileEvent"],
    "pipeline.core.debug_handles": ["DebugHandleGenerator", "HandleMap", "HandleRecord", "generate_debug_handles"],
    "pipeline.core.errors": [
        "ArgumentError",
        "ArtifactError",
        "BackendNotAvailableError",
        "BackendRuntimeError",
        "LoweringError",
        "PipelineError",
        "ShapeDeclarationError",
        "ShapeError",
        "SpecError",
        "UnknownBackendError",
        "UnsupportedOpError",
    ],
    "pipeline.core.frontends": ["CapturedProgram", "capture"],
    "pipeline.core.lowered_module": ["LoweredModule"],
    "pipeline.core.lowering": ["codegen_backend_module", "to_backend", "to_backend_selective"],
    "pipeline.core.partitioning": ["PartitionedModule"],
    "pipeline.core.registry": [
        "get_backend",
        "get_backend_preprocess_function",
        "has_backend_preprocess_function",
        "list_backends",
        "register_backend",
        "register_backend_preprocess_function",
        "unregister_backend",
    ],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
