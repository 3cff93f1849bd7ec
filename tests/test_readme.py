"""The README's promises that code can check: its h5py/pandas recipe and its config example."""

from __future__ import annotations

import re
from pathlib import Path

from hpc_hpo.config import parse_config, tomllib
from hpc_hpo.store import best_row, read_results

from conftest import REPO, hpo, write_experiment
from experiments import OBJECTIVE, experiment

README = (REPO / "README.md").read_text()


def code_block(starting_with: str, language: str) -> str:
    for block in re.findall(rf"```{language}\n(.*?)```", README, flags=re.S):
        if block.startswith(starting_with):
            return block
    raise AssertionError(f"no ```{language} block starting with {starting_with!r} in the README")


def test_the_pandas_recipe_reads_a_results_file(tmp_path):
    write_experiment(tmp_path, experiment(trials=10), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path).returncode == 0
    recipe = code_block("import h5py, pandas as pd", "python").replace('"griewank.h5"', repr(str(tmp_path / "results.h5")))
    namespace: dict = {}
    exec(recipe, namespace)
    trials, best = namespace["trials"], namespace["best"]
    expected = best_row(read_results(tmp_path / "results.h5"))
    assert len(trials) == 2 + 24 + 10
    assert best["trial_id"] == expected["trial_id"] and best["param_act"] == expected["param_act"]
    assert "metric_rank" in trials.columns and set(trials["status"]) == {"done", "failed"}


def test_the_config_example_is_valid():
    data = tomllib.loads(code_block("[experiment]", "toml"))
    config = parse_config(data)
    assert [p.strategy for p in config.phases] == ["explicit", "grid", "random", "bayes"]
    assert Path(config.experiment.results) == Path("results/griewank.h5")
