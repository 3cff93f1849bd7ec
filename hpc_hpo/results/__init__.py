"""The HDF5 results file: one per experiment, written by the master only, readable by anyone during the run.

Layout (``FORMAT_VERSION`` 6; every string is fixed-length UTF-8 bytes, because HDF5's
single-writer/multiple-reader mode (SWMR) does not support variable-length data):

    /trials         compound, one row per finished trial, appended in order of completion
    /running        compound, the same columns but error, one slot per worker; status "" = free slot
    /metrics        float64 (rows of /trials, metrics), NaN where a trial lacks a metric
    /metric_names   names of the /metrics columns
    /epochs         compound (trial_id, epoch, name, value, time): what trials reported per epoch
    /runs           one row per run (job) that wrote the file: times, ranks, exit code, cost
    attributes      format_version, hpc_hpo_version, config (TOML), space (JSON), seed, ...

:mod:`layout` owns the columns and datasets, :mod:`writer` the master's writer, :mod:`reader`
the readers (SWMR, also while a job writes), :mod:`paths` the checks of a results path before
a run, :mod:`resume` continuing a file (and recovering one whose writer was killed),
:mod:`lockfile` the one-job-per-file lock, and :mod:`records` the trial record that becomes a row.
This package's ``__init__`` imports nothing: workers use :mod:`records` without loading h5py.
"""
