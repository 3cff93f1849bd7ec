"""Search strategies, by the name used in ``[[phase]] strategy = "..."``."""

from __future__ import annotations

from .base import Point, Strategy
from .bayes import BayesStrategy
from .explicit import ExplicitStrategy
from .grid import GridStrategy
from .pbt import PbtStrategy
from .random import RandomStrategy
from .sobol import SobolStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (ExplicitStrategy, GridStrategy, RandomStrategy, SobolStrategy, BayesStrategy, PbtStrategy)
}

__all__ = ["STRATEGIES", "BayesStrategy", "ExplicitStrategy", "GridStrategy", "PbtStrategy", "Point", "RandomStrategy",
           "SobolStrategy", "Strategy"]
