"""The bayes strategy, master side: options only. The point is chosen on the worker.

The master never fits a model: a Bayesian trial goes to its worker as a request to
suggest, with the observations that worker has not seen and the points running elsewhere
(see :class:`hpc_hpo.run.scheduler.Scheduler`). The worker's side is
:class:`hpc_hpo.search.gp.suggester.BayesSuggester`. This module imports only the light list
of the GP's options (:mod:`hpc_hpo.search.bayes_options`), never the GP itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ..bayes_options import ACQUISITIONS, DEFAULTS
from ..space import Space
from .base import Point, Strategy

DEFAULT_OPTIONS: dict[str, Any] = {**DEFAULTS, "sequential": True, "lookahead": False}


def _number(options: Mapping[str, Any], key: str, where: str, positive: bool) -> float:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}.{key}: must be a number (got {value!r})")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{where}.{key}: must be {'>' if positive else '>='} 0 (got {value!r})")
    return float(value)


class BayesStrategy(Strategy):
    """Gaussian-process Bayesian optimisation; every suggestion is computed by a worker."""

    name = "bayes"
    options = ("acquisition", "xi", "kappa", "sequential", "lookahead")
    suggests_on_worker = True

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], space: Space, where: str) -> dict[str, Any]:
        if space.dim == 0:
            raise ConfigError(f"{where}.strategy: 'bayes' needs at least one parameter to search "
                              f"(the space has only fixed parameters: {', '.join(space.names)})")
        resolved = {**DEFAULT_OPTIONS, **options}
        if resolved["acquisition"] not in ACQUISITIONS:
            raise ConfigError(f"{where}.acquisition: unknown acquisition (allowed: {', '.join(ACQUISITIONS)}) "
                              f"(got {resolved['acquisition']!r})")
        resolved["xi"] = _number(resolved, "xi", where, positive=False)
        resolved["kappa"] = _number(resolved, "kappa", where, positive=True)
        if not isinstance(resolved["lookahead"], bool):
            raise ConfigError(f"{where}.lookahead: must be true or false (got {resolved['lookahead']!r})")
        if not isinstance(resolved["sequential"], bool) and resolved["sequential"] != "auto":
            raise ConfigError(f"{where}.sequential: must be true, false or \"auto\" (got {resolved['sequential']!r})")
        return resolved

    def ask(self) -> Point | None:
        raise RuntimeError("bayes points are chosen by the worker that runs them; the master never asks")
