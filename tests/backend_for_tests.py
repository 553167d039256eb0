"""The backends of PyTorch's own backend tests, ported to this pipeline.

``test_backend``: per-method handles; ``forward`` returns ``(x + h, x - h)``,
``accum`` returns ``x + h`` and ``sub_accum`` returns ``x - h``, whatever the
method's graph says (as in ``test_backend_lib.cpp``). Preprocess records the
debug handles of each method's first ``add`` and ``sub`` nodes, so a failing
add or sub is reported with its handle, as the demo compiler does.
``test_backend_unavailable`` is the same backend on a machine without it.
"""

from __future__ import annotations

import json

import torch

import pipeline
from pipeline.core.source import describe_node


def preprocess(program, method_compile_spec, generate_debug_handles):
    op_handles = {}
    for method in method_compile_spec:
        if isinstance(program, dict):
            graph = program[method].graph
        else:
            graph = getattr(program, method).graph.copy()
            torch._C._jit_pass_inline(graph)
        handles = generate_debug_handles(graph, method)
        found = {}
        for node, handle in handles.items():
            kind = describe_node(node).op.split(".")[0]
            for name in ("add", "sub"):
                if kind == f"aten::{name}":
                    found.setdefault(name, handle)
        op_handles[method] = found
    return json.dumps(op_handles, sort_keys=True).encode()


class TestBackend(pipeline.Backend):
    __test__ = False  # a backend, not a pytest test class

    def compile(self, payload, method_compile_spec):
        op_handles = json.loads(payload)
        return {method: self._runner(method, op_handles.get(method, {})) for method in method_compile_spec}

    def _runner(self, method, op_handles):
        def run(inputs):
            x, h = inputs[0], inputs[1]
            accum = self._run(lambda: x + h, op_handles.get("add", -1))
            sub_accum = self._run(lambda: x - h, op_handles.get("sub", -1))
            if method == "forward":
                return [accum, sub_accum]
            if method == "accum":
                return [accum]
            if method == "sub_accum":
                return [sub_accum]
            raise pipeline.BackendRuntimeError(f"Method {method} is not supported by test_backend.")

        return run

    @staticmethod
    def _run(compute, debug_handle):
        try:
            return compute()
        except RuntimeError as error:
            raise pipeline.BackendRuntimeError(str(error), [debug_handle]) from error


class UnavailableTestBackend(TestBackend):
    def is_available(self):
        return False


def register() -> None:
    if "test_backend" not in pipeline.list_backends():
        pipeline.register_backend("test_backend", TestBackend, preprocess=preprocess)
        pipeline.register_backend("test_backend_unavailable", UnavailableTestBackend, preprocess=preprocess)
