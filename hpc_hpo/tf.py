"""TensorFlow helpers for objectives. TensorFlow is imported here lazily, never by the rest of hpc_hpo.

In an objective::

    from hpc_hpo import tf as hpo_tf

    strategy = hpo_tf.distribution_strategy(trial)      # MirroredStrategy over the trial's GPUs
    batch, lr = hpo_tf.scale_for_replicas(params["batch_size"], params["learning_rate"], strategy)
    with strategy.scope():
        model = ...
    model.fit(..., callbacks=[hpo_tf.epoch_callback(trial)])   # per-epoch metrics into /epochs

The worker has already made only the trial's GPUs visible and turned on memory growth
(:mod:`hpc_hpo.devices`); :func:`configure_devices` adds the memory cap of a shared GPU
(``workers_per_gpu``) and is called for you.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from .devices import FRACTION_VAR, GPUS_VAR

log = logging.getLogger(__name__)

#: Share of a GPU's memory kept free for the CUDA context and fragmentation when capping.
HEADROOM = 0.9

_configured = False


def keras():
    try:
        import keras  # Keras 3, with TensorFlow >= 2.16
    except ImportError:  # pragma: no cover - older TensorFlow
        from tensorflow import keras
    return keras


def configure_devices() -> None:
    """Cap each visible GPU to this worker's share of its memory (``workers_per_gpu = m``: ~1/m).

    Must run before TensorFlow first uses a GPU; idempotent. Without a share to enforce,
    memory growth (set by the worker through ``TF_FORCE_GPU_ALLOW_GROWTH``) is all there is.
    """
    global _configured
    if _configured:
        return
    _configured = True
    fraction = float(os.environ.get(FRACTION_VAR) or 1.0)
    if fraction >= 1.0:
        return
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    total = gpu_memory_mb()
    for gpu in gpus:
        try:
            if total is None:
                log.warning("cannot read the GPU's memory size (no nvidia-smi): memory growth instead of a cap of "
                            "%.0f%%", 100 * fraction)
                tf.config.experimental.set_memory_growth(gpu, True)
            else:
                limit = int(total * fraction * HEADROOM)
                tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
        except (RuntimeError, ValueError) as exc:
            log.warning("cannot cap GPU memory: %s", exc)


def gpu_memory_mb() -> float | None:
    """Total memory (MiB) of the first GPU of this worker, from ``nvidia-smi``; None if unknown."""
    ids = [i for i in os.environ.get(GPUS_VAR, "").split(",") if i]
    if not ids or not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and ids[0] in (parts[0], parts[1]):
            return float(parts[2])
    return None


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


def clear_session() -> None:
    """Forget the models of the last trial, so a reused trial process does not grow."""
    keras().backend.clear_session()
