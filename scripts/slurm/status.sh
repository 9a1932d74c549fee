#!/usr/bin/env bash
# Is the local test cluster up? Prints each daemon's PID (or "not running") and the node's state;
# exits 0 when all three daemons that up.sh starts are alive and the node takes jobs.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/slurm/common.sh
source "$here/common.sh"

ok=0
for name in $DAEMONS; do
    if pid=$(live_pid "$name"); then
        echo "$name: pid $pid"
    elif [[ $name == munged ]] && munge -n < /dev/null 2> /dev/null | unmunge > /dev/null 2>&1; then
        echo "munged: running (not started by up.sh)"
    else
        echo "$name: not running"
        ok=1
    fi
done
state=$(sinfo -h -n "$NODE" -o %T 2> /dev/null | head -1)
echo "node $NODE: ${state:-unknown}"
case $state in
    idle* | mixed* | allocated* | completing*) ;;
    *) ok=1 ;;
esac
exit $ok
