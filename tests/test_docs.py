"""The documentation's promises that code can check: the README's quick start and Python example run as
written, its links lead somewhere, and the recipes and examples of the docs pages work."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hpc_hpo._toml import tomllib
from hpc_hpo.config import parse_config
from hpc_hpo.results.reader import best_row, read_results

from conftest import REPO, hpo, run_command, write_experiment
from experiments import OBJECTIVE, experiment

README = (REPO / "README.md").read_text()


def code_block(text: str, starting_with: str, language: str) -> str:
    for block in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S):
        if block.startswith(starting_with):
            return block
    raise AssertionError(f"no ```{language} block starting with {starting_with!r}")


def page(name: str) -> str:
    return (REPO / "docs" / name).read_text()


def test_the_readme_is_a_front_page_whose_links_lead_somewhere():
    assert len(README.splitlines()) <= 250
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    assert targets and all((REPO / target).exists() for target in targets), \
        [t for t in targets if not (REPO / t).exists()]
    nav = (REPO / "mkdocs.yml").read_text()
    assert all(Path(t).name in nav for t in targets if t.startswith("docs/") and t.endswith(".md"))


def test_the_readme_quick_start_runs_as_written(tmp_path):
    (tmp_path / "objective.py").write_text(code_block(README, "import math", "python"))
    (tmp_path / "experiment.toml").write_text(code_block(README, "[experiment]", "toml"))
    out = hpo(["run", "experiment.toml"], tmp_path)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "first.h5").records()
    assert len(rows) == 32 and {r["strategy"] for r in rows} == {"sobol", "bayes"}
    best = hpo(["best", "first.h5"], tmp_path)
    assert best.returncode == 0 and best.stdout.splitlines()[1].startswith("x = ")


def test_the_readme_python_example_runs_as_written(tmp_path):
    (tmp_path / "objective.py").write_text(code_block(README, "import math", "python"))
    (tmp_path / "search.py").write_text(code_block(README, "import hpc_hpo", "python"))
    out = run_command([sys.executable, "search.py"], tmp_path, timeout=120)
    assert out.returncode == 0, out.output
    value, params = out.stdout.strip().split(" ", 1)
    assert float(value) == best_row(read_results(tmp_path / "first.h5"))["value"] and "'x':" in params


def test_the_pandas_recipe_reads_a_results_file(tmp_path):
    write_experiment(tmp_path, experiment(trials=10), OBJECTIVE)
    assert hpo(["run", "experiment.toml"], tmp_path).returncode == 0
    recipe = code_block(page("results-file.md"), "import h5py, pandas as pd", "python").replace(
        '"griewank.h5"', repr(str(tmp_path / "results.h5")))
    namespace: dict = {}
    exec(recipe, namespace)
    trials, best = namespace["trials"], namespace["best"]
    expected = best_row(read_results(tmp_path / "results.h5"))
    assert len(trials) == 2 + 24 + 10
    assert best["trial_id"] == expected["trial_id"] and best["param_act"] == expected["param_act"]
    assert "metric_rank" in trials.columns and set(trials["status"]) == {"done", "failed"}


def test_the_experiment_file_reference_example_is_valid():
    data = tomllib.loads(code_block(page("experiment-file.md"), "[experiment]", "toml"))
    config = parse_config(data)
    assert [p.strategy for p in config.phases] == ["explicit", "grid", "random", "bayes"]
    assert Path(config.experiment.results) == Path("results/griewank.h5")
    assert config.workers.startup_timeout == 600


def test_the_python_api_page_example_is_the_one_the_tests_run():
    example = code_block(page("python-api.md"), "import hpc_hpo", "python")
    assert "hpc_hpo.optimize(" in example and 'results="quick.h5", seed=3' in example
