"""``hpc_hpo report``: every plot from files made by real runs, the HTML page in a real browser, a running search.

The files come from real searches under mpirun (random with failures, Bayesian, 2,000
trials) and in one process (a single trial), over float, log-float, log-int and
categorical parameters, with per-epoch metrics.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hpc_hpo.results.reader import best_row, read_results

from browser import open_page
from conftest import assert_real_image, base_env, hpo, mpirun_command, write_experiment
from experiments import REPORTING_OBJECTIVE, bayes_experiment, experiment, header, reporting

PAIRS = ["x__lr", "x__units", "x__act", "lr__units", "lr__act", "units__act"]
EVERY_PLOT = {"evolution", *(f"pair_{p}" for p in PAIRS), "parallel", "timeline", "curves", "importance", "slices"}


def _search(directory: Path, body: str, ranks: int | None = 3, timeout: float = 240) -> Path:
    write_experiment(directory, reporting(body), REPORTING_OBJECTIVE)
    out = hpo(["run", "experiment.toml", "-q"], directory, ranks=ranks, timeout=timeout)
    assert out.returncode == 0, out.output
    return directory / "results.h5"


@pytest.fixture(scope="module")
def random_file(tmp_path_factory) -> Path:
    """Explicit, grid and random trials over 3 ranks: failures (an exception, a NaN) among them."""
    return _search(tmp_path_factory.mktemp("random"), experiment(trials=20))


@pytest.fixture(scope="module")
def bayes_file(tmp_path_factory) -> Path:
    return _search(tmp_path_factory.mktemp("bayes"), bayes_experiment(trials=12))


@pytest.fixture(scope="module")
def one_file(tmp_path_factory) -> Path:
    body = header() + '\n[[phase]]\nstrategy = "explicit"\npoints = [ { x = 1.5, lr = 1e-3, units = 16, act = "tanh" } ]\n'
    return _search(tmp_path_factory.mktemp("one"), body, ranks=None)


@pytest.fixture(scope="module")
def many_file(tmp_path_factory) -> Path:
    return _search(tmp_path_factory.mktemp("many"), experiment(trials=2000, extra_phases=False), timeout=400)


FILES = {"random": "random_file", "bayes": "bayes_file", "one": "one_file", "many": "many_file"}


@functools.cache
def _report(results: Path, *args: str) -> tuple[Path, list[Path]]:
    """Run ``report`` (once per file and arguments; tests share what it wrote, read-only)."""
    out_dir = results.parent / ("report" + "".join(a.strip("-") for a in args)[:20])
    out = hpo(["report", str(results), "-o", str(out_dir), *args], results.parent, timeout=180)
    assert out.returncode == 0, out.output
    listed = [Path(line) for line in out.stdout.splitlines()]
    assert listed[-1] == out_dir / "report.html" and listed[-1].is_file()
    return listed[-1], listed[:-1]


@pytest.mark.parametrize("which", list(FILES))
def test_report_draws_every_plot_that_applies(which, request):
    results = request.getfixturevalue(FILES[which])
    html, pngs = _report(results)
    expected = EVERY_PLOT - ({"importance"} if which == "one" else set())  # one trial cannot rank parameters
    assert {p.stem for p in pngs} == expected
    for png in pngs:
        assert_real_image(png)
    page = html.read_text()
    assert page.count("<img src='data:image/png;base64,") == len(pngs)
    assert "http://" not in page and "https://" not in page  # self-contained


@pytest.mark.parametrize("which", ["random", "many"])
def test_html_report_shows_every_image_in_chromium_without_errors(which, request, tmp_path):
    results = request.getfixturevalue(FILES[which])
    html, pngs = _report(results)
    page = open_page(html, tmp_path / "chromium")
    assert page.title == "e2e: hpc_hpo report"
    assert len(page.images) == len(pngs)
    for image in page.images:
        assert image["complete"] and image["width"] >= 500 and image["height"] >= 250, image
    assert [m for m in page.console if m["level"] in ("SEVERE", "WARNING")] == []
    best = best_row(read_results(results))
    assert f"best\ttrial {best['trial_id']}:" in page.text
    for title in ("Summary", "Best parameters", "Best 10 trials", "Parameter importance", "Result evolution",
                  "Worker timeline", "Parameter combinations", "Learning curves"):
        assert title in page.text


def test_the_page_states_what_the_file_holds(random_file):
    html, _ = _report(random_file)
    page = html.read_text()
    rows = read_results(random_file).records()
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and done
    assert f"{len(rows)} of {len(rows)} finished; done {len(done)}, failed {len(failed)}" in page
    assert "<span class='state'>finished</span>" in page
    best = min(done, key=lambda r: r["value"])
    assert f"trial {best['trial_id']}: <b>{best['value']:.6g}</b>" in page
    first_row = re.search(r"<h2 id='top'>.*?</tr><tr>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td class='num'>(.*?)</td>", first_row)[:2] == [str(best["trial_id"]), f"{best['value']:.6g}"]
    assert "ValueError: x too large" in page and "returned nan" in page  # the failures, by their errors
    assert f"x = {best['param_x']!r}" in page  # the paste-ready TOML of `hpc_hpo best`


def test_one_trial_says_what_it_left_out(one_file):
    out = hpo(["report", str(one_file)], one_file.parent)
    assert out.returncode == 0, out.output
    assert "# left out: parameter importance: needs at least 5 successful trials (has 1)" in out.stderr
    assert (one_file.parent / "results-report" / "report.html").is_file()  # the default directory


def test_pairs_option_draws_only_the_pairs_named(random_file):
    _, pngs = _report(random_file, "--pairs", "lr:units", "act:x", "--no-contour")
    assert sorted(p.stem for p in pngs if p.stem.startswith("pair_")) == ["pair_act__x", "pair_lr__units"]


WIDE_OBJECTIVE = """
def objective(params):
    # p3 and p7 matter; the other six barely.
    return (params["p3"] - 0.2) ** 2 + (params["p7"] - 0.7) ** 2 + 1e-3 * sum(params[f"p{i}"] for i in range(8))
