"""Each backend's runtime called directly, without the lowered module: what its overhead is measured against.

``raw`` is the runtime's own call on the same torch tensors the lowered
module's method passes to ``execute``, with only the conversions the
runtime's API needs, returning torch tensors as a lowered method does:

- reference: the compiled instruction list (``handle.run``: it is the runtime);
- onnxruntime: the C++ session's ``run`` on ``{name: tensor.numpy()}``, then
  ``torch.from_numpy`` on each output (``InferenceSession.run``, the Python
  wrapper, costs ~1.5 us more: the lowered module does not use it either);
- inductor: the AOTI runner's ``boxed_run`` on a new list of the tensors;
- torchscript: the loaded TorchScript method;
- executorch: the loaded method's bound C++ call on the flat argument list;
- openvino: the C++ ``InferRequest.infer`` on ``openvino.Tensor``\\ s sharing
  the arguments' memory, which returns copies of the outputs (a copy is
  needed: the request's own buffers are overwritten by the next call).

``ready`` (onnxruntime and openvino) is the runtime alone: inputs converted
before the loop, outputs left as numpy. The difference to ``raw`` is what any
torch caller pays for numpy in and out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

import pipeline

Runner = tuple[Callable[..., Any], tuple]


def runners(backend: str, lowered: pipeline.LoweredModule, args: tuple, kwargs: dict[str, Any]) -> dict[str, Runner]:
    """``{"raw": (fn, fn_args)}``, plus ``"ready"`` for the runtimes that take numpy."""
    handle = lowered.compiled("forward")
    inputs = lowered.signatures["forward"].bind(args, kwargs, method="forward")  # what execute() is given
    leaves = [leaf for leaf in pytree.tree_leaves(list(inputs)) if isinstance(leaf, torch.Tensor)]
    return _RUNNERS.get(backend, _handle_run)(handle, inputs, leaves)


def _handle_run(handle: Any, inputs: list[Any], leaves: list[torch.Tensor]) -> dict[str, Runner]:
    return {"raw": (handle.run, (inputs,))}


def _onnxruntime(handle: Any, inputs: list[Any], leaves: list[torch.Tensor]) -> dict[str, Runner]:
    run, outputs = handle.session._sess.run, handle.output_names
    places = [(name, leaves[index]) for name, index in handle.inputs]
    to_torch = torch.from_numpy

    def raw(places):
        return [to_torch(array) for array in run(outputs, {name: tensor.numpy() for name, tensor in places}, None)]

    feeds = {name: tensor.numpy() for name, tensor in places}
    return {"raw": (raw, (places,)), "ready": (run, (outputs, feeds, None))}


def _inductor(handle: Any, inputs: list[Any], leaves: list[torch.Tensor]) -> dict[str, Runner]:
    boxed_run = handle.model.loader.boxed_run
    return {"raw": (lambda tensors: boxed_run(list(tensors)), (leaves,))}  # boxed_run empties its list


def _torchscript(handle: Any, inputs: list[Any], leaves: list[torch.Tensor]) -> dict[str, Runner]:
    positional, keywords = (
        list(inputs[: handle.positional]),
        dict(zip(handle.keywords, inputs[handle.positional :])),
    )
    return {"raw": (lambda: handle.fn(*positional, **keywords), ())}


def _executorch(handle: Any, inputs: list[Any], leaves: list[torch.Tensor]) -> dict[str, Runner]:
    return {"raw": (handle.loaded._method, (handle.arguments(inputs),))}  # every leaf, as the program takes them


def _openvino(handle: Any, inputs: list[Any], leaves: list[torch.Tensor]) -> dict[str, Runner]:
    import openvino
    from openvino._pyopenvino import InferRequest

    infer, request, shared, to_torch = InferRequest.infer, handle.request, openvino.Tensor, torch.from_numpy

    if len(leaves) == 1:  # one input: the tensor itself, as the lowered method passes it

        def raw(tensors):
            feeds = shared(tensors[0].numpy(), shared_memory=True)
            return [to_torch(array) for array in infer(request, feeds, False, False).values()]

        ready = shared(leaves[0].numpy(), shared_memory=True)
    else:

        def raw(tensors):
            feeds = {port: shared(tensor.numpy(), shared_memory=True) for port, tensor in enumerate(tensors)}
            return [to_torch(array) for array in infer(request, feeds, False, False).values()]

        ready = {port: shared(tensor.numpy(), shared_memory=True) for port, tensor in enumerate(leaves)}
    return {"raw": (raw, (leaves,)), "ready": (infer, (request, ready, False, False))}


_RUNNERS = {
    "onnxruntime": _onnxruntime,
    "inductor": _inductor,
    "torchscript": _torchscript,
    "executorch": _executorch,
    "openvino": _openvino,
}
