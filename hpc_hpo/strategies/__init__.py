"""Search strategies, by the name used in ``[[phase]] strategy = "..."``."""

from __future__ import annotations

from .base import Point, Strategy
from .explicit import ExplicitStrategy
from .grid import GridStrategy
from .random import RandomStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (ExplicitStrategy, GridStrategy, RandomStrategy)
}

__all__ = ["STRATEGIES", "ExplicitStrategy", "GridStrategy", "Point", "RandomStrategy", "Strategy"]
