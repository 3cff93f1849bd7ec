"""The random strategy: points drawn uniformly in the unit cube of the space.

Log parameters are thus log-uniform and integers uniform over their (log-)bins. Points are
drawn in batches so that asking costs microseconds. In an all-discrete space the strategy
avoids repeating a point until every point of the space has been proposed.
"""

from __future__ import annotations

import logging

from .base import Point, Strategy

log = logging.getLogger(__name__)

_BATCH = 256


class RandomStrategy(Strategy):
    """Independent uniform draws, reproducible from the phase's random stream."""

    name = "random"

    def __init__(self, space, options, rng):
        super().__init__(space, options, rng)
        self._batch: list[Point] = []
        self._cardinality = space.cardinality
        self._seen: set[tuple] | None = set() if self._cardinality is not None else None

    def _fresh_batch(self) -> list[Point]:
        return self.space.sample(self.rng, _BATCH)

    def _draw(self) -> Point:
        if not self._batch:
            self._batch = self._fresh_batch()
            self._batch.reverse()
        return self._batch.pop()

    def ask(self) -> Point:
        if self._seen is None:
            return self._draw()
        if len(self._seen) >= self._cardinality:
            log.warning("random search has proposed all %d points of this discrete space; repeating points",
                        self._cardinality)
            self._seen.clear()
        while True:
            point = self._draw()
            key = self.space.key(point)
            if key not in self._seen:
                self._seen.add(key)
                return point
