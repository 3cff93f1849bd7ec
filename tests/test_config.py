"""The experiment file: the contract example loads; every bad input is one clear line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hpc_hpo.config import DEFAULT_EXPERIMENT, apply_overrides, load_config, to_toml, with_seed
from hpc_hpo.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

CONTRACT = """
[experiment]
name = "griewank"
objective = "examples.griewank:objective"
direction = "minimize"
results = "results/griewank.h5"
seed = 1

[space]
x     = { type = "float", low = -5.0, high = 5.0 }
lr    = { type = "float", low = 1e-5, high = 1e-1, log = true }
units = { type = "int", low = 16, high = 512, log = true }
act   = { type = "categorical", choices = ["relu", "tanh", "elu"] }
bs    = { type = "fixed", value = 64 }

[[phase]]
strategy = "explicit"
points = [ { x = 0.5, lr = 1e-3, units = 64, act = "relu" } ]

[[phase]]
strategy = "grid"
steps = 3

[[phase]]
strategy = "random"
trials = 20
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_contract_example_from_the_issue_loads(tmp_path):
    config = load_config(write(tmp_path, CONTRACT))
    e = config.experiment
    assert (e.name, e.objective, e.direction, e.results, e.seed) == (
        "griewank", "examples.griewank:objective", "minimize", "results/griewank.h5", 1)
    assert [p.strategy for p in config.phases] == ["explicit", "grid", "random"]
    assert [p.trials for p in config.phases] == [1, 81, 20]  # grid: 3 x 3 x 3 x 3 choices
    assert config.budget == 102
    assert config.phases[0].options["points"][0]["bs"] == 64
    assert e.workdir == "results/griewank-trials"
    assert config.base_dir == str(tmp_path.resolve())


def test_shipped_experiments_load():
    for path in [DEFAULT_EXPERIMENT, REPO / "examples/griewank/experiment.toml"]:
        config = load_config(path)
        assert config.budget > 0
    assert load_config(None).experiment.name == "digits_mlp"


def test_defaults(tmp_path):
    config = load_config(write(tmp_path, """
        [experiment]
        objective = "m:f"
        [space]
        x = { type = "float", low = 0.0, high = 1.0 }
        [[phase]]
        strategy = "random"
        trials = 5
    """))
    e = config.experiment
    assert (e.name, e.direction, e.results, e.max_initial_failures) == ("experiment", "minimize", "experiment.h5", 10)
    assert e.seed < 0  # not given: drawn when the run starts
    seeded = with_seed(config)
    assert seeded.experiment.seed >= 0 and with_seed(seeded) == seeded


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = with_seed(load_config(write(tmp_path, CONTRACT)))
    (tmp_path / "again").mkdir()
    again = load_config(write(tmp_path / "again", to_toml(config)))
    assert again.experiment == config.experiment
    assert again.space == config.space
    assert [(p.strategy, p.trials, dict(p.options).keys()) for p in again.phases] == \
           [(p.strategy, p.trials, dict(p.options).keys()) for p in config.phases]


def test_the_stopping_table_round_trips_and_defaults_to_none(tmp_path):
    assert not load_config(write(tmp_path, CONTRACT)).stopping.active
    text = CONTRACT + '\n[stopping]\nrule = "hyperband"\nmetric = "val_loss"\nmax_epochs = 27\nbrackets = 3\n'
    config = with_seed(load_config(write(tmp_path, text)))
    s = config.stopping
    assert (s.rule, s.metric, s.min_epochs, s.max_epochs, s.reduction_factor, s.brackets) == \
           ("hyperband", "val_loss", 1, 27, 3.0, 3)
    (tmp_path / "again").mkdir()
    assert load_config(write(tmp_path / "again", to_toml(config))).stopping == s
    with pytest.raises(ConfigError, match=r"stopping.brackets: at most 4 fit between min_epochs = 1 and max_epochs = 27 "
                                          r"with reduction_factor = 3 \(got 5\)"):
        load_config(write(tmp_path, text.replace("brackets = 3", "brackets = 5")))
    with pytest.raises(ConfigError, match="stopping.max_epochs: is required"):
        load_config(write(tmp_path, text.replace("max_epochs = 27\n", "")))


def test_overrides(tmp_path):
    config = load_config(write(tmp_path, CONTRACT))
    changed = apply_overrides(config, results="other.h5", seed=7, trials=50)
    assert changed.experiment.results == "other.h5"
    assert changed.experiment.workdir == "other-trials"
    assert changed.experiment.seed == 7
    assert changed.phases[-1].trials == 50 and changed.budget == 1 + 81 + 50
    with pytest.raises(ConfigError, match="--trials: must be >= 1 \\(got 0\\)"):
        apply_overrides(config, trials=0)


def test_trials_override_refused_for_a_fixed_size_last_phase(tmp_path):
    config = load_config(write(tmp_path, CONTRACT.rsplit("[[phase]]", 1)[0]))
    with pytest.raises(ConfigError, match="--trials: the last phase uses strategy 'grid', whose size is fixed \\(81 points\\)"):
        apply_overrides(config, trials=10)


