"""`InductorCompileSpec`: the options of one lowered method, and the inductor config they make.

They arrive as a plain dict ``{option: value}`` (``{}`` means all defaults)::

    pipeline.to_backend("inductor", model, {"forward": {"max_autotune": True,
                                                        "options": {"epilogue_fusion": False}}}, ...)

The named fields are the options users tune most; each sets one inductor
config option (`INDUCTOR_OPTIONS`). Any other option of the installed torch's
``torch._inductor.config`` goes in ``options`` by its dotted name
(``{"cpp.simdlen": 256}``, or nested: ``{"cpp": {"simdlen": 256}}``); a name
the installed torch does not know is rejected with the closest one it does.
"""

# No `from __future__ import annotations`: the config validator reads the field types as types.
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from pipeline import LoweringError
from pipeline.app.config import compile_spec_from_options  # the one validator of dataclass-shaped options
from pipeline.core.errors import did_you_mean

NAME = "inductor"

# field of InductorCompileSpec -> option of torch._inductor.config
INDUCTOR_OPTIONS = {
    "max_autotune": "max_autotune",
    "freezing": "freezing",
    "cpp_threads": "cpp.threads",
    "cpp_simdlen": "cpp.simdlen",
    "cpp_enable_kernel_profile": "cpp.enable_kernel_profile",
    "package_constants_in_so": "aot_inductor.package_constants_in_so",
}


@dataclass(frozen=True)
class InductorCompileSpec:
    # Benchmark several kernel choices per op while compiling (much longer compiles).
    max_autotune: bool = False
    # Treat parameters as constants: constant folding and weight prepacking (mkldnn on CPU).
    freezing: bool = True
    # Threads of the generated OpenMP kernels; -1: torch.get_num_threads() when compiling.
    cpp_threads: int = -1
    # SIMD width in bits (e.g. 256 for AVX2, 512 for AVX-512); null: what the CPU has.
    cpp_simdlen: Optional[int] = None
    # Record each generated kernel as a profiler event (profile() then names kernels).
    cpp_enable_kernel_profile: bool = False
    # Keep the weights inside the shared library (else beside it in the package).
    package_constants_in_so: bool = True
    # Load the package with run_single_threaded (aoti_load_package): no inter-call locking.
    run_single_threaded: bool = False
    # Any other inductor option, by its dotted name in torch._inductor.config.
    options: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], method: str) -> "InductorCompileSpec":
        spec = compile_spec_from_options(cls, options, NAME, method)
        check_inductor_options(flatten_options(spec.options), method)
        if spec.cpp_threads < -1 or spec.cpp_threads == 0:
            raise LoweringError(
                f"Backend {NAME!r}, method {method!r}: cpp_threads must be -1 (torch's thread count) or >= 1, "
                f"not {spec.cpp_threads}."
            )
        return spec

    def inductor_configs(self) -> Dict[str, Any]:
        """The ``inductor_configs`` of ``aoti_compile_and_package``."""
        configs = {option: getattr(self, name) for name, option in INDUCTOR_OPTIONS.items()}
        configs.update(flatten_options(self.options))
        return configs


def flatten_options(options: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"cpp": {"simdlen": 256}}`` -> ``{"cpp.simdlen": 256}``; dotted names pass as they are."""
    known = _known_options()
    flat: Dict[str, Any] = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in known:
            flat.update(flatten_options(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_inductor_options(options: Mapping[str, Any], method: str) -> None:
    known = _known_options()
    named = {option: name for name, option in INDUCTOR_OPTIONS.items()}
    for option, value in options.items():
        path = f"compile_spec.{method}.options.{option}"
        if option in named:
            raise LoweringError(f"Backend {NAME!r}: {path}: set it with the field {named[option]!r} instead.")
        if option not in known:
            raise LoweringError(
                f"Backend {NAME!r}: {path}: torch {_torch_version()} has no inductor option {option!r}."
                + did_you_mean(option, known)
            )
        default = known[option]
        if default is not None and not _same_kind(value, default):
            raise LoweringError(
                f"Backend {NAME!r}: {path}: expected a {type(default).__name__} (its default is {default!r}), "
                f"got {value!r}."
            )


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _known_options() -> Dict[str, Any]:
    import torch._inductor.config

    return torch._inductor.config.get_config_copy()


def _torch_version() -> str:
    import torch

    return torch.__version__


