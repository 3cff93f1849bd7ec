"""The command line: ``python -m hpc_hpo run|check|status|export|report|best|jobscript``.

``run`` is the only command that may start MPI; it picks the role of this rank (rank 0 is
the master, every other rank a worker; with one rank, one process plays both). Errors
meant for the user are one line, ``hpc_hpo: error: <where>: <rule> (got <value>)``,
printed once (by rank 0), with exit code 2 on every rank.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from ._version import __version__
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, HpoError
from .logs import print_error

log = logging.getLogger("hpc_hpo.cli")

EPILOG = """\
exit codes: 0 finished; 1 the run failed (for example the first trials all failed);
2 bad input (command line, experiment file, results path, objective); 3 stopped early,
resumable (time limit, or SIGTERM/SIGUSR1/SIGINT): finished trials are stored, run again
with --resume; 130 a second stop signal ended it at once (--resume still works).

examples:
  mpirun -n 9 python -m hpc_hpo run experiment.toml   # 1 master + 8 workers
  python -m hpc_hpo run                                # built-in default experiment (Keras MLP), one process
  mpirun -n 9 python -m hpc_hpo run experiment.toml --resume --time-limit 11:55:00   # in a job script
  python -m hpc_hpo status results.h5                  # also while the search runs
  python -m hpc_hpo export results.h5 -o results.csv
  python -m hpc_hpo best results.h5 --format json
  python -m hpc_hpo report results.h5 -o report/      # PNG plots and report/report.html, also while it runs
  python -m hpc_hpo export results.h5 --format tensorboard -o tb/ && tensorboard --logdir tb/
  python -m hpc_hpo jobscript experiment.toml --scheduler slurm --nodes 2 --gpus-per-node 4 -o job.sbatch
"""


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds (got {text!r})") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text!r})")
    return value


def _seconds_or_off(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds (got {text!r})") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 turns it off) (got {text!r})")
    return value


def _progress_every(text: str):
    from .run.progress import ProgressInterval

    try:
        return ProgressInterval.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    from .batch.walltime import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text!r})")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2, like every other input error."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-parser per command, each built by its own function below."""
    parser = _Parser(prog="python -m hpc_hpo", description="Hyperparameter optimisation over MPI, results in HDF5.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hpc_hpo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _add_run(commands)
    _add_check(commands)
    _add_status(commands)
    _add_export(commands)
    _add_report(commands)
    _add_best(commands)
    _add_jobscript(commands)
    _add_init(commands)
    return parser


def _add_run(commands) -> None:
    run = commands.add_parser(
        "run", help="run an experiment (under mpirun: rank 0 is the master, the others workers)",
        description="Run the experiment in CONFIG (the built-in default, a Keras MLP on the digits data, if none). "
                    "Under mpirun rank 0 is the master and every other rank a worker; with one rank one process "
                    "does both.")
    run.add_argument("config", nargs="?", help="experiment file (TOML); omit for the built-in default experiment")
    run.add_argument("--results", metavar="PATH", help="results file (overrides experiment.results)")
    run.add_argument("--seed", type=int, metavar="N", help="random seed (overrides experiment.seed)")
    run.add_argument("--trials", type=int, metavar="N", help="number of trials of the last phase (overrides its 'trials')")
    run.add_argument("--overwrite", action="store_true", help="replace an existing results file (refused otherwise)")
    run.add_argument("--resume", action="store_true",
                     help="continue the results file if it exists (start it if not): finished trials are kept, trials "
                          "that were running when the last job ended run again first; --trials may raise the budget")
    run.add_argument("--force", action="store_true",
                     help="with --resume: continue even if the space, objective, direction, seed or phases changed "
                          "(the changes are logged)")
    run.add_argument("--time-limit", type=_duration, metavar="DURATION",
                     help="this job's wall time (seconds, HH:MM:SS or D-HH:MM:SS); default: from SLURM "
                          "(SLURM_JOB_END_TIME, squeue) or PBS (PBS_WALLTIME). No trial starts that would not end "
                          "before the limit less the margin; at that point the job stops and exits 3 (resumable)")
    run.add_argument("--time-margin", type=_duration, default=60.0, metavar="DURATION",
                     help="time kept free before the job's end for closing the file and resubmitting (default: 60 s)")
    run.add_argument("--startup-timeout", type=_seconds_or_off, metavar="SECONDS",
                     help="seconds every rank may take to start and import the objective, and every trial process "
                          "to start (overrides [workers] startup_timeout, default 600; 0: no limit). Past it at "
                          "start-up the job ends with exit code 2 naming the late ranks; later, a worker whose trial "
                          "process cannot start 3 times in a row is retired and the others go on")
    run.add_argument("--progress-every", type=_progress_every, default="10", metavar="SECONDS|Nt",
                     help="a progress line every SECONDS (default: 10), or after every N finished trials with Nt "
                          "(25t; at most one line every 2 s)")
    run.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto",
                     help="a progress bar (bar), or a summary line at each --progress-every (lines); "
                          "default auto: the bar when stderr is a terminal")
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="more log output: -v logs every trial, -vv also the workers' debug lines")
    run.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def _add_check(commands) -> None:
    check = commands.add_parser(
        "check", help="validate an experiment file and print it resolved, without running it",
        description="Validate CONFIG (or the built-in default), import its objective, and print the resolved "
                    "experiment as TOML.")
    check.add_argument("config", nargs="?", help="experiment file (TOML); omit for the built-in default")
    check.add_argument("--no-import", action="store_true", help="do not import the objective")


