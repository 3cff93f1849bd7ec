"""``python -m hpc_hpo``: see :mod:`hpc_hpo.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
