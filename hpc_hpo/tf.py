"""TensorFlow helpers for objectives. TensorFlow is imported here lazily, never by the rest of hpc_hpo.

In an objective::

    from hpc_hpo import tf as hpo_tf

    strategy = hpo_tf.distribution_strategy(trial)      # MirroredStrategy over the trial's GPUs
    batch, lr = hpo_tf.scale_for_replicas(params["batch_size"], params["learning_rate"], strategy)
    with strategy.scope():
        model = ...
    model.fit(..., callbacks=[hpo_tf.epoch_callback(trial)])   # per-epoch metrics into /epochs

The worker has already made only the trial's GPUs visible and turned on memory growth
(:mod:`hpc_hpo.trials.devices`); :func:`configure_devices` adds the memory cap of a shared GPU
(``workers_per_gpu``) and is called for you. It lives with the trial process's own housekeeping
(:mod:`hpc_hpo.trials.frameworks`) and is re-exported here, with ``keras`` and ``clear_session``.
"""

from __future__ import annotations

from .trials.frameworks import clear_session, configure_devices, gpu_memory_mb, keras

__all__ = ["clear_session", "configure_devices", "distribution_strategy", "epoch_callback", "gpu_memory_mb", "keras",
           "scale_for_replicas"]


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
