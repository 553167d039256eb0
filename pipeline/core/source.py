"""The one place that turns a graph node into source information.

Works on TorchScript nodes (``torch._C.Node``) and FX nodes (``torch.fx.Node``)
and gives back the same things for both: the op kind, a node name, the source
line that produced it, the inlined call stack, and the module hierarchy in the
format of PyTorch's TorchScript backends
(``top(C)::<unknown>.A0(A)::forward.aten::add``).
"""

from __future__ import annotations

import functools
import linecache
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# (instance name, type name) per module level below the top.
HierarchyPath = tuple[tuple[str, str], ...]

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_PROJECT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)  # the checkout: pipeline/core/..
_FX_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)\n(?P<text>[^\n]*)')
_TS_HEADER = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_TRACED_FRAME = re.compile(r"^(?P<file>[^\n]+)\((?P<line>\d+)\): (?P<function>[^\n]+)$", re.MULTILINE)
_TORCH_JIT_DIR = os.path.join(_TORCH_DIR, "jit") + os.sep
_MODULE_CALL_FILE = os.path.join("torch", "nn", "modules", "module.py")
_TS_HIERARCHY_LEVEL = re.compile(r"(?P<name>[^.()]+)\((?P<type>[^()]*)\)")


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    function: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function, "text": self.text}


@dataclass(frozen=True)
class NodeSource:
    """Where a node came from."""

    op: str
    node: str
    source: Frame | None
    hierarchy: HierarchyPath
    call_stack: tuple[Frame, ...] = field(default=())

    @property
    def module_path(self) -> str:
        return ".".join(name for name, _ in self.hierarchy)


def format_module_hierarchy(top_type: str, levels: Sequence[tuple[str, str]], op: str, method: str = "forward") -> str:
    """``top(C)::<unknown>.A0(A)::forward.aten::add``: the original's format."""
    text = f"top({top_type})::<unknown>"
    for name, type_name in levels:
        text += f".{name}({type_name})::{method}"
    return f"{text}.{op}"


def short_type_name(qualified: str) -> str:
    return qualified.rsplit(".", 1)[-1]


def describe_node(node: Any) -> NodeSource:
    """Where ``node`` came from; file names are portable (`portable_path`)."""
    found = _describe_fx_node(node) if isinstance(node, torch.fx.Node) else _describe_ts_node(node)
    # Built directly, not with dataclasses.replace: this runs once per node of every graph lowered.
    return NodeSource(
        found.op,
        found.node,
        None if found.source is None else _portable(found.source),
        found.hierarchy,
        tuple(_portable(frame) for frame in found.call_stack),
    )


def portable_path(path: str) -> str:
    """``path`` relative to a named root, so the same code gives the same records on any machine and in
    any checkout: ``<torch>/nn/modules/linear.py`` for an installed package (its top-level name), ``<stdlib>/``
    for the standard library, ``<project>/`` for this project's checkout, ``<cwd>/`` for the working
    directory. A path under none of them (or not a file path at all) stays as it is."""
    if not path or path.startswith("<") or not os.path.isabs(path):
        return path
    return _portable_from(path, os.getcwd())


@functools.lru_cache(maxsize=4096)
def _portable_from(path: str, cwd: str) -> str:
    # Cached: a graph names a few files thousands of times, and realpath costs a stat per path component.
    path = os.path.realpath(path)
    for root, name in _roots(cwd):
        if path.startswith(root):
            rest = path[len(root) :]
            if name is None:  # site-packages: the package's own name is the root
                package, _, inner = rest.partition(os.sep)
                return f"<{package}>/{inner}"
            return f"<{name}>/{rest}"
    return path


@functools.lru_cache(maxsize=1)
def _root_table() -> tuple[tuple[str, str | None], ...]:
    import site
    import sysconfig

    packages = {
        os.path.realpath(p)
        for p in site.getsitepackages() + [site.getusersitepackages(), sysconfig.get_paths()["purelib"]]
    }
    roots: list[tuple[str, str | None]] = [(p, None) for p in packages]
    roots.append((os.path.realpath(sysconfig.get_paths()["stdlib"]), "stdlib"))
    if os.path.realpath(_PROJECT) not in packages:  # a checkout, not an installed copy
        roots.append((os.path.realpath(_PROJECT), "project"))
    return tuple((root.rstrip(os.sep) + os.sep, name) for root, name in roots)


def _roots(cwd: str) -> tuple[tuple[str, str | None], ...]:
    cwd_root = (os.path.realpath(cwd).rstrip(os.sep) + os.sep, "cwd")
    # the most specific root first: site-packages lies under the stdlib's prefix in some layouts
    return tuple(sorted(_root_table() + (cwd_root,), key=lambda item: -len(item[0])))


def _portable(frame: Frame) -> Frame:
    return Frame(portable_path(frame.file), frame.line, frame.function, frame.text)