def _add_status(commands) -> None:
    status = commands.add_parser("status", help="show how a search stands (works while it runs)",
                                 description="Counts by status, the best trial, running trials and the runs so far.")
    status.add_argument("results", help="results file (.h5)")
    status.add_argument("--watch", type=_positive_seconds, nargs="?", const=5.0, metavar="SECONDS",
                        help="show it again every SECONDS (default 5) until the run ends or Ctrl-C")
    status.add_argument("--json", action="store_true",
                        help="print it as one JSON object (with --watch, one line of JSON each time), for scripts")


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export", help="write the trials of a results file as CSV, JSON, Parquet, or for TensorBoard's HParams",
        description="One row per trial: id, status, value, parameters (param_*), metrics (metric_*), phase, strategy, "
                    "rank, host, times, epochs trained, error. --format tensorboard -o DIR writes the search for TensorBoard's "
                    "HParams dashboard instead (tensorboard --logdir DIR): a run per trial with its parameters, "
                    "value, metrics and per-epoch curves; needs the tensorboard package.")
    export.add_argument("results", help="results file (.h5)")
    export.add_argument("--format", choices=("csv", "json", "parquet", "tensorboard"),
                        help="output format (default: from -o, else csv); parquet needs pandas and pyarrow and -o; "
                             "tensorboard needs the tensorboard package and -o DIR")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (DIR for tensorboard) instead of standard output")


def _add_report(commands) -> None:
    report = commands.add_parser(
        "report", help="plots of a results file as PNG files and one self-contained HTML page (also while it runs)",
        description="Write PNG plots and report.html (every plot embedded, a summary, the best parameters, the best "
                    "trials, failures) into DIR: result evolution, two-parameter plots with an interpolated contour, "
                    "parallel coordinates, worker timeline, learning curves (when trials reported epochs), "
                    "parameter importance and the value against each parameter. Works while the search runs; --watch "
                    "keeps it up to date. Needs matplotlib.")
    report.add_argument("results", help="results file (.h5)")
    report.add_argument("-o", "--output", metavar="DIR", help="directory for the report (default: <results>-report)")
    report.add_argument("--pairs", nargs="+", metavar="A:B",
                        help="the two-parameter plots to draw, e.g. --pairs lr:units lr:dropout, or --pairs all "
                             "(default: every pair of up to 6 parameters; with more, the pairs of the 6 most important)")
    report.add_argument("--no-contour", action="store_true",
                        help="no interpolated value contour in the two-parameter plots")
    report.add_argument("--watch", type=_positive_seconds, nargs="?", const=30.0, metavar="SECONDS",
                        help="a live report: write it again every SECONDS (default 30) until the search ends (or "
                             "Ctrl-C); meanwhile the page reloads itself as often")


