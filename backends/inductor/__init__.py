"""The inductor backend: each exported method compiled ahead of time by AOTInductor.

It accepts the export frontend and is found through the ``pipeline.backends``
entry point (its class)::

    import pipeline
    lowered = pipeline.to_backend("inductor", model, {"forward": {"max_autotune": False}},
                                  example_inputs={"forward": (x,)})

or from the command line::

    python -m pipeline backend=inductor frontend=export

How it lowers (`preprocess`): ``torch._inductor.aoti_compile_and_package`` per
method, which generates C++ kernels and a C++ wrapper, compiles them with the
system compiler into a shared library and packages it as a ``.pt2`` file.
This takes tens of seconds per method on a small CPU. The payload holds the
``.pt2`` bytes of every method in a deterministic container (fixed order,
JSON header, no pickle); the packages themselves are inductor's output and are
not byte-reproducible (a random serialization id, compile commands noted in
the sources).

**Loading this payload loads native code.** ``compile`` checks each package's
member names (no absolute paths, no ``..``, no symlinks), writes it to a
private directory (mode 0700) and loads it with
``torch._inductor.aoti_load_package``, which unpacks it there and
``dlopen``\\ s the shared library inside it: loading an artifact of this
backend runs machine code from the file. So the backend declares
``carries_code``, and ``pipeline.load_lowered`` refuses its artifacts unless
called with ``trust_code=True`` (the reference and onnxruntime payloads are
data and need no opt-in). The private directory goes when the method's handle
is released or the process exits. The library is built for the machine that
lowered it (its CPU's instruction set, this torch's ABI).

How it runs (`runtime.InductorBackend`): the runner passes the flattened
tensor arguments to the package's runner and returns its flat output list.
Shapes are the program's: static where ``torch.export`` specialized them, and
each dimension the lowering declares dynamic compiled as a symbolic size, so
one package takes every size in its bounds (the pipeline checks them before a
call reaches it; ``AOTI_RUNTIME_CHECK_INPUTS`` checks them again).

Compile-spec options (`InductorCompileSpec`, per method; defaults in brackets):

=============================  ===============================================  ===========
field                          inductor option                                  default
=============================  ===============================================  ===========
``max_autotune``               ``max_autotune``                                 false
``freezing``                   ``freezing``                                     true
``cpp_threads``                ``cpp.threads`` (-1: torch's thread count)       -1
``cpp_simdlen``                ``cpp.simdlen`` (null: the CPU's)                null
``cpp_enable_kernel_profile``  ``cpp.enable_kernel_profile``                    false
``package_constants_in_so``    ``aot_inductor.package_constants_in_so``         true
``run_single_threaded``        ``aoti_load_package(run_single_threaded=...)``   false
``options``                    any other option by its dotted name,             {}
                               checked against ``torch._inductor.config``
=============================  ===============================================  ===========

Debug handles: inductor's provenance tracking (always on) lists each kernel
call with the FX nodes it computes; the backend map is
``{"<method>/<kernel>:<call number>": [handles]}``, e.g.
``"forward/cpp_fused_gelu_0:2"``. A runtime failure reports handle ``-1``.

Profiles (`runtime.PackageMethod.profile`): ``torch.profiler`` events of one
call, each aligned with the next kernel call of its name. Extern kernels
(matrix multiplies through ``aoti_torch_cpu_*``) always appear; generated C++
kernels appear only when compiled with ``cpp_enable_kernel_profile=true``.
"""

from __future__ import annotations

from pipeline.backends.inductor.compile_spec import INDUCTOR_OPTIONS, InductorCompileSpec
from pipeline.backends.inductor.preprocess import preprocess
from pipeline.backends.inductor.runtime import InductorBackend

__all__ = ["INDUCTOR_OPTIONS", "InductorBackend", "InductorCompileSpec", "preprocess"]
