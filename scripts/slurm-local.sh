#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, without systemd: for `ebm sweep --slurm` tests, CI, and trying
# the Slurm path of a sweep before taking it to a real cluster.
#
# Usage: scripts/slurm-local.sh start|stop|status|env
#   start   install the Debian packages when missing (as root, with apt), start munged, slurmctld and slurmd,
#           wait for the node to be idle, then print `export SLURM_CONF=…` on stdout (so
#           `eval "$(scripts/slurm-local.sh start)"` sets up the shell); a no-op when already running
#   stop    cancel this cluster's jobs and stop the daemons this script started (by their PIDs)
#   status  say whether the cluster is up (exit 0) or not (exit 1), with `sinfo` and `squeue`
#   env     print the `export SLURM_CONF=…` line
#
# Everything (config, state, spool, daemon logs) lives in $EBM_SLURM_DIR (default /tmp/ebm-slurm). Ports:
# $EBM_SLURM_PORT (slurmctld, default 6817) and the next one (slurmd). Needs root (slurmd starts jobs as
# their user); tested with Debian 12's Slurm 22.05.
set -euo pipefail

DIR="${EBM_SLURM_DIR:-/tmp/ebm-slurm}"
PORT="${EBM_SLURM_PORT:-6817}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm-local: $*" >&2; }
die() { say "$*"; exit 1; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Up means: both daemons we started are alive and the controller answers.
is_up() {
  pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" && scontrol ping 2>/dev/null | grep -q UP
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "Slurm is not installed; run as root (apt-get install ${PACKAGES[*]}) or install it yourself"
  command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is missing: install ${PACKAGES[*]} yourself"
  say "installing ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$DIR/apt.log" 2>&1 || {
    apt-get update -q >>"$DIR/apt.log" 2>&1
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1
  } || die "apt-get install failed, see $DIR/apt.log"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0 # a munged is already serving (ours from an earlier start, or the system's)
  fi
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else /usr/sbin/create-munge-key -f; fi
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
      cp /run/munge/munged.pid "$DIR/munged.pid" 2>/dev/null || true
      return 0
    fi
    sleep 0.1
  done
  die "munged did not come up (see /var/log/munge/munged.log)"
}

write_conf() {
  local host mem cpus
  host=$(hostname -s)
  # The node's real CPUs and memory as slurmd sees them (RealMemory must not exceed it).
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  mkdir -p "$DIR/state" "$DIR/spool"
  cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster on localhost.
ClusterName=ebm-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pidfile
SlurmdPidFile=$DIR/slurmd.pidfile
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# cgroup process tracking makes the node look idle while every job fails without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: finished jobs go to a text file (scontrol show job keeps them for MinJobAge seconds).
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
# A failed array task must cancel the afterok collector instead of leaving it pending forever.
DependencyParameters=kill_invalid_depend
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  mkdir -p "$DIR"
  if is_up; then
    say "already running ($CONF)"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  stop_daemons quiet # half-started leftovers
  install_packages
  start_munge
  write_conf
  rm -rf "$DIR/state" && mkdir -p "$DIR/state"
  nohup slurmctld -D -f "$CONF" >"$DIR/slurmctld.out" 2>&1 &
  echo $! >"$DIR/slurmctld.pid"
  nohup slurmd -D -f "$CONF" >"$DIR/slurmd.out" 2>&1 &
  echo $! >"$DIR/slurmd.pid"
  local state=""
  for i in $(seq 300); do
    pid_alive "$DIR/slurmctld.pid" || die "slurmctld exited: $(tail -5 "$DIR/slurmctld.out" "$DIR/slurmctld.log" 2>/dev/null)"
    pid_alive "$DIR/slurmd.pid" || die "slurmd exited: $(tail -5 "$DIR/slurmd.out" "$DIR/slurmd.log" 2>/dev/null)"
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
    case "$state" in
      idle*|mixed*|allocated*) break ;;
      down*|drain*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.1
    [[ $i -lt 300 ]] || die "the node did not become idle in 30 s (state '$state'; see $DIR/*.log)"
  done
  say "up: node $(hostname -s) $state, config $CONF"
  echo "export SLURM_CONF=$CONF"
}

stop_pid() { # stop_pid NAME: SIGTERM the PID in $DIR/NAME.pid, wait up to 10 s, then SIGKILL
  local f="$DIR/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop_daemons() {
  if [[ "${1:-}" != quiet ]] && pid_alive "$DIR/slurmctld.pid" && [[ -f "$CONF" ]]; then
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ -n "${jobs// /}" ]]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 50); do [[ -z "$(squeue -h 2>/dev/null)" ]] && break; sleep 0.1; done
    fi
  fi
  stop_pid slurmd
  stop_pid slurmctld
}

stop() {
  stop_daemons
  stop_pid munged # only a munged this script started
  say "stopped"
}

status() {
  if is_up; then
    say "up ($CONF)"
    sinfo >&2 || true
    squeue >&2 || true
    return 0
  fi
  say "not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
