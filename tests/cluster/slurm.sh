#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the cluster tests (tests/cluster/):
#   tests/cluster/slurm.sh start    # install slurm-wlm and munge if missing, start the daemons, wait for the node
#   tests/cluster/slurm.sh stop     # cancel its jobs and stop its daemons; nothing running, nothing to do
#   tests/cluster/slurm.sh status   # exit 0 if every daemon runs and the node takes jobs
# `start` and `stop` are idempotent. `start` prints the environment that SLURM's clients need, so that after
#   eval "$(tests/cluster/slurm.sh start)"
# sinfo, sbatch, squeue, sacct and `python -m pipeline -m hydra/launcher=slurm` use this cluster.
#
# Everything lives in one state directory, $PIPELINE_SLURM_DIR (default /tmp/lowering-pipeline-slurm): the
# generated slurm.conf and slurmdbd.conf (clients find them through SLURM_CONF; /etc/slurm is neither read
# nor written), a munge key and socket of its own, the daemons' spool, pid and log files (log/), and a MariaDB
# data directory. Its ports, 16817-16819, are not SLURM's defaults, so a real SLURM on the machine is not met.
#
# Why each part (Debian's slurm-wlm 22.05, run as root with no systemd and no cgroups):
# * slurmdbd with a MariaDB of its own: submitit learns that a job ended without a result (cancelled, timed
#   out, killed) only from sacct, and sacct needs slurmdbd; without it a sweep waits for such a job forever.
# * proctrack/linuxproc and task/none track and start job processes without cgroups.
# * select/cons_tres with CR_Core: one job per core, so two 1-CPU jobs run at once on 2 cores. Memory is not
#   a consumable resource: a job's --mem is only checked against RealMemory, and no job waits for memory.
set -euo pipefail

STATE=${PIPELINE_SLURM_DIR:-/tmp/lowering-pipeline-slurm}
PARTITION=local
CANNOT=77  # exit status: this machine cannot have the cluster (not root, or apt-get cannot install it)
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server-core mariadb-client-core)
COMMANDS=(slurmctld slurmd slurmdbd sbatch squeue sacct sinfo scancel munged mungekey mariadbd
          mariadb-install-db my_print_defaults mariadb)
WAIT_S=90  # how long each daemon may take to come up on a loaded machine

export SLURM_CONF=$STATE/slurm.conf
export MYSQL_UNIX_PORT=$STATE/run/mariadb.sock  # where slurmdbd's MariaDB client connects
MUNGE_SOCKET=$STATE/run/munge.socket
LOG=$STATE/log

