#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (munged + slurmctld + slurmd), for the submitit integration test
# (tests/engine/test_slurm.py, marker "slurm"). Everything it writes goes to SCRATCH_DIR; stop.sh SCRATCH_DIR
# stops the daemons and removes it.
#
#   bash tests/engine/slurm_local/start.sh SCRATCH_DIR     # then: export SLURM_CONF=SCRATCH_DIR/slurm.conf
#
# Requirements (Debian/Ubuntu, as root; verified with Debian 12's slurm-wlm 22.05 and munge 0.5.15):
#
#   apt-get update && apt-get install -y slurm-wlm munge
#
# SCRATCH_DIR and its parents must be traversable by the munge user (e.g. mktemp -d /tmp/x.XXXX, not a
# root-only 0700 directory). Needs root (the daemons run as root; munged runs as the "munge" user). No system
# file is changed: munged gets its own key and socket in SCRATCH_DIR, and slurm reads SCRATCH_DIR/slurm.conf
# through SLURM_CONF (clients, including the submitit job itself, must have SLURM_CONF set). Deliberately no
# cgroup.conf: with it absent slurmd 22.05 runs jobs with proctrack/linuxproc + task/none;
# "CgroupPlugin=disabled" makes slurmd refuse to start. Accounting is off: read job states with
# `scontrol show job` (submitit's sacct-based job.state says UNKNOWN; its results still arrive).
# Ports: SLURMCTLD_PORT / SLURMD_PORT (defaults 6817 / 6818).
#
# Exit status: 0 when `sinfo` shows the node idle; 2 missing commands; 3 not root; 4 a daemon did not come up
# (its log in SCRATCH_DIR/log is printed).
set -euo pipefail

SCRATCH=${1:?usage: start.sh SCRATCH_DIR}
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}

for cmd in munged slurmctld slurmd sinfo sbatch scontrol runuser; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "start.sh: '$cmd' not found; install with: apt-get install -y slurm-wlm munge" >&2
    exit 2
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "start.sh: must run as root (slurmd and slurmctld run as root here)" >&2
  exit 3
fi
if ! id munge >/dev/null 2>&1; then
  echo "start.sh: no 'munge' user; reinstall the munge package" >&2
  exit 2
fi

mkdir -p "$SCRATCH"
SCRATCH=$(cd "$SCRATCH" && pwd)
chmod 755 "$SCRATCH"
mkdir -p "$SCRATCH"/{munge,state,spool,log,run}
chown munge:munge "$SCRATCH/munge"
chmod 700 "$SCRATCH/munge"

dump_logs() {
  for f in "$SCRATCH"/log/* "$SCRATCH"/munge/munged.log; do
    [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }
  done >&2
}

# Munge: a private 1024-byte key and socket
dd if=/dev/urandom of="$SCRATCH/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$SCRATCH/munge/munge.key"
chmod 400 "$SCRATCH/munge/munge.key"
runuser -u munge -- munged --force \
  --key-file="$SCRATCH/munge/munge.key" --socket="$SCRATCH/munge/munge.socket" \
  --pid-file="$SCRATCH/munge/munged.pid" --log-file="$SCRATCH/munge/munged.log" \
  --seed-file="$SCRATCH/munge/munged.seed"
for _ in $(seq 50); do [ -S "$SCRATCH/munge/munge.socket" ] && break; sleep 0.1; done
if [ ! -S "$SCRATCH/munge/munge.socket" ]; then
  echo "start.sh: munged did not start" >&2; dump_logs; exit 4
fi

HOST=$(hostname -s)
CPUS=$(nproc --all)
# the daemons get every CPU even when this script inherited a narrower affinity (e.g. from a test runner
# whose OpenMP pinned it): slurmd sizes the node from its own affinity mask
ALL_CPUS="taskset -c 0-$((CPUS - 1))"
command -v taskset >/dev/null 2>&1 || ALL_CPUS=""
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
cat > "$SCRATCH/slurm.conf" <<EOF
ClusterName=libdet-test
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SCRATCH/munge/munge.socket
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/run/slurmctld.pid
SlurmdPidFile=$SCRATCH/run/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$SCRATCH/slurm.conf"

$ALL_CPUS slurmctld -c -f "$SLURM_CONF"
$ALL_CPUS slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null | head -n 1 || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
if [ "${state:-}" != idle ]; then
  echo "start.sh: the node did not become idle (state: '${state:-none}')" >&2; dump_logs; exit 4
fi
echo "SLURM_CONF=$SLURM_CONF"
