"""The sobol strategy: a scrambled Sobol sequence over the space, an even initial design.

Like random search, but the points fill the space more evenly (scipy.stats.qmc). Points are
drawn in blocks of a power of two, which keeps the sequence's balance.
"""

from __future__ import annotations

import warnings

from ..sampling import sobol_engine
from .base import Point
from .random import RandomStrategy

_BLOCK = 256


class SobolStrategy(RandomStrategy):
    """Quasi-random points, reproducible from the phase's random stream."""

    name = "sobol"

    def __init__(self, space, options, rng):
        super().__init__(space, options, rng)
        self._engine = sobol_engine(max(1, space.dim), rng)

    def _fresh_batch(self) -> list[Point]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            U = self._engine.random(_BLOCK)
        return self.space.from_unit(U[:, : self.space.dim])
