#!/usr/bin/env bash
# Stop the one-node SLURM cluster that start.sh started in SCRATCH_DIR (by the PIDs in its files) and remove
# SCRATCH_DIR; with --keep the directory (logs, state) stays.
#
#   bash tests/engine/slurm_local/stop.sh SCRATCH_DIR [--keep]
set -uo pipefail

SCRATCH=${1:?usage: stop.sh SCRATCH_DIR [--keep]}
KEEP=${2:-}
[ -d "$SCRATCH" ] || exit 0

stop_pidfile() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
}

# jobs first (slurmd ends their steps when it stops), then the daemons, munged last
if [ -f "$SCRATCH/slurm.conf" ] && command -v scancel >/dev/null 2>&1; then
  SLURM_CONF="$SCRATCH/slurm.conf" timeout 10 scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
fi
stop_pidfile "$SCRATCH/run/slurmd.pid"
stop_pidfile "$SCRATCH/run/slurmctld.pid"
stop_pidfile "$SCRATCH/munge/munged.pid"

if [ "$KEEP" != "--keep" ]; then
  rm -rf "$SCRATCH"
fi
exit 0
