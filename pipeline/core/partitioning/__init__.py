"""Partitioned lowering: the subgraphs a backend supports run on it, the rest in PyTorch, and it is recorded.

``to_backend(..., partition=True)`` (export frontend only) goes through the modules here, one job each:

* `split`: `split_program` functionalizes each method that writes in place, gives its nodes debug handles
  and finds the supported groups (`split_method`); the backend's ``preprocess`` then lowers all groups of
  all methods in one call, each group as a method of its own (``forward_p0``, ``forward_p1``, ...), with
  the handles issued on the whole method, so they stay unique and point at the user's lines.
* `fallback`: what PyTorch runs between the groups, as JSON steps, written at lowering and run at load.
* `payload`: the container (kind ``partitioned``) of the backend's payload, the fallbacks and their tensors.
* `record`: every group's nodes and every fallback op with its source, and the summary line the app prints.
* `runtime`: `PartitionedRuntime`, which runs a method by walking its fallback and calling the backend's
  runners for the groups, and `PartitionedModule`, the `LoweredModule` built with it.
"""

from pipeline.core.partitioning.payload import KIND, partitioned_payload
from pipeline.core.partitioning.record import mark_handles, partition_record
from pipeline.core.partitioning.runtime import PartitionedModule, PartitionedRuntime
from pipeline.core.partitioning.split import split_program

__all__ = [
    "KIND",
    "PartitionedModule",
    "PartitionedRuntime",
    "mark_handles",
    "partition_record",
    "partitioned_payload",
    "split_program",
]
