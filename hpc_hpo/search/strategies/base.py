"""The ask/tell interface every search strategy implements.

A strategy is built for one phase of an experiment. The scheduler calls ``ask()`` when a
worker is free and ``tell()`` when a result comes back. Strategies are plain Python and
numpy: no MPI, no h5py, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ...errors import ConfigError
from ..space import Scalar, Space

Point = dict[str, Scalar]


class Strategy:
    """Base class: proposes points of a space, one ``ask()`` at a time.

    Subclasses declare the phase keys they accept in ``options`` and whether the phase size
    comes from ``trials`` (``sized_by_trials``) or from the strategy itself (``fixed_size``).
    """

    name: ClassVar[str]
    #: Keys a ``[[phase]]`` table may hold for this strategy, besides ``strategy`` and ``name``.
    options: ClassVar[tuple[str, ...]] = ()
    #: True when the phase needs ``trials = N``; False when its size is fixed by its options.
    sized_by_trials: ClassVar[bool] = True
    #: True when the worker that runs a trial chooses its point (bayes); the master never asks.
    suggests_on_worker: ClassVar[bool] = False
    #: True when the phase hands out training segments of a population (pbt) instead of points.
    segments: ClassVar[bool] = False

    def __init__(self, space: Space, options: Mapping[str, Any], rng: np.random.Generator):
        self.space = space
        self.options = dict(options)
        self.rng = rng

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], space: Space, where: str) -> dict[str, Any]:
        """Validate the phase options against the space; return them normalised."""
        return dict(options)

    @classmethod
    def fixed_size(cls, options: Mapping[str, Any], space: Space) -> int | None:
        """Number of points for strategies whose size is fixed by their options, else None."""
        return None

    def ask(self) -> Point | None:
        """The next point to evaluate, or None when this strategy has nothing more to offer."""
        raise NotImplementedError

    def tell(self, point: Point, value: float | None) -> None:  # noqa: B027 - optional hook
        """A finished trial of this phase: its point and value (None if it failed)."""


def check_positive_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer (got {value!r})")
    if value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum} (got {value})")
    return value
