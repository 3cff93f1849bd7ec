"""Which GPUs, and how many CPU threads, each worker uses.

Three steps, one per role:

1. every rank describes where it runs (:class:`Place`, sent to the master in its first message):
   its host, the CPUs it may use, and the GPUs it sees (:func:`discover_gpus`: an inherited
   ``CUDA_VISIBLE_DEVICES``/``ROCR_VISIBLE_DEVICES``/``HIP_VISIBLE_DEVICES`` first, else
   ``/proc/driver/nvidia/gpus``, else ``nvidia-smi -L``; TensorFlow is never imported); the
   master groups the ranks into nodes by host name (:func:`on_nodes`). No collective MPI call
   is involved, so a rank that hangs while starting cannot hold the others in one;
2. the master assigns (:func:`assign`, pure): the workers of a node share its GPUs without
   overlap, the master takes none; ``gpus_per_trial = k`` groups k ranks of a node around k
   GPUs (the group leader trains, the other ranks take no trials); ``workers_per_gpu = m``
   lets m workers share one GPU, each capped to about 1/m of its memory;
3. each worker applies its :class:`Binding` (:func:`apply_binding`) before TensorFlow is
   imported anywhere: the visibility variable, memory growth, and thread counts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections import defaultdict
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError

#: Variables a batch system sets to say which GPUs a job may use, in the order we trust them.
VISIBILITY_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
#: Launcher variables holding a rank's index within its node: hints for a run without MPI only.
LOCAL_RANK_HINTS = ("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMI_LOCAL_RANK", "PALS_LOCAL_RANKID",
                    "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK")
#: Thread-count variables set for each worker unless the user set them already.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
#: Set for the trial code: the memory share of a GPU this worker may use (read by hpc_hpo.tf).
FRACTION_VAR = "HPC_HPO_GPU_MEMORY_FRACTION"
#: Set for the trial code: the GPUs of this worker, as the batch system numbers them ("" = CPU).
GPUS_VAR = "HPC_HPO_GPUS"
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")

WORKER = "worker"
MEMBER = "member"  # a rank of a GPU group that is not its leader: takes no trials
SPARE = "spare"  # a rank left over when ranks and GPUs do not match: takes no trials


@dataclass(frozen=True)
class Place:
    """Where one rank runs, as it reports it to the master."""

    rank: int
    host: str
    node: int  # the lowest world rank on the same node: names the node
    local_rank: int
    cpus: int  # CPUs this rank may run on (its affinity mask)
    gpus: tuple[str, ...] = ()  # the GPUs its node offers, as the visibility variable names them
    gpu_source: str = "none"  # where ``gpus`` came from
    visibility_var: str = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Binding:
    """What one worker may use: GPUs, a share of their memory, CPU threads."""

    rank: int
    role: str = WORKER
    gpus: tuple[str, ...] = ()
    visibility_var: str = "CUDA_VISIBLE_DEVICES"
    memory_fraction: float = 1.0
    threads: int = 1
    leader: int = -1  # for a MEMBER: the rank that trains with this rank's GPUs

    @property
    def label(self) -> str:
        """``"4,5"``, or ``"cpu"``: what the results file stores in each trial's ``gpus`` column."""
        return ",".join(self.gpus) if self.gpus else "cpu"

    @property
    def takes_trials(self) -> bool:
        return self.role == WORKER


