# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts that source it
# Shared by up.sh, down.sh and status.sh: where the local test cluster keeps its files. Sourced, not run.
#
# The cluster is for testing `snakemake --profile slurm` on one machine. Its configuration goes to SLURM's
# default place (/etc/slurm), because the executor plugin strips SLURM_* variables (SLURM_CONF included)
# inside a job before it calls `srun`, so a configuration elsewhere would not be found there.

SLURM_ETC=${SLURM_ETC:-/etc/slurm}
# Everything else the daemons write (state, spool, logs, PIDs, fake GPU device files) lives here.
STATE=${MAMMOFLOW_SLURM_STATE:-/var/lib/mammoflow-slurm}
PIDS=$STATE/pids
LOGS=$STATE/log
LOCK=$STATE.lock
MARKER="# mammoflow local test cluster (scripts/slurm/up.sh)"
NODE=localhost
PACKAGES=(slurmctld slurmd slurm-client munge)
# Daemons in the order they start; they stop in the reverse order.
DAEMONS="munged slurmctld slurmd"

say() { echo "slurm-local: $*" >&2; }
die() {
    local code=$1
    shift
    say "$*"
    exit "$code"
}

# The PID recorded for a daemon, if that process is still alive and still that program.
live_pid() {
    local pid
    pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}
