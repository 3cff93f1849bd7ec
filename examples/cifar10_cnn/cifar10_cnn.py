"""The PHS paper's CIFAR-10 study: a small CNN, tuning learning rate, batch size and weight decay.

CIFAR-10 is read from a local directory in its standard python-pickle batch format
(``data_batch_1`` ... ``data_batch_5`` and ``test_batch``, as in ``cifar-10-python.tar.gz``);
nothing is downloaded, since cluster nodes rarely reach the internet. Run it with::

    mpirun -n 9 python examples/cifar10_cnn/run.py --data /path/to/cifar-10-batches-py [run options]

which runs ``python -m hpc_hpo run examples/cifar10_cnn/experiment.toml`` with the data path
in ``CIFAR10_DATA`` (set that variable yourself to use ``python -m hpc_hpo run`` directly).
A missing or incomplete directory stops the run on every rank with one line and exit code 2.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import tensorflow as tf

from hpc_hpo import tf as hpo_tf

HERE = Path(__file__).resolve().parent
DATA_VAR = "CIFAR10_DATA"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"


def load_cifar10(directory: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), images as float32 NHWC in [0, 1]."""
    directory = Path(directory)
    missing = [name for name in TRAIN_FILES + [TEST_FILE] if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{DATA_VAR}: '{directory}' is not a CIFAR-10 python batch directory "
                                f"(missing {', '.join(missing)}; unpack cifar-10-python.tar.gz and pass its "
                                f"cifar-10-batches-py directory with --data)")

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(directory / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images.astype("float32") / 255.0, np.asarray(batch[b"labels"], dtype=np.int64)

    train = [read(name) for name in TRAIN_FILES]
    x_test, y_test = read(TEST_FILE)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test


# Loaded once per trial process; a bad path fails the objective's import, so the run stops at start.
X_TRAIN, Y_TRAIN, X_TEST, Y_TEST = load_cifar10(os.environ.get(DATA_VAR, HERE / "cifar-10-batches-py"))


def objective(params, trial):
    keras = hpo_tf.keras()
    keras.utils.set_random_seed(trial.seed % 2**31)
    strategy = hpo_tf.distribution_strategy(trial)
    batch_size, learning_rate = hpo_tf.scale_for_replicas(params["batch_size"], params["learning_rate"], strategy)
    decay = keras.regularizers.l2(params["weight_decay"])
    with strategy.scope():
        model = keras.Sequential([
            keras.Input(shape=(32, 32, 3)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_regularizer=decay),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_regularizer=decay),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", kernel_regularizer=decay),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(X_TRAIN, Y_TRAIN, batch_size=batch_size, epochs=params["epochs"], verbose=0,
                        validation_data=(X_TEST, Y_TEST), callbacks=[hpo_tf.epoch_callback(trial)]).history
    return {"value": float(history["val_accuracy"][-1]), "val_loss": float(history["val_loss"][-1]),
            "train_accuracy": float(history["accuracy"][-1]), "gpus_seen": len(tf.config.list_logical_devices("GPU"))}
