"""Real TensorFlow trials: the digits and CIFAR-10 examples under mpirun, memory over 20 trials.

These import TensorFlow in every trial process (about 7 s each on this machine), so they
are few and small. They skip when TensorFlow is not installed (scripts/setup.sh installs it).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys

import numpy as np
import pytest

from hpc_hpo.results.reader import read_results

from conftest import REPO, assert_real_image, hpo, mpirun_command, run_command, write_experiment

if importlib.util.find_spec("tensorflow") is None:  # without importing it into the test process
    if os.environ.get("HPC_HPO_TEST_TF") == "1":  # scripts/test.sh: TensorFlow must be there, never skip
        raise RuntimeError("HPC_HPO_TEST_TF=1 but TensorFlow is not installed; run scripts/setup.sh")
    pytest.skip("TensorFlow is not installed (scripts/setup.sh installs it)", allow_module_level=True)


def digits_experiment(tmp_path, phases: str, epochs: int, workers: str = ""):
    write_experiment(tmp_path, f"""
        [experiment]
        objective = "hpc_hpo.examples.digits_mlp:objective"
        direction = "maximize"
        results = "digits.h5"
        seed = 5
        [space]
        learning_rate = {{ type = "float", low = 1e-3, high = 3e-2, log = true }}
        units         = {{ type = "int", low = 16, high = 256, log = true }}
        dropout       = {{ type = "float", low = 0.0, high = 0.5 }}
        batch_size    = {{ type = "categorical", choices = [32, 64, 128, 256] }}
        activation    = {{ type = "categorical", choices = ["relu", "tanh", "elu"] }}
        epochs        = {{ type = "fixed", value = {epochs} }}
        {phases}
        [workers]
        {workers}
    """)


def test_digits_mlp_trains_under_mpirun_with_two_workers(tmp_path):
    digits_experiment(tmp_path, """
        [[phase]]
        strategy = "random"
        trials = 4
        [[phase]]
        strategy = "bayes"
        trials = 2
    """, epochs=4)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=400)
    assert out.returncode == 0, out.output
    results = read_results(tmp_path / "digits.h5")
    rows = results.records()
    assert [r["status"] for r in rows] == ["done"] * 6
    assert max(r["value"] for r in rows) > 0.85  # validation accuracy of a real MLP after 4 epochs
    assert {r["rank"] for r in rows} == {1, 2} and {r["gpus"] for r in rows} == {"cpu"}
    assert all(r["metric_gpus_seen"] == 0 and r["memory_mb"] > 100 for r in rows)  # a TensorFlow process ran it
    epochs = results.epochs
    for row in rows:  # the Keras callback reported every epoch of every trial
        mine = epochs[(epochs["trial_id"] == row["trial_id"]) & (epochs["name"] == b"val_accuracy")]
        assert mine["epoch"].tolist() == [0, 1, 2, 3]
        assert np.isclose(mine["value"].max(), row["value"])
    assert "best trial" in out.stderr
    # The report draws those Keras curves, over a numeric categorical (batch_size) among the axes.
    report = hpo(["report", "digits.h5"], tmp_path, timeout=120)
    assert report.returncode == 0, report.output
    assert_real_image(tmp_path / "digits-report" / "curves.png")
    from hpc_hpo.outputs.report.curves import curves_figure
    from hpc_hpo.outputs.report.data import trial_table

    titles = {ax.get_title() for ax in curves_figure(trial_table(results)).axes}
    assert {"val_accuracy (6 trials)", "loss (6 trials)"} <= titles


WATCHED = """
from pathlib import Path
import os
from hpc_hpo.examples.digits_mlp import objective as digits

def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def objective(params, trial):
    result = digits(params, trial)
    result["worker_mb"] = rss_mb(os.getppid())  # the worker rank that supervises this trial process
    return result
