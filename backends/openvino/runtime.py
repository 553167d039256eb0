"""The runtime half: one compiled model and one explicit ``InferRequest`` per method.

``compile`` reads each method's IR from the payload's bytes (no file; the
bytes must be IR, `received_ir`), compiles
it for the CPU with the spec's config, checks that the precision the compiled
model reports is the one the spec asks for, and creates the method's infer
request once. The runner wraps each argument's memory in an OpenVINO tensor
without copying it (``shared_memory=True``) and makes one call of the C++
request's ``infer``, which sets the inputs, runs synchronously and returns
copies of the outputs (the request's own buffers are overwritten by the next
call). That path is the fast one at small sizes: calling the compiled model
(``compiled(inputs)``) creates and converts more per call and was slower than
eager on the zoo MLP at batch 1, and the Python ``InferRequest.infer`` wrapper
costs ~3 us a call more.

A method's handle runs one call at a time: its request is not shared between
threads. An OpenVINO failure is a `pipeline.BackendRuntimeError` with the
handles of the node its message names, else ``-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pipeline.backends.openvino.compile_spec import DEVICE, NAME, OpenVinoCompileSpec, require_openvino
from pipeline.backends.openvino.mapping import runtime_node_handles
from pipeline.backends.openvino.preprocess import preprocess
from pipeline.backends.openvino.received_ir import check_model, check_xml
from pipeline.core.backend import (
    UNKNOWN_HANDLE,
    Backend,
    BackendRuntimeError,
    LoweringError,
    ProfileEvent,
    argument_leaves,
    format_choices,
    progress_step,
    unpack_parts,
)


class OpenVinoBackend(Backend):
    """Each exported method converted to OpenVINO IR (`preprocess`), run by the CPU plugin."""

    name = NAME
    accepts = ("export",)
    dynamic_shapes = ("export",)  # inputs with bounded dynamic dimensions (`convert.restore_shapes`)
    CompileSpec = OpenVinoCompileSpec
    runtime_packages = ("openvino",)
    reproducible = True
    carries_code = False  # the IR is a graph and its weights: data
    native_payload = True  # OpenVINO parses and compiles the IR in C++: a received file loads in a child first
    preprocess = staticmethod(preprocess)

    def __init__(self) -> None:
        self._core: Any = None

    def is_available(self) -> bool:
        """Whether the optional extra is installed: `require_openvino` imports it or names the extra."""
        try:
            require_openvino()
        except LoweringError:
            return False
        return True

    def compile(self, payload: bytes, specs: dict[str, OpenVinoCompileSpec]) -> dict[str, Any]:
        openvino = require_openvino()
        if self._core is None:
            self._core = openvino.Core()
        meta, parts = unpack_parts(payload, NAME, views=True)  # views: the bin is not copied before compiling
        runners = {}
        for method, spec in specs.items():
            if method not in meta.get("methods", {}):
                raise LoweringError(
                    f"Backend {NAME!r}: the payload has no method {method!r}; it has "
                    f"{format_choices(meta.get('methods', {}))}."
                )
            runners[method] = RequestMethod(
                self._core, method, bytes(parts[f"{method}.xml"]), parts[f"{method}.bin"], meta["methods"][method], spec
            )
        return runners


class RequestMethod:
    """One method, ready to run: the handle `OpenVinoBackend.compile` returns."""

    def __init__(
        self, core: Any, method: str, xml: bytes, weights: Any, meta: dict[str, Any], spec: OpenVinoCompileSpec
    ):
        import numpy
        import openvino
        from openvino._pyopenvino import InferRequest as CppInferRequest  # the binding InferRequest wraps

        self.method = method
        self.spec = spec
        self.flat = bool(meta["flat"])
        self.node_handles = {name: [int(h) for h in found] for name, found in meta["node_handles"].items()}
        self._core = core
        self._weights = weights  # the model's constants point into these bytes (a view of the payload)
        self._tensor = openvino.Tensor
        what = f"Backend {NAME!r}: the IR of method {method!r}"
        check_xml(xml, what)  # IR or nothing: another frontend would read the files a model names
        try:
            self.model = core.read_model(xml, openvino.Tensor(numpy.frombuffer(weights, dtype=numpy.uint8)))
        except Exception as error:
            raise LoweringError(f"{what} cannot be read: {error}") from error
        check_model(self.model, what)
        try:
            with progress_step("openvino: compile_model", method=method):
                self.compiled = core.compile_model(self.model, DEVICE, spec.plugin_config())
        except Exception as error:
            raise LoweringError(
                f"Backend {NAME!r}: OpenVINO cannot compile method {method!r} with {spec.plugin_config()}: {error}"
            ) from error
        self.inference_precision = self._checked_precision()
        self.request = self.compiled.create_infer_request()
        self.n_inputs = len(self.compiled.inputs)
        # numpy has no bfloat16: OpenVINO hands bf16 results over as float16 arrays of the same bits.
        bf16 = {i for i, port in enumerate(self.compiled.outputs) if port.get_element_type() == openvino.Type.bf16}
        self._as_torch = _as_torch if not bf16 else lambda arrays: _as_torch_reading_bf16(arrays, bf16)
        # Bound once for the hot path (one tensor in): the C++ request's infer, which sets the input, runs
        # and returns copies of the outputs in one call. The Python InferRequest.infer wrapper costs ~3 us
        # more (argument dispatch, an OVDict of the results), set_input_tensor + infer + copy ~5 us more.
        self._one_input = self.flat and self.n_inputs == 1
        self._infer_with = CppInferRequest.infer
        self._runtime_handles: dict[str, tuple[int, ...]] | None = None
        self._profiling: Any = None

    def _checked_precision(self) -> str:
        """The precision the compiled model reports; it must be the spec's (the plugin falls back silently)."""
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if actual != self.spec.inference_precision.value:
            capabilities = self._core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")
            raise LoweringError(
                f"Backend {NAME!r}, method {self.method!r}: compile_spec inference_precision="
                f"{self.spec.inference_precision.value!r}, but the CPU plugin compiled the model at {actual!r}: this "
                f"CPU does not compute in {self.spec.inference_precision.value} (its capabilities: "
                f"{format_choices(capabilities)})."
            )
        return actual

    def run(self, inputs: Sequence[Any]) -> list[torch.Tensor]:
        if self._one_input:
            try:
                outputs = self._infer_with(
                    self.request, self._tensor(inputs[0].numpy(), shared_memory=True), False, False
                )
                return self._as_torch(outputs)
            except Exception:  # not a contiguous CPU tensor without grad, or the call failed:
                pass  # the general path below copies what it must, or says what failed and where
        return self._run(self.request, inputs)

    __call__ = run  # the runner's call is run itself: no frame in between on every call

    def _run(self, request: Any, inputs: Sequence[Any]) -> list[torch.Tensor]:
        tensors = inputs if self.flat else self._tensors(inputs)
        try:
            feeds = {port: self._shared(value, port) for port, value in enumerate(tensors)}
            outputs = self._infer_with(request, feeds, False, False)
        except BackendRuntimeError:
            raise
        except Exception as error:  # OpenVINO raises RuntimeError, or TypeError for what it cannot wrap
            message = str(error).strip()
            raise BackendRuntimeError(f"OpenVINO: {message}", self.handles_in_message(message)) from error
        return self._as_torch(outputs)

    def _tensors(self, inputs: Sequence[Any]) -> list[torch.Tensor]:
        tensors = [leaf for leaf in argument_leaves(inputs) if isinstance(leaf, torch.Tensor)]
        if len(tensors) != self.n_inputs:
            raise BackendRuntimeError(
                f"OpenVINO: method {self.method!r} takes {self.n_inputs} tensors (its flattened arguments), got "
                f"{len(tensors)}.",
                [UNKNOWN_HANDLE],
            )
        return tensors

    def _shared(self, value: Any, index: int) -> Any:
        """An OpenVINO tensor over the argument's memory; a copy only where numpy cannot view it as it is."""
        if not isinstance(value, torch.Tensor):
            raise BackendRuntimeError(
                f"OpenVINO: method {self.method!r} needs a tensor for flattened argument {index}, got "
                f"{type(value).__name__}.",
                [UNKNOWN_HANDLE],
            )
        try:
            array = value.numpy()
        except RuntimeError:  # requires grad, or not on the CPU
            array = value.detach().cpu().numpy()
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        return self._tensor(array, shared_memory=True)

    def handles_in_message(self, message: str) -> list[int]:
        """Handles of the nodes the message names in quotes (the plugin names runtime nodes), else ``-1``."""
        named = {**self.node_handles, **self.runtime_handles()}
        found = sorted({h for name, handles in named.items() if f"'{name}'" in message for h in handles})
        return found or [UNKNOWN_HANDLE]

    def runtime_handles(self) -> dict[str, tuple[int, ...]]:
        """Node of the compiled (runtime) model -> handles of the IR nodes it executes."""
        if self._runtime_handles is None:
            self._runtime_handles = runtime_node_handles(self.compiled, self.node_handles)
        return self._runtime_handles

    def profile(self, inputs: Sequence[Any]) -> list[ProfileEvent]:
        """Per-node times of one call, from a second compilation of the method with ``PERF_COUNT``.

        Counting costs time on every call (about 6 us, a fifth, on the zoo MLP at
        batch 1), so the model that ``run`` uses does not count; the counting one
        is compiled on the first profile and kept.
        It runs twice (warm-up, then the call reported); each node the plugin
        executed becomes a `pipeline.ProfileEvent` named ``"<method>/<node> <type>"``.
        """
        import openvino

        if self._profiling is None:
            compiled = self._core.compile_model(self.model, DEVICE, {**self.spec.plugin_config(), "PERF_COUNT": True})
            self._profiling = (compiled.create_infer_request(), runtime_node_handles(compiled, self.node_handles))
        request, handles = self._profiling
        for _ in range(2):
            self._run(request, inputs)
        return [
            ProfileEvent(
                f"{self.method}/{info.node_name} {info.node_type}",
                info.real_time.total_seconds(),
                handles.get(info.node_name, ()),
            )
            for info in request.get_profiling_info()
            if info.status == openvino.ProfilingInfo.Status.EXECUTED
        ]


def _as_torch(outputs: dict[Any, Any]) -> list[torch.Tensor]:
    """The results of one infer (copies, in output order) as tensors that share their memory."""
    return [torch.from_numpy(array) for array in outputs.values()]


def _as_torch_reading_bf16(outputs: dict[Any, Any], bf16: set[int]) -> list[torch.Tensor]:
    return [tensor.view(torch.bfloat16) if i in bf16 else tensor for i, tensor in enumerate(_as_torch(outputs))]
