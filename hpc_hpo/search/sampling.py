"""Quasi-random sampling shared by the sobol strategy and the GP's candidate points."""

from __future__ import annotations

from typing import Any

import numpy as np


def sobol_engine(d: int, rng: np.random.Generator) -> Any:
    """A scrambled Sobol engine in d dimensions drawing from ``rng`` (scipy takes ``rng`` or, before 1.15, ``seed``)."""
    from scipy.stats import qmc  # scipy.stats takes a moment to import: only when used

    try:
        return qmc.Sobol(d, scramble=True, rng=rng)
    except TypeError:
        return qmc.Sobol(d, scramble=True, seed=rng)
