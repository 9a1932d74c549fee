#!/usr/bin/env bash
# Stop the local test cluster that scripts/slurm/up.sh started: cancel its jobs, then stop slurmd,
# slurmctld and munged by the PIDs up.sh recorded (nothing is looked up by name). Idempotent.
#
#   scripts/slurm/down.sh [--keep-munge]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/slurm/common.sh
source "$here/common.sh"

keep_munge=0
[[ ${1:-} == --keep-munge ]] && keep_munge=1
[[ $(id -u) == 0 ]] || die 2 "needs root"
[[ -d $PIDS ]] || { say "not running (no $PIDS)"; exit 0; }

exec 9> "$LOCK"
flock -w 60 9 || die 5 "another up.sh/down.sh holds $LOCK"

# Running job steps (slurmstepd and what it started) outlive slurmd: cancel the jobs first.
if live_pid slurmctld > /dev/null; then
    mapfile -t jobs < <(squeue -h -o %i 2> /dev/null || true)
    if ((${#jobs[@]})); then
        say "cancelling jobs: ${jobs[*]}"
        scancel "${jobs[@]}" 2> /dev/null || true
        for _ in $(seq 50); do
            [[ -z $(squeue -h -t running,completing -o %i 2> /dev/null) ]] && break
            sleep 0.2
        done
    fi
fi

# SIGTERM to the named daemons at once, then wait for them (up to 10 s, then SIGKILL).
stop() {
    local name pid waiting=()
    for name in "$@"; do
        if pid=$(live_pid "$name"); then
            kill -TERM "$pid" 2> /dev/null || true
            waiting+=("$name:$pid")
        else
            rm -f "$PIDS/$name.pid"
        fi
    done
    for entry in "${waiting[@]}"; do
        name=${entry%%:*} pid=${entry#*:}
        for _ in $(seq 200); do
            [[ -d /proc/$pid ]] || break
            sleep 0.05
        done
        if [[ -d /proc/$pid ]]; then
            say "$name (pid $pid) ignored SIGTERM: SIGKILL"
            kill -KILL "$pid" 2> /dev/null || true
        fi
        rm -f "$PIDS/$name.pid"
        say "stopped $name (pid $pid)"
    done
}

stop slurmd slurmctld
((keep_munge)) || stop munged
exit 0
