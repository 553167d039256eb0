"""The user's own weights: ``model.checkpoint=PATH`` loads a state dict into the built model.

A checkpoint is a local file (never fetched): ``.safetensors``, read by safetensors, or a torch file
(``.pt``, ``.pth``, ``.bin``), read by ``torch.load(weights_only=True)`` so that a pickle naming a class
or a function is refused rather than run. A run directory replayed by someone else names the file by
path, and the replay checks its sha256 against the recorded one before re-running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.app.schema import ConfigError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
MAX_CHECKPOINT_BYTES = 2**36  # 64 GiB: beyond what this machine class can hold in memory twice
NESTING_KEYS = ("state_dict", "model")  # the common {"state_dict": {...}} wrappers
SHOWN_KEYS = 5


def resolve_checkpoint(value: Any) -> Path | None:
    """``model.checkpoint`` as an absolute path to a readable checkpoint, or None when it is null.
    A relative path is taken from the directory the app was started in (Hydra's original working directory)."""
    if value is None:
        return None
    from hydra.utils import to_absolute_path

    if not isinstance(value, str) or not value:
        raise ConfigError(f"model.checkpoint: {value!r} is not a path; allowed: null or a path to a local file.")
    path = Path(to_absolute_path(value))
    if path.suffix not in SUFFIXES:
        raise ConfigError(
            f"model.checkpoint: {path} has suffix {path.suffix!r}; allowed: {', '.join(SUFFIXES)} "
            "(safetensors, or a torch state dict)."
        )
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ConfigError(f"model.checkpoint: {path} {what}; name a local checkpoint file, or model.checkpoint=null.")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ConfigError(f"model.checkpoint: {path} is {size} bytes; allowed: at most {MAX_CHECKPOINT_BYTES}.")
    return path


def checkpoint_record(path: str | None) -> dict[str, Any] | None:
    """``report["checkpoint"]``: which file the weights came from, with its digest (streamed)."""
    if path is None:
        return None
    from pipeline.core.hashing import sha256_file

    return {"path": path, "sha256": sha256_file(Path(path)), "bytes": Path(path).stat().st_size}


def load_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Load ``path``'s state dict into ``model`` (strictly: every key, every shape)."""
    state = _read(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ConfigError(f"model.checkpoint: {path} does not fit the model: {mismatch(model, state)}") from None


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise ConfigError(f"model.checkpoint: {path} is not a readable safetensors file: {error}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses any global it does not allow; it raises UnpicklingError
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model.checkpoint: {path} is not a plain state dict (torch.load with weights_only=True refused it: "
            f"{first_line}); save one with torch.save(model.state_dict(), PATH) or use .safetensors."
        ) from None
    return _state_dict(loaded, path)


def _state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in what torch.load returned: the mapping itself, or the one mapping a common
    wrapper holds when nothing else in the wrapper is a tensor (else which is the model is ambiguous)."""
    if _is_state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, dict):
        nested = [k for k in NESTING_KEYS if k in loaded and _is_state_dict(loaded[k])]
        if len(nested) == 1 and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
            return dict(loaded[nested[0]])
    shown = sorted(map(str, loaded))[:SHOWN_KEYS] if isinstance(loaded, dict) else type(loaded).__name__
    raise ConfigError(
        f"model.checkpoint: {path} holds no unambiguous state dict (found {shown}); allowed: a mapping of "
        f"parameter names to tensors, or one such mapping under exactly one of {', '.join(NESTING_KEYS)}."
    )


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Which keys are missing, unexpected or of another shape: the first few of each, with counts."""
    expected = model.state_dict()
    parts = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {list(state[k].shape)} (model: {list(expected[k].shape)})"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f", ... ({len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:SHOWN_KEYS])}{more}")
    return "; ".join(parts) or "load_state_dict refused it"
