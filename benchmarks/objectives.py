"""Objectives for the benchmarks: one that returns at once, one that sleeps like a training run."""

import time


def null(params):
    return 0.0


def sleep(params):
    time.sleep(params["sleep"])
    return params["x"]
