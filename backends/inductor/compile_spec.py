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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.backend import MAX_THREADS, FieldError, did_you_mean, out_of_range

NAME = "inductor"
MAX_SIMDLEN = 2048  # bits: the widest vectors of any ISA (Arm SVE)

# field of InductorCompileSpec -> option of torch._inductor.config
INDUCTOR_OPTIONS = {
    "max_autotune": "max_autotune",
    "freezing": "freezing",
    "cpp_threads": "cpp.threads",
    "cpp_simdlen": "cpp.simdlen",
    "cpp_enable_kernel_profile": "cpp.enable_kernel_profile",
    "package_constants_in_so": "aot_inductor.package_constants_in_so",
}


@dataclass
class InductorCompileSpec:
    # Benchmark several kernel choices per op while compiling (much longer compiles).
    max_autotune: bool = False
    # Treat parameters as constants: constant folding and weight prepacking (mkldnn on CPU).
    freezing: bool = True
    # Threads of the generated OpenMP kernels; -1: torch.get_num_threads() when compiling; else 1..MAX_THREADS (256).
    cpp_threads: int = -1
    # SIMD width in bits (e.g. 256 for AVX2, 512 for AVX-512); null: what the CPU has; else 1..2048 (SVE's
    # widest), and a width no ISA of this CPU has gives scalar kernels.
    cpp_simdlen: int | None = None
    # Record each generated kernel as a profiler event (profile() then names kernels).
    cpp_enable_kernel_profile: bool = False
    # Keep the weights inside the shared library (else beside it in the package).
    package_constants_in_so: bool = True
    # Load the package with run_single_threaded (aoti_load_package): no inter-call locking.
    run_single_threaded: bool = False
    # Any other inductor option, by its dotted name in torch._inductor.config.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_inductor_options(flatten_options(self.options))
        if self.cpp_threads != -1 and out_of_range(self.cpp_threads, 1, MAX_THREADS):
            raise FieldError(
                "cpp_threads", f"must be -1 (torch's thread count) or in 1..{MAX_THREADS}, not {self.cpp_threads}."
            )
        if self.cpp_simdlen is not None and out_of_range(self.cpp_simdlen, 1, MAX_SIMDLEN):
            raise FieldError(
                "cpp_simdlen", f"must be null (the CPU's) or in 1..{MAX_SIMDLEN} bits, not {self.cpp_simdlen}."
            )

    def inductor_configs(self) -> dict[str, Any]:
        """The ``inductor_configs`` of ``aoti_compile_and_package``."""
        configs = {option: getattr(self, name) for name, option in INDUCTOR_OPTIONS.items()}
        configs.update(flatten_options(self.options))
        return configs


def flatten_options(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"cpp": {"simdlen": 256}}`` -> ``{"cpp.simdlen": 256}``; dotted names pass as they are."""
    known = _known_options()
    flat: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in known:
            flat.update(flatten_options(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_inductor_options(options: Mapping[str, Any]) -> None:
    known = _known_options()
    named = {option: name for name, option in INDUCTOR_OPTIONS.items()}
    for option, value in options.items():
        path = f"options.{option}"
        if option in named:
            raise FieldError(path, f"set it with the field {named[option]!r} instead.")
        if option not in known:
            raise FieldError(
                path, f"torch {_torch_version()} has no inductor option {option!r}." + did_you_mean(option, known)
            )
        default = known[option]
        if default is not None and not _same_kind(value, default):
            raise FieldError(path, f"expected a {type(default).__name__} (its default is {default!r}), got {value!r}.")


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _known_options() -> dict[str, Any]:
    import torch._inductor.config

    return torch._inductor.config.get_config_copy()


def _torch_version() -> str:
    import torch

    return torch.__version__
