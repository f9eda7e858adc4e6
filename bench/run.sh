#!/bin/bash
# The measuring stick: Voyager against the baselines, over a grid of
# container sizes and link rates, in one lab, in one command.
#
#   bash bench/run.sh [--profile smoke|quick|full] [--out DIR]
#                     [--modes stop-copy[,MODE...]] [--build DIR] [--no-podman]
#                     [--no-setup] [--no-federation] [--grid cross|star]
#                     [--links LIST] [--reps N]
#
#   --profile  smoke: mem 16 MiB; disk 0, 32 MiB; 100 files; unshaped; 1 rep
#              quick: mem 16, 256 MiB; disk 0, 256 MiB; 1000 files; 1gbit;
#                     2 reps                                      (default)
#              full:  mem 16, 256, 1024, 4096 MiB; disk 0, 256, 1024,
#                     4096 MiB; 1000 and 100000 files; 1gbit, 10gbit and
#                     unshaped; 3 reps; star grid (below)
#   --grid     cross: every memory x disk x file count (smoke and quick);
#              star: one axis at a time from the first value of each: every
#              memory size with the first disk size and file count, every
#              disk size with the first memory size and file count, and
#              every further file count with the first memory size and the
#              second disk size (full: 8 cells a link instead of 32, which
#              at 6 methods and 3 reps would take days here)
#   --links    link settings to run, of 1gbit, 10gbit, unshaped (default:
#              the profile's)
#   --reps     repetitions per method and cell, 1..10 (default: the
#              profile's)
#   --out      results directory (default bench/results/DATE-TIME)
#   --modes    Voyager modes to measure, each a column of its own, passed
#              to `voyager migrate --mode` with `--memory stop-copy`, or
#              MODE+post-copy for `--memory post-copy` (default:
#              stop-copy,jit for smoke; stop-copy,presync,jit,jit+post-copy
#              for quick and full; a mode voyager refuses is recorded as
#              failed, never faked)
#   --build    use voyager and voyagerd from DIR (a meson build directory
#              of some other checkout) instead of building ./build
#   --no-podman  leave the podman baseline out
#   --no-setup   skip install-deps and the build (they must be done)
#   --no-federation  leave out the voyager-fs vs native part (below)
#
# Set-up: scripts/install-deps.sh, podman 5 from trixie (optional; if it
# cannot be installed the report says why), meson build.  Then one lab with
# hosts a and b.  Per link setting both hosts' links are shaped (tc tbf) and
# iperf3 measures the shaped link (server in b, client in a).  Per cell
# (memory M, disk D, files F): a busybox container running /sbin/memhog M
# (M MiB of non-zero pseudo-random memory) with D MiB of random data spread
# over F files under /data/vyfill in its root filesystem, migrated from a to
# b by each method, in an order that rotates with the repetition:
#   voyager/MODE  `voyager migrate ID --to B --mode MODE --memory stop-copy --json`
#                 (MODE+post-copy: `--memory post-copy`)
#   manual-runc   bench/manual-stopcopy.sh's msc_run (runc checkpoint, tar of
#                 bundle + images over TCP, runc restore)
#   podman        podman container checkpoint --export (zstd) on a, the
#                 archive over TCP, podman container restore --import on b
#                 (each host has its own podman storage)
# After every restore memhog re-checks its memory; the checksum must match.
#
# jit runs go on after the report: a poller in b asks `voyager --json status
# MID` every 0.25 s and keeps the hydration object {bytes, bytes_total,
# files, ...} of each sample, until the target's journal says "migrated"
# (every byte local, source released) or a bound (60 s + 1 s per 8 MiB of
# disk) passes.  Time to independence: migrate request -> first poll that
# sees "migrated".  memhog's memory check waits until then, so that it does
# not compete with hydration for the CPU.  At the end of every run (for jit,
# after independence) the harness reads VmHWM of voyagerd on a and b and of
# the voyager-fs processes of this container in b (found through b's netns
# pids; read only: they exit when the harness unmounts their trees).
#
# Federation (issue 6): after the grid, `bench/jit.sh --parts fio,meta` in a
# lab of its own measures fio (seqread, randread, randwrite) and find + stat
# scans through voyager-fs against the same files in its backing directory:
# scans before hydration (held to 256 KB/s) and after independence; fio with
# the data already local (read once through the mount) while hydration is
# held, and after independence.  Sizes per profile: smoke 256 MiB of fio
# data, 500 files, 1 s fio jobs, 10gbit (about 65 s); quick 256 MiB, 5000
# files, 1gbit, jit.sh --quick; full 1024 MiB, 50000 files, 3 repetitions
# (jit.sh's defaults).  Its JSON goes into results.json ("federation") and
# its files into DIR/federation/; a failure there is reported, and the rest
# stands.  VYB_FED_LIMIT (seconds) overrides the profile's bound on it.
#
# Writes DIR/results.json (every repetition, raw), then bench/report.py makes
# DIR/report.md, DIR/plots/*.{dat,gp} and the PNGs.  Exit status: 0 when the
# harness ran to the end, whatever the migrations did (failures are recorded
# in results.json and flagged in report.md); non-zero only when the harness
# itself broke (set-up, lab, no results).  No timing is ever asserted.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=quick
OUTDIR=""
MODES=""
USE_PODMAN=1
SETUP=1
FEDERATION=1
BUILD_DIR=""
GRID=""
LINKS_OPT=""
REPS_OPT=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--profile) PROFILE=${2:-}; shift 2 || usage ;;
	--out) OUTDIR=${2:-}; shift 2 || usage ;;
	--modes) MODES=${2:-}; shift 2 || usage ;;
	--build) BUILD_DIR=${2:-}; shift 2 || usage ;;
	--no-podman) USE_PODMAN=0; shift ;;
	--no-setup) SETUP=0; shift ;;
	--no-federation) FEDERATION=0; shift ;;
	--grid) GRID=${2:-}; shift 2 || usage ;;
	--links) LINKS_OPT=${2:-}; shift 2 || usage ;;
	--reps) REPS_OPT=${2:-}; shift 2 || usage ;;
	-h | --help) usage ;;
	*) echo "bench: unknown argument '$1'" >&2; usage ;;
	esac
done
case $PROFILE in
smoke) MEMS=(16); DISKS=(0 32); FILES=(100); LINKS=(unshaped); REPS=1; IPERF_S=1 ;;
quick) MEMS=(16 256); DISKS=(0 256); FILES=(1000); LINKS=(1gbit); REPS=2; IPERF_S=2 ;;
full) MEMS=(16 256 1024 4096); DISKS=(0 256 1024 4096); FILES=(1000 100000)
	LINKS=(1gbit 10gbit unshaped); REPS=3; IPERF_S=5 ;;
*) echo "bench: unknown profile '$PROFILE' (smoke, quick, full)" >&2; exit 2 ;;
esac
[ -n "$GRID" ] || { [ "$PROFILE" = full ] && GRID=star || GRID=cross; }
[[ $GRID =~ ^(cross|star)$ ]] || { echo "bench: --grid cross or star" >&2; exit 2; }
if [ -n "$LINKS_OPT" ]; then
	IFS=, read -r -a LINKS <<<"$LINKS_OPT"
	for l in "${LINKS[@]}"; do
		[[ $l =~ ^(1gbit|10gbit|unshaped)$ ]] || { echo "bench: --links: 1gbit, 10gbit, unshaped" >&2; exit 2; }
	done
