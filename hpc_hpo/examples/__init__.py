"""Objectives of the built-in experiments (installed with the package, so they run anywhere)."""