def discover_gpus(environ: MutableMapping[str, str] | None = None) -> tuple[tuple[str, ...], str, str]:
    """(GPU ids, where they were found, which variable selects them) on this node.

    An inherited visibility variable wins: the batch system gave this job those devices. Its
    ids are kept as written (indices or UUIDs). ``-1`` or an empty value means no GPU, and,
    as CUDA does, ids after an invalid one are ignored.
    """
    environ = os.environ if environ is None else environ
    for var in VISIBILITY_VARS:
        if var in environ:
            ids: list[str] = []
            for item in environ[var].split(","):
                item = item.strip()
                if not item or item in ("-1", "NoDevFiles"):
                    break
                ids.append(item)
            return tuple(ids), var, "ROCR_VISIBLE_DEVICES" if var != "CUDA_VISIBLE_DEVICES" else var
    try:
        count = len([p for p in NVIDIA_PROC.iterdir() if p.is_dir()]) if NVIDIA_PROC.is_dir() else 0
    except OSError:
        count = 0
    if count:
        return tuple(str(i) for i in range(count)), str(NVIDIA_PROC), "CUDA_VISIBLE_DEVICES"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
        if count:
            return tuple(str(i) for i in range(count)), "nvidia-smi -L", "CUDA_VISIBLE_DEVICES"
    return (), "none", "CUDA_VISIBLE_DEVICES"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which a launcher's binding narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_rank_hint(environ: MutableMapping[str, str] | None = None) -> int:
    """The rank within the node that a launcher's variables claim (0 if none does)."""
    environ = os.environ if environ is None else environ
    for var in LOCAL_RANK_HINTS:
        value = environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def here(rank: int) -> Place:
    """Where this rank runs, as it tells the master; :func:`on_nodes` fills in its node."""
    gpus, source, var = discover_gpus()
    return Place(rank, socket.gethostname(), node=-1, local_rank=-1, cpus=usable_cpus(), gpus=gpus, gpu_source=source,
                 visibility_var=var)


def on_nodes(places: list[Place]) -> list[Place]:
    """The places with their node (the lowest rank on the same host) and their rank within it."""
    by_host: dict[str, list[Place]] = defaultdict(list)
    for place in sorted(places, key=lambda p: p.rank):
        by_host[place.host].append(place)
    return [replace(place, node=ranks[0].rank, local_rank=i) for ranks in by_host.values()
            for i, place in enumerate(ranks)]


def local_place(rank: int = 0) -> Place:
    """This process's Place when there is no MPI (one process, master and worker)."""
    gpus, source, var = discover_gpus()
    return Place(rank, socket.gethostname(), node=rank, local_rank=local_rank_hint(), cpus=usable_cpus(),
                 gpus=gpus, gpu_source=source, visibility_var=var)


