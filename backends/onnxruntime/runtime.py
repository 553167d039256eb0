"""The runtime half: one ``onnxruntime.InferenceSession`` per method.

Each runner feeds the method's tensor arguments to the session by the ONNX
graph's input names, runs it and returns the outputs as torch tensors (they
share memory with the arrays onnxruntime returns). An onnxruntime failure
becomes `pipeline.BackendRuntimeError` with the debug handles of the node
onnxruntime names in its message (``Name:'node_add'``), or ``-1`` when it names
none (e.g. an input of the wrong shape, which onnxruntime checks first).

A method with a weights part (a model past 2 GiB, `external_data`) gets it
from memory: a view of the payload, checked against every location the model
names and handed to the session under its part name, so no path is followed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import torch

from pipeline.backends.onnxruntime.compile_spec import NAME, OnnxRuntimeCompileSpec, check_providers, session_options
from pipeline.backends.onnxruntime.external_data import check_model, in_memory_weights, weights_part
from pipeline.backends.onnxruntime.preprocess import preprocess
from pipeline.backends.onnxruntime.support import node_support
from pipeline.core.backend import (
    UNKNOWN_HANDLE,
    Backend,
    BackendRuntimeError,
    LoweringError,
    ProfileEvent,
    argument_leaves,
    method_part,
    progress_step,
    unpack_parts,
)

_NODE_IN_MESSAGE = re.compile(r"Name:'(?P<name>[^']*)'")
_KERNEL_SUFFIX = "_kernel_time"
_LAYOUT_SUFFIX = "_nchwc"  # onnxruntime's NCHWc layout rewrite names a node after the value it computes


class OnnxRuntimeBackend(Backend):
    """Each method exported to ONNX (`preprocess`), run by one onnxruntime InferenceSession per method."""

    name = NAME
    accepts = ("torchscript", "export")
    dynamic_shapes = ("export",)  # the torchscript route exports at its example shapes (`exporters`)
    CompileSpec = OnnxRuntimeCompileSpec
    runtime_packages = ("onnxruntime",)
    preprocess = staticmethod(preprocess)
    native_payload = True  # onnxruntime parses the ONNX protobuf in C++: a received file loads in a child first

    @classmethod
    def supports(cls, node: Any) -> bool | str:
        """What the ONNX exporter translates or decomposes, less known failures (`support.node_support`)."""
        return node_support(node)

    def is_available(self) -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def compile(self, payload: bytes, specs: dict[str, OnnxRuntimeCompileSpec]) -> dict[str, Any]:
        meta, parts = unpack_parts(payload, NAME, views=True)  # views: a weights part is not copied here
        runners = {}
        for method, spec in specs.items():
            check_providers(spec, method)
            model = bytes(method_part(parts, method, NAME))
            weights = {name: parts[name] for name in [weights_part(method)] if name in parts}
            runners[method] = SessionMethod(method, model, meta["methods"][method], spec, weights)
        return runners


MAX_ARGUMENT_LEAVES = 100_000  # a method's flattened arguments (a payload's input index is one of them)


def feeding_plan(meta: Any, method: str) -> list[tuple]:
    """``[(ONNX input name, flattened argument index)]`` from the payload's header: names are strings, indexes
    in 0..MAX_ARGUMENT_LEAVES-1 (a negative one would feed another argument, counted from the end)."""
    pairs = meta.get("inputs") if isinstance(meta, dict) else None
    plan = []
    for pair in pairs if isinstance(pairs, list) else [None]:
        name, index = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
        if (
            not isinstance(name, str)
            or isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < MAX_ARGUMENT_LEAVES
        ):
            raise LoweringError(
                f"Backend {NAME!r}: the payload's inputs of method {method!r} must be "
                f"[name, index] pairs with index in 0..{MAX_ARGUMENT_LEAVES - 1}, not {pair!r}."
            )
        plan.append((name, index))
    return plan


class SessionMethod:
    """One method, ready to run: the handle `OnnxRuntimeBackend.compile` returns."""

    def __init__(
        self,
        method: str,
        model: bytes,
        meta: dict[str, Any],
        spec: OnnxRuntimeCompileSpec,
        weights: dict[str, Any] | None = None,
    ):
        import onnxruntime

        self.method = method
        self.model = model
        self.spec = spec
        self.weights = weights or {}  # {location: buffer}: views of the payload, which the module keeps
        self.inputs = feeding_plan(meta, method)
        self.flat = bool(meta["flat"])
        self.node_handles = {name: [int(h) for h in handles] for name, handles in meta["node_handles"].items()}
        # no file outside the payload: every location is one of the weights parts, and inside it
        check_model(
            model, f"Backend {NAME!r}: the model of method {method!r}", {n: len(b) for n, b in self.weights.items()}
        )
        try:
            with progress_step("onnxruntime: InferenceSession", method=method):
                self.session = onnxruntime.InferenceSession(
                    model, self.session_options(), providers=list(spec.providers)
                )
        except Exception as error:
            raise LoweringError(
                f"Backend {NAME!r}: onnxruntime cannot load the model of method {method!r}: {error}"
            ) from error
        # The C++ session's run: the same call as InferenceSession.run without the Python wrapper's
        # per-call checks of input names (feeds always have every input here); ~1.5 us less per call.
        self._run = getattr(self.session, "_sess", self.session).run
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.name0, self.index0 = self.inputs[0] if len(self.inputs) == 1 else (None, None)

    def session_options(self) -> Any:
        """The spec's session options, with the weights parts given from memory."""
        options = session_options(self.spec)
        in_memory_weights(options, self.weights)
        return options

    def run(self, inputs: Sequence[Any]) -> list[torch.Tensor]:
        """The hot path: no pytree and no comprehension for one tensor argument (the common case)."""
        if not self.flat:
            feeds = self.feeds(inputs)
        else:
            try:
                if self.name0 is not None:
                    feeds = {self.name0: inputs[self.index0].numpy()}
                else:
                    feeds = {name: inputs[index].numpy() for name, index in self.inputs}
            except (AttributeError, RuntimeError, TypeError):  # not a tensor, requires grad, not on the CPU
                feeds = self.feeds(inputs)
        try:
            outputs = self._run(self.output_names, feeds, None)
        except Exception as error:  # onnxruntime's own exception types derive from Exception only
            raise BackendRuntimeError(f"onnxruntime: {error}", self.handles_in_message(str(error))) from error
        return list(map(torch.from_numpy, outputs))

    __call__ = run  # the runner's call is run itself: no frame in between on every call

    def feeds(self, inputs: Sequence[Any]) -> dict[str, Any]:
        leaves = argument_leaves(inputs)
        feeds = {}
        for name, index in self.inputs:
            value = leaves[index] if index < len(leaves) else None
            if not isinstance(value, torch.Tensor):
                raise BackendRuntimeError(
                    f"onnxruntime: method {self.method!r} needs a tensor for ONNX input {name!r} "
                    f"(flattened argument {index}), got {type(value).__name__}.",
                    [UNKNOWN_HANDLE],
                )
            try:
                feeds[name] = value.numpy()  # a view: a contiguous CPU tensor without grad
            except (RuntimeError, TypeError):  # requires grad, or not on the CPU; or a dtype numpy lacks
                feeds[name] = self.as_array(value, name, index)
        return feeds

    def as_array(self, value: torch.Tensor, name: str, index: int) -> Any:
        try:
            return value.detach().cpu().contiguous().numpy()
        except (RuntimeError, TypeError, NotImplementedError) as error:  # a meta tensor, bfloat16
            raise BackendRuntimeError(
                f"onnxruntime: method {self.method!r} cannot pass flattened argument {index} (ONNX input {name!r}, a "
                f"{value.dtype} tensor on {value.device}) to onnxruntime: {error}",
                [UNKNOWN_HANDLE],
            ) from None

    def handles_in_message(self, message: str) -> list[int]:
        match = _NODE_IN_MESSAGE.search(message)
        found = self.handles_of_node(match["name"]) if match else []
        return found or [UNKNOWN_HANDLE]

    def handles_of_node(self, name: str, produced_by: dict[str, list[int]] | None = None) -> list[int]:
        """Handles of a node of the session's graph: exported nodes by name; nodes onnxruntime made
        by fusion (``node_MatMul_1/MatMulAddFusion``) by the name before the slash, or else by the
        exported nodes whose outputs they produce (``produced_by``, from the optimized model)."""
        for candidate in (name, name.split("/", 1)[0]):
            if candidate in self.node_handles:
                return self.node_handles[candidate]
        return (produced_by or {}).get(name, [])

    def profile(self, inputs: Sequence[Any]) -> list[ProfileEvent]:
        """Per-node kernel times of one call, from a separate profiling session.

        The session is made on demand with the method's own options plus
        ``enable_profiling``; it runs twice (warm-up, then the call reported) and
        only the second run's ``Node`` events are kept.
        """
        import onnx
        import onnxruntime

        feeds = self.feeds(inputs)
        with tempfile.TemporaryDirectory(prefix="pipeline-ort-profile-") as directory:
            options = self.session_options()
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(directory, "profile")
            options.optimized_model_filepath = os.path.join(directory, "optimized.onnx")
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(self.model, options, providers=list(self.spec.providers))
            for _ in range(2):
                try:
                    session.run(None, feeds)
                except Exception as error:
                    raise BackendRuntimeError(f"onnxruntime: {error}", self.handles_in_message(str(error))) from error
            with open(session.end_profiling()) as handle:
                trace = json.load(handle)
            produced_by = self._producers(onnx.load(options.optimized_model_filepath))
        runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
        start, end = (runs[-1]["ts"], runs[-1]["ts"] + runs[-1]["dur"]) if runs else (float("-inf"), float("inf"))
        events = []
        for event in trace:
            if event.get("cat") != "Node" or not event.get("name", "").endswith(_KERNEL_SUFFIX):
                continue
            if not start <= event["ts"] <= end:
                continue
            node = event["name"][: -len(_KERNEL_SUFFIX)]
            op = event.get("args", {}).get("op_name", "")
            events.append(
                ProfileEvent(
                    f"{self.method}/{node} {op}".rstrip(),
                    event["dur"] / 1e6,
                    tuple(self.handles_of_node(node, produced_by)),
                )
            )
        return events

    def _producers(self, optimized: Any) -> dict[str, list[int]]:
        """Node of the optimized model -> handles of every exported node it computes.

        A node of the optimized graph computes some values from others. Its
        values are named as in the exported graph, or (layout rewrites such as
        NCHWc) stand for one: ``relu_nchwc`` computes ``relu`` into
        ``reorder_token_0``. With those aliases, a node covers the exported
        nodes between its inputs and its outputs, so a fused Conv+Relu maps to
        both, and a node that only moves data (``ReorderOutput``) takes the
        handles of the node whose value it moves.
        """
        import onnx

        exported = onnx.load_from_string(self.model)
        producer = {value: node for node in exported.graph.node for value in node.output}
        alias: dict[str, str] = {}  # optimized value -> the exported value it holds
        producers = {}
        for node in optimized.graph.node:
            stem = node.name[: -len(_LAYOUT_SUFFIX)] if node.name.endswith(_LAYOUT_SUFFIX) else None
            if stem is not None and stem in producer and len(node.output) == 1:
                alias[node.output[0]] = stem
            inputs = {alias.get(v, v) for v in node.input}
            outputs = [alias.get(v, v) for v in node.output]
            covered = _covered(producer, outputs, inputs)
            if not covered:  # moves a value along: the handles of what made it
                covered = [producer[v] for v in inputs if v in producer]
            found = sorted({h for covered_node in covered for h in self.node_handles.get(covered_node.name, [])})
            if found:
                producers[node.name] = found
        return producers


def _covered(producer: dict[str, Any], outputs: list[str], inputs: set) -> list[Any]:
    """The exported nodes that compute ``outputs`` from ``inputs``: walk back from the outputs, stopping at
    the inputs (and at graph inputs and initializers, which no node produces)."""
    seen, stack, covered = set(), [v for v in outputs if v not in inputs], []
    while stack:
        value = stack.pop()
        node = producer.get(value)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        covered.append(node)
        stack += [v for v in node.input if v and v not in inputs]
    return covered