def _add_best(commands) -> None:
    best = commands.add_parser("best", help="print the best trial's parameters as TOML or JSON, ready to paste",
                               description="The parameters of the best finished trial (also while the search runs).")
    best.add_argument("results", help="results file (.h5)")
    best.add_argument("--format", choices=("toml", "json"), default="toml", help="output format (default toml)")


def _add_jobscript(commands) -> None:
    job = commands.add_parser(
        "jobscript", help="print a SLURM or PBS job script that runs CONFIG and resubmits itself until done",
        description="A job script for one shape of allocation: one MPI rank per GPU plus the master, "
                    "`run CONFIG --resume`, the pre-timeout signal, and a chain of jobs (each queues the next with a "
                    "dependency, cancelled once the search is complete).")
    job.add_argument("config", help="experiment file, as the job will see it (relative to the submit directory)")
    job.add_argument("--scheduler", required=True, choices=("slurm", "pbs"), help="batch system")
    job.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    job.add_argument("--gpus-per-node", type=int, default=4, metavar="G", help="GPUs per node (default 4; 0: CPU only)")
    job.add_argument("--workers", type=int, default=1, metavar="W",
                     help="with --gpus-per-node 0 (CPU nodes): workers per node (default 1)")
    job.add_argument("--time", default="12:00:00", metavar="HH:MM:SS", help="wall time of each job (default 12:00:00)")
    job.add_argument("--gpus-per-trial", type=int, default=1, metavar="K",
                     help="GPUs per trial (must match the experiment's [workers] gpus_per_trial; default 1)")
    job.add_argument("--launcher", choices=("mpirun", "srun", "mpiexec"),
                     help="how to start the ranks (default: mpirun on SLURM, mpiexec on PBS)")
    job.add_argument("--launcher-args", default="", metavar="ARGS",
                     help="extra arguments for the launcher; one that starts with a dash needs the = form: "
                          "--launcher-args=--mpi=pmi2")
    job.add_argument("--max-jobs", type=int, default=10, metavar="N", help="most jobs in the chain (default 10)")
    job.add_argument("--job-name", default="hpc_hpo", metavar="NAME", help="job name (default hpc_hpo)")
    job.add_argument("--signal-lead", type=int, default=300, metavar="SECONDS",
                     help="SLURM: SIGUSR1 this long before the time limit (default 300)")
    job.add_argument("--time-margin", type=int, default=120, metavar="SECONDS",
                     help="hpc_hpo stops handing out trials this long before the end (default 120)")
    job.add_argument("--python", default="python", metavar="PATH", help="the Python that runs hpc_hpo (default python)")
    job.add_argument("-o", "--output", metavar="FILE", help="write to FILE (made executable) instead of standard output")


