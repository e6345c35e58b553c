#!/usr/bin/env bash
# Stop the SLURM that tests/slurm/start.sh DIR started: cancel its jobs, then end slurmd, slurmctld and munged by
# the pids in their pid files under DIR. Other processes are never touched.
set -uo pipefail

[[ $# -eq 1 ]] || { echo "usage: stop.sh DIR" >&2; exit 1; }
DIR=$1
if [[ -f $DIR/slurm.conf ]]; then
    SLURM_CONF=$DIR/slurm.conf scancel --quiet --user="$(id -un)" 2>/dev/null || true
fi

status=0
for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    [[ -s $pidfile ]] || continue
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop.sh: pid $pid ($pidfile) ignored SIGTERM for 10 s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
        status=1
    fi
done
exit $status
