"""TensorFlow helpers for objectives. TensorFlow is imported here lazily, never by the rest of hpc_hpo.

In an objective::

    from hpc_hpo import tf as hpo_tf

    strategy = hpo_tf.distribution_strategy(trial)      # MirroredStrategy over the trial's GPUs
    batch, lr = hpo_tf.scale_for_replicas(params["batch_size"], params["learning_rate"], strategy)
    with strategy.scope():
        model = ...
    model.fit(..., callbacks=[hpo_tf.epoch_callback(trial)])   # per-epoch metrics into /epochs

In a pbt phase (one trial = one segment of a member's training), two more lines::

    hpo_tf.restore_checkpoint(trial, model)     # weights and optimizer state of the parent; no-op at first
    model.fit(..., initial_epoch=trial.start_epoch, epochs=trial.end_epoch,
              callbacks=[hpo_tf.epoch_callback(trial), hpo_tf.checkpoint_callback(trial)])

The worker has already made only the trial's GPUs visible and turned on memory growth
(:mod:`hpc_hpo.trials.devices`); :func:`configure_devices` adds the memory cap of a shared GPU
(``workers_per_gpu``) and is called for you. It lives with the trial process's own housekeeping
(:mod:`hpc_hpo.trials.frameworks`) and is re-exported here, with ``keras`` and ``clear_session``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .errors import CheckpointError
from .trials.frameworks import clear_session, configure_devices, gpu_memory_mb, keras

__all__ = ["checkpoint_callback", "clear_session", "configure_devices", "distribution_strategy", "epoch_callback",
           "gpu_memory_mb", "keras", "restore_checkpoint", "save_checkpoint", "scale_for_replicas"]

#: The files of a checkpoint: the model's weights, and the optimizer's state (moments, step count).
WEIGHTS_FILE = "model.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"


def distribution_strategy(trial=None):
    """``MirroredStrategy`` over the trial's GPUs when it has several, else the default strategy.

    ``trial`` is the objective's trial context (kept for symmetry with the other helpers);
    the GPUs are the ones the worker made visible.
    """
    configure_devices()
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()


def scale_for_replicas(batch_size_per_replica: int, learning_rate: float, strategy_or_replicas=1) -> tuple[int, float]:
    """(global batch size, learning rate) by the linear scaling rule (Goyal et al., 2017).

    With k replicas each keeps its batch size, so the global batch is k times larger and the
    learning rate is multiplied by k as well. Give a strategy or a number of replicas.
    """
    replicas = int(getattr(strategy_or_replicas, "num_replicas_in_sync", strategy_or_replicas))
    return int(batch_size_per_replica) * replicas, float(learning_rate) * replicas


def epoch_callback(trial):
    """A Keras callback that reports each epoch's logs to the trial (stored in /epochs) and
    ends training when the trial is asked to stop (``trial.should_stop()``)."""
    class EpochReporter(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            trial.report(epoch, logs or {})
            if trial.should_stop():
                self.model.stop_training = True

        def on_train_batch_end(self, batch, logs=None):
            if trial.should_stop():
                self.model.stop_training = True

    return EpochReporter()


def _optimizer_state(optimizer) -> list:
    """The optimizer's variables a checkpoint carries: all but the learning rate, which is a hyperparameter (an
    explored learning rate must not be overwritten by the parent's on restore)."""
    return [v for v in optimizer.variables if "learning_rate" not in (getattr(v, "path", "") or v.name)]


def save_checkpoint(trial, model) -> None:
    """Save ``model``'s weights and its optimizer's state into ``trial.checkpoint_dir`` (a pbt segment's own)."""
    import numpy as np

    if trial.checkpoint_dir is None:
        return  # not a pbt segment: nothing will restore it
    directory = Path(trial.checkpoint_dir)
    model.save_weights(directory / WEIGHTS_FILE)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.variables:
        state = _optimizer_state(optimizer)
        np.savez(directory / OPTIMIZER_FILE, *[np.asarray(v.numpy()) for v in state],
                 names=np.array([getattr(v, "path", "") or v.name for v in state]))


def restore_checkpoint(trial, model) -> bool:
    """Load weights and optimizer state from ``trial.restore_from`` into ``model`` (built and compiled with this
    segment's hyperparameters, which stay as given): True, or False for a member's first segment (nothing to load).

    Raises :class:`hpc_hpo.CheckpointError` naming the directory when the checkpoint cannot be read or does not fit
    the model (in pbt, parameters that change the model's shape must be fixed): the segment fails and its member
    goes back to its own last good checkpoint."""
    import numpy as np

    if trial.restore_from is None:
        return False
    directory = Path(trial.restore_from)
    try:
        with warnings.catch_warnings():  # Keras skips the optimizer in the weights file (not built yet): on purpose,
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")  # it has the old lr
            model.load_weights(directory / WEIGHTS_FILE)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and (directory / OPTIMIZER_FILE).is_file():
            optimizer.build(model.trainable_variables)
            stored = np.load(directory / OPTIMIZER_FILE)
            state = _optimizer_state(optimizer)
            arrays = [stored[f"arr_{i}"] for i in range(len(stored.files) - 1)]
            if len(arrays) != len(state):
                raise ValueError(f"the optimizer has {len(state)} state variables, the checkpoint {len(arrays)}")
            for variable, value in zip(state, arrays, strict=True):
                variable.assign(value)
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"cannot restore {directory} (member {trial.member}, epoch {trial.start_epoch}): "
                              f"{type(exc).__name__}: {text}") from None
    return True


def checkpoint_callback(trial):
    """A Keras callback that saves weights and optimizer state into ``trial.checkpoint_dir`` when training ends
    (:func:`save_checkpoint`)."""
    class CheckpointSaver(keras().callbacks.Callback):
        def on_train_end(self, logs=None):
            save_checkpoint(trial, self.model)

    return CheckpointSaver()
