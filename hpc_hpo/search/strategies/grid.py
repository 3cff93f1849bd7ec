"""The grid strategy: every combination of per-parameter values.

Floats need ``steps`` (a number for all of them, or a table per parameter); ints take every
integer unless ``steps`` thins them; categoricals take every choice. Log parameters are
spaced evenly on the log axis.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ..space import Space
from .base import Point, Strategy, check_positive_int

#: A grid larger than this is almost certainly a mistake in the experiment file.
MAX_GRID_POINTS = 1_000_000


class GridStrategy(Strategy):
    """Evaluates every point of a grid, in the order of the parameters in ``[space]``."""

    name = "grid"
    options = ("steps",)
    sized_by_trials = False

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], space: Space, where: str) -> dict[str, Any]:
        steps = options.get("steps")
        if isinstance(steps, Mapping):
            for name, n in steps.items():
                if name not in space.names:
                    names = ", ".join(space.names)
                    raise ConfigError(f"{where}.steps.{name}: not a parameter of the space (parameters: {names})")
                check_positive_int(n, f"{where}.steps.{name}")
            per_param = dict(steps)
        elif steps is None:
            per_param = {}
        else:
            n = check_positive_int(steps, f"{where}.steps")
            per_param = {p.name: n for p in space.params}
        axes = {p.name: p.grid(per_param.get(p.name), f"{where}.steps") for p in space.params}
        size = math.prod(len(values) for values in axes.values())
        if size > MAX_GRID_POINTS:
            shape = " x ".join(f"{name}: {len(v)}" for name, v in axes.items())
            raise ConfigError(
                f"{where}: the grid has {size:,} points ({shape}), more than {MAX_GRID_POINTS:,}; "
                "lower 'steps' or use strategy 'random'"
            )
        return {"steps": steps, "axes": axes}

    @classmethod
    def fixed_size(cls, options: Mapping[str, Any], space: Space) -> int:
        return math.prod(len(values) for values in options["axes"].values())

    def __init__(self, space, options, rng):
        super().__init__(space, options, rng)
        axes = self.options["axes"]
        self._names = list(axes)
        self._points = itertools.product(*axes.values())

    def ask(self) -> Point | None:
        values = next(self._points, None)
        return None if values is None else dict(zip(self._names, values, strict=True))
