"""Points of a search space as GP inputs: one column per float or int, one-hot per categorical.

Floats and ints take their unit-cube value (log parameters in log space, an int at the
centre of its bin), so the GP works in the transformed space. A categorical with k choices
becomes k columns of 0/1. Fixed parameters are left out. ``project`` snaps any vector to the
nearest valid point, so an optimiser can work on the relaxed cube.
"""

from __future__ import annotations

import numpy as np

from ..space import CategoricalParam, Space


class Encoding:
    """The map between parameter dicts and rows of X for one space."""

    def __init__(self, space: Space):
        self.space = space
        self.params = space.searchable
        self.blocks: list[slice] = []
        start = 0
        for p in self.params:
            width = p.cardinality if isinstance(p, CategoricalParam) else 1
            self.blocks.append(slice(start, start + width))
            start += width
        self.dim = start
        #: Columns an optimiser may move continuously (floats and ints; one-hot columns stay put).
        self.continuous = np.zeros(self.dim, dtype=bool)
        for p, block in zip(self.params, self.blocks, strict=True):
            if not isinstance(p, CategoricalParam):
                self.continuous[block] = True

    def encode(self, points: list[dict]) -> np.ndarray:
        X = np.zeros((len(points), self.dim))
        for p, block in zip(self.params, self.blocks, strict=True):
            values = [pt[p.name] for pt in points]
            if isinstance(p, CategoricalParam):
                X[np.arange(len(points)), block.start + np.array([p.index(v) for v in values], dtype=int)] = 1.0
            else:
                X[:, block.start] = p.to_unit(values)
        return X

    def to_unit(self, X: np.ndarray) -> np.ndarray:
        """The space's own unit cube (one column per parameter) for rows of X."""
        U = np.empty((len(X), len(self.params)))
        for j, (p, block) in enumerate(zip(self.params, self.blocks, strict=True)):
            if isinstance(p, CategoricalParam):
                U[:, j] = (np.argmax(X[:, block], axis=1) + 0.5) / p.cardinality
            else:
                U[:, j] = X[:, block.start]
        return U

    def decode(self, X: np.ndarray) -> list[dict]:
        """Valid parameter dicts for rows of X (ints rounded, the largest one-hot column wins)."""
        return self.space.from_unit(np.clip(self.to_unit(np.atleast_2d(X)), 0.0, 1.0))

    def project(self, X: np.ndarray) -> np.ndarray:
        """Each row snapped to the encoding of the valid point it stands for."""
        return self.sample(self.to_unit(X))

    def sample(self, U: np.ndarray) -> np.ndarray:
        """Encodings of the points at unit-cube positions U (m, number of parameters).

        Vectorised, without building parameter dicts: a float keeps its unit value, an int
        moves to the centre of its bin, a categorical becomes the one-hot of its bin.
        """
        U = np.clip(np.atleast_2d(U), 0.0, 1.0)
        X = np.zeros((len(U), self.dim))
        for j, (p, block) in enumerate(zip(self.params, self.blocks, strict=True)):
            if isinstance(p, CategoricalParam):
                index = np.minimum((U[:, j] * p.cardinality).astype(np.int64), p.cardinality - 1)
                X[np.arange(len(U)), block.start + index] = 1.0
            elif p.discrete:
                X[:, block.start] = p.to_unit(p.from_unit(U[:, j]))
            else:
                X[:, block.start] = U[:, j]
        return X
