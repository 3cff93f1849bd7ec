"""A Keras MLP on scikit-learn's bundled digits (8x8 images, 1,797 samples; no download).

The built-in default experiment (``python -m hpc_hpo run`` with no file) and
``examples/digits_mlp``. It tunes learning rate, width, dropout, batch size and activation,
and returns the best validation accuracy. Copy this file to start your own objective: it
shows the helpers of :mod:`hpc_hpo.tf` (strategy, linear scaling, per-epoch metrics that also
stop the trial early under ``[stopping]``, and the checkpoints of a pbt segment).

In a pbt phase (``examples/digits_mlp/pbt.toml``) a trial is one segment of a member's training:
it restores the parent's weights and optimizer state, trains epochs ``trial.start_epoch`` to
``trial.end_epoch - 1`` with this segment's learning rate and dropout, saves its own checkpoint,
and returns the member's current validation accuracy (not its best so far: the next segment
goes on from this state).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hpc_hpo import tf as hpo_tf

# Loaded once per trial process, not once per trial.
_x, _y = load_digits(return_X_y=True)
X_TRAIN, X_VAL, Y_TRAIN, Y_VAL = train_test_split((_x / 16.0).astype("float32"), _y, test_size=0.25,
                                                  random_state=0, stratify=_y)


def objective(params, trial):
    keras = hpo_tf.keras()
    keras.utils.set_random_seed(trial.seed % 2**31)
    strategy = hpo_tf.distribution_strategy(trial)
    batch_size, learning_rate = hpo_tf.scale_for_replicas(params["batch_size"], params["learning_rate"], strategy)
    with strategy.scope():
        layers = [keras.Input(shape=(64,))]
        for _ in range(2):
            layers += [keras.layers.Dense(params["units"], activation=params["activation"]),
                       keras.layers.Dropout(params["dropout"])]
        model = keras.Sequential(layers + [keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    hpo_tf.restore_checkpoint(trial, model)  # a pbt segment: go on from the parent's state (no-op otherwise)
    # With [stopping], train for its max_epochs: the callback ends training early when the rule says so.
    # In pbt, epochs start_epoch .. end_epoch - 1 (Keras counts from initial_epoch).
    epochs = trial.end_epoch or trial.max_epochs or params["epochs"]
    history = model.fit(X_TRAIN, Y_TRAIN, batch_size=batch_size, initial_epoch=trial.start_epoch, epochs=epochs,
                        verbose=0, validation_data=(X_VAL, Y_VAL),
                        callbacks=[hpo_tf.epoch_callback(trial), hpo_tf.checkpoint_callback(trial)]).history
    best = len(history["val_accuracy"]) - 1 if trial.member is not None else int(np.argmax(history["val_accuracy"]))
    return {
        "value": float(history["val_accuracy"][best]),
        "val_loss": float(history["val_loss"][best]),
        "train_accuracy": float(history["accuracy"][best]),
        "best_epoch": best,
        "gpus_seen": len(tf.config.list_logical_devices("GPU")),  # proof, from inside the trial, of the GPU
        "replicas": strategy.num_replicas_in_sync,
    }
