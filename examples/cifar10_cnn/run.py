"""Run the CIFAR-10 study on data in DIR: ``mpirun -n 9 python examples/cifar10_cnn/run.py --data DIR``.

Any other option goes to ``hpc_hpo run`` (``--trials``, ``--results``, ``--overwrite``...).
This launcher stays light (no TensorFlow): it only puts DIR in ``CIFAR10_DATA`` for the
trial processes, which load the data when they import ``cifar10_cnn.py``.
"""

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Run the CIFAR-10 CNN study (PHS paper) with hpc_hpo.")
    parser.add_argument("--data", required=True, help="directory with data_batch_1..5 and test_batch")
    parser.add_argument("--config", default=str(HERE / "experiment.toml"), help="experiment file")
    args, rest = parser.parse_known_args(argv)
    os.environ["CIFAR10_DATA"] = str(Path(args.data).resolve())
    from hpc_hpo.cli import main as hpc_hpo_main

    return hpc_hpo_main(["run", args.config, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
