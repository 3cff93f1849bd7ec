"""Light objectives without TensorFlow for the tests, imported by module name ("light_objectives:griewank")."""

from __future__ import annotations

import math
import time


def griewank(params: dict) -> float:
    """The 2-D Griewank function (minimum 0 at x = y = 0), as in the PHS quickstart.

    ``delay`` (seconds, optional) stands in for training time, so that the workers visibly
    share the work.
    """
    x, y = params["x"], params["y"]
    time.sleep(params.get("delay", 0.0))
    return 1.0 + (x * x + y * y) / 4000.0 - math.cos(x) * math.cos(y / math.sqrt(2.0))


def curve_quality(params: dict, epochs: int) -> float:
    """The noise-free loss of :func:`learning_curve` after ``epochs`` epochs (lower is better).

    The final quality is the Branin function of (x, y) scaled to [0, ~1] (minimum 0.398/300);
    ``lr`` sets how fast a curve gets there, so that early rankings are informative but not
    perfect: a fast learner with a poor end can lead a slow one with a good end for a while.
    """
    x, y, lr = params["x"], params["y"], params["lr"]
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    u, v = 15 * x - 5, 15 * y
    final = (a * (v - b * u * u + c * u - r) ** 2 + s * (1 - t) * math.cos(u) + s) / 300.0
    speed = 0.15 + 0.6 * (math.log10(lr) + 4) / 3  # lr in [1e-4, 1e-1]: 0.15 .. 0.75 per epoch
    return final + 0.6 * math.exp(-speed * epochs)


def learning_curve(params: dict, trial) -> float:
    """A training run of ``trial.max_epochs`` epochs (27 without a stopping rule) that reports ``val_loss``
    after each and ends early when asked; ``delay`` seconds per epoch, ``noise`` its standard deviation."""
    import numpy as np

    rng = np.random.default_rng(trial.seed)
    loss = math.inf
    for epoch in range(trial.max_epochs or 27):
        time.sleep(params.get("delay", 0.0))
        loss = curve_quality(params, epoch + 1) + params.get("noise", 0.0) * float(rng.normal())
        trial.report(epoch, {"val_loss": loss})
        if trial.should_stop():
            break
    return loss


def toy_step(loss: float, lr: float) -> float:
    """One epoch of the PBT toy: a fast learning rate closes the gap quickly but settles high (at ``lr``), a slow
    one settles low but slowly, so the best learning rate falls as training goes on and no fixed one is best."""
    return loss * (1.0 - lr) + lr * lr


def pbt_toy(params: dict, trial) -> float:
    """A training run of the PBT toy: its state (the loss) is kept in ``state.json`` in the checkpoint directory.

    In a pbt segment it trains epochs ``trial.start_epoch .. trial.end_epoch - 1`` from ``trial.restore_from``;
    outside pbt it trains ``params["epochs"]`` from the start. ``delay``: seconds per epoch (``slow_delay`` for member
    ``slow_member``). Returns the loss, and
    (metric ``restored``) the trial whose checkpoint it restored (-1: none), as that checkpoint says."""
    import json
    import os

    loss, epoch, restored = 1.0, 0, -1
    if trial.restore_from is not None:
        with open(os.path.join(trial.restore_from, "state.json")) as file:
            state = json.load(file)
        loss, epoch, restored = state["loss"], state["epoch"], state["trial"]
        assert epoch == trial.start_epoch, f"restored epoch {epoch}, but the segment starts at {trial.start_epoch}"
    end = trial.end_epoch if trial.end_epoch is not None else params["epochs"]
    slow = trial.member is not None and trial.member == params.get("slow_member", -1)
    for epoch in range(trial.start_epoch, end):
        time.sleep(params.get("slow_delay", 0.0) if slow else params.get("delay", 0.0))
        loss = toy_step(loss, params["lr"])
        trial.report(epoch, {"loss": loss})
    if trial.checkpoint_dir is not None:
        with open(os.path.join(trial.checkpoint_dir, "state.json"), "w") as file:
            json.dump({"loss": loss, "epoch": end, "trial": trial.trial_id}, file)
    return {"value": loss, "restored": restored}
