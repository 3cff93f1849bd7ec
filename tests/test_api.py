"""``hpc_hpo.optimize``: the same search as an experiment file, started from a script, under mpirun and alone."""

from __future__ import annotations

import sys
import textwrap

import pytest

from hpc_hpo._toml import tomllib
from hpc_hpo.config import load_config, parse_config, to_toml
from hpc_hpo.errors import ConfigError
from hpc_hpo.results.reader import read_results

from conftest import mpirun_command, run_command

SEARCH = '''
import os, sys
import hpc_hpo

RANK = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0"))


def objective(params):
    return (params["x"] - 0.3) ** 2 + (params["y"] + 0.2) ** 2


if __name__ == "__main__":
    try:
        best = hpc_hpo.optimize(
            objective,
            space={"x": {"type": "float", "low": -1, "high": 1}, "y": {"type": "float", "low": -1, "high": 1}},
            phases=[{"strategy": "random", "trials": 8}, {"strategy": "bayes", "trials": 16}],
            results="quick.h5", seed=3, EXTRA
        )
    except hpc_hpo.HpoError as exc:
        # one write per line: MPICH's Hydra forwards each write of each rank as it comes (print writes the
        # newline separately when unbuffered), so two ranks' lines could run into one
        sys.stdout.write(f"rank {RANK} raised {type(exc).__name__}: {exc}\\n")
        sys.stdout.flush()
        sys.exit(exc.exit_code)
    sys.stdout.write(f"rank {RANK} got {best!r}\\n")
    sys.stdout.flush()
'''


def script(tmp_path, extra: str = "") -> list[str]:
    (tmp_path / "search.py").write_text(textwrap.dedent(SEARCH).replace("EXTRA", extra))
    return [sys.executable, "search.py"]


def got(out, rank: int) -> str:
    [line] = [line for line in out.stdout.splitlines() if line.startswith(f"rank {rank} ")]
    return line


@pytest.mark.parametrize("ranks", [None, 5])
def test_the_example_search_runs_under_mpirun_and_in_one_process(tmp_path, ranks):
    command = script(tmp_path)
    if ranks:
        command = mpirun_command(ranks, [])[: -len([sys.executable, "-m", "hpc_hpo"])] + command
    out = run_command(command, tmp_path, timeout=240)
    assert out.returncode == 0, out.output
    first = got(out, 0)
    assert first.startswith("rank 0 got Trial(trial_id=") and "results=PosixPath(" in first
    for rank in range(1, ranks or 1):
        assert got(out, rank) == f"rank {rank} got None"
    results = read_results(tmp_path / "quick.h5")
    rows = results.records()
    assert len(rows) == 24 and {r["strategy"] for r in rows} == {"random", "bayes"}
    best = min(r["value"] for r in rows)
    assert f"value={best!r}" in first and best < 0.01
    if ranks:
        assert {r["rank"] for r in rows} == {1, 2, 3, 4}


def test_the_stored_experiment_is_the_one_the_same_toml_file_gives(tmp_path):
    out = run_command(script(tmp_path), tmp_path, timeout=120)
    assert out.returncode == 0, out.output
    stored = read_results(tmp_path / "quick.h5").attrs
    (tmp_path / "search.toml").write_text(stored["config"])
    from_file = load_config(tmp_path / "search.toml")
    assert to_toml(from_file) == stored["config"]  # the file round-trips exactly
    table = tomllib.loads(stored["config"])
    assert table["experiment"]["objective"] == f"{tmp_path / 'search.py'}:objective"
    assert table["experiment"]["name"] == "search" and table["experiment"]["seed"] == 3
    assert [p["strategy"] for p in table["phase"]] == ["random", "bayes"]
    again = parse_config(table, base_dir=str(tmp_path))  # the experiment file a user would write for it
    assert again.space.describe() == from_file.space.describe() and again.phases == from_file.phases


