"""Running a partitioned artifact: each method walks its fallback and calls the backend's runners for the groups.

`PartitionedRuntime` compiles a partitioned payload (`pipeline.core.partitioning.payload`) with the runtime
of the backend it names; `PartitionedModule` is the `LoweredModule` built with it, which also holds the
split's record.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.backend import MethodRunner, ProfileEvent
from pipeline.core.bounded_json import expect, member
from pipeline.core.errors import LoweringError, MalformedInput
from pipeline.core.lowered_module import LoweredModule
from pipeline.core.partitioning.fallback import FallbackProgram, PartitionCall
from pipeline.core.partitioning.payload import KIND
from pipeline.core.payload import unpack_parts
from pipeline.core.registry import BackendInfo
from pipeline.core.tensor_data import read_tensor


class _Partition:
    """A fallback step's call of one group: the backend's runner, and its profile if it has one."""

    def __init__(self, runner: MethodRunner):
        self.runner = runner
        self.profiler = getattr(runner, "profile", None)

    def profile(self, inputs: list[Any]) -> list[ProfileEvent] | None:
        return self.profiler(inputs) if self.profiler is not None else None


class _FallbackRunner(FallbackProgram):
    """A method's fallback as the `MethodRunner` the contract asks for: called on the inputs, it runs."""

    def __call__(self, inputs: list[Any]) -> list[Any]:
        return self.run(inputs)


class PartitionedRuntime:
    """Compiles a partitioned payload: each method's fallback, with the backend's runners for the groups.

    Not a `Backend` (it is never registered and has no preprocess): it is the runtime a
    `PartitionedModule` is built with, wrapping the runtime of the backend the artifact names.
    """

    def __init__(self, inner: BackendInfo):
        self.inner_info = inner
        self.inner = inner.runtime()

    def is_available(self) -> bool:
        return bool(self.inner.is_available())

    def compile(self, payload: bytes, specs: dict[str, Any]) -> dict[str, MethodRunner]:
        meta, parts = unpack_parts(payload, KIND)
        try:
            return self._programs(meta, parts, specs)
        except MalformedInput as error:
            raise LoweringError(f"Partitioned payload of backend {self.inner_info.name!r}: {error}") from None

    def _programs(
        self, meta: dict[str, Any], parts: dict[str, bytes], specs: dict[str, Any]
    ) -> dict[str, MethodRunner]:
        groups = member(meta, "partitions", dict, "partitions")
        entries = member(meta, "tensors", list, "tensors")
        tensors = [
            read_tensor(entry, parts.get(f"tensor/{i}", b""), f"tensors[{i}]") for i, entry in enumerate(entries)
        ]
        inner_specs = {}
        for name, info in groups.items():
            method = member(info, "method", str, f"partitions.{name}")
            if method not in specs:
                raise MalformedInput(f"partition {name!r} belongs to method {method!r}, which is not lowered.")
            inner_specs[name] = specs[method]
        compiled = self.inner.compile(parts.get("backend", b""), inner_specs) if inner_specs else {}
        missing = sorted(set(inner_specs) - set(compiled))
        if missing:
            raise MalformedInput(f"backend {self.inner_info.name!r} compiled no runner for partitions {missing}.")
        calls: dict[str, PartitionCall] = {}
        for name, info in groups.items():
            handles = tuple(
                expect(h, int, f"partitions.{name}.handles")
                for h in member(info, "handles", list, f"partitions.{name}")
            )
            partition = _Partition(compiled[name])
            calls[name] = (partition.runner, partition.profile, handles)
        methods = member(meta, "methods", dict, "methods")
        missing = sorted(set(specs) - set(methods))
        if missing:
            raise MalformedInput(f"no fallback for methods {missing}.")
        return {method: _FallbackRunner(method, methods[method], tensors, calls) for method in specs}


class PartitionedModule(LoweredModule):
    """A `LoweredModule` whose methods run partly on the backend, partly in PyTorch; `partition` says how."""

    def __init__(self, *, partition: dict[str, Any], **held: Any):
        super().__init__(**held)
        self._partition = partition

    @property
    def partition(self) -> dict[str, Any]:
        """The record: groups with their nodes, fallback ops with their sources, and the ``summary`` line."""
        return self._partition
