"""The fallback is an allow-list: a forged step that reads or writes a file, writes into a tensor, draws random
numbers or asks for a huge tensor is refused when the artifact loads, naming the op; lowering refuses to write
such a step; and every op real models fall back to is on the list (issue 27, part 2)."""

from __future__ import annotations

import re
import time

import pytest
import torch
from artifact_forgery import forge, members
from file_canaries import OpenWatch, secret_file
from torch import nn

import pipeline
from pipeline.core import op_policy
from pipeline.core.literals import literal_source
from pipeline.core.lowering import to_backend
from pipeline.core.partitioning import KIND
from pipeline.core.payload import pack_parts, unpack_parts
from pipeline.core.tensor_data import tensor_bytes, tensor_entry
from pipeline.zoo import architectures
from pipeline.zoo.fnet import FNet

aten = torch.ops.aten


class SortThenScale(nn.Module):
    """relu on the backend, sort in the fallback (the reference backend has no sort), the scale on the backend."""

    def forward(self, x):
        return torch.sort(torch.relu(x), dim=-1)[0] * 2


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
    x = torch.randn(2, 8)
    lowered = to_backend(
        "reference", SortThenScale().eval(), {"forward": {}}, example_inputs={"forward": (x,)}, partition=True
    )
    return pipeline.save_lowered(lowered, tmp_path_factory.mktemp("partitioned") / "sort.lowered"), x


def lit(value):
    return {"literal": literal_source(value)}


def ref(name):
    return {"ref": name}


def sizes(*values):
    return {"list": [lit(v) for v in values]}


def step(target, *args, result="forged", **kwargs):
    return {"call": "op", "target": target, "args": list(args), "kwargs": kwargs, "outputs": [result]}


def forge_fallback(path, out, steps, output="forged", tensors=()):
    """The artifact at ``path`` with its method's fallback replaced by ``steps`` returning ``output``, and
    ``tensors`` added to the stored ones; every hash and size recomputed, as an attacker would."""
    meta, parts = unpack_parts(dict(members(path))["payload.bin"], KIND)
    method = meta["methods"]["forward"]
    method["steps"], method["outputs"] = steps, [ref(output)]
    for tensor in tensors:
        parts[f"tensor/{len(meta['tensors'])}"] = tensor_bytes(tensor)
        meta["tensors"].append(tensor_entry(tensor))
    return forge(path, out, parts={"payload.bin": pack_parts(KIND, meta, parts)})


def refused_at_load(path, *fragments):
    with pytest.raises(pipeline.ArtifactError) as raised:
        pipeline.load_lowered(path)
    message = str(raised.value)
    assert str(path) in message
    for fragment in fragments:
        assert re.search(fragment, message), f"{fragment!r} not in {message}"
    return message


# -- the threat: these ops really are file APIs in this PyTorch --------------------------------------


def test_from_file_reads_any_file_and_with_shared_creates_one(tmp_path):
    """Why the list exists: what a forged step named before it, run directly."""
    secret = secret_file(tmp_path / "secret.bin")
    read = aten.from_file.default(str(tmp_path / "secret.bin"), False, len(secret), dtype=torch.uint8)
    assert bytes(read.tolist()) == secret
    aten.from_file.default(str(tmp_path / "made.bin"), True, 4096)
    assert (tmp_path / "made.bin").stat().st_size == 4096 * 4


# -- refused at load ---------------------------------------------------------------------------------


def _hostile_steps(secret, canary):
    return {
        "from_file reads": (
            [step("aten::from_file.default", lit(str(secret)), lit(False), lit(64), dtype={"dtype": "uint8"})],
            r"takes a str 'filename'",
        ),
        "from_file shared, size=4096 writes": (
            [step("aten::from_file.default", lit(str(canary)), lit(True), lit(4096))],
            r"takes a str 'filename'",
        ),
        "save": ([step("aten::save.default", ref("x"), lit(str(canary)))], r"is not on the fallback's allow-list"),
        "_print": ([step("aten::_print.default", lit(str(secret)))], r"takes a str 's'"),
        "an out= variant": (
            [step("aten::add.out", ref("x"), ref("x"), out=ref("x"))],
            r"writes into its arguments .*out= variant",
        ),
        "from_file's out= variant": (
            [step("aten::from_file.out", lit(str(canary)), lit(True), lit(4096), out=ref("x"))],
            r"writes into its arguments",
        ),
        "manual_seed": ([step("aten::manual_seed.default", lit(0))], r"returns nothing"),
        "randn": ([step("aten::randn.default", sizes(4))], r"draws random numbers"),
        "_reshape_alias, which reads past its storage": (
            [step("aten::_reshape_alias.default", ref("x"), sizes(1 << 24), sizes(1))],
            r"private ATen op",
        ),
        "an unchecked sparse tensor": ([step("aten::sparse_coo_tensor.indices", ref("x"), ref("x"))], r"sparse"),
        "empty of 2**40 elements": (
            [step("aten::empty.memory_format", sizes(1 << 40))],
            r"asks for a tensor of 4398046511104 bytes, past the limit of 8589934592",
        ),
        "full of 2**40 elements": (
            [step("aten::full.default", sizes(1 << 40), lit(1.0))],
            r"asks for a tensor of \d+ bytes, past the limit",
        ),
        "new_zeros of 2**40 elements": (
            [step("aten::new_zeros.default", ref("x"), sizes(1 << 40))],
            r"asks for a tensor of \d+ bytes, past the limit",
        ),
        "expand to 2**34 elements": (
            [step("aten::expand.default", ref("x"), sizes(1 << 30, 2, 8))],
            r"asks for a tensor of \d+ bytes, past the limit",
        ),
        "arange to 2**40": ([step("aten::arange.default", lit(1 << 40))], r"asks for a tensor of \d+ bytes"),
    }


