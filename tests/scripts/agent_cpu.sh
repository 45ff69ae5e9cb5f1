#!/usr/bin/env bash
# User-space CPU of the real agent per event (issue 15, "per-event user-space CPU").
#
# Starts a release fdr-agent with the default configuration (own socket and data
# dir in a temp dir) in a cgroup v2 of its own, and reads the cgroup's cpu.stat
# usage_usec (all threads) around each workload, the idle rate subtracted:
#   write  — WRITES × (open(O_WRONLY) + close) of one file in a temp dir (one event each)
#   exec   — EXECS × posix_spawn of /bin/true + wait (fork, exec, exit: three
#            records each), from a small C program (needs cc)
# Prints µs of agent CPU per operation, one line per run, and the events the
# agent saw beyond the workload's own (`other`: whatever else ran on the
# machine meanwhile, from the idle window's start to the end; a large
# figure marks a noisy run: a run with more than MAX_OTHER of them, default
# 1 % of the workload's events + 100, is printed as `noisy` and repeated, up
# to TRIES (8) times).
#
# Usage (root): tests/scripts/agent_cpu.sh [AGENT_BIN] [RUNS]
#   AGENT_BIN  default $CARGO_TARGET_DIR/release/fdr-agent (or target/release/fdr-agent)
#   RUNS       default 3
# Env: WRITES (200000), EXECS (2000), IDLE_SECS (3), FDRCTL (fdrctl next to
#   AGENT_BIN, for the event counts), MAX_OTHER, TRIES, PERF=1 to record
#   `perf record -g` (or PERF_ARGS, e.g. "--call-graph dwarf") of the agent
#   during the workloads into $OUT/perf-*.data
#   (kept with OUT=dir).
# To compare two builds, interleave them: for i in 1 2 3; do
#   agent_cpu.sh /path/before 1; agent_cpu.sh /path/after 1; done
set -euo pipefail

AGENT=${1:-${CARGO_TARGET_DIR:-target}/release/fdr-agent}
RUNS=${2:-3}
WRITES=${WRITES:-200000}
EXECS=${EXECS:-2000}
IDLE_SECS=${IDLE_SECS:-3}
PY=/usr/bin/python3

TMP=$(mktemp -d /tmp/fdr-cpu.XXXXXX)
OUT=${OUT:-$TMP}
CG=/sys/fs/cgroup/unified/fdr-cpu-$$
AGENT_PID=
cleanup() {
	if [[ -n $AGENT_PID ]]; then
		kill "$AGENT_PID" 2>/dev/null || true
		wait "$AGENT_PID" 2>/dev/null || true
	fi
	[[ -d $CG ]] && rmdir "$CG" 2>/dev/null || true
	[[ $OUT == "$TMP" ]] && rm -rf "$TMP" || rm -rf "$TMP/data" "$TMP/work"
}
trap cleanup EXIT

CTL=${FDRCTL:-$(dirname "$AGENT")/fdrctl}
# Events the agent has seen so far, all kinds.
seen() {
	"$CTL" --socket "$TMP/fdr.sock" stats --json |
		"$PY" -c 'import json,sys; print(sum(k["seen"] for k in json.load(sys.stdin)["kinds"]))'
}
usage() { awk '/^usage_usec/ {print $2}' "$CG/cpu.stat"; }
now_us() { date +%s%6N; }

mkdir -p "$TMP/data" "$TMP/work" "$CG"
# The agent joins the cgroup before it starts: a subshell moves itself, then execs.
(
	echo $BASHPID >"$CG/cgroup.procs"
	exec "$AGENT" --socket "$TMP/fdr.sock" --data-dir "$TMP/data" --log-level warn
) >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 600); do
	[[ -S $TMP/fdr.sock ]] && break
	kill -0 "$AGENT_PID" 2>/dev/null || { cat "$TMP/agent.log"; exit 1; }
	sleep 0.1
done
[[ -S $TMP/fdr.sock ]] || { echo "agent did not start" >&2; exit 1; }
sleep 2 # seeding and first container scan settle

# CPU µs of the agent over the command, minus the idle rate measured just before.
measure() { # name ops events cmd...
	local name=$1 ops=$2 events=$3
	shift 3
	local u0 t0 u1 t1 u2 t2 s0 s2 perf_pid=
	s0=$(seen)
	u0=$(usage); t0=$(now_us)
	sleep "$IDLE_SECS"
	u1=$(usage); t1=$(now_us)
	if [[ ${PERF:-0} == 1 ]]; then
		perf record -q ${PERF_ARGS:--g} -p "$AGENT_PID" -o "$OUT/perf-$name.data" >/dev/null 2>&1 &
		perf_pid=$!
		sleep 0.5
		u1=$(usage); t1=$(now_us)
	fi
	"$@"
	# let the agent drain what the workload left in the ring (poll 10 ms)
	sleep 0.3
	u2=$(usage); t2=$(now_us)
	s2=$(seen)
	if [[ -n $perf_pid ]]; then
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
	fi
	awk -v n="$name" -v ops="$ops" -v u0="$u0" -v t0="$t0" -v u1="$u1" -v t1="$t1" \
		-v u2="$u2" -v t2="$t2" -v other=$((s2 - s0 - events)) 'BEGIN {
		idle = (u1 - u0) / (t1 - t0)
		busy = (u2 - u1) - idle * (t2 - t1)
		printf "%-6s %8d ops  agent %8.0f us (idle %.2f%% of a core, other events %d)  %.3f us/op\n",
			n, ops, busy, idle * 100, other, busy / ops
	}'
	local max_other=${MAX_OTHER:-$((events / 100 + 100))}
	((s2 - s0 - events <= max_other))
}

# measure, repeated while the machine was too busy for a clean figure.
measure_clean() {
	local try
	for ((try = 1; try < ${TRIES:-8}; try++)); do
		measure "$@" && return
		echo "  (noisy: repeated)"
	done
	measure "$@" || echo "  (noisy: kept, tries exhausted)"

}

writes() {
	"$PY" - "$TMP/work/f" "$WRITES" <<'EOF'
import os, sys
p, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644))
EOF
}
# posix_spawn (vfork + exec) of /bin/true and wait, EXECS times: as quick a
# fork + exec + exit as a process can make, so that the agent's work per exec
# stands out of its idle rate (a bash loop spawns one every few ms).
SPAWN_C='
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
	int n = atoi(argv[1]);
	char *args[] = {"/bin/true", NULL};
	for (int i = 0; i < n; i++) {
		pid_t pid;
		int st;
		if (posix_spawn(&pid, "/bin/true", NULL, NULL, args, environ) != 0) return 1;
		waitpid(pid, &st, 0);
	}
	return 0;
}'
execs() {
	if [[ ! -x $TMP/spawn ]]; then
		echo "$SPAWN_C" | cc -O2 -x c -o "$TMP/spawn" -
	fi
	"$TMP/spawn" "$EXECS"
}

echo "agent $AGENT (pid $AGENT_PID)"
for ((r = 1; r <= RUNS; r++)); do
	# each write-open is one event; each exec a fork, an exec and an exit
	measure_clean write "$WRITES" "$WRITES" writes
	measure_clean exec "$EXECS" $((3 * EXECS)) execs
done
