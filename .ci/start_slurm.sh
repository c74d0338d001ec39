#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this machine (for tests/test_slurm.py): install slurm-wlm and munge
# from Debian, write a minimal slurm.conf for localhost, start munged, slurmctld and slurmd, and wait until the
# node is idle. Jobs are tracked without systemd or cgroups (proctrack/linuxproc, task/none). Safe to run twice: a
# running cluster is left alone. Needs root and Debian's apt (bookworm: Slurm 22.05).
#
#     .ci/start_slurm.sh            # then: sinfo; squeue
#
# Environment: SLURM_CPUS (default: all CPUs), SLURM_MEM_MB (default: 90% of the memory), SLURM_WAIT_S (60).
set -euo pipefail
start=$(date +%s)

log() { echo "[start_slurm] $*"; }
node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running /run/slurm/slurmctld.pid && running /run/slurm/slurmd.pid && node_idle; then
    log "Slurm is already running: $(sinfo -h -N -o '%N %T %c CPUs %m MB' | head -1)"
    exit 0
fi


# ------------------------------------------------------------------------------------------------ packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "Installing slurm-wlm and munge from Debian..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
log "$(slurmctld -V)"

# ------------------------------------------------------------------------------------------------- munge
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "Starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n </dev/null | unmunge >/dev/null || { log "munged does not answer"; exit 1; }

# -------------------------------------------------------------------------------------------- slurm.conf
cpus=${SLURM_CPUS:-$(nproc)}
mem_mb=${SLURM_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat >/etc/slurm/slurm.conf <<EOF
# Single-node cluster for CI, written by .ci/start_slurm.sh.
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=300
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# slurmd loads a cgroup plugin for itself even though no job uses cgroups here; IgnoreSystemd lets it start on a
# cgroup v2 host without systemd.
printf 'CgroupPlugin=autodetect\nIgnoreSystemd=yes\n' >/etc/slurm/cgroup.conf

# ---------------------------------------------------------------------------------------------- daemons
if ! running /run/slurm/slurmctld.pid; then
    log "Starting slurmctld"
    /usr/sbin/slurmctld -c  # -c: a clean start (no jobs from an earlier cluster)
fi
if ! running /run/slurm/slurmd.pid; then
    log "Starting slurmd"
    /usr/sbin/slurmd -N localhost
fi

for _ in $(seq $((${SLURM_WAIT_S:-60} * 2))); do
    node_idle && break
    # A node left DOWN by an earlier run of this script comes back with an explicit resume.
    if sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(down|drained|unknown)'; then
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    fi
    sleep 0.5
done
if ! node_idle; then
    log "The node did not become idle. sinfo:"
    sinfo -N -l || true
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log || true
    exit 1
fi
log "Ready in $(($(date +%s) - start)) s: $(sinfo -h -N -o '%N %T, %c CPUs, %m MB')"
