"""Every backend returns what eager returns, dtype and shape included, for the output kinds a record
keeps; a backend that cannot exchange a dtype refuses it when lowering, not on every call."""

import pytest
import torch
from output_kinds import KINDS, Returns

import pipeline
from pipeline.core.errors import LoweringError

BACKENDS = ["reference", "onnxruntime", "openvino", "executorch", "torchscript"]
REFUSED = {("onnxruntime", "bfloat16"): "numpy arrays, which have no bfloat16"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lowered_output_has_eagers_dtype_shape_and_values(backend, kind):
    model, x = Returns(kind).eval(), torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    frontend = "torchscript" if backend == "torchscript" else "export"
    if (backend, kind) in REFUSED:
        with pytest.raises(LoweringError, match=REFUSED[backend, kind]):
            pipeline.to_backend(backend, model, {"forward": {}}, example_inputs={"forward": (x,)}, frontend=frontend)
        return
    lowered = pipeline.to_backend(backend, model, {"forward": {}}, example_inputs={"forward": (x,)}, frontend=frontend)
    expected, actual = model(x), lowered(x)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-2 if kind in ("float16", "bfloat16") else 1e-5, rtol=1e-2)
