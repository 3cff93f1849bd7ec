"""What a trial process does for the deep-learning framework its objective uses: GPU memory caps and clean-up.

TensorFlow (or Keras) is imported lazily, and only when the objective has imported it already;
the master never comes here. :mod:`hpc_hpo.tf` re-exports these for objectives.
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


def clear_session() -> None:
    """Forget the models of the last trial, so a reused trial process does not grow."""
    keras().backend.clear_session()
