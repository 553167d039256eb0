"""The operand codec the reference payload and the partition fallback share (`pipeline.core.operands`)."""

import pytest
import torch

from pipeline.core.operands import TORCH_CONSTANT_TAGS, TensorTable, read_tensor, read_torch_constant, torch_constant


@pytest.mark.parametrize(
    "value", [torch.device("cpu"), torch.float16, torch.bool, torch.strided, torch.channels_last, torch.sparse_coo]
)
def test_torch_constants_round_trip_as_one_key_objects(value):
    ((tag, content),) = torch_constant(value).items()
    assert tag in TORCH_CONSTANT_TAGS and isinstance(content, str)
    assert read_torch_constant(tag, content) == value


@pytest.mark.parametrize("value", [None, 1, 2.5, "float32", [torch.float32], torch.zeros(1)])
def test_other_values_are_not_torch_constants(value):
    assert torch_constant(value) is None


@pytest.mark.parametrize(
    ("tag", "content"),
    [("dtype", "Tensor"), ("dtype", "strided"), ("layout", 3), ("device", "nowhere"), ("tensor", "0")],
)
def test_a_name_torch_does_not_have_is_a_value_error(tag, content):
    with pytest.raises(ValueError, match=f"unknown {tag}"):
        read_torch_constant(tag, content)


def test_by_content_equal_tensors_share_an_entry_and_by_object_each_tensor_has_its_own():
    a, b, c = torch.ones(2, 3), torch.ones(2, 3), torch.arange(4)
    by_content, by_object = TensorTable("a test", by_content=True), TensorTable("a test")
    assert [by_content.add(t) for t in (a, b, c, a)] == [0, 0, 1, 0]
    assert [by_object.add(t) for t in (a, b, c, a)] == [0, 1, 2, 0]
    for table in (by_content, by_object):
        index = table.add(c)
        assert torch.equal(read_tensor(table.entry(index), table.data(index), "c"), c)


def test_a_tensor_without_plain_bytes_is_refused_naming_the_store():
    with pytest.raises(TypeError, match="sparse_coo tensor cannot be stored in a test payload"):
        TensorTable("a test payload").add(torch.eye(2).to_sparse())
