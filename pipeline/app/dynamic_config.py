"""The model config's ``dynamic_shapes`` key: which dimensions of the example inputs may vary at run time.

Its forms: absent or null (every dimension static, as captured), ``auto`` (export finds what may vary, for
every method lowered), or per method either ``auto`` or ``{argument: {dimension: name-or-bounds}}``::

    dynamic_shapes:
      forward:
        input_ids: {0: {name: batch, min: 1, max: 64}, 1: {name: seq, min: 1, max: 512}}
        attention_mask: {0: batch, 1: seq}   # a name alone: the same dimension as above

`declaration` reads it into plain values and checks each method's declaration with the core's own
`parse_declaration` against the method's parameters and the example inputs' shapes, so that a config and
the Python API get one message for one mistake. Nothing is built or captured.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pipeline.app.schema import ConfigError, InputSpec, MethodInputs
from pipeline.core.dynamic_checks import AUTO, backend_refusal, capture_refusal, unlowered_method
from pipeline.core.errors import did_you_mean, format_choices

KEY = "model.dynamic_shapes"
STATIC = f"{KEY}=null"

Declaration = dict[str, Any]  # {method: "auto" | {argument: {dimension: name | {name, min, max}}}}


def declaration(
    raw: Any,
    model_cls: Any,
    example_inputs: Mapping[str, MethodInputs],
    methods: list[str],
    frontend: str,
    torchscript_mode: str,
    backend: Any,
    specs: Mapping[str, Any],
) -> Declaration | None:
    """The declaration for the methods lowered (``methods``), or None when every dimension is static.

    ``backend`` is the registry's `BackendInfo` and ``specs`` each method's parsed compile spec: a backend
    that keeps no dynamic dimension on this frontend, or refuses them with a method's options, is a config
    error here rather than a failed lowering later.
    """
    if raw is None:
        return None
    if raw == AUTO:
        raw = dict.fromkeys(methods, AUTO)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{KEY}: expected null (static), 'auto', or {{method: 'auto' | {{argument: {{dimension: ...}}}}}}, "
            f"got {raw!r}."
        )
    if problem := unlowered_method([str(method) for method in raw], methods, KEY):
        raise ConfigError(problem)
    declared: Declaration = {}
    for method, value in raw.items():
        method = str(method)
        where = f"{KEY}.{method}"
        if value is None:
            continue  # this method stays static
        if value == AUTO:
            declared[method] = AUTO
            continue
        declared[method] = _method_declaration(value, method, model_cls, example_inputs[method], where)
    if not declared:
        return None
    _check_capture(frontend, torchscript_mode, declared)
    _check_backend(backend, frontend, declared, specs)
    return declared


def _method_declaration(
    value: Any, method: str, model_cls: Any, inputs: MethodInputs, where: str
) -> dict[str, dict[int, Any]]:
    """One method's declaration checked by the core's `parse_declaration` against example tensors on the meta
    device (shapes without data: nothing is allocated), with the dimension indices as ints (an override
    ``model.dynamic_shapes.forward.x.0=batch`` gives the string ``'0'``)."""
    from pipeline.core.shapes import ShapeDeclarationError, parse_declaration

    try:
        parse_declaration(value, method, example_arguments(inputs, parameter_names(model_cls, method)), where)
    except ShapeDeclarationError as error:
        raise ConfigError(str(error)) from None
    return {str(argument): {int(dim): size for dim, size in dims.items()} for argument, dims in value.items()}


def example_arguments(inputs: MethodInputs, names: list[str]) -> dict[str, Any]:
    """Each example argument by the name it binds to (positional ones in parameter order): a tensor of its
    shape and dtype on the meta device, or the plain value."""
    import torch

    def value(item: Any) -> Any:
        if isinstance(item, InputSpec):
            return torch.empty(item.shape, dtype=getattr(torch, item.dtype), device="meta")
        return item

    positional = {name: value(item) for name, item in zip(names, inputs.args)}
    return positional | {name: value(item) for name, item in inputs.kwargs.items()}


def parameter_names(model_cls: Any, method: str) -> list[str]:
    """The parameters a call of ``method`` binds by name, in order (not ``self``, ``*args`` or ``**kwargs``)."""
    function = getattr(model_cls, method, None)
    try:
        signature = inspect.signature(function)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    named = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [name for name, parameter in signature.parameters.items() if parameter.kind in named]
    return names[1:] if isinstance(model_cls, type) and names[:1] == ["self"] else names


def _check_capture(frontend: str, torchscript_mode: str, declared: Declaration) -> None:
    if frontend == "torchscript" and (problem := capture_refusal(torchscript_mode, declared, KEY, STATIC)):
        raise ConfigError(problem)


def _check_backend(backend: Any, frontend: str, declared: Declaration, specs: Mapping[str, Any]) -> None:
    for method in declared:
        if problem := backend_refusal(backend, frontend, method, specs[method], KEY, STATIC):
            raise ConfigError(problem)


def check_latency_shapes(shapes: list[dict[str, int]] | None, declared: Declaration | None, method: str) -> None:
    """``latency.shapes`` names dimensions the declaration of the method timed has (those of ``auto`` are
    known only after capture, where the latency stage checks them)."""
    if not shapes:
        return
    method_declared = (declared or {}).get(method)
    if method_declared is None:
        raise ConfigError(
            f"latency.shapes: method {method!r} has no dynamic dimensions, so it runs at its example's shapes "
            f"only; declare them in {KEY}.{method}, or drop latency.shapes."
        )
    if method_declared == AUTO:
        return
    names = declared_names(method_declared)
    for index, point in enumerate(shapes):
        for name in point:
            if name not in names:
                raise ConfigError(
                    f"latency.shapes[{index}].{name}: {KEY}.{method} declares no dimension {name!r}; it declares: "
                    f"{format_choices(names)}." + did_you_mean(name, names)
                )


def declared_names(method: Mapping[str, Mapping[int, Any]]) -> list[str]:
    """The dimension names a method's declaration gives, each once, in order."""
    names: list[str] = []
    for dimensions in method.values():
        for size in dimensions.values():
            name = size.get("name") if isinstance(size, Mapping) else size
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names
