"""The package version, kept apart so setup.py can read it without importing hpc_hpo."""

__version__ = "0.1.0"
