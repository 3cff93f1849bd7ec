"""``python -m hpc_hpo init [DIR]``: a first search of one's own in a minute.

Writes a starter objective (a scikit-learn model on the bundled digits data: it runs anywhere,
and shows where one's own training goes), an experiment file for it, and a SLURM job script
for the shape of the machine it runs on; then says the three commands that run it. Nothing is
overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .jobscript import JobShape, render

OBJECTIVE = '''\
"""My objective: train a model with the parameters hpc_hpo chose, and return the number to optimise.

Replace the body with your own training (TensorFlow, PyTorch, scikit-learn, a simulation...).
Return a float, or a dict with "value" and any other metrics to store with the trial.
`trial` tells the trial's id, rank, GPUs and working directory; trial.report(epoch, {...})
records metrics per epoch (for TensorFlow, hpc_hpo.tf.epoch_callback(trial) does it for you).
"""

from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import cross_val_score

X, y = load_digits(return_X_y=True)  # bundled with scikit-learn: no download
X = X / 16.0


def objective(params, trial):
    model = SGDClassifier(loss=params["loss"], penalty="elasticnet", alpha=params["alpha"],
                          l1_ratio=params["l1_ratio"], max_iter=params["epochs"], tol=None, random_state=0)
    scores = cross_val_score(model, X, y, cv=3)
    return {"value": float(scores.mean()), "spread": float(scores.std())}
'''

EXPERIMENT = '''\
# A first search: 8 quasi-random points, then 12 chosen by Bayesian optimisation.
# Every key is explained in the documentation's experiment file page.

[experiment]
name = "{name}"
objective = "objective.py:objective"   # file.py:function, next to this file
direction = "maximize"                 # the objective returns a validation accuracy
results = "{name}.h5"                  # every trial, readable while the search runs
seed = 1

[space]
alpha    = {{ type = "float", low = 1e-6, high = 1e-1, log = true }}
l1_ratio = {{ type = "float", low = 0.0, high = 1.0 }}
loss     = {{ type = "categorical", choices = ["hinge", "log_loss", "modified_huber"] }}
epochs   = {{ type = "int", low = 5, high = 50 }}

[[phase]]
strategy = "sobol"
trials = 8

[[phase]]
strategy = "bayes"
trials = 12
'''


@dataclass(frozen=True)
class Machine:
    """The shape of the machine ``init`` runs on: its GPUs and CPUs."""

    gpus: int
    cpus: int

    @property
    def ranks(self) -> int:
        """Ranks for a local run: one per GPU, else one per core but one, plus the master."""
        return (self.gpus or max(1, self.cpus - 1)) + 1


def write_starter(directory: Path, machine: Machine, name: str = "my_search") -> list[Path]:
    """Write objective.py, experiment.toml and search.sbatch into ``directory`` (made if needed); never overwrite."""
    files = {directory / "objective.py": OBJECTIVE, directory / "experiment.toml": EXPERIMENT.format(name=name)}
    workers = 1 if machine.gpus else max(1, machine.cpus - 1)
    shape = JobShape(scheduler="slurm", config="experiment.toml", nodes=1, gpus_per_node=machine.gpus,
                     workers=workers, time="01:00:00", job_name=name)
    made_by = ["experiment.toml", "--scheduler", "slurm", "--nodes", "1", "--gpus-per-node", str(machine.gpus),
               *([] if machine.gpus else ["--workers", str(workers)]), "--time", "01:00:00", "--job-name", name]
    files[directory / "search.sbatch"] = render(shape, made_by)
    taken = [path for path in files if path.exists()]
    if taken:
        raise ConfigError(f"init: {taken[0]} already exists; init writes only new files (choose another directory) "
                          f"(got '{directory}')")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"init: cannot write into '{directory}' ({exc.strerror})") from None
    (directory / "search.sbatch").chmod(0o755)
    return list(files)


def next_steps(directory: Path, machine: Machine, name: str = "my_search") -> str:
    """The commands that run the starter: here in one process, here on every core or GPU, and on SLURM."""
    where = "" if str(directory) in ("", ".") else f"cd {directory}\n"
    place = f"{machine.gpus} GPU{'s' if machine.gpus != 1 else ''}" if machine.gpus else f"{machine.cpus} cores"
    return (f"{where}python -m hpc_hpo run experiment.toml                   # try it here, in one process (seconds)\n"
            f"mpirun -n {machine.ranks} python -m hpc_hpo run experiment.toml --overwrite   "
            f"# the master and a worker per {'GPU' if machine.gpus else 'core'} ({place} here)\n"
            f"sbatch search.sbatch                                    # on a SLURM cluster; it resumes until done\n"
            f"then: python -m hpc_hpo report {name}.h5 (plots), python -m hpc_hpo best {name}.h5\n")