"""


def test_with_many_parameters_the_pairs_are_those_of_the_most_important(tmp_path):
    space = "\n".join(f"p{i} = {{ type = \"float\", low = 0.0, high = 1.0 }}" for i in range(8))
    body = (f'[experiment]\nobjective = "objective.py:objective"\nresults = "results.h5"\nseed = 5\n[space]\n{space}\n'
            '[[phase]]\nstrategy = "random"\ntrials = 60\n')
    write_experiment(tmp_path, body, WIDE_OBJECTIVE)
    assert hpo(["run", "experiment.toml", "-q"], tmp_path, ranks=3).returncode == 0
    results, out_dir = tmp_path / "results.h5", tmp_path / "report"

    every = hpo(["report", str(results), "-o", str(out_dir), "--pairs", "all", "--no-contour"], tmp_path, timeout=180)
    assert every.returncode == 0, every.output
    assert len(list(out_dir.glob("pair_*.png"))) == 28  # 8 parameters: every pair

    default = hpo(["report", str(results), "-o", str(out_dir), "--no-contour"], tmp_path, timeout=180)
    assert default.returncode == 0, default.output
    pairs = sorted(p.stem for p in out_dir.glob("pair_*.png"))  # the 28 of the last report are gone but these
    assert len(pairs) == 15 and "pair_p3__p7" in pairs  # 6 of 8 parameters, the two that matter among them
    assert sorted(p.stem for p in map(Path, default.stdout.splitlines()) if p.stem.startswith("pair_")) == pairs
    note = re.search(r"# left out: two-parameter plots: the pairs of the 6 most important of 8 parameters \((.*)\); "
                     r"--pairs all draws every pair, --pairs A:B the ones named", default.stderr)
    assert note and {"p3", "p7"} <= set(note[1].split(", ")), default.stderr
    page = (out_dir / "report.html").read_text()
    assert page.count("<img") == 15 + 5 and "the pairs of the 6 most important of 8 parameters" in page


@pytest.mark.parametrize(("args", "message"), [
    (["results.h5", "--pairs", "all", "x:lr"],
     "hpc_hpo: error: --pairs: 'all' draws every pair and stands alone (got 'all x:lr')"),
    (["missing.h5"], "hpc_hpo: error: missing.h5: no such results file"),
    (["results.h5", "--pairs", "x:depth"],
     "hpc_hpo: error: --pairs: 'depth' is not a searched parameter of results.h5 (its parameters: x, lr, units, act) "
     "(got 'x:depth')"),
    (["results.h5", "--pairs", "x"], "hpc_hpo: error: --pairs: a pair is two parameter names joined by ':', e.g. "
                                     "lr:units (got 'x')"),
    (["results.h5", "--pairs", "x:x"], "hpc_hpo: error: --pairs: a pair needs two different parameters (got 'x:x')"),
    (["results.h5", "-o", "experiment.toml"],
     "hpc_hpo: error: -o: the report is a directory, and this is a file (got 'experiment.toml')"),
])
def test_bad_report_arguments_give_one_line_and_exit_2(random_file, args, message):
    out = hpo(["report", *args], random_file.parent)
    assert out.returncode == 2 and out.stderr.strip() == message and out.stdout == ""


def test_report_without_matplotlib_says_how_to_get_it(random_file):
    script = "import sys; sys.modules['matplotlib'] = None\nfrom hpc_hpo.cli import main\nsys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", script, "report", str(random_file)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == ("hpc_hpo: error: report: needs matplotlib (pip install 'hpc_hpo[plots]', or pip "
                                  "install matplotlib); status, export and best need nothing")


def test_report_of_a_search_still_running(tmp_path):
    write_experiment(tmp_path, reporting(experiment(trials=40, sleep=0.4, extra_phases=False)), REPORTING_OBJECTIVE)
    proc = subprocess.Popen(mpirun_command(3, ["run", "experiment.toml", "-q"]), cwd=tmp_path, env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (tmp_path / "results.h5").exists() and read_results(tmp_path / "results.h5").finished_rows >= 3:
                break
            time.sleep(0.2)
        out = hpo(["report", "results.h5"], tmp_path, timeout=120)
        assert out.returncode == 0, out.output
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    page = (tmp_path / "results-report" / "report.html").read_text()
    assert "<span class='state'>running: the report shows the file as it was at" in page
    finished = int(re.search(r"(\d+) of 40 finished", page).group(1))
    assert 3 <= finished < 40
    for png in (tmp_path / "results-report").glob("*.png"):
        assert_real_image(png)


# --- what the figures show (drawn in this process from the same files) -----------------------------------------


def _table(path: Path):
    from hpc_hpo.outputs.report.data import trial_table

    return trial_table(read_results(path))


def test_evolution_plots_values_only_for_successful_trials(random_file):
    from hpc_hpo.outputs.report.evolution import evolution_figure

    table = _table(random_file)
    ax = evolution_figure(table).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    counts = {s: int(np.sum(table.done & (table.strategy == s))) for s in ("explicit", "grid", "random")}
    for strategy, n in counts.items():
        assert f"{strategy} ({n})" in labels
    failed = int(np.sum(table.unsuccessful))
    assert f"failed ({failed})" in labels and "best so far" in labels
    plotted_y = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections[:len(counts)]])
    assert len(plotted_y) == sum(counts.values()) and np.all(np.isfinite(plotted_y))


def test_pair_plot_marks_bayesian_points_best_point_and_axes(bayes_file):
    from hpc_hpo.outputs.report.pairs import choose_pairs, pair_figure

    table = _table(bayes_file)
    ((x_axis, y_axis),), _ = choose_pairs(table, [("lr", "act")])
    ax = pair_figure(table, x_axis, y_axis).axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["relu", "tanh", "nan"]
    bayes_done = int(np.sum(table.done & (table.strategy == "bayes")))
    labels = ax.get_legend().get_texts()
    assert f"Bayesian trial ({bayes_done})" in [t.get_text() for t in labels]
    best = table.best_index()
    ring = ax.collections[-1].get_offsets()[0]
    assert ring[0] == pytest.approx(table.params["lr"][best])
    assert abs(ring[1] - ["relu", "tanh", "nan"].index(table.params["act"][best])) < 0.2  # jittered on its row
    assert str(table.trial_id[best]) in [t.get_text() for t in ax.texts]  # the best point is labelled first


def test_parallel_coordinates_follow_the_space(random_file):
    from hpc_hpo.outputs.report.parallel import parallel_figure

    table = _table(random_file)
    ax = parallel_figure(table).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "lr (log)", "units (log)", "act", "value"]
    texts = {t.get_text() for t in ax.texts}
    assert {"1e-05", "0.1", "16", "512", "relu", "tanh", "nan", "failed"} <= texts
    best = [line for line in ax.lines if line.get_linewidth() == 3]
    assert len(best) == 1 and best[0].get_label() == f"best: trial {table.trial_id[table.best_index()]}"


def test_timeline_has_a_lane_per_worker_and_the_bayesian_steps(bayes_file):
    from hpc_hpo.outputs.report.timeline import timeline_figure

    table = _table(bayes_file)
    ax = timeline_figure(table).axes[0]
    lanes = [t.get_text() for t in ax.get_yticklabels()]
    assert len(lanes) == 2 and lanes[0].startswith("r1 ") and lanes[1].startswith("r2 ") and lanes[0].endswith("cpu")
    assert "choosing a Bayesian point" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert re.fullmatch(r"\d+%", ax.texts[0].get_text())


def test_learning_curves_and_importance(random_file):
    from hpc_hpo.outputs.report.curves import curves_figure
    from hpc_hpo.outputs.report.importance import importances

    table = _table(random_file)
    titles = [ax.get_title() for ax in curves_figure(table).axes if ax.get_title()]
    assert titles == [f"loss ({len(table)} trials)", f"val_loss ({len(table)} trials)"]  # failed ones reported too
    ranking = importances(table)
    assert [r.name for r in ranking][0] == "x"  # the value is (x - 1)^2 plus terms a hundred times smaller
    assert ranking[0].mean > 0.5 and all(0 <= r.mean <= 1 for r in ranking) and sum(r.mean for r in ranking) <= 1 + 1e-9


def _forest_shares(f, dims=4, n=2000):
    from sklearn.ensemble import RandomForestRegressor

    from hpc_hpo.outputs.report.importance import first_order_shares

    x = np.random.default_rng(0).random((n, dims))
    forest = RandomForestRegressor(n_estimators=32, min_samples_leaf=2, random_state=0).fit(x, f(x))
    return np.mean([first_order_shares(tree.tree_, dims) for tree in forest.estimators_], axis=0)


def test_importance_is_the_share_of_variance_each_parameter_explains_alone():
    # 4 x0 + 2 x1 on the unit square: variances 16/12 and 4/12, so x0 explains 0.8 and x1 0.2.
    assert _forest_shares(lambda x: 4 * x[:, 0] + 2 * x[:, 1]) == pytest.approx([0.8, 0.2, 0, 0], abs=0.02)
    # A pure interaction: no parameter explains anything alone (impurity importance gives x0, x1 half each).
    assert _forest_shares(lambda x: (x[:, 0] - 0.5) * (x[:, 1] - 0.5)) == pytest.approx([0, 0, 0, 0], abs=0.02)


def test_importance_weighs_a_categorical_s_choices_equally(tmp_path):
    from hpc_hpo.outputs.report.importance import importances, interaction_share

    body = header() + '\n[[phase]]\nstrategy = "grid"\nsteps = 3\n'  # x, lr, units: 3 levels each, act: 3 choices
    write_experiment(tmp_path, body.replace("objective.py:objective", "objective.py:additive"),
                     "def additive(params):\n    return 3.0 * (params['act'] == 'tanh') + 3.0 * (params['x'] > 0)\n")
    assert hpo(["run", "experiment.toml", "-q"], tmp_path, ranks=3).returncode == 0
    ranking = importances(_table(tmp_path / "results.h5"))
    shares = {r.name: r.mean for r in ranking}
    # act: tanh is one choice of three, variance 9 (1/3)(2/3) = 2. x: the trees cut between the grid's
    # 0 and 5, so x > 0 is a quarter of [-5, 5], variance 9 (1/4)(3/4) = 1.6875. Nothing else matters.
    # (Were tanh a point between relu and nan on [0, 1], it would weigh a half: 2.25 -> act 0.571.)
    assert shares["act"] == pytest.approx(2 / 3.6875, abs=0.015) and shares["x"] == pytest.approx(1.6875 / 3.6875, abs=0.015)
    assert shares["lr"] < 0.01 and shares["units"] < 0.01 and interaction_share(ranking) < 0.02


def test_one_diverged_trial_does_not_wash_out_the_colours_of_the_good_ones(random_file):
    import dataclasses

    from hpc_hpo.outputs.report.common import value_scale

    table = _table(random_file)
    done = np.flatnonzero(table.done)
    values = np.full(len(table), np.nan)
    values[done] = np.linspace(0.10, 0.19, len(done))
    values[done[-1]] = 5.0  # a diverged run among good ones
    table = dataclasses.replace(table, value=values)
    _, norm = value_scale(table)
    assert norm(0.10) == pytest.approx(0, abs=1e-9) and norm(values[done[-2]]) > 0.8 and norm(5.0) > 1  # end colour
    _, plain = value_scale(table, robust=False)
    assert plain(values[done[-2]]) < 0.05  # without it, every good trial has nearly the same colour
    values[done[-1]] = 0.20  # no outlier: the scale is the whole range
    _, norm = value_scale(dataclasses.replace(table, value=values))
    assert (norm.vmin, norm.vmax) == (0.10, 0.20)


def test_timeline_marks_a_resumed_job_and_does_not_count_the_time_between_jobs_as_idle(tmp_path):
    from hpc_hpo.outputs.report.timeline import timeline_figure

    write_experiment(tmp_path, experiment(trials=4, sleep=0.3, extra_phases=False), REPORTING_OBJECTIVE)
    assert hpo(["run", "experiment.toml", "-q"], tmp_path).returncode == 0
    time.sleep(3)  # the queue's wait before the next job
    assert hpo(["run", "experiment.toml", "-q", "--resume", "--trials", "8"], tmp_path).returncode == 0
    table = _table(tmp_path / "results.h5")
    ax = timeline_figure(table).axes[0]
    assert " run 1" in [t.get_text() for t in ax.texts]
    busy = next(int(t.get_text().rstrip("%")) for t in ax.texts if t.get_text().endswith("%"))
    in_trials = float(np.nansum(table.t_end - table.t_start))
    whole_span = float(np.nanmax(table.t_end) - np.nanmin(table.t_start))
    assert in_trials / whole_span < 0.6  # the three seconds between the jobs are most of the span ...
    assert busy >= 75  # ... but not the worker's idle time


def test_report_watch_follows_a_running_search_and_ends_with_it(tmp_path):
    write_experiment(tmp_path, reporting(experiment(trials=60, sleep=0.5, extra_phases=False)), REPORTING_OBJECTIVE)
    search = subprocess.Popen(mpirun_command(3, ["run", "experiment.toml", "-q"]), cwd=tmp_path, env=base_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    watch = None
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "results.h5").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        watch = subprocess.Popen([sys.executable, "-m", "hpc_hpo", "report", "results.h5", "--watch", "1"], cwd=tmp_path,
                                 env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        page = tmp_path / "results-report" / "report.html"
        live = None
        while time.monotonic() < deadline and search.poll() is None:
            if page.exists() and 'http-equiv="refresh" content="1"' in (text := page.read_text()):
                live = text
            time.sleep(0.3)
        out, err = watch.communicate(timeout=120)  # it ends by itself once the search has ended
        search.communicate(timeout=60)
    finally:
        for proc in (search, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert search.returncode == 0 and watch.returncode == 0, err
    assert live is not None and "running: the report shows" in live and "this page reloads every 1 s" in live, err
    updates = [line for line in err.splitlines() if line.startswith("report: ") and "trials finished" in line]
    assert len(updates) >= 2, err
    assert err.splitlines()[-1] == "report: the search has ended (60 trials); results-report/report.html is final"
    final = page.read_text()
    assert "<span class='state'>finished</span>" in final and "http-equiv" not in final
    assert out.splitlines()[-1] == "results-report/report.html"
    assert not list((tmp_path / "results-report").glob(".*.writing"))  # every file was renamed into place


def test_the_default_pairs_fill_up_with_the_space_s_order_when_few_parameters_matter(tmp_path):
    from hpc_hpo.outputs.report.pairs import choose_pairs

    space = "\n".join(f"p{i} = {{ type = \"float\", low = 0.0, high = 1.0 }}" for i in range(8))
    body = (f'[experiment]\nobjective = "objective.py:objective"\nresults = "results.h5"\nseed = 5\n[space]\n{space}\n'
            '[[phase]]\nstrategy = "random"\ntrials = 6\n')
    write_experiment(tmp_path, body, WIDE_OBJECTIVE)
    assert hpo(["run", "experiment.toml", "-q"], tmp_path).returncode == 0
    table = _table(tmp_path / "results.h5")
    pairs, note = choose_pairs(table, None, ranked=["p7", "p3"])  # only two with a share above 0
    kept = sorted({axis.name for pair in pairs for axis in pair})
    assert len(pairs) == 15 and kept == ["p0", "p1", "p2", "p3", "p4", "p7"]
    assert "the pairs of the 6 most important of 8 parameters (p0, p1, p2, p3, p4, p7)" in note
    pairs, note = choose_pairs(table, None, ranked=[])  # too few trials to rank
    assert len(pairs) == 15 and "the pairs of the first 6 of 8 parameters (p0, p1, p2, p3, p4, p5)" in note


def test_a_search_with_early_stopping_draws_its_rungs_and_fades_its_pruned_curves(tmp_path):
    from hpc_hpo.outputs.report.curves import curves_figure
    from hpc_hpo.outputs.report.data import trial_table

    tests = Path(__file__).resolve().parent.parent
    write_experiment(tmp_path, """
        [experiment]
        objective = "light_objectives:learning_curve"
        results = "results.h5"
        seed = 2
        [space]
        x = { type = "float", low = 0.0, high = 1.0 }
        y = { type = "float", low = 0.0, high = 1.0 }
        lr = { type = "float", low = 1e-4, high = 1e-1, log = true }
        [[phase]]
        strategy = "random"
        trials = 30
        [stopping]
        rule = "asha"
        metric = "val_loss"
        max_epochs = 27
    """)
    out = hpo(["run", "experiment.toml", "-q"], tmp_path, ranks=3, timeout=240, env={"PYTHONPATH": str(tests)})
    assert out.returncode == 0, out.output
    html, pngs = _report(tmp_path / "results.h5")
    assert {p.stem for p in pngs} >= {"curves", "rungs", "evolution", "timeline"}
    assert_real_image(tmp_path / "report" / "rungs.png")
    page = html.read_text()
    assert "Epochs per rung" in page and "<th>early stopping</th><td>asha on val_loss: 30 reached 1 epoch" in page
    results = read_results(tmp_path / "results.h5")
    pruned = sum(r["status"] == "pruned" for r in results.records())
    figure = curves_figure(trial_table(results))
    assert f"stopped early ({pruned})" in [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "Failed trials" not in page  # pruned trials are not failures
