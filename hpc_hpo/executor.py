"""How a worker runs one trial.

:class:`InlineExecutor` calls the objective in the worker's own process: no overhead, and
the easiest way to debug. (A supervised child process, for TensorFlow trials that leak GPU
memory or crash, will sit behind the same two methods.)
"""

from __future__ import annotations

from typing import Any

from .objective import Objective, Outcome, TrialContext, load_objective


class InlineExecutor:
    """Runs each trial by calling the objective directly in this process."""

    def __init__(self, objective_spec: str, base_dir: str):
        self.objective: Objective = load_objective(objective_spec, base_dir)  # ObjectiveImportError if it cannot

    def run(self, params: dict[str, Any], context: TrialContext) -> Outcome:
        return self.objective(params, context)

    def close(self) -> None:
        pass
