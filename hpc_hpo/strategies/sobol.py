"""The sobol strategy: a scrambled Sobol sequence over the space, an even initial design.

Like random search, but the points fill the space more evenly (scipy.stats.qmc). Points are
drawn in blocks of a power of two, which keeps the sequence's balance.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import Point
from .random import RandomStrategy

_BLOCK = 256


def sobol_engine(d: int, rng: np.random.Generator) -> Any:
    """A scrambled Sobol engine in d dimensions drawing from ``rng`` (scipy takes ``rng`` or, before 1.15, ``seed``)."""
    from scipy.stats import qmc  # scipy.stats takes a moment to import: only when used

    try:
        return qmc.Sobol(d, scramble=True, rng=rng)
    except TypeError:
        return qmc.Sobol(d, scramble=True, seed=rng)


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
