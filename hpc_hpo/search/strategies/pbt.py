"""The pbt strategy, master side: the phase's options, checked, and its population (:mod:`hpc_hpo.search.pbt`).

A PBT phase does not propose points: it hands out *segments* (``segments = True``), which the scheduler asks for
with :meth:`PbtStrategy.next_segment` and reports back with :meth:`PbtStrategy.finish`. Its size in trials is the
number of segments if no member jumps ahead or back and none fails: ``population * ceil(epochs / interval)``.
``population = 0`` (the option left out) means "one member per worker that takes trials, at least 2"; the
master settles it before the run starts (:func:`hpc_hpo.config.with_population`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ..pbt import EXPLORERS, MODES, PbtSettings, Population
from ..space import Space
from .base import Point, Strategy, check_positive_int

DEFAULTS: dict[str, Any] = {"population": 0, "quantile": 0.25, "resample_probability": 0.25, "perturb": [0.8, 1.2],
                            "mode": "async", "explore": "perturb"}


def settings_of(options: Mapping[str, Any]) -> PbtSettings:
    """The phase's options as :class:`PbtSettings`."""
    return PbtSettings(int(options["population"]), int(options["interval"]), int(options["epochs"]),
                       float(options["quantile"]), float(options["resample_probability"]),
                       tuple(float(f) for f in options["perturb"]), options["mode"], options["explore"])


class PbtStrategy(Strategy):
    """Population Based Training: segments of members that exploit and explore while they train."""

    name = "pbt"
    options = ("population", "interval", "epochs", "quantile", "resample_probability", "perturb", "mode", "explore")
    sized_by_trials = False
    segments = True

    def __init__(self, space, options, rng):
        super().__init__(space, options, rng)
        self.settings = settings_of(self.options)
        self.population: Population | None = None

    def start_population(self, minimize: bool) -> Population:
        self.population = Population(self.space, self.settings, minimize, self.rng)
        return self.population

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], space: Space, where: str) -> dict[str, Any]:
        resolved = {**DEFAULTS, **options}
        population = resolved["population"]
        if isinstance(population, bool) or not isinstance(population, int) or population < 0 or population == 1:
            raise ConfigError(f"{where}.population: must be an integer >= 2 (members; leave it out for one per "
                              f"worker) (got {population!r})")
        for key in ("interval", "epochs"):
            if key not in options:
                raise ConfigError(f"{where}.{key}: is required for strategy 'pbt' (the epochs a member trains "
                                  f"{'between exploit/explore steps' if key == 'interval' else 'in all'})")
            check_positive_int(resolved[key], f"{where}.{key}")
        if resolved["interval"] > resolved["epochs"]:
            raise ConfigError(f"{where}.interval: must be <= epochs (got interval = {resolved['interval']}, "
                              f"epochs = {resolved['epochs']})")
        quantile = resolved["quantile"]
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 0.5:
            raise ConfigError(f"{where}.quantile: must be a number in (0, 0.5] (the fraction that copies the best) "
                              f"(got {quantile!r})")
        probability = resolved["resample_probability"]
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
            raise ConfigError(f"{where}.resample_probability: must be a number in [0, 1] (got {probability!r})")
        perturb = resolved["perturb"]
        if (not isinstance(perturb, list) or not perturb
                or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0
                           for f in perturb)):
            raise ConfigError(f"{where}.perturb: must be a list of numbers > 0 (factors, e.g. [0.8, 1.2]) "
                              f"(got {perturb!r})")
        if resolved["mode"] not in MODES:
            raise ConfigError(f"{where}.mode: must be one of {', '.join(MODES)} (got {resolved['mode']!r})")
        if resolved["explore"] not in EXPLORERS:
            raise ConfigError(f"{where}.explore: must be one of {', '.join(EXPLORERS)} (got {resolved['explore']!r})")
        if resolved["explore"] == "pb2" and not any(p.type in ("float", "int") for p in space.searchable):
            raise ConfigError(f"{where}.explore: \"pb2\" needs a float or int parameter to tune (the space has "
                              f"{', '.join(space.names) or 'none'})")
        resolved.update(quantile=float(quantile), resample_probability=float(probability),
                        perturb=[float(f) for f in perturb])
        return resolved

    @classmethod
    def fixed_size(cls, options: Mapping[str, Any], space: Space) -> int:
        return options["population"] * math.ceil(options["epochs"] / options["interval"])

    def ask(self) -> Point | None:
        raise RuntimeError("a pbt phase hands out segments (next_segment), not points")
