"""Whether ExecuTorch is installed, imported only when it is needed.

ExecuTorch is an optional extra (``pip install 'lowering-pipeline[executorch]'``),
so that the backend is listed, and reports itself unavailable, where it is not
installed. Every import of ``executorch`` in this backend goes through here.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

from pipeline.backends.executorch.compile_spec import NAME
from pipeline.core.backend import LoweringError

INSTALL_HINT = "pip install 'lowering-pipeline[executorch]'"


def executorch_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` for a module of executorch (or torchao), or a `LoweringError`
    that names the extra to install."""
    try:
        with warnings.catch_warnings():
            # The Python runtime's bindings warn at import that their API is experimental.
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except ImportError as error:
        raise LoweringError(
            f"Backend {NAME!r} needs ExecuTorch, which is not installed ({name}: {error}). "
            f"Install it with: {INSTALL_HINT}"
        ) from error


def runtime_bindings() -> ModuleType:
    """ExecuTorch's C++ runtime bindings (thread pool, operator registry)."""
    return executorch_module("executorch.extension.pybindings.portable_lib")


def runtime() -> Any:
    """The process's ``executorch.runtime.Runtime``."""
    return executorch_module("executorch.runtime").Runtime.get()


def available() -> bool:
    try:
        runtime()
    except LoweringError:
        return False
    return True