fi
if [ -n "$REPS_OPT" ]; then
	[[ $REPS_OPT =~ ^[0-9]+$ ]] && [ "$REPS_OPT" -ge 1 ] && [ "$REPS_OPT" -le 10 ] ||
		{ echo "bench: --reps 1..10" >&2; exit 2; }
	REPS=$REPS_OPT
fi
# The cells to measure, "MEM DISK FILES" (see --grid)
declare -A IN_GRID=()
if [ "$GRID" = cross ]; then
	for d in "${DISKS[@]}"; do for f in "${FILES[@]}"; do for m in "${MEMS[@]}"; do
		IN_GRID["$m $d $f"]=1
	done; done; done
else
	for m in "${MEMS[@]}"; do IN_GRID["$m ${DISKS[0]} ${FILES[0]}"]=1; done
	for d in "${DISKS[@]}"; do IN_GRID["${MEMS[0]} $d ${FILES[0]}"]=1; done
	for f in "${FILES[@]:1}"; do IN_GRID["${MEMS[0]} ${DISKS[1]:-${DISKS[0]}} $f"]=1; done
fi
# group_in_grid DISK FILES: some memory size has a cell with these
group_in_grid() {
	local m
	for m in "${MEMS[@]}"; do [ -n "${IN_GRID["$m $1 $2"]:-}" ] && return 0; done
	return 1
}
# bench/jit.sh's options for the federation part, and a bound on its time
case $PROFILE in
smoke) FED_ARGS=(--disk 256 --files 500 --quick --fio-seconds 1 --rate 10gbit); FED_LIMIT=300 ;;
quick) FED_ARGS=(--disk 256 --files 5000 --quick --rate 1gbit); FED_LIMIT=900 ;;
full) FED_ARGS=(--disk 1024 --files 50000 --runs 3 --rate 1gbit); FED_LIMIT=3600 ;;
esac
FED_LIMIT=${VYB_FED_LIMIT:-$FED_LIMIT}
[[ $FED_LIMIT =~ ^[0-9]+$ ]] || { echo "bench: VYB_FED_LIMIT wants seconds" >&2; exit 2; }
if [ -z "$MODES" ]; then
	case $PROFILE in smoke) MODES=stop-copy,jit ;; *) MODES=stop-copy,presync,jit,jit+post-copy ;; esac
