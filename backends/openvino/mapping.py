"""Which FX nodes each OpenVINO node came from, through conversion and through compilation.

What survives, as found with OpenVINO 2026.4:

* **Conversion.** The PyTorch frontend names each node it makes
  ``<FX node>/<aten op>/<OpenVINO op>`` (``linear/aten.linear.default/MatMul``),
  after the node of the *decomposed* graph it converted; `handles_by_origin` leads
  from there to the program's nodes. Transformations at conversion fuse nodes
  and may give the result a new name (a Convolution with BatchNorm folded in is
  ``Multiply_2733``), but its ``fused_names`` runtime info lists the names of every
  node it replaced. So an IR node maps to the handles of all FX nodes in its
  fused names (`ir_node_handles`). Nodes made from no FX node (the Results,
  constants) map to nothing; constants are data, not work, and are left out.
* **Compilation.** The CPU plugin fuses again (MatMul + Add + GELU into one
  ``FullyConnected``) and names the fused node after one of them; the runtime
  model's ``originalLayersNames`` lists every IR node it executes, so a runtime
  node maps to the union of their handles (`runtime_node_handles`). Nodes the
  plugin makes itself list none of the IR's (layout conversions, ``Reorder``;
  the pieces of an op it decomposes, ``Transpose_7387`` of attention): each
  maps to the handles of the nodes it feeds, the work it is done for.
* **Reproducible names.** Names that OpenVINO makes up (``Constant_2449``,
  ``Result_205``) come from a process-wide counter, so the same program would
  give different IR bytes each time; `canonical_names` renames them after their
  type and place in the graph before the IR is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_FUSED_NAMES = "fused_names_0"
_NOT_WORK = ("Constant",)
_NOT_EXECUTED = ("Const", "Input", "Output")  # layer types of the runtime model


def canonical_names(model: Any, method: str, keep: Sequence[str] = ("Parameter",)) -> None:
    """Name the model after the method, and rename every node whose name OpenVINO made up (no ``/``:
    not from an FX node) to ``<type>_<place in the graph>``. Parameters keep theirs: they are the
    method's argument names."""
    model.set_friendly_name(method)
    for index, op in enumerate(model.get_ordered_ops()):
        if op.get_type_name() not in keep and "/" not in op.get_friendly_name():
            op.set_friendly_name(f"{op.get_type_name()}_{index}")


def ir_node_handles(model: Any, origins: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """IR node name -> handles of the FX nodes it came from (fused ones included); constants left out."""
    node_handles = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in _NOT_WORK:
            continue
        info = op.get_rt_info()
        names = info[_FUSED_NAMES].astype(str).split(",") if _FUSED_NAMES in info else [op.get_friendly_name()]
        found = sorted({h for name in names for h in origins.get(name.split("/", 1)[0], [])})
        if found:
            node_handles[op.get_friendly_name()] = found
    return node_handles


def runtime_node_handles(compiled: Any, node_handles: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Runtime node name -> handles of the IR nodes it executes (``originalLayersNames``); a node the
    plugin made itself (a layout ``Reorder``, a piece of an op it decomposed) takes those of the nodes it feeds."""
    ops = compiled.get_runtime_model().get_ordered_ops()
    found: dict[str, tuple[int, ...]] = {}
    for op in reversed(ops):  # consumers first
        info = op.get_rt_info()
        layers = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        handles = {h for name in layers.split(",") if name for h in node_handles.get(name, ())}
        if not handles and info["layerType"].astype(str) not in _NOT_EXECUTED:
            handles = {
                h
                for output in op.outputs()
                for target in output.get_target_inputs()
                for h in found.get(target.get_node().get_friendly_name(), ())
            }
        found[op.get_friendly_name()] = tuple(sorted(handles))
    return found
