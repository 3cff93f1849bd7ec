"""The options of a Bayesian phase and their defaults: what the bayes strategy checks and the GP applies.

Light on purpose (no numpy, no scipy): the master's bayes strategy checks a phase's options
against them without loading the GP, and the GP fills in what a phase leaves out.
"""

from __future__ import annotations

from typing import Any

#: Acquisition functions the step can maximise (see :mod:`hpc_hpo.search.gp.acquisition`).
ACQUISITIONS = ("ei", "ucb", "pi")
#: What a bayes phase does not say: expected improvement with no margin; kappa for UCB.
DEFAULTS: dict[str, Any] = {"acquisition": "ei", "xi": 0.0, "kappa": 2.0}
