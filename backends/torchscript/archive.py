"""The TorchScript archive this backend's payload is: loaded as it runs.

Shared by preprocess (which loads what it saved, to map the graph compile will
run) and the runtime.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch

from pipeline.backends.torchscript.compile_spec import NAME, TorchScriptCompileSpec
from pipeline.core.backend import LoweringError

BACKEND_MAP_FILE = "pipeline/backend_map.json"  # the node -> handle map, an extra file of the archive


def load_module(
    payload: bytes | str,
    methods: Sequence[str],
    spec: TorchScriptCompileSpec,
    extra_files: dict[str, str] | None = None,
) -> torch.jit.ScriptModule:
    """The module as it runs: loaded from the archive (its bytes, or the path of a file that holds them),
    optimized as the spec says."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            module = torch.jit.load(
                io.BytesIO(payload) if isinstance(payload, bytes) else payload,
                map_location="cpu",
                _extra_files=extra_files,
            )
        except Exception as error:
            raise LoweringError(
                f"Backend {NAME!r}: the payload is not a loadable TorchScript archive: {error}"
            ) from error
        module.eval()
        if spec.optimize_for_inference:
            try:
                module = torch.jit.optimize_for_inference(module, [m for m in methods if m != "forward"])
            except Exception as error:
                raise LoweringError(
                    f"Backend {NAME!r}: torch.jit.optimize_for_inference failed: {type(error).__name__}: {error}. "
                    "Lower with optimize_for_inference=False."
                ) from error
    return module