"""


def test_worker_and_trial_process_memory_stay_flat_over_20_tensorflow_trials(tmp_path):
    digits_experiment(tmp_path, """
        [[phase]]
        strategy = "random"
        trials = 20
    """, epochs=1, workers='executor = "process"')  # the default max_trials_per_process = 10
    (tmp_path / "watched.py").write_text(WATCHED)
    text = (tmp_path / "experiment.toml").read_text()
    (tmp_path / "experiment.toml").write_text(text.replace("hpc_hpo.examples.digits_mlp:objective", "watched.py:objective"))
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=2, timeout=400)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "digits.h5").records()
    trial_mb = [r["memory_mb"] for r in rows]
    worker_mb = [r["metric_worker_mb"] for r in rows]
    print("trial process MiB:", [round(m) for m in trial_mb], "worker MiB:", [round(m) for m in worker_mb])
    assert len(rows) == 20 and all(r["status"] == "done" for r in rows)
    # The worker rank never loads TensorFlow: a few hundred MiB less than a trial process, and flat.
    assert max(worker_mb) < min(trial_mb) - 200
    assert max(worker_mb[4:]) - worker_mb[4] < 5
    # Keras leaks a few MiB per trial even after clear_session; the replacement after 10 trials
    # gives it all back, so the second ten trials use no more memory than the first ten.
    assert max(trial_mb[10:]) <= max(trial_mb[:10]) + 10


def write_tiny_cifar(directory, images_per_batch=40, seed=0):
    """Five training batches and a test batch in CIFAR-10's python pickle format."""
    rng = np.random.default_rng(seed)
    directory.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, images_per_batch)
        data = rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8)
        data[:, :100] = (labels * 25)[:, None]  # a learnable hint in the first pixels
        with open(directory / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, handle)


def test_cifar10_cnn_example_runs_on_data_in_the_standard_format(tmp_path):
    write_tiny_cifar(tmp_path / "cifar")
    script = str(REPO / "examples" / "cifar10_cnn" / "run.py")
    cmd = mpirun_command(2, [])
    cmd = cmd[:cmd.index("-m")] + [script, "--data", str(tmp_path / "cifar"), "--trials", "1",
                                    "--results", "cifar.h5"]
    out = run_command(cmd, tmp_path, timeout=400)
    assert out.returncode == 0, out.output
    rows = read_results(tmp_path / "cifar.h5").records()
    assert len(rows) == 11 and all(r["status"] == "done" for r in rows)
    assert {r["strategy"] for r in rows} == {"random", "bayes"}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows)


def test_cifar10_cnn_example_without_its_data_says_so_and_exits_2(tmp_path):
    script = str(REPO / "examples" / "cifar10_cnn" / "run.py")
    out = run_command([sys.executable, script, "--data", str(tmp_path / "nowhere")], tmp_path, timeout=120)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("hpc_hpo: error:")]
    assert len(errors) == 1 and "is not a CIFAR-10 python batch directory (missing data_batch_1" in errors[0]
    assert "Traceback" not in out.stderr


def test_asha_stops_keras_training_through_the_epoch_callback(tmp_path):
    digits_experiment(tmp_path, """
        [[phase]]
        strategy = "random"
        trials = 8
        [stopping]
        rule = "asha"
        metric = "val_accuracy"
        min_epochs = 1
        max_epochs = 9
        reduction_factor = 3
    """, epochs=2)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=400)
    assert out.returncode == 0, out.output
    results = read_results(tmp_path / "digits.h5")
    rows = results.records()
    pruned = [r for r in rows if r["status"] == "pruned"]
    done = [r for r in rows if r["status"] == "done"]
    assert pruned and done and len(pruned) + len(done) == 8
    epochs = results.epochs[results.epochs["name"] == b"val_accuracy"]
    for row in rows:  # Keras stopped right after the epoch of the verdict (1 or 3 epochs), or trained max_epochs
        reported = epochs[epochs["trial_id"] == row["trial_id"]]["epoch"].tolist()
        assert reported == list(range(row["epochs"]))
        assert row["epochs"] in ((1, 3) if row["status"] == "pruned" else (9,)), row
    assert all(r["metric_gpus_seen"] == 0 for r in done)  # a real trial process ran, and returned its metrics


