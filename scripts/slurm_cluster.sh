#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the job-script tests (tests/batch/test_jobscripts.py).
#   scripts/slurm_cluster.sh install      # Debian's slurm-wlm, munge, shellcheck (scripts/debian_packages.sh; as root)
#   scripts/slurm_cluster.sh start DIR    # munged, slurmctld and slurmd on loopback, state and logs in DIR
#   scripts/slurm_cluster.sh stop DIR     # stop the daemons started in DIR (by their pid files)
# Clients use it with SLURM_CONF=DIR/slurm.conf. Ports 16817/16818; the node has this machine's CPUs, at least 8.
set -euo pipefail
command=${1:?usage: slurm_cluster.sh install|start DIR|stop DIR}

case "$command" in
install)
    exec "$(dirname "$0")/debian_packages.sh"  # with the other Debian packages the tests need
    ;;
start)
    dir=$(realpath -m "${2:?start needs a directory}")
    mkdir -p "$dir/spool" "$dir/state" "$dir/log"
    head -c 1024 /dev/urandom >"$dir/munge.key"
    chmod 600 "$dir/munge.key"
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"
    host=$(hostname)
    # At least 8 CPUs, whatever the machine has (config_overrides: slurmd takes the configured count): job scripts
    # ask for --ntasks-per-node = workers + 1, which SLURM refuses beyond a node's CPUs even with --overcommit.
    cpus=$(nproc)
    [ "$cpus" -lt 8 ] && cpus=8
    cat >"$dir/slurm.conf" <<CONF
ClusterName=hpchpo
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=10
OverTimeLimit=0
InactiveLimit=0
MinJobAge=600
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    slurmctld -f "$dir/slurm.conf"
    slurmd -f "$dir/slurm.conf"
    for _ in $(seq 60); do
        if SLURM_CONF="$dir/slurm.conf" sinfo -h -o %T 2>/dev/null | grep -q idle; then
            echo "slurm_cluster.sh: one node up; use SLURM_CONF=$dir/slurm.conf"
            exit 0
        fi
        sleep 0.5
    done
    echo "slurm_cluster.sh: the node did not come up; logs in $dir/log" >&2
    exit 1
    ;;
stop)
    dir=$(realpath -m "${2:?stop needs a directory}")
    for daemon in slurmd slurmctld munged; do
        if [ -f "$dir/$daemon.pid" ]; then
            pid=$(cat "$dir/$daemon.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    ;;
*)
    echo "usage: slurm_cluster.sh install|start DIR|stop DIR" >&2
    exit 2
    ;;
esac