fi
IFS=, read -r -a MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do
	[[ $m =~ ^[a-z][a-z0-9-]{0,30}(\+post-copy)?$ ]] || { echo "bench: bad mode '$m'" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench: must run as root" >&2; exit 1; }
[ -n "$OUTDIR" ] || OUTDIR="$ROOT/bench/results/$(date +%Y-%m-%d-%H%M%S)"
mkdir -p "$OUTDIR" || { echo "bench: cannot make $OUTDIR" >&2; exit 1; }
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/run.log"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
die() { log "bench: HARNESS ERROR: $*"; exit 1; }
note() { printf '%s\n' "$*" >>"$WORK/notes.txt"; }

WORK=$(mktemp -d /tmp/vybench.XXXXXX) || exit 1
# Until the lab exists only WORK needs removing (teardown replaces this).
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
: >"$WORK/notes.txt"
: >"$WORK/runs.jsonl"
: >"$WORK/links.jsonl"
: >"$WORK/skipped.jsonl"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# ---------------------------------------------------------------- set-up
PODMAN_OK=0
PODMAN_WHY=""
if [ "$SETUP" = 1 ]; then
	log "set-up: scripts/install-deps.sh"
	bash "$ROOT/scripts/install-deps.sh" >>"$LOG" 2>&1 || die "install-deps failed (see $LOG)"
	if [ "$USE_PODMAN" = 1 ] && ! command -v podman >/dev/null; then
		log "set-up: podman from Debian trixie (apt-get install -t trixie podman)"
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends \
			-t trixie podman >>"$LOG" 2>&1 ||
			PODMAN_WHY="apt-get install -t trixie podman failed: $(tail -1 "$LOG")"
	fi
	if [ -z "$BUILD_DIR" ]; then
		log "set-up: meson build"
		(cd "$ROOT" && { meson setup build >/dev/null 2>&1; meson compile -C build; }) >>"$LOG" 2>&1 ||
			die "build failed (see $LOG)"
	fi
fi
[ -n "$BUILD_DIR" ] || BUILD_DIR="$ROOT/build"
BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || die "no build directory ${BUILD_DIR}"
[ -x "$BUILD_DIR/voyager" ] && [ -x "$BUILD_DIR/voyagerd" ] || die "no voyager, voyagerd in $BUILD_DIR"
export VY_BUILD=$BUILD_DIR
log "binaries: $BUILD_DIR ($("$BUILD_DIR/voyager" --version 2>&1 | head -1))"
for t in python3 runc criu iperf3; do command -v $t >/dev/null || die "$t missing"; done
if [ "$USE_PODMAN" = 0 ]; then
	PODMAN_WHY="left out (--no-podman)"
elif [ -z "$PODMAN_WHY" ] && ! command -v podman >/dev/null; then
	PODMAN_WHY="podman is not installed (and --no-setup was given, so no install was tried)"
fi

. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"
. "$ROOT/bench/manual-stopcopy.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"

LAB="vyb$$$(printf '%04x' $((RANDOM % 65536)))"
LAB=${LAB:0:13}
LAB_MADE=0
PODMAN_XFER_PID=""
IPERF_PID=""
# podman leaves /var/lib/containers/cache (import) and /run/containers
# (networks) behind; remove them at the end only if they were not there.
PM_LEFTOVERS=()
for d in /var/lib/containers /run/containers; do [ -e "$d" ] || PM_LEFTOVERS+=("$d"); done

# CPU accounting: every process the harness starts inside host H through
# lab_exec (voyagerd and its runc/criu children, the manual method's runc,
# tar and senders, podman, conmon, runc, criu) runs in the cgroup v2
# ACCT(H) = vylab-LAB-H/vyacct; cpu.stat usage_usec covers it all, exited
# processes included.  The containers themselves run in their own cgroups
# (cgroupsPath), so the workload's CPU is not counted.
CG2=""
if [ "${VYB_CPU_ACCT:-1}" = 0 ]; then :
elif [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then CG2=/sys/fs/cgroup/unified
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then CG2=/sys/fs/cgroup; fi
acct_dir() { [ -n "$CG2" ] && echo "$CG2/$(lab_cgroup_parent "$LAB" "$1")/vyacct"; }
acct_usec() { # HOST -> usage_usec, or empty
	local d
	d=$(acct_dir "$1") || return 0
	awk '$1 == "usage_usec" {print $2}' "$d/cpu.stat" 2>/dev/null
}
eval "_vyb_lab_exec() $(declare -f lab_exec | tail -n +2)"
lab_exec() {
	local d=""
	[ "${1:-}" = "$LAB" ] && [ "$LAB_MADE" = 1 ] && d=$(acct_dir "$2")
	if [ -n "$d" ] && [ -d "$d" ]; then
		(echo "$BASHPID" >"$d/cgroup.procs" 2>/dev/null; _vyb_lab_exec "$@")
	else
		_vyb_lab_exec "$@"
	fi
}

pm() { # HOST ARGS...: podman with the host's own storage
	local h=$1
	shift
	local d="$LAB_VAR_BASE/$LAB/vypodman"
	# runc's own state goes under the lab too (by default it is /run/runc,
	# shared with the machine, and would outlive the lab).
	PODMAN_IGNORE_CGROUPSV1_WARNING=1 lab_exec "$LAB" "$h" podman --root "$d/root" --runroot "$d/runroot" \
		--tmpdir "$d/tmp" --storage-driver overlay --cgroup-manager cgroupfs \
		--events-backend none --runtime runc --runtime-flag "root=$d/runc" "$@"
}

teardown() {
	local rc=$? h id
	trap - EXIT INT TERM
	[ -n "$MSC_RECV_PID" ] && kill "$MSC_RECV_PID" 2>/dev/null
	[ -n "$PODMAN_XFER_PID" ] && kill "$PODMAN_XFER_PID" 2>/dev/null
	[ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null
	if [ "$LAB_MADE" = 1 ]; then
		for h in a b; do vy_agent_stop "$LAB" "$h"; done
		mkdir -p "$OUTDIR/logs"
		for h in a b; do
			cp "$(lab_dir "$LAB" "$h")/voyagerd.log" "$OUTDIR/logs/voyagerd-$h.log" 2>/dev/null
		done
		if [ "$PODMAN_OK" = 1 ]; then
			for h in a b; do pm "$h" rm -af -t 0 >/dev/null 2>&1; done
		fi
		for h in a b; do
			for id in $(ls "$(lab_dir "$LAB" "$h")/runtime/runc" 2>/dev/null); do
				_vyb_lab_exec "$LAB" "$h" runc --root "$(lab_dir "$LAB" "$h")/runtime/runc" \
					delete -f "$id" >/dev/null 2>&1
			done
		done
		LAB_MADE=0
		lab_down "$LAB" >>"$LOG" 2>&1 || log "lab_down $LAB reported leftovers"
	fi
	for d in "${PM_LEFTOVERS[@]}"; do
		[ -e "$d" ] && rm -rf --one-file-system "$d"
	done
	rm -rf "$WORK"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ROOT/tests/workloads/mkrootfs.sh" build busybox >/dev/null || die "mkrootfs failed"

# ---------------------------------------------------------------- lab
log "profile $PROFILE, $GRID grid of ${#IN_GRID[@]} cells: mem {${MEMS[*]}} MiB, disk {${DISKS[*]}} MiB, files {${FILES[*]}}; links {${LINKS[*]}}; $REPS reps; lab $LAB; results in $OUTDIR"
LAB_MADE=1
lab_up "$LAB" a b >>"$LOG" 2>&1 || die "lab_up failed"
A=$(lab_dir "$LAB" a)
B=$(lab_dir "$LAB" b)
IPB=$(lab_ip "$LAB" b)
for h in a b; do
	d=$(acct_dir "$h")
	[ -n "$d" ] && { mkdir -p "$d" || die "cannot make $d"; }
done
[ -n "$CG2" ] || note "cpu: no cgroup v2 hierarchy found; CPU seconds not measured"
vy_key_init "$LAB_VAR_BASE/$LAB/vykeys" || die "keygen failed"
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || die "voyagerd did not start"
mkdir -p "$A/runtime/runc" "$B/runtime/runc"

# podman: one storage per host, at the same path in both hosts' mount
# namespaces (a checkpoint archive names its source's runroot paths, e.g.
# the conmon pidfile, and restore reuses them), bound from the host's dir.
if [ "$USE_PODMAN" = 1 ] && [ -z "$PODMAN_WHY" ]; then
	PODMAN_OK=1
	mkdir -p "$LAB_VAR_BASE/$LAB/vypodman"
	tar -C "$("$ROOT/tests/workloads/mkrootfs.sh" path busybox)" --exclude ./.vylab-stamp \
		-cf "$WORK/vybusybox.tar" . || die "tar of the busybox template failed"
	for h in a b; do
		hd=$(lab_dir "$LAB" "$h")
		mkdir -p "$hd/podman"
		if ! lab_exec "$LAB" "$h" mount --bind "$hd/podman" "$LAB_VAR_BASE/$LAB/vypodman" >>"$LOG" 2>&1; then
			PODMAN_OK=0; PODMAN_WHY="could not bind the per-host podman storage in host $h"; break
		fi
		if ! out=$(pm "$h" import "$WORK/vybusybox.tar" localhost/vybench:busybox 2>&1); then
			PODMAN_OK=0; PODMAN_WHY="podman import failed in host $h: $(tail -1 <<<"$out")"; break
		fi
	done
fi
[ "$PODMAN_OK" = 1 ] || log "podman baseline: not run: $PODMAN_WHY"

METHODS=()
for m in "${MODE_LIST[@]}"; do METHODS+=("voyager/$m"); done
METHODS+=(manual-runc)
[ "$PODMAN_OK" = 1 ] && METHODS+=(podman)

# ---------------------------------------------------------------- helpers
now_ms() { date +%s%3N; }

# make_fill DISK FILES DIR: DISK MiB of random data over FILES files
make_fill() {
	python3 - "$1" "$2" "$3" <<'PY'
import os, sys
mib, files, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
total = mib << 20
per, extra = divmod(total, files)
for i in range(files):
    sub = os.path.join(d, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    n = per + (1 if i < extra else 0)
    with open(os.path.join(sub, "f%06d" % i), "wb") as f:
        while n > 0:
            k = min(n, 1 << 20)
            f.write(os.urandom(k))
            n -= k
PY
}

# start_runc ID MEM: a memhog container on a with the fill tree; prints its
# checksum
start_runc() {
	local id=$1 mem=$2 b="$A/bundles/$1" i
	"$BUNDLE_SH" create "$b" busybox --id "$id" --cgroup-parent "$(lab_cgroup_parent "$LAB" a)" \
		-- /sbin/memhog "$mem" /data >/dev/null 2>>"$LOG" || return 1
	cp -a "$FILL" "$b/rootfs/data/vyfill" || return 1
	sync -f "$b/rootfs/data"
	# stdio must not be a host file: CRIU could not dump it
	lab_exec "$LAB" a runc --root "$A/runtime/runc" run -d --bundle "$b" "$id" \
		</dev/null >/dev/null 2>&1 || return 1
	for i in $(seq 3000); do
		[ -s "$b/rootfs/data/memhog" ] && break
		sleep 0.1
	done
	[ -s "$b/rootfs/data/memhog" ] || return 1
	cut -d' ' -f2 "$b/rootfs/data/memhog"
}

# verify_runc_b ID ROOTFS WANT: memhog re-checks its memory on b.  ROOTFS
# "-": the container's root as its process sees it (a jit rootfs is a FUSE
# mount in b's mount namespace only).
verify_runc_b() {
	local id=$1 rootfs=$2 want=$3 pid i got verdict
	pid=$(_vyb_lab_exec "$LAB" b runc --root "$B/runtime/runc" state "$id" 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null)
	[ -n "$pid" ] || return 1
	[ "$rootfs" = - ] && rootfs=/proc/$pid/root
	rm -f "$rootfs/data/memhog.verify"
	kill -USR1 "$pid" || return 1
	# 60 s, and 1 s more per 64 MiB: after post-copy the check faults in
	# the pages the background stream has not brought yet
	for i in $(seq $((600 + MEM * 10 / 64))); do
		if [ -s "$rootfs/data/memhog.verify" ]; then
			read -r _ got verdict <"$rootfs/data/memhog.verify"
			[ "$got" = "$want" ] && [ "$verdict" = ok ]
			return
		fi
		sleep 0.1
	done
	return 1
}

# kill_tree PID: PID and its descendants (found by parent PID), TERM then KILL
kill_tree() {
	local all=("$1") i=0 c
	while [ $i -lt ${#all[@]} ] && [ $i -lt 200 ]; do
		for c in $(ps -o pid= --ppid "${all[$i]}" 2>/dev/null); do all+=("$c"); done
		i=$((i + 1))
	done
	kill -TERM "${all[@]}" 2>/dev/null
	sleep 0.2
	kill -KILL "${all[@]}" 2>/dev/null
	return 0
}

# Per-run resource sampling around the measured migration.
VYD_PIDS=()
sample_begin() {
	local h pid
	CPU0_a=$(acct_usec a)
	CPU0_b=$(acct_usec b)
	for h in a b; do
		pid=$(vy_agent_pid "$LAB" "$h")
		# Reset VmHWM to the current RSS, so the peak is this run's.
		[ -n "$pid" ] && echo 5 >"/proc/$pid/clear_refs" 2>/dev/null
		eval "VYD0_$h=\$(vyd_cpu_ticks $pid)"
	done
}
vyd_cpu_ticks() { # PID -> utime+stime+cutime+cstime in clock ticks
	[ -n "${1:-}" ] && awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$1/stat" 2>/dev/null
}
vyd_hwm() { [ -n "${1:-}" ] && awk '$1 == "VmHWM:" {print $2}' "/proc/$1/status" 2>/dev/null; }
# sample_end: prints a JSON object for the run record
sample_end() {
	local c1a c1b pa pb t1a t1b
	c1a=$(acct_usec a)
	c1b=$(acct_usec b)
	pa=$(vy_agent_pid "$LAB" a)
	pb=$(vy_agent_pid "$LAB" b)
	t1a=$(vyd_cpu_ticks "$pa")
	t1b=$(vyd_cpu_ticks "$pb")
	python3 - "$CPU0_a" "$c1a" "$CPU0_b" "$c1b" "$VYD0_a" "$t1a" "$VYD0_b" "$t1b" \
		"$(vyd_hwm "$pa")" "$(vyd_hwm "$pb")" "$(getconf CLK_TCK)" <<'PY'
import json, sys
a = sys.argv[1:]
num = lambda s: int(s) if s.strip().lstrip("-").isdigit() else None
def d(x, y, scale):
    x, y = num(x), num(y)
    return None if x is None or y is None else round((y - x) / scale, 3)
tck = int(a[10])
print(json.dumps({
    "cpu_s": {"a": d(a[0], a[1], 1e6), "b": d(a[2], a[3], 1e6)},
    "voyagerd_cpu_s": {"a": d(a[4], a[5], tck), "b": d(a[6], a[7], tck)},
    "voyagerd_hwm_kib": {"a": num(a[8]), "b": num(a[9])},
}))
PY
}

# fs_hwm ID: VmHWM of the voyager-fs processes serving container ID's trees
# in b (found among b's netns pids by name and mount point; only read).
fs_hwm() {
	local id=$1 p comm kib out=()
	for p in $(ip netns pids "$(lab_netns "$LAB" b)" 2>/dev/null); do
		read -r comm <"/proc/$p/comm" 2>/dev/null || continue
		[ "$comm" = voyager-fs ] || continue
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "/containers/$id/" || continue
		kib=$(vyd_hwm "$p") && [ -n "$kib" ] && out+=("$kib")
	done
	python3 -c 'import json, sys
v = [int(x) for x in sys.argv[1:]]
print(json.dumps({"n": len(v), "sum": sum(v), "max": max(v)} if v else None))' "${out[@]}"
}

# jit_poll_start ID OUT DEADLINE_S: in b, until the target's journal of
# container ID's migration says how it ended (or STOP, or the deadline):
# every 0.25 s `voyager --json status MID`, one JSON line per sample with
# the hydration object; the last line carries the journal.  MID comes from
# the target journal file that names ID (the report is not out yet when
# hydration starts).  Not in the CPU accounting cgroup.
JIT_POLL_PID=""
jit_poll_start() {
	rm -f "$WORK/jit-poll.stop"
	_vyb_lab_exec "$LAB" b python3 - "$BUILD_DIR/voyager" "$B/run/voyagerd.sock" "$B/state/journal" \
		"$1" "$2" "$WORK/jit-poll.stop" "$3" "$$" <<'PY' >>"$LOG" 2>&1 &
import json, os, subprocess, sys, time
vy, sock, jdir, cid, out, stop, limit = sys.argv[1:8]
def ls():
    try:
        return set(os.listdir(jdir))
    except OSError:
        return set()
# Container IDs are unique in the lab: the target journal naming this one
# is this migration's (files that name another are not read again).
other, mid, end = set(), None, time.time() + float(limit)
harness = "/proc/" + sys.argv[8]  # gone (interrupted): stop too
with open(out, "w") as f:
    def put(r):
        r["t"] = int(time.time() * 1000)
        f.write(json.dumps(r) + "\n")
        f.flush()
    while time.time() < end and not os.path.exists(stop) and os.path.exists(harness):
        tick = time.time()
        if mid is None:
            for n in sorted(ls() - other):
                if not n.endswith(".json"):
                    continue
                try:
                    with open(os.path.join(jdir, n)) as j:
                        doc = json.load(j)
                except (OSError, ValueError):
                    continue
                if doc.get("container") == cid and doc.get("role") == "target":
                    mid = n[:-5]
                else:
                    other.add(n)
        if mid is not None:
            try:
                st = json.loads(subprocess.run([vy, "--socket", sock, "--json", "status", mid],
                                               capture_output=True, text=True, timeout=10).stdout)
            except (ValueError, subprocess.SubprocessError):
                st = {}
            j = st.get("migration") or {}
            h = [a.get("hydration") for a in st.get("active") or [] if a.get("id") == mid]
            if h and h[0]:
                put({"hydration": h[0]})
            if j.get("result"):
                put({"mid": mid, "journal": j})
                break
        time.sleep(max(0.0, 0.25 - (time.time() - tick)))
PY
	JIT_POLL_PID=$!
}
jit_poll_stop() {
	[ -n "$JIT_POLL_PID" ] || return 0
	touch "$WORK/jit-poll.stop"
	wait "$JIT_POLL_PID" 2>/dev/null
	JIT_POLL_PID=""
}

# ensure_agents: a voyagerd that died (killed from outside: the machine is
# shared) is started again and noted, so that one kill fails one run, not
# every Voyager run after it.
ensure_agents() {
	local h pid
	for h in a b; do
		pid=$(vy_agent_pid "$LAB" "$h")
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && continue
		log "voyagerd on $h (pid ${pid:-?}) is gone; starting it again"
		note "voyagerd on $h (pid ${pid:-?}) died during the run (before run $((N + 1))) and was started again"
		vy_agent_start "$LAB" "$h" runc >>"$LOG" 2>&1 || log "voyagerd on $h did not start again"
	done
}

# record JSON-FIELDS...: one run line (python merges the JSON pieces)
record() {
	python3 -c 'import json, sys
r = {}
for s in sys.argv[1:]:
    r.update(json.loads(s))
print(json.dumps(r))' "$@" >>"$WORK/runs.jsonl"
}

# Each run_* METHOD-ARG ID: prints a JSON object of its measurements and
# leaves nothing behind.
run_voyager() { # MODE ID
	local mode=$1 id=$2 want out ok=false intact=false res t_req t_ret jit="" limit mid served=""
	# MODE is a transfer mode, optionally "+post-copy": plain modes pin
	# --memory stop-copy, so that they compare like with like (auto would
	# pick post-copy for the larger memory sizes).
	local memory=stop-copy
	case $mode in *+post-copy) memory=post-copy ;; esac
	want=$(start_runc "$id" "$MEM") || { echo '{"ok": false, "error": "container did not start on a"}'; cleanup_runc "$id"; return; }
	sample_begin
	limit=$((60 + DISK / 8))
	[ "${mode%+post-copy}" = jit ] && jit_poll_start "$id" "$WORK/jit-poll.jsonl" "$limit"
	t_req=$(now_ms)
	out=$(vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode "${mode%+post-copy}" --memory "$memory" \
		--json 2>>"$LOG")
	t_ret=$(now_ms)
	[ -n "$out" ] && [ "$(vy_json_get "$out" result 2>/dev/null)" = migrated ] && ok=true
	if [ "${mode%+post-copy}" = jit ]; then
		# Hydration goes on after the report: wait (bounded) for the
		# target's journal, unless the migration itself failed.
		[ $ok = true ] && wait "$JIT_POLL_PID" 2>/dev/null
		jit_poll_stop
		mid=$(vy_json_get "$out" id 2>/dev/null)
		[ -n "$mid" ] && served=$(_vyb_lab_exec "$LAB" a "$BUILD_DIR/voyager" --socket "$A/run/voyagerd.sock" \
			--json status "$mid" 2>/dev/null)
		jit=$(jit_summary "$WORK/jit-poll.jsonl" "$t_req" "$t_ret" "$limit" "$(fs_hwm "$id")" "${served:-}")
	fi
	res=$(sample_end)
	if [ $ok = true ] && verify_runc_b "$id" - "$want"; then
		intact=true
	fi
	python3 -c 'import json, sys
try:
    r = json.loads(sys.argv[1])
except ValueError:
    r = {"result": None, "error": {"phase": "cli", "message": "no JSON from voyager migrate: %r" % sys.argv[1][:300]}}
out = {"ok": sys.argv[2] == "true", "memory_intact": sys.argv[3] == "true",
       "result": r.get("result"), "downtime_ms": r.get("downtime_ms"), "total_ms": r.get("total_ms"),
       "bytes_wire": (r.get("bytes") or {}).get("wire"), "bytes": r.get("bytes"),
       "phases_ms": r.get("phases_ms"), "error": r.get("error")}
out.update(json.loads(sys.argv[4]))
if sys.argv[5]:
    out.update(json.loads(sys.argv[5]))
print(json.dumps(out))' "${out:-}" "$ok" "$intact" "$res" "$jit"
	cleanup_runc "$id"
}

# jit_summary POLL T_REQ T_RET LIMIT FS_HWM SOURCE_STATUS: the jit part of a
# run record.  Times in ms from the migrate request; "resume" is the target
# journal's "committed" phase (the container runs from then on).
# SOURCE_STATUS: `voyager --json status MID` on a, whose journal has
# served_bytes once released.
jit_summary() {
	python3 - "$@" <<'PY'
import json, sys
poll, t_req, t_ret, limit, fs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
try:
    src = json.loads(sys.argv[6]).get("migration") or {}
except ValueError:
    src = {}
lines = []
try:
    with open(poll) as f:
        lines = [json.loads(l) for l in f if l.strip()]
except (OSError, ValueError):
    pass
j = next((l["journal"] for l in lines if "journal" in l), {})
at = {p.get("phase"): p.get("at_ms") for p in j.get("phases") or []}
resume = at.get("committed") or at.get("restored")
done = next((l["t"] for l in lines if "journal" in l), None)
indep = j.get("result") == "migrated" and bool(j.get("hydration"))
samples = [{"t_ms": l["t"] - t_req, "bytes": l["hydration"].get("bytes"),
            "bytes_total": l["hydration"].get("bytes_total"), "files": l["hydration"].get("files"),
            "files_total": l["hydration"].get("files_total"), "rate_bps": l["hydration"].get("rate_bps"),
            "source_up": l["hydration"].get("source_up")} for l in lines if "hydration" in l]
h = j.get("hydration") or {}
print(json.dumps({
    "independent": indep,
    "independence_ms": done - t_req if indep and done else None,
    "jit": {"cli_return_ms": t_ret - t_req, "resume_ms": resume - t_req if resume else None,
            "independent_phase_ms": at["independent"] - t_req if at.get("independent") else None,
            "target_result": j.get("result"), "released": j.get("released"),
            "served_bytes": src.get("served_bytes") if src.get("released") else None,
            "hydration": {k: h.get(k) for k in ("bytes", "files", "ms")} if h else None,
            "wait_limit_s": int(limit), "samples": samples},
    "voyager_fs_hwm_kib": json.loads(fs) if fs else None,
}))
PY
}
cleanup_runc() { # ID
	local m
	_vyb_lab_exec "$LAB" b runc --root "$B/runtime/runc" delete -f "$1" >/dev/null 2>&1
	_vyb_lab_exec "$LAB" a runc --root "$A/runtime/runc" delete -f "$1" >/dev/null 2>&1
	# jit: voyager-fs mounts in b's mount namespace; each voyager-fs exits
	# when its tree is unmounted.
	for m in $(_vyb_lab_exec "$LAB" b awk -v d="$B/state/containers/$1/" \
		'index($5, d) == 1 {print length($5) " " $5}' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-); do
		_vyb_lab_exec "$LAB" b umount -l "$m" 2>/dev/null
	done
	rm -rf "$B/state/containers/$1" "$A/bundles/$1"
}

run_manual() { # - ID
	local id=$2 out res
	start_runc "$id" "$MEM" >/dev/null || { echo '{"ok": false, "error": "container did not start on a"}'; msc_clean "$LAB" a b "$id"; return; }
	sample_begin
	MSC_RECV_PID=""
	msc_run "$LAB" a b "$id" "$A/bundles/$id" >"$WORK/msc.out" 2>>"$LOG"
	res=$(sample_end)
	# A failed msc_run may leave its listener (and its children) running.
	[ -n "$MSC_RECV_PID" ] && kill_tree "$MSC_RECV_PID"
	MSC_RECV_PID=""
	out=$(cat "$WORK/msc.out")
	python3 -c 'import json, sys
try:
    r = json.loads(sys.argv[1])
except ValueError:
    r = {}
ok = "downtime_ms" in r
out = {"ok": ok, "memory_intact": bool(r.get("memory_intact")),
       "result": "migrated" if ok else "failed",
       "downtime_ms": r.get("downtime_ms"), "total_ms": r.get("total_ms"),
       "bytes_wire": r.get("bytes"),
       "phases_ms": {k[:-3]: r[k] for k in ("dump_ms", "copy_ms", "restore_ms") if k in r},
       "error": None if ok else "msc_run failed (see run.log)"}
out.update(json.loads(sys.argv[2]))
print(json.dumps(out))' "${out:-}" "$res"
	msc_clean "$LAB" a b "$id"
}

# podman: the container from the imported busybox image, the fill tree in
# its writable layer (podman mount + cp), memhog M.
start_podman() { # ID -> checksum
	local id=$1 mnt i
	pm a create --name "$id" --network none --cgroups no-conmon \
		--cgroup-parent "/$(lab_cgroup_parent "$LAB" a)" localhost/vybench:busybox \
		/sbin/memhog "$MEM" /data >/dev/null 2>>"$LOG" || return 1
	mnt=$(pm a mount "$id" 2>>"$LOG") || return 1
	lab_exec "$LAB" a cp -a "$FILL" "$mnt/data/vyfill" 2>>"$LOG" || return 1
	pm a umount "$id" >/dev/null 2>>"$LOG"
	pm a start "$id" >/dev/null 2>>"$LOG" || return 1
	for i in $(seq 3000); do
		out=$(pm a exec "$id" cat /data/memhog 2>/dev/null) && [ -n "$out" ] && break
		sleep 0.2
	done
	[ -n "${out:-}" ] || return 1
	cut -d' ' -f2 <<<"$out"
}

run_podman() { # - ID
	local id=$2 want t_start t0 t_ck t_copy t1 ok=false intact=false err="" res i got verdict v
	local arch_a="$A/tmp/$id.tar.zst" arch_b="$B/tmp/$id.tar.zst"
	want=$(start_podman "$id") || { echo '{"ok": false, "error": "podman container did not start on a"}'; cleanup_podman "$id"; return; }
	sample_begin
	t_start=$(now_ms)
	lab_exec "$LAB" b python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
open(sys.argv[3] + ".ready", "w").close()
s.settimeout(900)
c, _ = s.accept()
n = 0
with open(sys.argv[3], "wb") as f:
    while True:
        b = c.recv(1 << 20)
        if not b: break
        n += len(b); f.write(b)
open(sys.argv[3] + ".bytes", "w").write(str(n))
' "$IPB" 7712 "$arch_b" </dev/null >>"$LOG" 2>&1 &
	PODMAN_XFER_PID=$!
	for i in $(seq 100); do [ -e "$arch_b.ready" ] && break; sleep 0.05; done
	t0=$(now_ms)
	if ! [ -e "$arch_b.ready" ]; then
		err="archive listener did not start"
	elif ! pm a container checkpoint --export "$arch_a" "$id" >/dev/null 2>>"$LOG"; then
		err="podman container checkpoint --export failed (see run.log)"
	else
		t_ck=$(now_ms)
		if ! lab_exec "$LAB" a python3 -c '
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
with open(sys.argv[3], "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b: break
        c.sendall(b)
c.close()
' "$IPB" 7712 "$arch_a" </dev/null >>"$LOG" 2>&1 || ! wait "$PODMAN_XFER_PID"; then
			err="archive transfer failed"
		else
			PODMAN_XFER_PID=""
			t_copy=$(now_ms)
			if ! pm b container restore --import "$arch_b" >/dev/null 2>>"$LOG"; then
				err="podman container restore --import failed (see run.log)"
			else
				t1=$(now_ms)
				ok=true
			fi
		fi
	fi
	res=$(sample_end)
	[ -n "$PODMAN_XFER_PID" ] && { kill_tree "$PODMAN_XFER_PID"; wait "$PODMAN_XFER_PID" 2>/dev/null; PODMAN_XFER_PID=""; }
	if [ $ok = true ]; then
		pm b exec "$id" kill -USR1 1 >/dev/null 2>&1
		for i in $(seq $((300 + MEM * 5 / 64))); do
			v=$(pm b exec "$id" cat /data/memhog.verify 2>/dev/null) && [ -n "$v" ] && break
			sleep 0.2
		done
		read -r _ got verdict <<<"${v:-}"
		[ "${got:-}" = "$want" ] && [ "${verdict:-}" = ok ] && intact=true
	fi
	python3 -c 'import json, sys
a = sys.argv[1:]
ok = a[0] == "true"
num = lambda s: int(s) if s.isdigit() else None
t_start, t0, t_ck, t_copy, t1 = (num(x) for x in a[2:7])
out = {"ok": ok, "memory_intact": a[1] == "true", "result": "migrated" if ok else "failed",
       "downtime_ms": t1 - t0 if ok else None, "total_ms": t1 - t_start if ok else None,
       "bytes_wire": num(a[7]) if ok else None,
       "phases_ms": {"checkpoint": t_ck - t0, "copy": t_copy - t_ck, "restore": t1 - t_copy} if ok else None,
       "error": a[8] or None}
out.update(json.loads(a[9]))
print(json.dumps(out))' "$ok" "$intact" "$t_start" "$t0" "${t_ck:-}" "${t_copy:-}" "${t1:-}" \
		"$(cat "$arch_b.bytes" 2>/dev/null)" "$err" "$res"
	cleanup_podman "$id"
}
cleanup_podman() { # ID
	pm b rm -f -t 0 "$1" >/dev/null 2>&1
	pm a rm -f -t 0 "$1" >/dev/null 2>&1
	rm -f "$A/tmp/$1".tar.zst* "$B/tmp/$1".tar.zst*
}

# shape_link LINK: both hosts; then iperf3 a -> b over it
shape_link() {
	local link=$1 h out
	for h in a b; do
		if [ "$link" = unshaped ]; then
			lab_shape "$LAB" "$h" off
		else
			lab_shape "$LAB" "$h" "$link" || die "lab_shape $h $link failed"
		fi
	done
	lab_exec "$LAB" b iperf3 -s -1 -B "$IPB" -p 7713 >/dev/null 2>>"$LOG" </dev/null &
	IPERF_PID=$!
	sleep 0.5
	out=$(lab_exec "$LAB" a iperf3 -c "$IPB" -p 7713 -t "$IPERF_S" -J 2>>"$LOG" </dev/null)
	wait "$IPERF_PID" 2>/dev/null
	IPERF_PID=""
	python3 -c 'import json, sys
link, out = sys.argv[1], sys.argv[2]
try:
    e = json.loads(out)["end"]
    r = {"link": link, "iperf3_bps": round(e["sum_received"]["bits_per_second"]),
         "iperf3_sent_bps": round(e["sum_sent"]["bits_per_second"]), "seconds": float(sys.argv[3]), "error": None}
except Exception as x:
    r = {"link": link, "iperf3_bps": None, "seconds": float(sys.argv[3]), "error": "iperf3: %s" % (str(x) or "no output")}
print(json.dumps(r))' "$link" "${out:-}" "$IPERF_S" >>"$WORK/links.jsonl"
	log "link $link: iperf3 a->b $(tail -1 "$WORK/links.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f Mbit/s" % (r["iperf3_bps"]/1e6) if r["iperf3_bps"] else r["error"])')"
}

# fits MEM DISK: the sanity check.  Prints the reason when it does not fit.
fits() {
	local mem=$1 disk=$2 avail_kib free_kib need_disk need_mem
	avail_kib=$(awk '$1 == "MemAvailable:" {print $2}' /proc/meminfo)
	free_kib=$(df -Pk "$LAB_VAR_BASE/$LAB" | awk 'NR == 2 {print $4}')
	# Memory: the frozen source and the restored target both hold it
	# (Voyager freezes with --leave-running), plus 512 MiB of slack.
	need_mem=$(((2 * mem + 512) * 1024))
	# Disk: template + source bundle + target copy + podman's writable
	# layer, archive on a and on b, and restored layer; images twice.
	need_disk=$(((5 * disk + 3 * mem + 1024) * 1024))
	if [ "$avail_kib" -lt "$need_mem" ]; then
		echo "memory: needs about $((need_mem / 1024)) MiB available, $((avail_kib / 1024)) MiB is"
		return 1
	fi
	if [ "$free_kib" -lt "$need_disk" ]; then
		echo "disk: needs about $((need_disk / 1024)) MiB free under $LAB_VAR_BASE, $((free_kib / 1024)) MiB is"
		return 1
	fi
}

# ---------------------------------------------------------------- the grid
N=0
FAILED=0
for disk in "${DISKS[@]}"; do
	for files in "${FILES[@]}"; do
		group_in_grid "$disk" "$files" || continue
		FILL="$A/tmp/vyfill"
		rm -rf "$FILL"
		fill_ok=1
		if why=$(fits "${MEMS[0]}" "$disk"); then
			log "fill: $disk MiB of random data over $files files"
			mkdir -p "$FILL" && make_fill "$disk" "$files" "$FILL" || die "could not write the fill tree"
		else
			fill_ok=0
		fi
		for link in "${LINKS[@]}"; do
			[ $fill_ok = 1 ] && shape_link "$link"
			for mem in "${MEMS[@]}"; do
				[ -n "${IN_GRID["$mem $disk $files"]:-}" ] || continue
				MEM=$mem
				DISK=$disk
				if ! why=$(fits "$mem" "$disk"); then
					log "skip mem $mem MiB, disk $disk MiB, files $files, link $link: $why"
					python3 -c 'import json,sys; print(json.dumps({"mem_mib": int(sys.argv[1]), "disk_mib": int(sys.argv[2]), "files": int(sys.argv[3]), "link": sys.argv[4], "reason": sys.argv[5]}))' \
						"$mem" "$disk" "$files" "$link" "$why" >>"$WORK/skipped.jsonl"
					continue
				fi
				for ((rep = 1; rep <= REPS; rep++)); do
					nm=${#METHODS[@]}
					for ((k = 0; k < nm; k++)); do
						method=${METHODS[$(((k + rep - 1) % nm))]}
						ensure_agents
						N=$((N + 1))
						id="${LAB}r$N"
						case $method in
						voyager/*) res=$(run_voyager "${method#voyager/}" "$id") ;;
						manual-runc) res=$(run_manual - "$id") ;;
						podman) res=$(run_podman - "$id") ;;
						esac
						[ -n "$res" ] || res='{"ok": false, "error": "harness: no measurement"}'
						record "$res" "$(python3 -c 'import json,sys; a=sys.argv[1:]; print(json.dumps({"method": a[0], "link": a[1], "mem_mib": int(a[2]), "disk_mib": int(a[3]), "files": int(a[4]), "rep": int(a[5]), "order": int(a[6]), "data_bytes": (int(a[2]) + int(a[3])) << 20}))' \
							"$method" "$link" "$mem" "$disk" "$files" "$rep" "$((k + 1))")"
						log "$(tail -1 "$WORK/runs.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%-17s link %s mem %4d disk %4d files %d rep %d: %s%s" % (r["method"], r["link"], r["mem_mib"], r["disk_mib"], r["files"], r["rep"], ("downtime %s ms, total %s ms, wire %s B, memory intact %s" % (r.get("downtime_ms"), r.get("total_ms"), r.get("bytes_wire"), r.get("memory_intact"))) if r.get("ok") else "FAILED: %s" % (r.get("error"),), "" if "jit" not in r else ", independent after %s ms (%d samples), voyager-fs peak %s KiB" % (r.get("independence_ms"), len(r["jit"]["samples"]), (r.get("voyager_fs_hwm_kib") or {}).get("sum"))))')"
						grep -q '"ok": true' <<<"$res" || FAILED=$((FAILED + 1))
					done
				done
			done
		done
		rm -rf "$FILL"
	done
done

# ---------------------------------------------------------------- federation
# voyager-fs against native (issue 6), by bench/jit.sh in a lab of its own.
# Whatever happens there, the grid's results stand: exit status, timeout
# and a missing JSON are recorded for the report.
export VYB_FED_RAN=0 VYB_FED_RC="" VYB_FED_CMD="" VYB_FED_WHY="left out (--no-federation)"
export VYB_FED_JSON="$OUTDIR/federation/jit.json"
if [ "$FEDERATION" = 1 ]; then
	mkdir -p "$OUTDIR/federation" || die "cannot make $OUTDIR/federation"
	rm -f "$VYB_FED_JSON" # a reused --out must not report an older run's figures
	VYB_FED_CMD="bench/jit.sh --parts fio,meta ${FED_ARGS[*]} --no-setup --build ${BUILD_DIR#$ROOT/} --out ${OUTDIR#$ROOT/}/federation/jit"
	log "federation: $VYB_FED_CMD (at most $FED_LIMIT s; log federation/jit.log)"
	timeout --kill-after=30 "$FED_LIMIT" bash "$ROOT/bench/jit.sh" --parts fio,meta "${FED_ARGS[@]}" --no-setup \
		--build "$BUILD_DIR" --out "$OUTDIR/federation/jit" >"$OUTDIR/federation/jit.log" 2>&1
	VYB_FED_RC=$?
	VYB_FED_RAN=1
	log "federation: bench/jit.sh exit status $VYB_FED_RC$([ -s "$VYB_FED_JSON" ] || echo ", no results")"
fi

# ---------------------------------------------------------------- results
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
VYB_GRID=$GRID VYB_CELLS=$(printf '%s\n' "${!IN_GRID[@]}") VYB_TMPL_BYTES=$(du -sb "$("$ROOT/tests/workloads/mkrootfs.sh" path busybox)" 2>/dev/null | cut -f1) \
	VYB_ROOT=$ROOT python3 - "$WORK" "$OUTDIR/results.json" "$PROFILE" "$STARTED" "$FINISHED" "$REPS" "$PODMAN_OK" "$PODMAN_WHY" \
	"${MEMS[*]}" "${DISKS[*]}" "${FILES[*]}" "${LINKS[*]}" "${METHODS[*]}" "$CG2" <<'PY' || die "could not write results.json"
import json, os, platform, subprocess, sys
work, out, profile, started, finished, reps, pm_ok, pm_why = sys.argv[1:9]
mems, disks, files, links, methods, cg2 = (s.split() for s in sys.argv[9:15])
def lines(name):
    with open(os.path.join(work, name)) as f:
        return [json.loads(l) for l in f if l.strip()]
sys.path.insert(0, os.path.join(os.environ["VYB_ROOT"], "bench"))
from hostinfo import git_describe, ver  # noqa: E402
tmpl_bytes = int(os.environ.get("VYB_TMPL_BYTES") or 0) or None
mem_total = None
with open("/proc/meminfo") as f:
    for l in f:
        if l.startswith("MemTotal:"):
            mem_total = int(l.split()[1]) // 1024
doc = {
    "schema": 1,
    "profile": profile, "started": started, "finished": finished,
    "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "mem_mib": mem_total,
             "criu": (ver("criu", "--version") or "").replace("Version: ", "criu ") or None, "runc": ver("runc", "--version"),
             "podman": ver("podman", "--version") if pm_ok == "1" else None,
             "voyager": ver(os.environ["VY_BUILD"] + "/voyager", "--version"),
             "voyager_build": os.environ["VY_BUILD"],
             "bench_checkout": git_describe(os.environ["VYB_ROOT"])},
    "grid": {"mem_mib": [int(x) for x in mems], "disk_mib": [int(x) for x in disks],
             "files": [int(x) for x in files], "links": links, "reps": int(reps), "methods": methods,
             "design": os.environ.get("VYB_GRID"),
             "cells": sorted([int(x) for x in c.split()] for c in os.environ.get("VYB_CELLS", "").splitlines() if c.strip())},
    "baseline": "manual-runc",
    "podman": {"ran": pm_ok == "1", "why_not": None if pm_ok == "1" else pm_why},
    "definitions": {
        "downtime_ms": {"voyager": "the report's downtime_ms: freeze (checkpoint start) -> target reported the container restored",
                        "manual-runc": "runc checkpoint start -> runc restore -d returned on b",
                        "podman": "podman container checkpoint --export start -> podman container restore --import returned on b"},
        "total_ms": {"voyager": "the report's total_ms: request -> report (preflight, commit and cleanup included)",
                     "manual-runc": "receiver start -> runc restore returned",
                     "podman": "receiver start -> restore returned"},
        "bytes_wire": {"voyager": "the report's bytes.wire: TLS payload the source sent",
                       "manual-runc": "bytes of the tar stream received on b",
                       "podman": "bytes of the exported checkpoint archive (zstd) received on b"},
        "data_bytes": "(mem_mib + disk_mib) MiB: the container's memhog memory plus its fill data; the busybox "
                      "root filesystem itself (%s bytes) is not counted, so wire / data is above 1 for small cells" % tmpl_bytes,
        "podman_image": "podman's container runs from an image (the same busybox tree, podman import) that both hosts "
                        "already hold, as after a registry pull: only the checkpoint and the writable layer (the fill "
                        "data) travel. Voyager and the manual method send the whole root filesystem, image included. "
                        "podman restores under the source's cgroup parent name (restore --import has no "
                        "--cgroup-parent); both are lab cgroups.",
        "cpu_s": "CPU seconds (cgroup v2 cpu.stat usage_usec) of everything the harness ran inside each host "
                 "during the migration: voyagerd and the runc/criu it ran, or the manual method's runc, criu, tar and "
                 "python sender/receiver, or podman, conmon, runc and criu. The containers' own processes are not "
                 "included (they run in their own cgroups). Idle voyagerd agents are included for every method.",
        "voyagerd_cpu_s": "voyagerd's utime+stime+cutime+cstime from /proc/PID/stat (itself plus the runc/criu children it reaped), per host",
        "voyagerd_hwm_kib": "voyagerd's VmHWM from /proc/PID/status, reset (clear_refs 5) before each run, per host; voyagerd only",
        "independence_ms": "jit runs: migrate request -> the first poll (every 0.25 s, `voyager --json status MID` on b) "
                           "that sees the target's journal result \"migrated\" (every byte local and synced, the "
                           "source released); null when that did not happen within jit.wait_limit_s. For the other "
                           "methods the report uses total_ms: the target holds everything when they finish",
        "jit": "jit runs: cli_return_ms (request -> voyager migrate returned), resume_ms (request -> the target "
               "journal's committed phase), independent_phase_ms (request -> its independent phase), the target journal's hydration {bytes, files, ms (from the commit)}, "
               "and samples: every 0.25 s while hydrating, the target's status hydration object "
               "{t_ms from the request, bytes, bytes_total, files, files_total, rate_bps, source_up} "
               "(voyagerd refreshes it every 0.5 s); served_bytes: the source journal's count of file bytes it served "
               "to the target's voyager-fs until released (after the report, so not in bytes_wire). CPU seconds and peak memory of jit runs are read "
               "after independence, so they include hydration; the memory check too waits until then",
        "voyager_fs_hwm_kib": "jit runs: VmHWM of the voyager-fs processes serving this container in b (one per "
                              "tree), read after independence, just before the harness unmounts them: n, sum, max",
        "client_pause_ms": "not measured in this grid: its memhog container serves no client. bench/network.sh "
                           "measures the pause a redis client sees, separately"},
    "links": lines("links.jsonl"),
    "skipped": lines("skipped.jsonl"),
    "notes": [l.rstrip("\n") for l in open(os.path.join(work, "notes.txt")) if l.strip()],
    "runs": lines("runs.jsonl"),
}
if not cg2:
    doc["notes"].append("no cgroup v2 hierarchy: cpu_s not measured")
def federation():
    e = os.environ
    if e.get("VYB_FED_RAN") != "1":
        return {"ran": False, "why_not": e.get("VYB_FED_WHY")}
    rc = int(e["VYB_FED_RC"]) if e.get("VYB_FED_RC", "").lstrip("-").isdigit() else None
    f = {"ran": True, "command": e.get("VYB_FED_CMD"), "exit_status": rc, "timed_out": rc in (124, 137),
         "log": "federation/jit.log", "error": None, "jit": None}
    try:
        with open(e["VYB_FED_JSON"]) as fh:
            f["jit"] = json.load(fh)
    except (OSError, ValueError) as x:
        last = ""
        try:
            with open(os.path.join(os.path.dirname(e["VYB_FED_JSON"]), "jit.log")) as fh:
                last = ([l.strip() for l in fh if l.strip()] or [""])[-1]
        except OSError:
            pass
        f["error"] = "bench/jit.sh wrote no results (%s)%s" % (
            x.__class__.__name__, "; the last line of its log: " + last if last else "")
    return f
doc["federation"] = federation()
with open(out + ".tmp", "w") as f:
    json.dump(doc, f, indent=1)
os.rename(out + ".tmp", out)
PY
log "results: $OUTDIR/results.json ($N runs, $FAILED failed)"
python3 "$ROOT/bench/report.py" "$OUTDIR/results.json" --out "$OUTDIR" >>"$LOG" 2>&1 ||
	die "report.py failed (see $LOG)"
log "report: $OUTDIR/report.md"
[ "$FAILED" = 0 ] || log "$FAILED run(s) failed; see report.md"
exit 0
