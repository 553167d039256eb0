"""The search space, from Hydra's override grammar: what a trial may choose, and its overrides.

``KEY=choice(a,b)`` is categorical, ``KEY=range(1,5)`` an integer (or float)
range, ``KEY=interval(0.1,1)`` a continuous one (``tag(log, interval(...))``
samples on a log scale, ``tag(int, interval(1,64))`` integers); any other
override is fixed, the same in every trial.

A backend's own options are searched only when that backend is chosen. When
``backend=choice(...)`` is searched, a ``backend.*`` key belongs to each chosen
backend whose composed config has it (``has_key``), and becomes a separate
parameter per backend, named ``<backend>:<key>``, so that one backend's trials
say nothing about another's option of the same name. ``backend_params`` names
them explicitly (``{onnxruntime: {backend.compile_spec.forward.quantize:
choice(none,int8_dynamic)}}``), also for fixed values such as a tolerance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from pipeline.app.search.config import SearchConfigError

BACKEND = "backend"


# The three distributions distribution_of makes (choice, range, interval).
Distribution = CategoricalDistribution | IntDistribution | FloatDistribution


@dataclass(frozen=True)
class Param:
    """One searched key: ``name`` is optuna's parameter name, ``key`` the config key (with any ``+`` prefix)."""

    name: str
    key: str
    distribution: Distribution


@dataclass
class SearchSpace:
    fixed: list[str]  # override lines every trial gets, as given
    common: list[Param]  # searched in every trial (``backend`` itself first, if searched)
    by_backend: dict[str, list[Param]] = field(default_factory=dict)  # searched when that backend is chosen
    fixed_by_backend: dict[str, list[str]] = field(default_factory=dict)  # set when that backend is chosen

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample a trial's parameters, define-by-run: the backend first, then that backend's options."""
        values = {p.name: suggest(trial, p) for p in self.common}
        for param in self.by_backend.get(str(values.get(BACKEND)), []):
            values[param.name] = suggest(trial, param)
        return values

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The trial's override lines: the fixed ones, then each parameter's ``key=value``."""
        keys = {p.name: p.key for p in self.common + [p for ps in self.by_backend.values() for p in ps]}
        backend = str(values.get(BACKEND))
        lines = list(self.fixed) + list(self.fixed_by_backend.get(backend, []))
        return lines + [f"{keys[name]}={as_override_text(value)}" for name, value in values.items()]

    def size(self) -> int | None:
        """How many distinct configurations there are; None if a parameter is continuous."""
        try:
            return sum(1 for _ in self.configurations())
        except SearchConfigError:
            return None

    def configurations(self) -> Iterator[dict[str, Any]]:
        """Every configuration once (the grid), backend by backend; raises for a continuous parameter."""
        backend = next((p for p in self.common if p.name == BACKEND), None)
        others = [p for p in self.common if p.name != BACKEND]
        for choice in values_of(backend) if backend else [None]:
            params = others + self.by_backend.get(str(choice), [])
            for combination in itertools.product(*(values_of(p) for p in params)):
                values = {BACKEND: choice} if backend else {}
                values.update(zip((p.name for p in params), combination))
                yield values


def build_space(
    overrides: Sequence[Override], backend_params: Mapping[str, Sequence[Override]], has_key: Callable[[str, str], bool]
) -> SearchSpace:
    """``has_key(backend, key)``: whether ``key`` is in the config composed with ``backend=<backend>``."""
    space = SearchSpace(fixed=[], common=[])
    backend_override = next((o for o in overrides if o.key_or_group == BACKEND), None)
    searched_backends = (
        [str(v) for v in backend_override.sweep_iterator(transformer=Transformer.encode)]
        if backend_override is not None and backend_override.is_sweep_override()
        else None
    )
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            space.fixed.append(override.input_line or f"{key}={override.get_value_element_as_str()}")
        elif searched_backends and override.key_or_group.startswith(BACKEND + ".") and not override.is_add():
            owners = [b for b in searched_backends if has_key(b, override.key_or_group)]
            if not owners:
                raise SearchConfigError(
                    f"{key}: none of the searched backends ({', '.join(searched_backends)}) "
                    "has this option; list it under hydra.sweeper.backend_params.<backend> "
                    "to search it anyway."
                )
            for backend in owners:
                space.by_backend.setdefault(backend, []).append(
                    Param(f"{backend}:{key}", key, distribution_of(override))
                )
        else:
            param = Param(key, key, distribution_of(override))
            if override.key_or_group == BACKEND:  # sampled first: it decides which options come after
                space.common.insert(0, param)
            else:
                space.common.append(param)
    for backend, params in backend_params.items():
        if searched_backends is None or backend not in searched_backends:
            raise SearchConfigError(
                f"hydra.sweeper.backend_params.{backend}: {backend!r} is not among the searched "
                f"backends ({', '.join(searched_backends or []) or 'backend is not searched'}); "
                "search it with backend=choice(...)."
            )
        for override in params:
            key = override.get_key_element()
            if override.is_sweep_override():
                space.by_backend.setdefault(backend, []).append(
                    Param(f"{backend}:{key}", key, distribution_of(override))
                )
            else:
                space.fixed_by_backend.setdefault(backend, []).append(f"{key}={override.get_value_element_as_str()}")
    return space


def distribution_of(override: Override) -> Distribution:
    """The optuna distribution of a sweep override (as hydra-optuna-sweeper maps them, ranges inclusive of
    their last value)."""
    key = override.get_key_element()
    if override.is_choice_sweep():
        choices: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
        if len(set(map(repr, choices))) != len(choices):
            raise SearchConfigError(f"{key}: choice() names a value twice: {choices}")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        # is_range_sweep() and is_interval_sweep() say which sweep value() holds; mypy cannot follow them.
        sweep = cast(RangeSweep, override.value())
        if sweep.shuffle:
            shuffled: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
            return CategoricalDistribution(shuffled)
        values: list[Any] = list(override.sweep_iterator(transformer=Transformer.identity))
        if not values:
            raise SearchConfigError(f"{key}: {override.get_value_element_as_str()} is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=abs(int(sweep.step)))
        return CategoricalDistribution(values)  # float steps: exactly the values range() lists
    if override.is_interval_sweep():
        interval = cast(IntervalSweep, override.value())
        assert interval.start is not None and interval.end is not None  # interval(a, b) has both ends
        log = "log" in interval.tags
        if "int" in interval.tags:
            return IntDistribution(math.ceil(interval.start), math.ceil(interval.end) - 1, log=log)
        return FloatDistribution(interval.start, interval.end, log=log)
    raise SearchConfigError(
        f"{key}: {override.get_value_element_as_str()} cannot be searched; use choice(...), "
        "range(...) or interval(...)."
    )


def suggest(trial: Any, param: Param) -> Any:
    d = param.distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(param.name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(param.name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(param.name, d.low, d.high, step=d.step, log=d.log)


def values_of(param: Param) -> list[Any]:
    d = param.distribution
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if isinstance(d, IntDistribution) and not d.log:
        return list(range(d.low, d.high + 1, d.step))
    raise SearchConfigError(
        f"{param.name}: a continuous interval has no grid; use choice(...) or range(...), or sampler=tpe/random."
    )


def as_override_text(value: Any) -> str:
    return "null" if value is None else str(value)
