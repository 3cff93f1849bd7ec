"""``export --format tensorboard``: what a real TensorBoard server then shows in its HParams dashboard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from hpc_hpo.results.reader import read_results

from conftest import BIN, base_env, hpo, write_experiment
from experiments import REPORTING_OBJECTIVE, experiment, reporting


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tensorboard")
    write_experiment(directory, reporting(experiment(trials=6)), REPORTING_OBJECTIVE)
    assert hpo(["run", "experiment.toml", "-q"], directory, ranks=3).returncode == 0
    out = hpo(["export", "results.h5", "--format", "tensorboard", "-o", "tb"], directory)
    assert out.returncode == 0, out.output
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, route: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def tensorboard(exported):
    if not (BIN / "tensorboard").exists():
        pytest.fail("tensorboard not installed: scripts/test.sh installs it")
    port = _free_port()
    proc = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", str(exported / "tb"), "--port", str(port),
                             "--host", "127.0.0.1", "--load_fast", "false"], env=base_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            if _post(port, "experiment", {"experimentName": ""}).get("hparamInfos"):
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"tensorboard did not serve the export: {proc.communicate()[1][-2000:]}")
        time.sleep(0.5)
    yield port
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_tensorboard_lists_every_parameter_with_its_domain_and_every_metric(tensorboard):
    experiment_info = _post(tensorboard, "experiment", {"experimentName": ""})
    infos = {h["name"]: h for h in experiment_info["hparamInfos"]}
    assert set(infos) == {"x", "lr", "units", "act", "sleep"}
    assert infos["x"]["domainInterval"] == {"minValue": -5.0, "maxValue": 5.0}
    assert infos["units"]["domainInterval"] == {"minValue": 16.0, "maxValue": 512.0}
    assert sorted(infos["act"]["domainDiscrete"]) == ["nan", "relu", "tanh"]
    tags = {m["name"]["tag"] for m in experiment_info["metricInfos"]}
    assert tags == {"value", "metric/rank", "metric/trial", "epoch/loss", "epoch/val_loss"}


def test_tensorboard_shows_each_trial_with_its_parameters_value_and_status(tensorboard, exported):
    query = {"experimentName": "", "startIndex": 0, "sliceSize": 1000,
             "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
             "colParams": [{"hparam": name, "includeInResult": True} for name in ("x", "lr", "units", "act")] +
                          [{"metric": {"tag": "value", "group": ""}, "includeInResult": True}]}
    groups = _post(tensorboard, "session_groups", query)["sessionGroups"]
    rows = read_results(exported / "results.h5").records()
    assert len(groups) == len(rows)
    by_trial = {g["sessions"][0]["name"]: g for g in groups}
    for row in rows:
        group = by_trial[f"trial_{row['trial_id']:06d}"]
        session = group["sessions"][0]
        assert group["hparams"]["x"] == pytest.approx(row["param_x"])
        assert group["hparams"]["act"] == row["param_act"] and group["hparams"]["units"] == row["param_units"]
        if row["status"] == "done":
            assert session["status"] == "STATUS_SUCCESS"
            values = {m["name"]["tag"]: m for m in session["metricValues"]}
            assert values["value"]["value"] == pytest.approx(row["value"], rel=1e-6)  # TensorBoard keeps float32
            assert values["epoch/loss"]["trainingStep"] == 4  # the last of the five epochs
        else:
            assert session["status"] == "STATUS_FAILURE"
            assert "value" not in {m["name"]["tag"] for m in session["metricValues"]}


def test_exporting_again_replaces_the_earlier_export(exported):
    before = sorted(p.name for p in (exported / "tb").rglob("events.out.tfevents.*"))
    assert hpo(["export", "results.h5", "--format", "tensorboard", "-o", "tb"], exported).returncode == 0
    after = sorted(p.name for p in (exported / "tb").rglob("events.out.tfevents.*"))
    assert len(after) == len(before) == 1 + len(read_results(exported / "results.h5").records())


def test_tensorboard_export_without_the_package_or_a_directory_says_so(exported):
    script = "import sys; sys.modules['tensorboard'] = None\nfrom hpc_hpo.cli import main\nsys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", script, "export", "results.h5", "--format", "tensorboard", "-o", "t2"],
                         cwd=exported, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and not (exported / "t2").exists()
    assert out.stderr.strip() == ("hpc_hpo: error: --format tensorboard: needs the tensorboard package (pip install "
                                  "tensorboard; TensorFlow is not needed); csv and json need nothing")
    no_dir = hpo(["export", "results.h5", "--format", "tensorboard"], exported)
    assert no_dir.returncode == 2 and no_dir.stderr.strip() == (
        "hpc_hpo: error: --format tensorboard: needs -o DIR, the directory to give to tensorboard --logdir")
