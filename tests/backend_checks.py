"""Checks shared by the backend tests: fresh inputs, output comparison, source lines."""

import inspect

import torch
import torch.utils._pytree as pytree


def fresh_like(args: tuple, seed: int) -> tuple:
    """Random inputs of the example inputs' shapes and dtypes, not seen while lowering."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(a.shape, generator=generator, dtype=a.dtype) for a in args)


def assert_same_outputs(expected, actual, atol: float, rtol: float) -> None:
    """Same output structure (types included) and values within tolerance."""
    assert type(actual) is type(expected)
    assert pytree.tree_structure(actual) == pytree.tree_structure(expected)
    for e, a in zip(pytree.tree_leaves(expected), pytree.tree_leaves(actual)):
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol)


def line_of(function, text: str) -> int:
    """The line number of the first line of ``function`` that contains ``text``."""
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


def check_against_eager(model, inputs: dict, lowered, atol: float, rtol: float, loaded=None) -> None:
    """Every method on its example inputs and two fresh ones: lowered equals eager within
    tolerance, and a reloaded artifact (if given) equals the lowered module exactly."""
    for method, args in inputs.items():
        for trial_args in (args, fresh_like(args, seed=1), fresh_like(args, seed=2)):
            with torch.no_grad():
                expected = getattr(model, method)(*trial_args)
            actual = getattr(lowered, method)(*trial_args)
            assert_same_outputs(expected, actual, atol=atol, rtol=rtol)
            if loaded is not None:
                assert_same_outputs(actual, getattr(loaded, method)(*trial_args), atol=0, rtol=0)
