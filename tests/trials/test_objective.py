"""Finding the objective, calling it, and judging what it returns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpc_hpo.errors import ObjectiveImportError
from hpc_hpo.trials.objective import TrialContext, judge, load_objective

from conftest import REPO


def context(tmp_path, trial_id=7):
    return TrialContext(trial_id=trial_id, params={}, rank=3, host="node07", phase=1, strategy="random",
                        experiment="e", experiment_seed=1, workdir_root=str(tmp_path / "trials"))


@pytest.mark.parametrize("raw, value, metrics", [
    (1.5, 1.5, {}),
    (2, 2.0, {}),
    (np.float32(0.25), 0.25, {}),
    (np.array([3.0]), 3.0, {}),
    ({"value": 0.5, "accuracy": 0.9, "epochs": 12, "flag": np.int64(1)}, 0.5, {"accuracy": 0.9, "epochs": 12.0, "flag": 1.0}),
])
def test_numbers_and_dicts_are_accepted(raw, value, metrics):
    outcome = judge(raw)
    assert outcome.ok and outcome.value == value and outcome.metrics == metrics


@pytest.mark.parametrize("raw, message", [
    (float("nan"), "returned nan; the value must be finite"),
    (float("inf"), "returned inf; the value must be finite"),
    ("0.5", "returned '0.5', not a number"),
    (None, "returned None, not a number"),
    (True, "returned True, not a number"),
    ([1.0, 2.0], "returned [1.0, 2.0], not a number"),
    ({"loss": 1.0}, "returned a dict without a 'value' key"),
    ({"value": 1.0, "note": "good"}, "metric 'note' is not a number (got 'good')"),
    ({"value": float("nan")}, "returned nan"),
    ({"value": 1.0, "é" * 40: 1.0}, "metric names must be strings of 1 to 64 bytes"),
])
def test_anything_else_is_a_failed_trial_with_a_reason(raw, message):
    outcome = judge(raw)
    assert not outcome.ok and outcome.value is None
    assert outcome.error.startswith("ObjectiveResultError: ") and message in outcome.error


def test_exceptions_become_errors_with_type_message_frames_rank_and_host(tmp_path):
    (tmp_path / "obj.py").write_text(
        "def helper(p):\n    raise ValueError('learning rate too high: %g' % p['lr'])\n\n"
        "def objective(p):\n    return helper(p)\n")
    objective = load_objective("obj.py:objective", str(tmp_path))
    outcome = objective({"lr": 0.5}, context(tmp_path))
    assert not outcome.ok
    first, *frames = outcome.error.splitlines()
    assert first == "ValueError: learning rate too high: 0.5 (rank 3 on node07)"
    assert any("in helper" in line for line in frames) and any("obj.py" in line for line in frames)


def test_sys_exit_in_the_objective_is_a_failed_trial(tmp_path):
    (tmp_path / "obj.py").write_text("import sys\ndef objective(p):\n    sys.exit(3)\n")
    outcome = load_objective("obj.py:objective", str(tmp_path))({}, context(tmp_path))
    assert outcome.error.startswith("SystemExit: 3")


def test_context_is_passed_when_the_objective_takes_two_arguments(tmp_path):
    (tmp_path / "obj.py").write_text(
        "def one(p):\n    return p['x']\n\n"
        "def two(p, trial):\n    (trial.workdir / 'out.txt').write_text('hi')\n"
        "    return {'value': p['x'], 'id': trial.trial_id, 'rank': trial.rank, 'seed': trial.seed % 1000}\n")
    assert load_objective("obj.py:one", str(tmp_path))({"x": 2.0}, context(tmp_path)).value == 2.0
    outcome = load_objective("obj.py:two", str(tmp_path))({"x": 2.0}, context(tmp_path))
    assert outcome.metrics["id"] == 7 and outcome.metrics["rank"] == 3
    assert (tmp_path / "trials" / "trial_000007" / "out.txt").read_text() == "hi"


def test_trial_seeds_differ_between_trials_and_repeat_for_the_same_trial(tmp_path):
    seeds = {context(tmp_path, i).seed for i in range(100)}
    assert len(seeds) == 100
    assert context(tmp_path, 5).seed == context(tmp_path, 5).seed


def test_workdir_is_only_created_when_used(tmp_path):
    context(tmp_path)
    assert not (tmp_path / "trials").exists()


def test_the_contract_spelling_of_the_example_objective_works_from_the_repository_root(tmp_path):
    objective = load_objective("examples.griewank:objective", str(REPO))
    outcome = objective({"x": 0.0, "y": 0.0, "lr": 1e-3, "units": 64, "act": "relu"}, context(tmp_path))
    assert outcome.value == 0.0 and outcome.metrics["rank"] == 3


def test_module_objective_is_found_next_to_the_experiment(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text("def objective(p):\n    return 1.0\n")
    objective = load_objective("mypkg.train:objective", str(tmp_path))
    assert objective({}, context(tmp_path)).value == 1.0
    assert math.isclose(load_objective("light_objectives:griewank")({"x": 0.0, "y": 0.0}, context(tmp_path)).value, 0.0)


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:f", "experiment.objective: cannot import 'no_such_module_xyz:f' (ModuleNotFoundError: "),
    ("missing.py:f", "experiment.objective: no such file 'missing.py'"),
    ("obj.py:nothere", "experiment.objective: 'obj.py' has no attribute 'nothere'"),
    ("obj.py:CONSTANT", "experiment.objective: 'obj.py:CONSTANT' is not callable (got an object of type int)"),
    ("broken.py:f", "experiment.objective: cannot import 'broken.py:f' (ZeroDivisionError: division by zero)"),
])
def test_objectives_that_cannot_be_loaded(tmp_path, spec, message):
    (tmp_path / "obj.py").write_text("CONSTANT = 3\n")
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    with pytest.raises(ObjectiveImportError) as info:
        load_objective(spec, str(tmp_path))
    assert message in str(info.value) and "\n" not in str(info.value)