@pytest.mark.parametrize("case", list(_hostile_steps("s", "c")))
def test_a_forged_fallback_step_off_the_allow_list_is_refused_at_load_naming_it(case, partitioned, tmp_path):
    path, x = partitioned
    canary = tmp_path / "canary.bin"
    secret = secret_file(tmp_path / "secret.bin")
    steps, reason = _hostile_steps(tmp_path / "secret.bin", canary)[case]
    forged = forge_fallback(path, tmp_path / "forged.lowered", steps)
    start = time.perf_counter()
    message = refused_at_load(forged, re.escape(f"op {steps[0]['target']!r}"), reason)
    assert time.perf_counter() - start < 5.0
    assert "fallback of 'forward': steps[0]" in message  # the part, the step
    assert not canary.exists()
    assert secret not in message.encode()


def test_a_fallback_never_opens_the_file_a_forged_from_file_names(partitioned, tmp_path):
    path, _ = partitioned
    secret_file(tmp_path / "secret.bin")
    forged = forge_fallback(
        path,
        tmp_path / "forged.lowered",
        [step("aten::from_file.default", lit(str(tmp_path / "secret.bin")), lit(False), lit(64))],
    )
    with OpenWatch(tmp_path / "secret.bin") as watch:
        refused_at_load(forged, "aten::from_file.default")
    assert not watch.opened


def test_the_open_watch_sees_a_read_and_not_a_stat(tmp_path):
    """The proof above means something only if an open would have been seen."""
    secret = secret_file(tmp_path / "probe.bin")
    with OpenWatch(tmp_path / "probe.bin") as watch:
        assert (tmp_path / "probe.bin").stat().st_size == len(secret)
    assert not watch.opened
    with OpenWatch(tmp_path / "probe.bin") as watch:
        aten.from_file.default(str(tmp_path / "probe.bin"), False, 4, dtype=torch.uint8)
    assert watch.opened


def test_a_size_the_program_computes_is_judged_before_the_op_runs(partitioned, tmp_path):
    path, x = partitioned
    steps = [
        step("aten::_local_scalar_dense.default", {"tensor": 0}, result="n"),
        step("aten::full.default", {"list": [ref("n")]}, lit(1.0)),
    ]
    forged = forge_fallback(path, tmp_path / "forged.lowered", steps, tensors=[torch.tensor(1 << 40)])
    loaded = pipeline.load_lowered(forged)  # the size is not in the file: it is computed
    start = time.perf_counter()
    with pytest.raises(
        pipeline.BackendRuntimeError,
        match=r"aten::full.default asks for a tensor of \d+ bytes, "
        r"past the limit",
    ):
        loaded(x)
    assert time.perf_counter() - start < 2.0  # refused, not allocated


def test_a_tensor_a_step_makes_past_the_limit_is_refused_before_anything_reads_it(partitioned, tmp_path):
    path, x = partitioned
    steps = [
        step("aten::_local_scalar_dense.default", {"tensor": 0}, result="n"),
        step("aten::expand.default", ref("x"), {"list": [ref("n"), lit(2), lit(8)]}, result="wide"),
        step("aten::mul.Tensor", ref("wide"), lit(2.0)),
    ]
    forged = forge_fallback(path, tmp_path / "forged.lowered", steps, tensors=[torch.tensor(1 << 30)])
    with pytest.raises(pipeline.BackendRuntimeError, match=r"aten::expand.default asks for a tensor"):
        pipeline.load_lowered(forged)(x)


