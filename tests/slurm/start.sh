#!/usr/bin/env bash
# Start a private single-node SLURM (munged, slurmctld, slurmd) whose every file lives under DIR.
#
#   tests/slurm/start.sh DIR        (as root; DIR must be absolute, empty or new, traversable by user munge)
#
# Needs the Debian packages slurm-wlm and munge (apt-get install -y slurm-wlm munge); no systemd, nothing written
# to /etc. Writes DIR/slurm.conf, DIR/env (SLURM_CONF and PATH for clients, to source), an srun shim in DIR/bin and
# the daemons' pid files; tests/slurm/stop.sh DIR stops exactly those daemons.
# Settings: MEMF_SLURM_CPUS (8) and MEMF_SLURM_MEM_MB (64000) size the fake node; PYTHON (python3) finds free ports.
set -euo pipefail

die() { echo "start.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: start.sh DIR"
DIR=$1
[[ $DIR = /* ]] || die "DIR must be absolute, got '$DIR'"
[[ $(id -u) -eq 0 ]] || die "must run as root (munged runs as user munge, slurmd as root), running as $(id -un)"
for bin in munged mungekey slurmctld slurmd sinfo scontrol; do
    command -v "$bin" >/dev/null || die "'$bin' not found: apt-get install -y slurm-wlm munge"
done
id munge >/dev/null 2>&1 || die "user 'munge' missing: apt-get install -y munge"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOST=$(hostname -s)
CPUS=${MEMF_SLURM_CPUS:-8}
MEM_MB=${MEMF_SLURM_MEM_MB:-64000}
read -r CTLD_PORT SLURMD_PORT < <("${PYTHON:-python3}" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)

mkdir -p "$DIR"/{munge,ctld,slurmd,log}
chmod 755 "$DIR"
chown munge:munge "$DIR/munge"
chmod 755 "$DIR/munge"  # the socket directory must be searchable by every job user

fill() {
    sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$1" > "$2"
}
fill "$HERE/slurm.conf.in" "$DIR/slurm.conf"
fill "$HERE/gres.conf.in" "$DIR/gres.conf"
# Inside a job, snakemake-executor-plugin-slurm-jobstep strips SLURM_* variables (SLURM_CONF too) before its nested
# srun, which then looks only at /etc/slurm/slurm.conf. An srun shim on PATH puts the private config back.
mkdir -p "$DIR/bin"
SRUN=$(command -v srun) || die "'srun' not found: apt-get install -y slurm-wlm"
printf '#!/bin/sh\nSLURM_CONF=%s/slurm.conf exec %s "$@"\n' "$DIR" "$SRUN" > "$DIR/bin/srun"
chmod 755 "$DIR/bin/srun"
printf 'export SLURM_CONF=%s/slurm.conf\nexport PATH=%s/bin:$PATH\n' "$DIR" "$DIR" > "$DIR/env"
export SLURM_CONF=$DIR/slurm.conf

# munged with its own key and socket, so a host munged (if any) is neither used nor disturbed.
runuser -u munge -- mungekey --create --keyfile="$DIR/munge/munge.key"
runuser -u munge -- munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged failed to start; see $DIR/munge/munged.log"

slurmctld -f "$DIR/slurm.conf" -c || die "slurmctld failed to start; see $DIR/log/slurmctld.log"
slurmd -f "$DIR/slurm.conf" -N "$HOST" || die "slurmd failed to start; see $DIR/log/slurmd.log"

for _ in $(seq 1 60); do
    state=$(sinfo --noheader --format=%t --nodes="$HOST" 2>/dev/null || true)
    case $state in
        idle) echo "start.sh: node $HOST idle (SLURM_CONF=$SLURM_CONF)"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
die "node $HOST not idle after 60 s (state '${state:-none}'); see $DIR/log/"