GOOD_HEAD = """
[experiment]
objective = "m:f"
[space]
x = { type = "float", low = 0.0, high = 1.0 }
"""


@pytest.mark.parametrize("text, message", [
    (GOOD_HEAD + "[[phase]]\nstrategy = 'random'\ntrials = 3\nbogus = 1\n",
     "phase[1].bogus: unknown key (allowed: strategy, name, trials, repeats)"),
    (GOOD_HEAD + "[[phase]]\nstrategy = 'random'\n", "phase[1].trials: is required for strategy 'random'"),
    (GOOD_HEAD + "[[phase]]\nstrategy = 'random'\ntrials = -4\n", "phase[1].trials: must be >= 1 (got -4)"),
    (GOOD_HEAD + "[[phase]]\nstrategy = 'random'\ntrials = 2.5\n", "phase[1].trials: must be an integer (got 2.5)"),
    (GOOD_HEAD + "[[phase]]\nstrategy = 'anneal'\ntrials = 3\n",
     "phase[1].strategy: unknown strategy (allowed: explicit, grid, random, sobol, bayes, pbt) (got 'anneal')"),
    (GOOD_HEAD + "[[phase]]\ntrials = 3\n", "phase[1].strategy: is required"),
    (GOOD_HEAD + "[[phase]]\nstrategy = 'grid'\nsteps = 2\ntrials = 7\n",
     "phase[1].trials: strategy 'grid' runs exactly its 2 points; leave 'trials' out (got 7)"),
    (GOOD_HEAD, "phase: at least one [[phase]] table is required"),
    ("phase = 3\n" + GOOD_HEAD, "phase: must be written as [[phase]] tables"),
    ("[experiment]\nobjective = 'm:f'\nnmae = 'x'\n", "experiment.nmae: unknown key (allowed: name, objective, direction, "
     "results, seed, workdir, max_initial_failures, repeats, resume); did you mean 'name'?"),
    ("[experiment]\n[space]\nx = { type = 'fixed', value = 1 }\n", "experiment.objective: is required"),
    ("[experiment]\nobjective = 'nocolon'\n[space]\nx = { type = 'fixed', value = 1 }\n",
     "experiment.objective: must be 'package.module:function' or 'path/to/file.py:function' (got 'nocolon')"),
    ("[experiment]\nobjective = 'm:f'\ndirection = 'down'\n[space]\nx = { type = 'fixed', value = 1 }\n",
     "experiment.direction: must be 'minimize' or 'maximize' (got 'down')"),
    ("[experiment]\nobjective = 'm:f'\nseed = -1\n[space]\nx = { type = 'fixed', value = 1 }\n",
     "experiment.seed: must be >= 0 (got -1)"),
    ("[experiment]\nobjective = 'm:f'\nseed = 'one'\n[space]\nx = { type = 'fixed', value = 1 }\n",
     "experiment.seed: must be an integer (got 'one')"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'float', low = 0.1, high = 0.01 }\n",
     "space.x: 'low' must be < 'high' (got low=0.1, high=0.01)"),
    ("[experiment]\nobjective = 'm:f'\n[spaces]\n", "spaces: unknown table (allowed: experiment, space, phase, workers, stopping)"),
    ("[experiment]\nobjective = 'm:f'\n", "space: the [space] table is required"),
    ("[experiment\nobjective = 'm:f'\n", "TOML syntax error: "),
    ("[experiment]\nobjective = 'm:f'\nmax_initial_failures = -1\n[space]\nx = { type = 'fixed', value = 1 }\n",
     "experiment.max_initial_failures: must be an integer >= 0"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\nexecutor = 'thread'\n", "workers.executor: must be one of auto, process, inline (got 'thread')"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\ntrial_timeout = -5\n", "workers.trial_timeout: must be a number >= 0 (0 turns it off) (got -5)"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\nexecutor = 'inline'\ntrial_timeout = 60\n",
     'workers.trial_timeout: needs executor = "process" (a trial running inline cannot be stopped) '
     '(got executor = "inline", trial_timeout = 60)'),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\ngpus_per_trial = 2\nworkers_per_gpu = 2\n",
     "workers: gpus_per_trial and workers_per_gpu cannot both be above 1 (got gpus_per_trial = 2, workers_per_gpu = 2)"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\ngpus_per_trial = 0\n", "workers.gpus_per_trial: must be >= 1 (got 0)"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\nthreads = 1.5\n", "workers.threads: must be an integer >= 0"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\ngpu = 1\n", "workers.gpu: unknown key"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\nstartup_timeout = -1\n", "workers.startup_timeout: must be a number >= 0 (0 turns it off) (got -1)"),
    ("[experiment]\nobjective = 'm:f'\n[space]\nx = { type = 'fixed', value = 1 }\n[[phase]]\nstrategy = 'random'\ntrials = 1\n[workers]\nstartup_timeout = '10m'\n", "workers.startup_timeout: must be a number >= 0 (0 turns it off) (got '10m')"),
])
def test_bad_input_is_one_line_naming_field_rule_and_value(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such experiment file"):
        load_config(tmp_path / "nope.toml")