say() { echo "slurm.sh: $*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

pid_of() {  # the pid of a daemon this script started, if it still runs (its pid file, and the name checked)
  local pid
  pid=$(cat "$STATE/run/$1.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && echo "$pid"
}

wait_for() {  # wait_for WHAT LOGFILE COMMAND...: run COMMAND each second until it succeeds, for WAIT_S at most
  local what=$1 logfile=$2
  shift 2
  local deadline=$((SECONDS + WAIT_S))
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  say "$what did not come up in ${WAIT_S}s; the end of $logfile:"
  tail -n 30 "$logfile" >&2 || true
  exit 1
}

install_packages() {
  local missing=() command
  for command in "${COMMANDS[@]}"; do command -v "$command" >/dev/null || missing+=("$command"); done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "${missing[*]} missing, and only root can apt-get install ${PACKAGES[*]}" $CANNOT
  command -v apt-get >/dev/null || die "${missing[*]} missing, and there is no apt-get to install them" $CANNOT
  say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
  # The packages' own services must not start at install: this script runs its own daemons.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || say "apt-get update failed; trying with the package lists there are"
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2 \
    || die "apt-get could not install ${PACKAGES[*]} (its error is above)" $CANNOT
}

write_config() {
  mkdir -p "$STATE"/{run,log,munge,slurmctld,slurmd}
  chmod 755 "$STATE" "$STATE/run"  # munged wants its socket's directory open to all, its key private
  chmod 700 "$STATE/munge"
  local host node
  host=$(hostname -s)
  # This machine's cores and memory as slurmd sees them, with RealMemory (MB) a tenth under: slurmd drains
  # a node that has less memory than slurm.conf says.
  node=$(SLURM_CONF=/dev/null slurmd -C | awk 'NR == 1 { for (i = 1; i <= NF; i++)
           if ($i ~ /^RealMemory=/) { split($i, m, "="); $i = "RealMemory=" int(m[2] * 0.9) } print }')
  cat >"$SLURM_CONF" <<EOF
# Written by tests/cluster/slurm.sh start, at each start: a one-node cluster for the cluster tests.
ClusterName=pipeline
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=16819
# Connections to slurmdbd find their munge socket here, not in AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmdbd reads slurmdbd.conf beside slurm.conf, and only if no one else may read it.
  (umask 077 && cat >"$STATE/slurmdbd.conf" <<EOF
# Written by tests/cluster/slurm.sh start. MariaDB's root, by unix_socket authentication: no password anywhere.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  )
}

munge_works() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }
mariadb_works() { mariadb --no-defaults --socket="$MYSQL_UNIX_PORT" -e "select 1"; }
node_takes_jobs() { [[ $(sinfo -h -N -o %T -p "$PARTITION") =~ ^(idle|mixed|allocated)$ ]]; }
jobs_gone() { [[ -z $(squeue -h -o %i) ]]; }

start() {
  install_packages
  write_config
  if ! pid_of munged >/dev/null; then
    [[ -s $STATE/munge/munge.key ]] || mungekey --create --keyfile="$STATE/munge/munge.key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"  # left by a munged that was killed
    munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" --pid-file="$STATE/run/munged.pid" \
      --log-file="$LOG/munged.log" --seed-file="$STATE/munge/munged.seed" </dev/null >>"$LOG/start.log" 2>&1
  fi
  wait_for munged "$LOG/munged.log" munge_works
  if ! pid_of mariadbd >/dev/null; then
    if [[ ! -e $STATE/mariadb.installed ]]; then
      rm -rf "$STATE/mariadb"
      mariadb-install-db --no-defaults --user=root --datadir="$STATE/mariadb" --skip-test-db \
        --auth-root-authentication-method=socket >>"$LOG/start.log" 2>&1 || die "mariadb-install-db failed; see $LOG/start.log"
      touch "$STATE/mariadb.installed"
    fi
    # mariadbd stays in the foreground: setsid detaches it from this script and its caller.
    setsid mariadbd --no-defaults --user=root --datadir="$STATE/mariadb" --socket="$MYSQL_UNIX_PORT" \
      --skip-networking --pid-file="$STATE/run/mariadbd.pid" --log-error="$LOG/mariadbd.log" \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >>"$LOG/start.log" 2>&1 &
  fi
  wait_for mariadbd "$LOG/mariadbd.log" mariadb_works
  pid_of slurmdbd >/dev/null || slurmdbd </dev/null >>"$LOG/start.log" 2>&1
  wait_for slurmdbd "$LOG/slurmdbd.log" sacctmgr -n list cluster
  pid_of slurmctld >/dev/null || slurmctld </dev/null >>"$LOG/start.log" 2>&1
  wait_for slurmctld "$LOG/slurmctld.log" scontrol ping
  pid_of slurmd >/dev/null || slurmd </dev/null >>"$LOG/start.log" 2>&1
  wait_for "the node $(hostname -s)" "$LOG/slurmd.log" node_takes_jobs
  say "up: $(sinfo -V), partition $PARTITION, $(sinfo -h -N -o '%c CPUs, %m MB')"
  echo "export SLURM_CONF=$SLURM_CONF"
  echo "export PIPELINE_SLURM_PARTITION=$PARTITION"
}

stop_daemon() {  # SIGTERM, then SIGKILL if it has not gone after 30 s
  local pid deadline=$((SECONDS + 30))
  pid=$(pid_of "$1") || return 0
  kill -TERM "$pid"
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  say "$1 (pid $pid) ignored SIGTERM for 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null; then
    # The jobs go first, so that no job step outlives the daemons (after KillWait, 30 s, SLURM kills them).
    scancel --partition="$PARTITION" 2>/dev/null || true
    wait_for "the end of the cancelled jobs" "$LOG/slurmd.log" jobs_gone
  fi
  local daemon
  for daemon in slurmd slurmctld slurmdbd mariadbd munged; do stop_daemon "$daemon"; done
}

status() {
  local daemon down=()
  for daemon in munged mariadbd slurmdbd slurmctld slurmd; do pid_of "$daemon" >/dev/null || down+=("$daemon"); done
  ((${#down[@]} == 0)) || die "not running: ${down[*]}"
  node_takes_jobs || die "the node does not take jobs: $(sinfo -h -N -o '%T %E')"
  say "up: partition $PARTITION, state in $STATE"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" 2 ;;
esac
