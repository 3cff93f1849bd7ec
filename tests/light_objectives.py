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
