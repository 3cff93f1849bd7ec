"""So that ``objective = "examples.griewank:objective"`` works from the repository root too."""

from .griewank import objective

__all__ = ["objective"]