def test_a_function_of_the_script_runs_in_trial_processes(tmp_path):
    command = mpirun_command(3, [])[: -len([sys.executable, "-m", "hpc_hpo"])] + \
        script(tmp_path, 'workers={"executor": "process", "max_trials_per_process": 5},')
    out = run_command(command, tmp_path, timeout=240)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "quick.h5").records()
    assert len(rows) == 24 and all(r["status"] == "done" for r in rows)


def test_bad_input_raises_the_cli_line_on_every_rank_without_a_hang(tmp_path):
    bad = script(tmp_path)
    (tmp_path / "search.py").write_text((tmp_path / "search.py").read_text().replace('"high": 1}, "y"',
                                                                                      '"high": -2}, "y"'))
    command = mpirun_command(3, [])[: -len([sys.executable, "-m", "hpc_hpo"])] + bad
    out = run_command(command, tmp_path, timeout=120)
    assert out.returncode == 2, out.output
    (tmp_path / "same.toml").write_text('[experiment]\nobjective = "search.py:objective"\n[space]\n'
                                        'x = { type = "float", low = -1, high = -2 }\n')
    with pytest.raises(ConfigError) as from_file:  # what the command line says for the same table
        load_config(tmp_path / "same.toml")
    message = str(from_file.value)
    assert message.startswith("space.x: 'low' must be < 'high'")
    for rank in range(3):
        assert got(out, rank) == f"rank {rank} raised ConfigError: {message}"
    assert not (tmp_path / "quick.h5").exists()


def test_a_problem_only_the_master_sees_is_raised_on_every_rank_too(tmp_path):
    (tmp_path / "quick.h5").write_text("precious")  # the results path is taken: the master finds out
    command = mpirun_command(3, [])[: -len([sys.executable, "-m", "hpc_hpo"])] + script(tmp_path)
    out = run_command(command, tmp_path, timeout=120)
    assert out.returncode == 2, out.output
    lines = {got(out, rank).split(" raised ", 1)[1] for rank in range(3)}
    assert len(lines) == 1 and lines.pop().startswith("ConfigError: experiment.results: 'quick.h5' already exists")
    assert (tmp_path / "quick.h5").read_text() == "precious"


def with_a_lambda(tmp_path, extra: str) -> None:
    (tmp_path / "search.py").write_text(textwrap.dedent(SEARCH).replace("            objective,\n",
                                                                        "            lambda p: p['x'] ** 2,\n")
                                        .replace("EXTRA", extra))


def test_an_objective_a_trial_process_cannot_import_is_refused(tmp_path):
    with_a_lambda(tmp_path, 'workers={"executor": "process"},')
    out = run_command([sys.executable, "search.py"], tmp_path, timeout=60)
    assert out.returncode == 2, out.output
    assert got(out, 0).startswith("rank 0 raised ConfigError: optimize: objective: a trial process imports the "
                                  "objective by name, and '<lambda>' cannot be")


def test_a_lambda_runs_inline_in_one_process(tmp_path):
    with_a_lambda(tmp_path, "")
    out = run_command([sys.executable, "search.py"], tmp_path, timeout=120)
    assert out.returncode == 0, out.output
    assert len(read_results(tmp_path / "quick.h5").records()) == 24


def test_unknown_keywords_are_one_line_errors():
    import hpc_hpo

    with pytest.raises(hpc_hpo.ConfigError, match=r"^optimize: unknown keyword 'trails' \(allowed besides"):
        hpc_hpo.optimize(lambda p: 0.0, space={"x": {"type": "float", "low": 0, "high": 1}},
                         phases=[{"strategy": "random", "trials": 2}], trails=5)
    with pytest.raises(hpc_hpo.ConfigError, match=r"^phase\[1\].trials: is required for strategy 'random'"):
        hpc_hpo.optimize(lambda p: 0.0, space={"x": {"type": "float", "low": 0, "high": 1}},
                         phases=[{"strategy": "random"}])