def assign(places: list[Place], gpus_per_trial: int = 1, workers_per_gpu: int = 1,
           threads: int = 0) -> tuple[dict[int, Binding], list[str]]:
    """Bind every worker rank; return the bindings by rank and warnings for the user.

    ``places`` lists every rank, the master (rank 0) included; with one rank, that rank is
    also the worker. ``threads = 0`` divides each node's CPUs among its training workers.
    """
    k, m = gpus_per_trial, workers_per_gpu
    single = len(places) == 1
    nodes: dict[int, list[Place]] = defaultdict(list)
    for place in sorted(places, key=lambda p: p.rank):
        nodes[place.node].append(place)
    bindings: dict[int, Binding] = {}
    warnings: list[str] = []
    for ranks in nodes.values():
        workers = ranks if single else [p for p in ranks if p.rank != 0]
        if not workers:
            continue
        host, gpus, var = workers[0].host, workers[0].gpus, workers[0].visibility_var
        node_bindings = _assign_node(workers, gpus, var, k, m, host, warnings)
        active = sum(1 for b in node_bindings if b.takes_trials) or 1
        node_cpus = max(p.cpus for p in ranks)
        for place, binding in zip(workers, node_bindings, strict=True):
            n = threads if threads > 0 else max(1, min(place.cpus, node_cpus // active))
            bindings[place.rank] = Binding(binding.rank, binding.role, binding.gpus, var, binding.memory_fraction,
                                           n, binding.leader)
    return bindings, warnings


def _assign_node(workers: list[Place], gpus: tuple[str, ...], var: str, k: int, m: int, host: str,
                 warnings: list[str]) -> list[Binding]:
    n_workers, n_gpus = len(workers), len(gpus)
    if n_gpus == 0:
        return [Binding(p.rank) for p in workers]
    if k == 1:
        per_gpu = -(-n_workers // n_gpus)  # ceil
        if per_gpu > m:
            warnings.append(f"{host}: {n_workers} workers share {n_gpus} GPU{'s' if n_gpus > 1 else ''} "
                            f"({per_gpu} on some GPUs, workers_per_gpu = {m}); launch fewer ranks or raise "
                            f"workers_per_gpu")
        elif n_workers < n_gpus:
            warnings.append(f"{host}: {n_gpus - n_workers} of {n_gpus} GPUs left idle ({n_workers} workers); "
                            f"launch {n_gpus - n_workers} more rank{'s' if n_gpus - n_workers > 1 else ''} "
                            f"on this node")
        fraction = 1.0 / max(m, per_gpu)  # workers that share a GPU each get their share of its memory
        return [Binding(p.rank, WORKER, (gpus[i % n_gpus],), var, fraction) for i, p in enumerate(workers)]
    if n_gpus < k:
        raise ConfigError(f"workers.gpus_per_trial: {host} has only {n_gpus} GPU{'s' if n_gpus > 1 else ''} "
                          f"({', '.join(gpus)}), fewer than one trial needs (got gpus_per_trial = {k})")
    n_groups = min(n_gpus // k, n_workers)
    size = n_workers // n_groups
    result: list[Binding] = []
    for g in range(n_groups):
        members = workers[g * size:(g + 1) * size]
        group_gpus = gpus[g * k:(g + 1) * k]
        result.append(Binding(members[0].rank, WORKER, group_gpus, var))
        result += [Binding(p.rank, MEMBER, group_gpus, var, leader=members[0].rank) for p in members[1:]]
    spare = workers[n_groups * size:]
    result += [Binding(p.rank, SPARE) for p in spare]
    if spare:
        warnings.append(f"{host}: ranks {', '.join(str(p.rank) for p in spare)} take no trials "
                        f"({n_workers} workers do not divide into {n_groups} groups of {size})")
    idle = n_gpus - n_groups * k
    if idle:
        warnings.append(f"{host}: {idle} of {n_gpus} GPUs left idle ({n_groups} group{'s' if n_groups > 1 else ''} "
                        f"of {k} GPUs, {n_workers} workers)")
    return result


def describe(places: list[Place], bindings: dict[int, Binding]) -> list[str]:
    """One line per node: ``node n01 (8 GPUs from CUDA_VISIBLE_DEVICES): r1 GPU 0, r2 GPU 1, ...``."""
    lines = []
    nodes: dict[int, list[Place]] = defaultdict(list)
    for place in sorted(places, key=lambda p: p.rank):
        nodes[place.node].append(place)
    for ranks in nodes.values():
        first = ranks[0]
        gpus = f"{len(first.gpus)} GPU{'s' if len(first.gpus) != 1 else ''} from {first.gpu_source}" \
            if first.gpus else "no GPU"
        parts = []
        for place in ranks:
            binding = bindings.get(place.rank)
            if binding is None:
                parts.append(f"r{place.rank} master")
            elif binding.role == MEMBER:
                parts.append(f"r{place.rank} in r{binding.leader}'s group")
            elif binding.role == SPARE:
                parts.append(f"r{place.rank} spare")
            elif binding.gpus:
                share = f" (1/{round(1 / binding.memory_fraction)})" if binding.memory_fraction < 1 else ""
                parts.append(f"r{place.rank} GPU {binding.label}{share}")
            else:
                parts.append(f"r{place.rank} CPU x{binding.threads}")
        lines.append(f"{first.host} ({gpus}): " + ", ".join(parts))
    return lines


def apply_binding(binding: Binding, environ: MutableMapping[str, str] | None = None) -> None:
    """Make this worker's binding the environment of everything it starts, TensorFlow included.

    Call it before TensorFlow is imported (in this process or a trial process). Thread counts
    and memory growth the user set in the environment are left as they are.
    """
    environ = os.environ if environ is None else environ
    if binding.gpus or binding.role != WORKER:
        environ[binding.visibility_var] = ",".join(binding.gpus) if binding.role == WORKER else ""
    environ[GPUS_VAR] = ",".join(binding.gpus) if binding.role == WORKER else ""
    if binding.gpus and binding.memory_fraction < 1.0:
        environ[FRACTION_VAR] = f"{binding.memory_fraction:.6g}"  # hpc_hpo.tf caps the memory
    else:
        environ.pop(FRACTION_VAR, None)
        if binding.gpus:
            environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # take memory as needed, not all of it
    for var in THREAD_VARS:
        environ.setdefault(var, str(binding.threads))
    environ.setdefault("TF_NUM_INTEROP_THREADS", str(min(2, binding.threads)))
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines, once per process, hidden
