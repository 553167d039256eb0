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
