"""A user's own backends: Python classes plus YAML files, no edit to the pipeline.

``JitBackend`` is the README's example: it keeps each method as TorchScript and
runs it with the TorchScript interpreter. The other two exist to show how the
pipeline records failures: ``OffByOneBackend`` is numerically wrong and
``FailingBackend`` fails at run time, naming the node that failed.
"""

import io
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

import pipeline


class JitBackend(pipeline.Backend):
    name = "jit"
    accepts = ("torchscript",)
    dynamic_shapes = ("torchscript",)  # a scripted program takes any shape: declared dimensions are kept

    @dataclass
    class CompileSpec:
        optimize: bool = False  # torch.jit.optimize_for_inference on load

    @staticmethod
    def preprocess(module, specs, generate_debug_handles):
        for method in specs:  # {method: CompileSpec instance}
            graph = getattr(module, method).graph.copy()
            torch._C._jit_pass_inline(graph)
            generate_debug_handles(graph, method)
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        return buffer.getvalue()

    def compile(self, payload, specs):
        module = torch.jit.load(io.BytesIO(payload)).eval()
        return {method: self.runner(getattr(module, method)) for method in specs}

    def runner(self, method):
        """One method's runner: the flat inputs in, the flat output leaves out."""
        return lambda inputs: pytree.tree_leaves(method(*inputs))


class OffByOneBackend(JitBackend):
    def runner(self, method):
        run = super().runner(method)
        return lambda inputs: [leaf + 1e-3 for leaf in run(inputs)]


class FailingBackend(JitBackend):
    def runner(self, method):
        def run(inputs):
            raise pipeline.BackendRuntimeError("kernel 0 ran out of scratch memory", debug_handles=[0])

        return run
