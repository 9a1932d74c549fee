#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine, for testing `snakemake --profile slurm`.
#
#   sudo scripts/slurm/up.sh [--install]     # start (or keep) munged, slurmctld, slurmd
#   sudo scripts/slurm/down.sh               # stop them, by the PIDs this script recorded
#
# Debian's packages (slurmctld slurmd slurm-client munge; --install apt-gets them when missing). No systemd
# and no cgroups: proctrack/linuxproc, task/none; each daemon runs in the foreground of its own session
# (setsid), in the background of this script, and its PID goes to $STATE/pids. The node is this machine
# (CPUs and memory from `slurmd -C`) with two fake GPUs (GRES gpu:fake:2, device files are links to
# /dev/null), so that `--gpus=1` jobs are scheduled and get CUDA_VISIBLE_DEVICES. Idempotent: running
# daemons with an unchanged configuration are kept; a changed configuration restarts them.
#
# Exit status: 0 up; 2 not root; 3 packages missing (and not installed); 4 /etc/slurm holds another
# cluster's configuration; 5 the cluster did not come up (the logs are named).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/slurm/common.sh
source "$here/common.sh"

install=0
[[ ${1:-} == --install ]] && install=1

[[ $(id -u) == 0 ]] || die 2 "needs root (daemons, /etc/slurm, munge's key); run it as root"

missing() {
    local tool
    for tool in munged munge slurmctld slurmd sbatch squeue scontrol sinfo; do
        command -v "$tool" > /dev/null || { echo "$tool"; return 0; }
    done
    return 1
}
if tool=$(missing); then
    ((install)) || die 3 "$tool not found: apt-get install ${PACKAGES[*]} (or run with --install)"
    command -v apt-get > /dev/null || die 3 "$tool not found, and no apt-get to install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Without package lists (a fresh machine) the first try fails: update them, try again.
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" > /dev/null 2>&1 \
        || { apt-get update -qq > /dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" > /dev/null 2>&1; } \
        || die 3 "$tool not found, and apt-get install ${PACKAGES[*]} failed (no package access?)"
    tool=$(missing) && die 3 "$tool still not found after installing ${PACKAGES[*]}"
fi

mkdir -p "$STATE"
# One bring-up at a time (two test sessions may start together).
exec 9> "$LOCK"
flock -w 60 9 || die 5 "another up.sh/down.sh holds $LOCK"

conf=$SLURM_ETC/slurm.conf
if [[ -e $conf ]] && ! grep -qxF "$MARKER" "$conf" && [[ -z ${MAMMOFLOW_SLURM_FORCE:-} ]]; then
    die 4 "$conf exists and is not ours (a real cluster's?); not touching it (MAMMOFLOW_SLURM_FORCE=1 overrides)"
fi

mkdir -p "$PIDS" "$LOGS" "$STATE/ctld" "$STATE/spool" "$STATE/dev" "$SLURM_ETC"
ln -sfn /dev/null "$STATE/dev/fake-gpu0"
ln -sfn /dev/null "$STATE/dev/fake-gpu1"

# This machine as slurmd sees it: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ...".
hardware=$(slurmd -C | head -1)
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<< "$hardware"; }
cpus=$(field CPUs) sockets=$(field SocketsPerBoard) cores=$(field CoresPerSocket) threads=$(field ThreadsPerCore)
memory=$(field RealMemory)
[[ -n $cpus && -n $memory ]] || die 5 "cannot read CPUs/RealMemory from 'slurmd -C': $hardware"
# Without DefMemPerCPU a job that names no memory takes the whole node, and jobs run one at a time.
def_mem=$((memory / cpus / 2))

new_conf=$(cat << EOF
$MARKER
# Written by scripts/slurm/up.sh; rewritten when it changes. Not for production use.
ClusterName=mammoflow
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
# No systemd, no cgroups: plain process tracking, no task confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Schedule a submitted batch job at once (the default waits up to 3 s per job).
SchedulerParameters=batch_sched_delay=0
# Finished jobs stay visible to squeue this long. The executor plugin only polls squeue (instead of sacct,
# which fails without slurmdbd) when MinJobAge >= 3 x slurm-init-seconds-before-status-checks (40 s default).
MinJobAge=300
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/ctld/slurmctld.pid
SlurmdPidFile=$STATE/spool/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
DefMemPerCPU=$def_mem
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory Gres=gpu:fake:2 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
new_gres=$(cat << EOF
$MARKER
AutoDetect=off
NodeName=$NODE Name=gpu Type=fake File=$STATE/dev/fake-gpu0
NodeName=$NODE Name=gpu Type=fake File=$STATE/dev/fake-gpu1
EOF
)

changed=0
if [[ $(cat "$conf" 2>/dev/null) != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" > "$conf"
    changed=1
fi
if [[ $(cat "$SLURM_ETC/gres.conf" 2>/dev/null) != "$new_gres" ]]; then
    printf '%s\n' "$new_gres" > "$SLURM_ETC/gres.conf"
    changed=1
fi
if ((changed)) && { live_pid slurmctld > /dev/null || live_pid slurmd > /dev/null; }; then
    say "configuration changed: restarting slurmctld and slurmd"
    flock -u 9
    "$here/down.sh" --keep-munge
    flock -w 60 9 || die 5 "another up.sh/down.sh holds $LOCK"
fi

# Start one daemon in its own session, in the background; record its PID. With no job control in this
# script, setsid does not fork, so $! is the daemon itself (checked by its name).
start() {
    local name=$1
    shift
    if pid=$(live_pid "$name"); then
        say "$name already running (pid $pid)"
        return
    fi
    # 9>&-: the daemon must not inherit (and so hold for ever) the lock of this script.
    setsid "$@" >> "$LOGS/$name.out" 2>&1 < /dev/null 9>&- &
    echo $! > "$PIDS/$name.pid"
    say "started $name (pid $!)"
}

# munge: credentials between the SLURM daemons and commands. Reuse a munged that already answers (one
# started by the system, say), and then leave it alone on the way down.
if munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1; then
    live_pid munged > /dev/null || say "munged already running (not ours)"
else
    rm -f "$PIDS/munged.pid"
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
    for _ in $(seq 50); do
        munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1 || die 5 "munged did not start: $LOGS/munged.out"
fi

# -i: ignore saved state (jobs of an earlier life of this test cluster).
start slurmctld /usr/sbin/slurmctld -D -i
for _ in $(seq 100); do
    scontrol ping 2> /dev/null | grep -q UP && break
    sleep 0.1
done
scontrol ping 2> /dev/null | grep -q UP || die 5 "slurmctld did not answer: $LOGS/slurmctld.log"
start slurmd /usr/sbin/slurmd -D -N "$NODE"

# Ready when the node is idle or working; a node left down or drained by an earlier life is resumed.
state=""
for i in $(seq 150); do
    state=$(sinfo -h -n "$NODE" -o %T 2> /dev/null | head -1)
    case $state in
        idle* | mixed* | allocated* | completing*) break ;;
        down* | drain*)
            if ((i % 10 == 1)); then
                scontrol update NodeName="$NODE" State=RESUME 2> /dev/null || true
            fi
            ;;
    esac
    sleep 0.2
done
case $state in
    idle* | mixed* | allocated* | completing*) ;;
    *) die 5 "node $NODE is '${state:-unknown}' after 30 s: see $LOGS/slurmd.log and $LOGS/slurmctld.log" ;;
esac
say "up: node $NODE ($cpus CPUs, $memory MB, gpu:fake:2) is $state; logs in $LOGS"