def fx_op_name(node: torch.fx.Node) -> str:
    """``aten::add.Tensor`` for OpOverloads, the plain name for everything else."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        namespace, rest = target.name().split("::", 1)
        return f"{namespace}::{rest}"
    if isinstance(target, str):
        return f"{node.op}::{target}"
    return f"{node.op}::{getattr(target, '__name__', str(target))}"


def _describe_fx_node(node: torch.fx.Node) -> NodeSource:
    frames = [
        Frame(m["file"], int(m["line"]), m["function"], m["text"].strip())
        for m in _FX_FRAME.finditer(node.meta.get("stack_trace") or "")
    ]
    while frames and frames[0].file.startswith(_TORCH_DIR):  # the tracer's own frames
        frames.pop(0)
    stack = node.meta.get("nn_module_stack") or {}
    levels: list[tuple[str, str]] = []
    parent = ""
    for path, type_name in stack.values():
        if not path:
            continue
        if not isinstance(type_name, str):
            type_name = getattr(type_name, "__qualname__", str(type_name))
        name = path[len(parent) + 1 :] if parent and path.startswith(parent + ".") else path
        levels.append((name, short_type_name(type_name)))
        parent = path
    return NodeSource(fx_op_name(node), node.name, _innermost_user_frame(frames), tuple(levels), tuple(frames))


def _describe_ts_node(node: Any) -> NodeSource:
    text = node.sourceRange()
    frames: tuple[Frame, ...] = ()
    if _TRACED_FRAME.match(text):
        frames = _parse_traced_stack(text)
        frame = _innermost_user_frame(frames)
    else:
        frame = _parse_ts_source_range(text) if text else None
        frames = (frame,) if frame else ()
    # SELF(T) marks a call to another method of the same module: not a level of its own.
    levels = tuple(
        (m["name"], short_type_name(m["type"]))
        for m in _TS_HIERARCHY_LEVEL.finditer(node.getModuleHierarchy() or "")
        if m["name"] not in ("SELF", "UNKNOWN_INSTANCE")
    )
    name = ", ".join("%" + value.debugName() for value in node.outputs())
    return NodeSource(node.kind(), name, frame, levels, frames)


def _parse_traced_stack(text: str) -> tuple[Frame, ...]:
    """A traced node's Python stack (``file(line): function`` lines, innermost first).

    Keeps the model's frames: those below torch.jit's trace entry, without
    nn.Module's call wrappers. The line text comes from the source file.
    """
    frames = [
        Frame(m["file"], int(m["line"]), m["function"], linecache.getline(m["file"], int(m["line"])).strip())
        for m in _TRACED_FRAME.finditer(text)
    ]
    frames.reverse()  # outermost first
    entry = max((i for i, f in enumerate(frames) if f.file.startswith(_TORCH_JIT_DIR)), default=-1)
    return tuple(f for f in frames[entry + 1 :] if not f.file.endswith(_MODULE_CALL_FILE))


def _parse_ts_source_range(text: str) -> Frame | None:
    """Parse TorchScript's highlighted range: the code line is the one above ``~~~``."""
    header = _TS_HEADER.search(text)
    if header is None:
        return None
    lines = text.splitlines()
    code = ""
    for previous, current in zip(lines, lines[1:]):
        if "~" in current and current.strip().strip("~").strip() in ("", "<--- HERE"):
            code = previous.strip()
            break
    return Frame(header["file"], int(header["line"]), "<unknown>", code)


def _innermost_user_frame(frames: Sequence[Frame]) -> Frame | None:
    """The deepest frame outside torch itself: the line a user wrote."""
    for frame in reversed(frames):
        if not frame.file.startswith(_TORCH_DIR):
            return frame
    return frames[-1] if frames else None


def torchscript_call_sites(module: Any, methods: Sequence[str]) -> dict[str, dict[str, Frame]]:
    """``{method: {submodule attribute: Frame}}``: the line of each method that calls a submodule.

    Inlining keeps only a node's innermost source (``F.relu``'s body inside
    torch); the call ``self.features(x)`` in the user's code is a
    ``prim::CallMethod`` on ``prim::GetAttr[name="features"]`` before inlining.
    """
    sites: dict[str, dict[str, Frame]] = {}
    for method in methods:
        found: dict[str, Frame] = {}
        graph = getattr(module, method).graph
        stack = [graph.nodes()]
        while stack:
            for node in stack.pop():
                stack += [block.nodes() for block in node.blocks()]
                if node.kind() != "prim::CallMethod":
                    continue
                receiver = next(iter(node.inputs())).node()
                frame = _parse_ts_source_range(node.sourceRange())
                if receiver.kind() == "prim::GetAttr" and frame is not None:
                    found.setdefault(receiver.s("name"), _portable(frame))
        sites[method] = found
    return sites
