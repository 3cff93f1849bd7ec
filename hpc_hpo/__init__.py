"""hpc_hpo: hyperparameter optimisation on HPC clusters over MPI, with every result in one HDF5 file.

Run ``mpirun -n 9 python -m hpc_hpo run experiment.toml``, or call :func:`optimize` from a script run
with ``mpirun -n 9 python search.py``: rank 0 is a light master, the other ranks are workers that
evaluate the objective. Importing this package never starts MPI and never imports TensorFlow.
"""

from ._version import __version__
from .api import Trial, optimize
from .config import Config, load_config
from .errors import CheckpointError, ConfigError, HpoError, ObjectiveImportError, SearchStoppedError, StoreError
from .outputs.export import Loaded, load
from .results.reader import Results, read_results
from .trials.objective import TrialContext

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "HpoError",
    "Loaded",
    "ObjectiveImportError",
    "Results",
    "SearchStoppedError",
    "StoreError",
    "Trial",
    "TrialContext",
    "__version__",
    "load",
    "load_config",
    "optimize",
    "read_results",
]
