"""Gaussian-process Bayesian optimisation, computed on the worker that evaluates the point.

Plain numpy and scipy; never imported by the master. Notation used across the modules:

    n   observations (distinct points; repeats are averaged)
    p   pending points: trials running elsewhere, added as fantasies
    m   query points (candidates of the acquisition)
    d   columns of the encoding: one per float or int parameter, one per choice of a categorical
    X   (n, d) encoded points in [0, 1]^d        y   (n,) standardised values, to be minimised (the worst at 0)
    theta   (d + 2,) log length scales, log signal variance, log noise variance

:mod:`encoding` maps points of the space to X and back, :mod:`warping` turns observed values
into y, :mod:`kernel` is the Matern-5/2 kernel, :mod:`model` the GP, :mod:`acquisition`
EI/PI/UCB, :mod:`optimize` maximises the acquisition, and :mod:`suggester` is the worker's
replica of the history that puts them together.
"""