def test_pbt_segments_of_the_digits_mlp_go_on_from_their_parents_weights_and_optimizer_state(tmp_path):
    """Real Keras under PBT: each segment restores its parent's weights and Adam state, so its first epoch's loss
    continues from where the parent ended instead of jumping back to an untrained model's."""
    write_experiment(tmp_path, """
        [experiment]
        objective = "hpc_hpo.examples.digits_mlp:objective"
        direction = "maximize"
        results = "digits.h5"
        seed = 2
        [space]
        learning_rate = { type = "float", low = 5e-3, high = 3e-2, log = true }
        dropout       = { type = "float", low = 0.0, high = 0.3 }
        units         = { type = "fixed", value = 32 }
        batch_size    = { type = "fixed", value = 64 }
        activation    = { type = "fixed", value = "relu" }
        epochs        = { type = "fixed", value = 6 }
        [[phase]]
        strategy = "pbt"
        population = 2
        interval = 2
        epochs = 6
        quantile = 0.5
        [workers]
        executor = "process"
    """)
    out = hpo(["run", "experiment.toml"], tmp_path, ranks=3, timeout=400)
    assert out.returncode == 0, out.output
    results = read_results(tmp_path / "digits.h5")
    rows = {r["trial_id"]: r for r in results.records()}
    # 2 members x 3 segments, plus one for each copy of a member one interval behind (it trains that interval again).
    assert 6 <= len(rows) <= 9 and all(r["status"] == "done" for r in rows.values())
    assert {r["member"] for r in rows.values() if r["end_epoch"] == 6} == {0, 1}
    losses = {}
    for row in results.epochs[results.epochs["name"] == b"loss"]:
        losses.setdefault(int(row["trial_id"]), {})[int(row["epoch"])] = float(row["value"])
    first_epoch_loss = np.mean([losses[t][0] for t, r in rows.items() if r["parent"] < 0])
    for trial_id, r in rows.items():
        assert sorted(losses[trial_id]) == list(range(r["start_epoch"], r["end_epoch"]))  # Keras counts on
        if r["parent"] < 0:
            continue
        parent_last = losses[r["parent"]][rows[r["parent"]]["end_epoch"] - 1]
        continued = losses[trial_id][r["start_epoch"]]
        # Restored: near where the parent ended (a fresh model's first epoch is far above it), below its start.
        assert continued < parent_last * 1.25 and continued < 0.9 * first_epoch_loss, (continued, parent_last,
                                                                                        first_epoch_loss)
    for r in rows.values():  # weights and optimizer state: two files per checkpoint
        assert r["checkpoint_mb"] > 0.01


RESTORE_SCRIPT = """
import numpy as np, tempfile
from types import SimpleNamespace
from hpc_hpo import CheckpointError, tf as hpo_tf
keras = hpo_tf.keras()
rng = np.random.default_rng(0)
X = rng.normal(size=(256, 8)).astype("float32"); y = (X @ rng.normal(size=8) > 0).astype("int32")
def model(lr, units=16):
    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(units, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
    m.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    return m
saved = tempfile.mkdtemp()
first = SimpleNamespace(checkpoint_dir=saved, restore_from=None, member=0, start_epoch=0)
a = model(0.01)
assert hpo_tf.restore_checkpoint(first, a) is False
a.fit(X, y, epochs=3, batch_size=32, verbose=0, callbacks=[hpo_tf.checkpoint_callback(first)])
after = a.evaluate(X, y, verbose=0)
moments = [v.numpy() for v in a.optimizer.variables if "momentum" in v.path]
second = SimpleNamespace(checkpoint_dir=tempfile.mkdtemp(), restore_from=saved, member=0, start_epoch=3)
b = model(0.002)
assert hpo_tf.restore_checkpoint(second, b) is True
assert abs(b.evaluate(X, y, verbose=0) - after) < 1e-6
assert int(b.optimizer.iterations) == int(a.optimizer.iterations) == 24
restored = [v.numpy() for v in b.optimizer.variables if "momentum" in v.path]
assert moments and all(np.allclose(m, r) for m, r in zip(moments, restored))
assert abs(float(b.optimizer.learning_rate) - 0.002) < 1e-9, "the explored learning rate must stay"
try:
    hpo_tf.restore_checkpoint(second, model(0.01, units=32))
except CheckpointError as exc:
    assert str(exc).startswith(f"cannot restore {saved} (member 0, epoch 3):"), exc
else:
    raise AssertionError("a checkpoint of another shape restored")
print("restored ok")
"""


def test_restore_checkpoint_brings_back_weights_and_adam_state_but_keeps_the_new_learning_rate(tmp_path):
    out = run_command([sys.executable, "-c", RESTORE_SCRIPT], tmp_path, timeout=120)
    assert out.returncode == 0 and "restored ok" in out.output, out.output
