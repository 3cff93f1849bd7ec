"""The results file for other tools: ``best``, and ``hpc_hpo.load`` with and without pandas."""

from __future__ import annotations

import json
import math

import pytest

import hpc_hpo
from hpc_hpo._toml import tomllib
from hpc_hpo.results.reader import best_row, params_of, read_results

from conftest import hpo, write_experiment
from experiments import OBJECTIVE, experiment


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    write_experiment(directory, experiment(trials=12), OBJECTIVE)  # failures, NaNs, a string choice, a fixed float
    assert hpo(["run", "experiment.toml"], directory).returncode == 0
    return directory / "results.h5"


def test_best_prints_the_best_parameters_as_toml_and_json_ready_to_paste(results):
    expected = best_row(read_results(results))
    params = params_of(expected, read_results(results).param_names)
    toml_out = hpo(["best", str(results)], results.parent)
    assert toml_out.returncode == 0 and toml_out.stdout.startswith(f"# best of {results}: trial {expected['trial_id']}")
    assert tomllib.loads(toml_out.stdout) == params
    json_out = hpo(["best", str(results), "--format", "json"], results.parent)
    assert json.loads(json_out.stdout) == params
    assert set(params) == {"x", "lr", "units", "act", "sleep"} and isinstance(params["act"], str)


def test_best_without_a_successful_trial_says_so(tmp_path):
    write_experiment(tmp_path, experiment(trials=1, extra_phases=False).replace("low = -5.0", "low = 4.5"), OBJECTIVE)
    hpo(["run", "experiment.toml"], tmp_path)
    out = hpo(["best", "results.h5"], tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == "hpc_hpo: error: results.h5: no trial has finished successfully yet"


def test_load_gives_a_dataframe_with_the_export_columns_and_the_experiment(results):
    loaded = hpc_hpo.load(results)
    rows = read_results(results).records()
    header = hpo(["export", str(results)], results.parent).stdout.splitlines()[0].split(",")
    assert list(loaded.trials.columns) == header
    assert list(loaded.trials["trial_id"]) == [r["trial_id"] for r in rows]
    assert set(loaded.trials["status"]) == {"done", "failed"}
    for got, row in zip(loaded.trials["value"], rows, strict=True):
        assert (math.isnan(got) and math.isnan(row["value"])) or got == row["value"]
    assert len(loaded.done) == sum(r["status"] == "done" for r in rows)
    assert loaded.config["experiment"]["name"] == "e2e" and loaded.config["phase"][0]["strategy"] == "explicit"
    assert loaded.metadata["seed"] == 1 and loaded.metadata["direction"] == "minimize"
    assert list(loaded.runs["exit_code"]) == [0]


def test_load_without_pandas_gives_a_structured_array_with_decoded_strings(results):
    loaded = hpc_hpo.load(results, pandas=False)
    frame = hpc_hpo.load(results).trials
    assert loaded.trials.dtype.names == tuple(frame.columns)
    assert list(loaded.trials["trial_id"]) == list(frame["trial_id"])
    assert list(loaded.trials["param_act"]) == list(frame["param_act"]) and loaded.trials["status"].dtype.kind == "U"
    assert len(loaded.done) == len(hpc_hpo.load(results).done)


def test_parquet_export_needs_pyarrow_and_says_so(results, tmp_path):
    import importlib.util

    out = hpo(["export", str(results), "-o", str(tmp_path / "t.parquet")], tmp_path)
    if importlib.util.find_spec("pyarrow") is None:
        assert out.returncode == 2
        assert out.stderr.strip() == ("hpc_hpo: error: --format parquet: needs pyarrow (pip install pyarrow); csv and "
                                      "json need nothing")
        assert not (tmp_path / "t.parquet").exists()
    else:
        import pandas as pd

        assert out.returncode == 0, out.stderr
        assert pd.read_parquet(tmp_path / "t.parquet").equals(hpc_hpo.load(results).trials)
