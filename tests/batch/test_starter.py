"""``hpc_hpo init``: the files it writes run as the commands it prints say, and nothing is overwritten."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from hpc_hpo.batch.starter import Machine, next_steps, write_starter
from hpc_hpo.results.reader import read_results
from hpc_hpo.trials.devices import discover_gpus, usable_cpus

from conftest import hpo, mpirun_command, run_command


def printed_commands(stdout: str) -> list[str]:
    return [line.split("#")[0].strip() for line in stdout.splitlines() if line.startswith(("python", "mpirun", "sbatch"))]


def test_init_writes_a_first_search_that_runs_as_it_says(tmp_path):
    out = hpo(["init", "first"], tmp_path)
    assert out.returncode == 0, out.output
    directory = tmp_path / "first"
    assert sorted(p.name for p in directory.iterdir()) == ["experiment.toml", "objective.py", "search.sbatch"]
    assert out.stdout.startswith("cd first\n")
    local, parallel, batch = printed_commands(out.stdout)
    assert local == "python -m hpc_hpo run experiment.toml" and batch == "sbatch search.sbatch"
    ranks = int(re.fullmatch(r"mpirun -n (\d+) python -m hpc_hpo run experiment.toml --overwrite", parallel)[1])
    assert ranks == Machine(len(discover_gpus()[0]), usable_cpus()).ranks  # this machine's shape

    assert hpo(["check", "experiment.toml"], directory).returncode == 0
    first = run_command([sys.executable, *local.split()[1:]], directory, timeout=180)
    assert first.returncode == 0, first.output
    rows = read_results(directory / "my_search.h5").records()
    assert len(rows) == 20 and all(r["status"] == "done" for r in rows)
    assert max(r["value"] for r in rows) > 0.8  # validation accuracy on digits
    again = run_command(mpirun_command(ranks, parallel.split()[6:]), directory, timeout=240)  # after "-m hpc_hpo"
    assert again.returncode == 0, again.output
    assert len(read_results(directory / "my_search.h5").records()) == 20

    script = (directory / "search.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=" in script and "python -m hpc_hpo run experiment.toml --resume" in script
    assert subprocess.run(["bash", "-n", str(directory / "search.sbatch")]).returncode == 0
    if shutil.which("shellcheck") or os.environ.get("HPC_HPO_TEST_SLURM") == "1":
        checked = subprocess.run(["shellcheck", "--severity=style", str(directory / "search.sbatch")],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout


def test_init_never_overwrites(tmp_path):
    (tmp_path / "experiment.toml").write_text("mine")
    out = hpo(["init"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == ("hpc_hpo: error: init: experiment.toml already exists; init writes only new files "
                                  "(choose another directory) (got '.')")
    assert (tmp_path / "experiment.toml").read_text() == "mine" and not (tmp_path / "objective.py").exists()


@pytest.mark.parametrize("gpus, cpus, ranks, line", [
    (4, 64, 5, "#SBATCH --gpus-per-node=4"),
    (0, 16, 16, "#SBATCH --ntasks-per-node=16"),  # one node: 15 workers and the master
])
def test_the_job_script_fits_the_machine(tmp_path, gpus, cpus, ranks, line):
    machine = Machine(gpus=gpus, cpus=cpus)
    write_starter(tmp_path, machine)
    assert line in (tmp_path / "search.sbatch").read_text().splitlines()
    assert f"mpirun -n {ranks} python" in next_steps(tmp_path, machine)
