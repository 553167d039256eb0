"""The runtime half: load the TorchScript archive, optimize it, call its methods.

``compile`` loads the payload (frozen when lowered, if the spec said so) with
``torch.jit.load`` (TorchScript's own reader; see the package docstring), puts
it in eval mode and, if the spec says so, runs ``torch.jit.optimize_for_inference``. Each runner calls the
method under ``torch.no_grad()`` with the arguments in signature order
(keyword-only ones by name) and returns the output's pytree leaves. A failure
inside the module becomes `pipeline.BackendRuntimeError` with the handles of
the ops on the innermost source line of TorchScript's traceback, else ``-1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from pipeline.backends.torchscript.archive import BACKEND_MAP_FILE, load_module
from pipeline.backends.torchscript.compile_spec import NAME, TorchScriptCompileSpec, check_same_spec, module_spec
from pipeline.backends.torchscript.preprocess import preprocess
from pipeline.core.backend import (
    UNKNOWN_HANDLE,
    Backend,
    BackendRuntimeError,
    LoweringError,
    ProfileEvent,
    format_choices,
    portable_path,
)

_is_grad_enabled = torch.is_grad_enabled
_set_grad_enabled = torch._C._set_grad_enabled
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


class TorchScriptBackend(Backend):
    """TorchScript itself: frozen when lowered (`preprocess`), optimized for inference when loaded."""

    name = NAME
    accepts = ("torchscript",)
    dynamic_shapes = ("torchscript",)  # a scripted program is shape-generic, frozen and optimized alike
    CompileSpec = TorchScriptCompileSpec
    runtime_packages = ("torch",)
    reproducible = False  # TorchScript renames classes per process, so archives differ across processes
    carries_code = True  # the archive holds TorchScript code and pickled data that loading runs
    native_payload = True  # torch.jit.load reads the archive in C++: a received file loads in a child first
    preprocess = staticmethod(preprocess)
    check_compile_spec = staticmethod(check_same_spec)

    @classmethod
    def supports(cls, node: Any) -> bool | str:
        """Everything: TorchScript runs any op PyTorch has. (It lowers scripted programs, so
        partitioned lowering, which splits exported ones, has nothing to give it.)"""
        return True

    def compile(self, payload: bytes, specs: dict[str, TorchScriptCompileSpec]) -> dict[str, Any]:
        spec = module_spec(specs)
        extra = {BACKEND_MAP_FILE: ""}
        module = load_module(payload, list(specs), spec, extra)
        maps = json.loads(extra[BACKEND_MAP_FILE] or "{}").get("methods", {})
        runners = {}
        for method in specs:
            if not module._c._has_method(method):
                raise LoweringError(
                    f"Backend {NAME!r}: the payload has no method {method!r}; it has "
                    f"{format_choices(module._c._method_names())}."
                )
            runners[method] = ScriptMethod(module, method, maps.get(method, {}))
        return runners


class ScriptMethod:
    """One method, ready to run: the handle `TorchScriptBackend.compile` returns."""

    def __init__(self, module: torch.jit.ScriptModule, method: str, maps: dict[str, Any]):
        self.module = module
        self.method = method
        self.fn = getattr(module, method)
        arguments = self.fn.schema.arguments[1:]
        self.positional = sum(1 for a in arguments if not a.kwarg_only)
        self.keywords = [a.name for a in arguments if a.kwarg_only]
        self.node_handles = {int(index): handles for index, handles in maps.get("nodes", {}).items()}
        self.line_handles = maps.get("lines", {})

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        grad = _is_grad_enabled()  # torch.no_grad() as a context manager costs ~1.5 us a call
        if grad:
            _set_grad_enabled(False)
        try:
            if self.keywords:
                output = self.fn(*inputs[: self.positional], **dict(zip(self.keywords, inputs[self.positional :])))
            else:
                output = self.fn(*inputs)
        except Exception as error:  # torch.jit.Error and what the interpreter raises from ops
            raise BackendRuntimeError(f"TorchScript: {error}", self.handles_in_message(str(error))) from error
        finally:
            if grad:
                _set_grad_enabled(True)
        if type(output) is torch.Tensor:
            return [output]
        return pytree.tree_leaves(output)

    __call__ = run  # the runner's call is run itself: no frame in between on every call

    def handles_in_message(self, message: str) -> list[int]:
        """The ops of the innermost source line of TorchScript's traceback that the map knows."""
        for frame in reversed(list(_FRAME.finditer(message))):
            found = self.line_handles.get(f"{portable_path(frame['file'])}:{frame['line']}")
            if found:
                return list(found)
        return [UNKNOWN_HANDLE]

    def profile(self, inputs: Sequence[Any]) -> list[ProfileEvent]:
        """The top-level ops of one call, from ``torch.autograd.profiler``, aligned with the graph.

        The interpreter records each op it runs under the method's own event;
        the k-th such event is matched to the next node of the optimized graph
        with the same op name (``prim`` nodes record nothing and are skipped).
        """
        from pipeline.backends.torchscript.mapping import inlined_graph, walk

        for _ in range(2):  # the profiling executor specializes the graph on the first calls
            self.run(inputs)
        with torch.autograd.profiler.profile() as recorded:
            self.run(inputs)
        nodes = [(index, node.kind()) for index, node in enumerate(walk(inlined_graph(self.module, self.method)))]
        roots = [e for e in recorded.function_events if e.cpu_parent is None and e.name == self.method]
        events: list[ProfileEvent] = []
        cursor = 0
        for event in recorded.function_events:
            if not roots or event.cpu_parent is not roots[-1]:
                continue
            found = next((i for i in range(cursor, len(nodes)) if nodes[i][1] == event.name), None)
            if found is None:  # an op the interpreter runs for the node before it (an allocation, a copy)
                previous = events[-1].debug_handles if events else ()
                events.append(ProfileEvent(f"{self.method}/? {event.name}", event.cpu_time_total / 1e6, previous))
                continue
            cursor = found + 1
            index = nodes[found][0]
            events.append(
                ProfileEvent(
                    f"{self.method}/{index} {event.name}",
                    event.cpu_time_total / 1e6,
                    tuple(self.node_handles.get(index, ())),
                )
            )
        return events