def test_the_empty_family_hands_out_zeros_not_what_the_heap_held(partitioned, tmp_path):
    path, x = partitioned
    forged = forge_fallback(path, tmp_path / "forged.lowered", [step("aten::empty.memory_format", sizes(4096))])
    loaded = pipeline.load_lowered(forged)
    for _ in range(20):
        sevens = torch.full((4096,), 7.0)
        del sevens  # a freed block of the same size, which malloc hands out next
        assert not loaded(x).any()


def test_a_fallback_of_ops_on_the_list_still_loads_and_runs(partitioned, tmp_path):
    path, x = partitioned
    steps = [
        step("aten::topk.default", ref("x"), lit(3), result="top"),
        {"call": "item", "args": [ref("top"), lit(0)], "outputs": ["values"]},
        step("aten::gelu.default", ref("values"), approximate=lit("tanh")),
    ]
    loaded = pipeline.load_lowered(forge_fallback(path, tmp_path / "forged.lowered", steps))
    assert torch.equal(loaded(x), torch.nn.functional.gelu(torch.topk(x, 3).values, approximate="tanh"))


# -- refused when lowering ---------------------------------------------------------------------------


class Noisy(nn.Module):
    def forward(self, x):
        return torch.relu(x) + torch.randn(x.shape)


class HugeScratch(nn.Module):
    def forward(self, x):
        return torch.relu(x), torch.empty(1 << 40, dtype=torch.uint8)


@pytest.mark.parametrize(
    "model, message",
    [
        (Noisy(), r"node randn .*\(aten::randn\b.*draws random numbers"),
        (HugeScratch(), r"node empty .*\(aten::empty\b.*asks for a tensor of 1099511627776 bytes"),
    ],
)
def test_lowering_refuses_to_write_a_fallback_step_the_loader_would_refuse(model, message):
    with pytest.raises(pipeline.UnsupportedOpError, match=message):
        to_backend(
            "reference", model, {"forward": {}}, example_inputs={"forward": (torch.randn(2, 8),)}, partition=True
        )


# -- the list itself ---------------------------------------------------------------------------------

LEGITIMATE = [
    aten.sort.default,
    aten.topk.default,
    aten.cumsum.default,
    aten.fft_fft.default,
    aten.fft_fft2.default,
    aten.real.default,
    aten.linalg_eigh.default,
    aten.gelu.default,
    aten.div.Tensor_mode,
    aten.scaled_dot_product_attention.default,
    aten.dropout.default,
    aten.lstm.input,
    aten._to_copy.default,
    aten._assert_tensor_metadata.default,
    aten.__and__.Tensor,
    aten.empty.memory_format,
    aten.full.default,
    aten.arange.start_step,
    aten.einsum.default,
    aten._local_scalar_dense.default,
    torch.ops.prims.convert_element_type.default,
]


@pytest.mark.parametrize("op", LEGITIMATE, ids=op_policy.op_label)
def test_what_partitioning_legitimately_runs_in_pytorch_is_on_the_list(op):
    assert op_policy.refusal(op) == ""


def _ops_of(model, args):
    program = torch.export.export(model, args)
    found = set()
    for version in (program.run_decompositions({}), program.run_decompositions()):
        found |= {
            n.target
            for n in version.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
        }
    return found


def test_every_op_of_the_functionalized_programs_of_real_models_is_on_the_list():
    found = _ops_of(FNet(layers=1).eval(), (torch.randn(2, 8, 16),))
    for name in ("resnet", "lstm_tagger", "attention_encoder"):
        found |= _ops_of(architectures.build(name), architectures.example_inputs(name)["forward"])
    refused = {op_policy.op_label(op): op_policy.refusal(op) for op in found if op_policy.refusal(op)}
    assert len(found) > 40 and refused == {}


def test_no_overload_on_the_list_writes_takes_a_storage_generator_or_file_name_or_returns_nothing():
    allowed = op_policy.allowed_overloads()
    assert "aten::from_file.default" not in allowed and "aten::add.Tensor" in allowed
    for name in allowed:
        namespace, _, rest = name.partition("::")
        op = op_policy.lookup(namespace, *rest.split("."))
        schema = op._schema
        assert not schema.is_mutable, name
        kinds = [str(a.type) for a in schema.arguments]
        assert not any(word in kind for kind in kinds for word in ("Storage", "Generator", "Stream", "Any")), name
        texts = [a.name for a in schema.arguments if "str" in str(a.type)]
        assert set(texts) <= op_policy.STR_ARGUMENTS and "filename" not in texts, name
        assert schema.returns or schema.name.split("::")[1] in op_policy.CHECKS, name
