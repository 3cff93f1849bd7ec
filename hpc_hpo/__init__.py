"""hpc_hpo: hyperparameter optimisation on HPC clusters over MPI, with every result in one HDF5 file.

Run ``mpirun -n 9 python -m hpc_hpo run experiment.toml``: rank 0 is a light master, the
other ranks are workers that evaluate the objective. Importing this package never starts
MPI and never imports TensorFlow.
"""

from ._version import __version__
from .config import Config, load_config
from .errors import ConfigError, HpoError, ObjectiveImportError, StoreError
from .export import Loaded, load
from .objective import TrialContext
from .store import Results, read_results

__all__ = [
    "Config",
    "ConfigError",
    "HpoError",
    "Loaded",
    "ObjectiveImportError",
    "Results",
    "StoreError",
    "TrialContext",
    "__version__",
    "load",
    "load_config",
    "read_results",
]