def _add_init(commands) -> None:
    init = commands.add_parser(
        "init", help="write a starter objective, experiment file and SLURM job script into DIR, and say how to run them",
        description="Write objective.py (a scikit-learn model on the bundled digits data: replace its body with your "
                    "training), experiment.toml (8 Sobol then 12 Bayesian trials) and search.sbatch (a SLURM job "
                    "script for this machine's GPUs or cores) into DIR, never overwriting a file; then print the "
                    "commands that run them.")
    init.add_argument("directory", nargs="?", default=".", metavar="DIR", help="where to write (default: here)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hpc_hpo``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        return _usage_error(str(exc), argv)
    args.argv = argv[1:]
    if args.command == "run":
        if args.config is None and importlib.util.find_spec("tensorflow") is None:
            return _usage_error("run: the built-in example experiment (a Keras MLP) needs TensorFlow: pip install "
                                "'hpc_hpo[tf]' ('hpc_hpo[tf-cpu]' without a GPU), or start a search of your own with "
                                "python -m hpc_hpo init", argv)
        return _run(args)
    try:
        handlers = {"check": _check, "status": _status, "export": _export, "report": _report, "best": _best,
                    "jobscript": _jobscript, "init": _init}
        return handlers[args.command](args)
    except HpoError as exc:
        print_error(str(exc))
        return exc.exit_code


def _usage_error(message: str, argv: list[str]) -> int:
    """Bad command line: say it once, from rank 0 when under mpirun, and exit 2 everywhere."""
    from .run.comm import init_mpi, launched_by_mpi

    if argv[:1] == ["run"] and launched_by_mpi():
        MPI = init_mpi()  # noqa: N806 - so that only rank 0 speaks and every rank exits cleanly
        if MPI.COMM_WORLD.Get_rank() == 0:
            print_error(message)
        MPI.Finalize()
    else:
        print_error(message)
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from .run.launch import launch
    from .run.options import RunOptions

    options = RunOptions(config_path=args.config, results=args.results, seed=args.seed, trials=args.trials,
                         overwrite=args.overwrite, resume=args.resume, force=args.force,
                         time_limit=args.time_limit, time_margin=args.time_margin,
                         progress_every=args.progress_every, progress=args.progress,
                         startup_timeout=args.startup_timeout)
    ended, _ = launch(options, -1 if args.quiet else args.verbose)
    return ended.code


def _phase_plan(phase) -> str:
    """``random 20``; ``pbt: 8 members x 10 segments of 4 epochs`` (a member per worker when not given)."""
    if phase.strategy != "pbt":
        return f"{phase.label} {phase.trials}"
    o = phase.options
    members = f"{o['population']} members" if o["population"] else "one member per worker"
    segments = -(-o["epochs"] // o["interval"])
    total = f" = {phase.trials} segments" if phase.trials else ""
    return (f"{phase.label}: {members} x {segments} segments of {o['interval']} epoch{'s' if o['interval'] > 1 else ''}"
            f"{total}, {o['mode']}, explore by {o['explore']}")


def _check(args: argparse.Namespace) -> int:
    from .config import load_config, to_toml
    from .trials.objective import load_objective

    config = load_config(args.config)
    if not args.no_import:
        load_objective(config.experiment.objective, config.base_dir)
    sys.stdout.write(to_toml(config))
    phases = ", ".join(_phase_plan(p) for p in config.phases)
    budget = f"{config.budget} trials" if all(p.trials for p in config.phases) else "trials"
    print(f"# ok: {budget} ({phases}){_stopping_plan(config)}", file=sys.stderr)
    return EXIT_OK


def _stopping_plan(config) -> str:
    """``; asha on val_loss judges after 1, 3, 9 epochs of 27``: where the stopping rule will judge, for ``check``."""
    s = config.stopping
    if not s.active:
        return ""
    from .search.stopping import make_rule

    rule = make_rule(s.rule, s.min_epochs, s.max_epochs, s.reduction_factor, True, s.brackets)
    where = ", ".join(map(str, rule.ladder[:8])) + (", ..." if len(rule.ladder) > 8 else "")
    brackets = f" ({rule.brackets} brackets)" if s.rule == "hyperband" else ""
    return f"; {s.rule}{brackets} on {s.metric} judges after {where or 'no'} epochs of {s.max_epochs}"


def _status(args: argparse.Namespace) -> int:
    import json
    import time

    from .outputs.summary import MAYBE_RUNNING, RUNNING_NOW, run_state, status, status_text
    from .results.reader import read_results

    while True:
        results = read_results(args.results)
        if args.json:
            state = status(results)
            print(json.dumps(state, indent=None if args.watch else 2, allow_nan=False), flush=True)
            state = state["state"]
        else:
            if args.watch and sys.stdout.isatty():
                sys.stdout.write("\033[H\033[J")  # clear the terminal: a live view, not a scroll
            print(status_text(results), flush=True)
            state = run_state(results)
        if not args.watch or state not in (RUNNING_NOW, MAYBE_RUNNING):
            return EXIT_OK
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return EXIT_OK
        if not args.json:
            print(flush=True)


def _export(args: argparse.Namespace) -> int:
    from .outputs.export import export
    from .results.reader import read_results

    fmt = args.format or (Path(args.output).suffix.lstrip(".").lower() if args.output else "csv")
    if fmt not in ("csv", "json", "parquet", "tensorboard"):
        raise ConfigError(f"--format: cannot tell the format from '{args.output}'; give --format csv, json, parquet "
                          f"or tensorboard")
    if fmt == "parquet":
        return _export_parquet(args)
    if fmt == "tensorboard":
        return _export_tensorboard(args)
    text = export(read_results(args.results), fmt)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _export_tensorboard(args: argparse.Namespace) -> int:
    from .outputs.tensorboard_export import export_tensorboard
    from .results.reader import read_results

    if not args.output:
        raise ConfigError("--format tensorboard: needs -o DIR, the directory to give to tensorboard --logdir")
    results = read_results(args.results)
    count = export_tensorboard(results, args.output)
    print(f"{count} trials written to {args.output}; view them with: tensorboard --logdir {args.output}", file=sys.stderr)
    return EXIT_OK


def _export_parquet(args: argparse.Namespace) -> int:
    import importlib.util

    from .outputs.export import load

    if not args.output:
        raise ConfigError("--format parquet: needs -o FILE (Parquet is binary)")
    missing = [m for m in ("pandas", "pyarrow") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--format parquet: needs {' and '.join(missing)} (pip install {' '.join(missing)}); "
                          f"csv and json need nothing")
    load(args.results).trials.to_parquet(args.output, index=False)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    import time

    from .outputs.report import make_report

    while True:
        started = time.monotonic()
        try:
            report = make_report(args.results, args.output, pairs=args.pairs, contour=not args.no_contour,
                                 refresh=args.watch)
            if not args.watch:
                break
            if not report.running:
                print(f"report: the search has ended ({report.finished} trials); {report.html} is final",
                      file=sys.stderr)
                break
            print(f"report: {report.html} at {time.strftime('%H:%M:%S')}, {report.finished} trials finished",
                  file=sys.stderr, flush=True)
            time.sleep(max(0.0, args.watch - (time.monotonic() - started)))
        except KeyboardInterrupt:  # --watch ends with Ctrl-C; every file it wrote is whole (written, then renamed)
            return EXIT_OK
    for plot in report.plots:
        print(plot.path)
    for note in report.notes:
        print(f"# left out: {note}", file=sys.stderr)
    print(report.html)
    return EXIT_OK


def _best(args: argparse.Namespace) -> int:
    from .outputs.export import best_text
    from .results.reader import read_results

    text = best_text(read_results(args.results), args.format)
    if not text:
        print_error(f"{args.results}: no trial has finished successfully yet")
        return EXIT_FAILED
    sys.stdout.write(text)
    return EXIT_OK


def _jobscript(args: argparse.Namespace) -> int:
    from .batch.jobscript import JobShape, render

    shape = JobShape(scheduler=args.scheduler, config=args.config, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                     workers=args.workers, time=args.time, gpus_per_trial=args.gpus_per_trial, launcher=args.launcher or "",
                     launcher_args=args.launcher_args, max_jobs=args.max_jobs, job_name=args.job_name,
                     signal_lead=args.signal_lead, time_margin=args.time_margin, python=args.python)
    text = render(shape, [a for a in args.argv if not a.startswith(("-o", "--output")) and a != args.output])
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).chmod(0o755)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _init(args: argparse.Namespace) -> int:
    from .batch.starter import Machine, next_steps, write_starter
    from .trials.devices import discover_gpus, usable_cpus

    machine = Machine(gpus=len(discover_gpus()[0]), cpus=usable_cpus())
    directory = Path(args.directory)
    for path in write_starter(directory, machine):
        print(f"wrote {path}", file=sys.stderr)
    sys.stdout.write(next_steps(directory, machine))
    return EXIT_OK


def console_main() -> None:
    """The ``hpc-hpo`` console script."""
    sys.exit(main())
