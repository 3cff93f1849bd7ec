"""The explicit strategy: a list of points written out in the experiment file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ..space import Space
from .base import Point, Strategy


class ExplicitStrategy(Strategy):
    """Evaluates the ``points`` of the phase in the order given (PHS's explicit parameters)."""

    name = "explicit"
    options = ("points",)
    sized_by_trials = False

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], space: Space, where: str) -> dict[str, Any]:
        points = options.get("points")
        if points is None:
            raise ConfigError(f"{where}.points: is required for strategy 'explicit' (a list of parameter tables)")
        if not isinstance(points, list) or not points:
            raise ConfigError(f"{where}.points: must be a non-empty list of parameter tables (got {points!r})")
        checked = [space.check_point(p, f"{where}.points[{i + 1}]") for i, p in enumerate(points)]
        return {"points": checked}

    @classmethod
    def fixed_size(cls, options: Mapping[str, Any], space: Space) -> int:
        return len(options["points"])

    def __init__(self, space, options, rng):
        super().__init__(space, options, rng)
        self._next = 0

    def ask(self) -> Point | None:
        points = self.options["points"]
        if self._next >= len(points):
            return None
        self._next += 1
        return dict(points[self._next - 1])
