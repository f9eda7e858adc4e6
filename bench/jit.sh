#!/bin/bash
# Just-in-time migration (issue 3's figures), all in one lab, in one run.
#
#   bench/jit.sh [--runs N] [--quick] [--disk MIB] [--files N] [--rate RATE]
#                [--out PREFIX] [--build DIR] [--no-setup] [--no-drop-caches]
#                [--nofile N] [--memory MODE] [--parts LIST] [--fio-seconds S]
#                [--fio-jobs LIST]
#       --runs     repetitions of each measurement                     3
#       --quick    1 repetition, shorter iperf3 and fio (~4 minutes; the
#                  default takes ~15 on 2 cores, --runs 5 ~22)
#       --fio-seconds S  runtime of the time-based fio jobs (randread,
#                  randwrite, randwrite-direct)         5, or 3 with --quick
#       --fio-jobs LIST  which fio jobs part 3 runs, of seqread, seqread-warm,
#                  seqread-direct, randread, randwrite, randwrite-direct
#                  (default: all six)
#       --disk     MiB of random data in the "full" rootfs, in 256 MiB
#                  files /data/blob0...                                1024
#       --files    files in the metadata tree                          50000
#       --rate     link rate of both lab hosts (tc tbf)                1gbit
#       --out      results prefix (default bench/results/DATE/jit, or
#                  .../jit-quick with --quick)
#       --build    voyager, voyagerd, voyager-fs from this meson build
#                  directory (default: ./build, compiled unless --no-setup)
#       --no-setup do not apt-get install iperf3/fio nor compile
#       --no-drop-caches  leave out the cold metadata scans (they write 2 to
#                  /proc/sys/vm/drop_caches, which touches the whole machine)
#       --nofile N RLIMIT_NOFILE for the agents, and so for voyager-fs
#                  (default: the hard limit).  voyager-fs holds an fd per
#                  inode the kernel caches within about 3/4 of it, then
#                  file handles
#       --memory MODE  voyager migrate --memory for every migration     stop-copy
#                  (the same memory mode on both sides of each ratio)
#       --parts LIST  which parts to run, of downtime (1 and 2), fio (3),
#                  meta (4)                           downtime,fio,meta
#
# One lab (hosts a, b), both links shaped to RATE, voyagerd on both, runc.
# The containers run /sbin/counter (a few hundred KiB of memory).
#
#  1. Downtime.  Each repetition migrates four fresh containers a -> b, in
#     an order that rotates: jit/empty, jit/full, stop-copy/empty,
#     stop-copy/full ("empty": the busybox rootfs only; "full": plus DISK
#     MiB of random data).  downtime_ms is the report's (freeze -> restored
#     on b).  Figure: median(full) / median(empty), per mode.  After each
#     migration the counter must advance on b (same process, still running).
#  2. Hydration.  During every jit/full run a poller in b reads voyager-fs's
#     status xattr every 0.1 s; rate = background_bytes fetched between the
#     first sample with background bytes and the first sample that says
#     independent, over that time.  The target journal's hydration
#     {bytes, ms} (ms counted from the commit, after the restore) is kept
#     beside it.  Each repetition also runs iperf3 a -> b for a few seconds
#     on the same shaped link (server in b, client in a).  Figure: median
#     hydration rate / median iperf3 rate (both payload bits per second).
#  3. fio on a full container of its own, migrated jit with the background
#     held to 1 KB/s: first its blobs are read once through the mount
#     (demand fetches: the data is then local while hydration of the rest
#     is still held) and the jobs run ("local"); then the limit is lifted
#     and, once independent, they run again ("independent").  Each time the
#     migrated files /data/blob* (DISK MiB), through the voyager-fs mount
#     (STATE/containers/ID/bundle/rootfs, b's mount namespace) against the
#     very same files in its backing directory (STATE/containers/ID/
#     backing/1): same inodes, same extents, same job, each repetition in
#     both orders (see below).  Jobs: seqread
#     (1 MiB, the whole set once), seqread-warm (the same with the files
#     already in the page cache: the file system's own cost, which the
#     disk does not hide), seqread-direct (the same with O_DIRECT, in
#     512 KiB reads: cold, without the copy out of the page cache, whose
#     speed on this VM swings by up to 3x with the memory it lands in,
#     whichever file system reads; 512 KiB because this disk takes at
#     most 254 segments a request, so a 1 MiB read became one request or
#     two by how fio's buffer happened to lie in memory, 1 700-2 200 or
#     1 250 MiB/s, for either target), randread (4 KiB, time-based),
#     randwrite (4 KiB, time-based, buffered, no fsync: the write path,
#     not the disk; bench/fuse-floor.sh gives what FUSE passthrough
#     itself costs it), randwrite-direct (the same with O_DIRECT: each
#     write reaches the disk).
#     psync, iodepth 1, direct=0 but for seqread-direct; before every
#     job the files are read once (so that the VM's disk cache on the host
#     holds them for every job alike), then, except for seqread-warm, each file's dirty pages are
#     synced and its page cache dropped (fdatasync + POSIX_FADV_DONTNEED,
#     on the backing file, whose cache passthrough uses, and through the
#     mount); fincore records what stayed cached.  Figure: median(voyager-
#     fs) / median(native); beside it the paired ratio: per repetition,
#     the mean of its two voyager-fs jobs / the mean of its two native
#     ones (they ran next to each other), median and range over the
#     repetitions.  Odd repetitions run native, voyager-fs, voyager-fs,
#     native; even ones the mirror image (a cold read's speed here depends
#     on its place in the four).
#  4. Metadata.  A container with FILES small files (about 1 KiB each, 500
#     per directory) under /data/meta migrates with --hydrate-rate 256K, so
#     that hydration is still in progress; `find ROOT -xdev -print0 | xargs
#     -0 stat` over the whole rootfs, through the mount and over the backing
#     directory, in b's mount namespace.  "cold": after writing 2 to
#     /proc/sys/vm/drop_caches (dentries and inodes); "warm": the same scan
#     right after.  Then the rate limit is lifted (setfattr
#     user.voyager.hydrate_rate 0), hydration completes, and the scans run
#     again.  Figure: median(voyager-fs) / median(native) time.  A scan
#     through voyager-fs that sees fewer entries than the native one (say,
#     EMFILE) is listed and left out.
#
# Writes PREFIX.json (every measurement, the summary, the host) and
# PREFIX.md (the table).  No timing is asserted: the exit status is 0 when
# the harness ran to the end and every migration migrated, whatever the
# ratios are.  The machine's load average is recorded at the start and the
# end (other work on it shows in the figures).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=3
QUICK=0
DISK=1024
NFILES=50000
RATE=1gbit
OUT=""
BUILD_DIR=""
SETUP=1
DROP_CACHES=1
NOFILE=""
PARTS=downtime,fio,meta
MEMORY=stop-copy
FIO_S_OPT=""
FIO_JOBS=seqread,seqread-warm,seqread-direct,randread,randwrite,randwrite-direct
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--runs) RUNS=${2:-}; shift 2 || usage ;;
	--quick) QUICK=1; shift ;;
	--disk) DISK=${2:-}; shift 2 || usage ;;
	--files) NFILES=${2:-}; shift 2 || usage ;;
	--rate) RATE=${2:-}; shift 2 || usage ;;
	--out) OUT=${2:-}; shift 2 || usage ;;
	--build) BUILD_DIR=${2:-}; shift 2 || usage ;;
	--no-setup) SETUP=0; shift ;;
	--no-drop-caches) DROP_CACHES=0; shift ;;
	--nofile) NOFILE=${2:-}; shift 2 || usage ;;
	--parts) PARTS=${2:-}; shift 2 || usage ;;
	--memory) MEMORY=${2:-}; shift 2 || usage ;;
	--fio-seconds) FIO_S_OPT=${2:-}; shift 2 || usage ;;
	--fio-jobs) FIO_JOBS=${2:-}; shift 2 || usage ;;
	-h | --help) usage ;;
	*) echo "jit: unknown argument '$1'" >&2; usage ;;
	esac
done
for v in "$RUNS" "$DISK" "$NFILES" "${NOFILE:-0}"; do
	[[ $v =~ ^[0-9]+$ ]] || { echo "jit: --runs, --disk, --files, --nofile want numbers" >&2; exit 2; }
done
for v in ${PARTS//,/ }; do
	[[ $v =~ ^(downtime|fio|meta)$ ]] || { echo "jit: --parts: downtime, fio, meta" >&2; exit 2; }
done
[ -n "$FIO_JOBS" ] || { echo "jit: --fio-jobs wants a list" >&2; exit 2; }
for v in ${FIO_JOBS//,/ }; do
	[[ $v =~ ^(seqread|seqread-warm|seqread-direct|randread|randwrite|randwrite-direct)$ ]] ||
		{ echo "jit: --fio-jobs: seqread, seqread-warm, seqread-direct, randread, randwrite, randwrite-direct" >&2; exit 2; }
done
[[ $MEMORY =~ ^[a-z-]{1,20}$ ]] || { echo "jit: bad --memory '$MEMORY'" >&2; exit 2; }
[[ $RATE =~ ^[0-9]+(bit|kbit|mbit|gbit)$ ]] || { echo "jit: bad --rate '$RATE'" >&2; exit 2; }
[ "$DISK" -ge 256 ] && [ $((DISK % 256)) = 0 ] || { echo "jit: --disk is a multiple of 256" >&2; exit 2; }
[ "$NFILES" -ge 500 ] || { echo "jit: --files at least 500" >&2; exit 2; }
IPERF_S=5
FIO_S=5
if [ "$QUICK" = 1 ]; then
	RUNS=1
	IPERF_S=3
	FIO_S=3
fi
if [ -n "$FIO_S_OPT" ]; then
	[[ $FIO_S_OPT =~ ^[0-9]+$ ]] && [ "$FIO_S_OPT" -ge 1 ] && [ "$FIO_S_OPT" -le 600 ] ||
		{ echo "jit: --fio-seconds 1..600" >&2; exit 2; }
	FIO_S=$FIO_S_OPT
fi
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] || { echo "jit: --runs 1..20" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "jit: must run as root" >&2; exit 1; }
if [ -z "$OUT" ]; then
	OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/jit"
	[ "$QUICK" = 1 ] && OUT="$OUT-quick"
	[ "$DISK/$NFILES/$RATE" = 1024/50000/1gbit ] || OUT="$OUT-d$DISK-f$NFILES-$RATE"
	[ "$PARTS" = downtime,fio,meta ] || OUT="$OUT-${PARTS//,/-}"
fi

want() { [[ ,$PARTS, == *,$1,* ]]; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "jit: $*"; exit 1; }
NOJSON="{}"

# ---------------------------------------------------------------- set-up
if [ "$SETUP" = 1 ]; then
	for t in iperf3 fio; do
		command -v $t >/dev/null && continue
		log "set-up: apt-get install -y iperf3 fio"
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q iperf3 fio >&2 ||
			die "apt-get install iperf3 fio failed"
		break
	done
	if [ -z "$BUILD_DIR" ]; then
		log "set-up: meson compile -C build"
		(cd "$ROOT" && { [ -d build ] || meson setup build >/dev/null; } && meson compile -C build >/dev/null) ||
			die "build failed (meson compile -C build)"
	fi
fi
[ -n "$BUILD_DIR" ] || BUILD_DIR="$ROOT/build"
BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || die "no build directory $BUILD_DIR"
for b in voyager voyagerd voyager-fs; do
	[ -x "$BUILD_DIR/$b" ] || die "no $b in $BUILD_DIR (build first, or --build DIR)"
done
for t in python3 runc criu iperf3 fio getfattr setfattr; do
	command -v $t >/dev/null || die "$t missing (apt-get install iperf3 fio attr, or drop --no-setup)"
done
export VY_BUILD=$BUILD_DIR
log "binaries: $BUILD_DIR ($("$BUILD_DIR/voyager" --version 2>&1 | head -1))"

. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"

LAB="vyj$$$(printf '%04x' $((RANDOM % 65536)))"
LAB=${LAB:0:13}
LAB_MADE=0
POLL_PID=""
IPERF_PID=""
WORK=$(mktemp -d /tmp/vyjit.XXXXXX) || exit 1
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

teardown() {
	local rc=$? h
	trap - EXIT INT TERM
	[ -n "$POLL_PID" ] && kill "$POLL_PID" 2>/dev/null
	[ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null
	if [ "$LAB_MADE" = 1 ]; then
		for h in a b; do vy_agent_stop "$LAB" "$h"; done
		mkdir -p "$(dirname "$OUT")"
		for h in a b; do
			cp "$(lab_dir "$LAB" "$h")/voyagerd.log" "$WORK/voyagerd-$h.log" 2>/dev/null
		done
		lab_delete_containers "$LAB" a b
		# lab_down kills what runs in the lab (voyager-fs included) and
		# drops b's mount namespace, and the FUSE mounts with it.
		lab_down "$LAB" >&2 || log "lab_down $LAB reported leftovers"
	fi
	if [ "$rc" != 0 ] && [ -s "$WORK/voyagerd-b.log" ]; then
		cp "$WORK/voyagerd-a.log" "$OUT.voyagerd-a.log" 2>/dev/null
		cp "$WORK/voyagerd-b.log" "$OUT.voyagerd-b.log" 2>/dev/null
		log "agents' logs kept: $OUT.voyagerd-{a,b}.log"
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ROOT/tests/workloads/mkrootfs.sh" build busybox >/dev/null || die "mkrootfs failed"
log "lab $LAB: hosts a, b; links shaped to $RATE; $RUNS repetition(s); parts $PARTS; load average $LOAD_START"
LAB_MADE=1
lab_up "$LAB" a b >&2 || die "lab_up failed"
lab_shape "$LAB" a "$RATE" && lab_shape "$LAB" b "$RATE" || die "shape failed"
A=$(lab_dir "$LAB" a)
B=$(lab_dir "$LAB" b)
IPB=$(lab_ip "$LAB" b)
vy_key_init "$A/../../keys" || die "keygen failed"
# The agents, and the voyager-fs they start, inherit this shell's limit.
ulimit -n "${NOFILE:-$(ulimit -Hn)}" 2>/dev/null ||
	die "cannot set RLIMIT_NOFILE to $NOFILE (--nofile; the hard limit is $(ulimit -Hn))"
NOFILE=$(ulimit -n)
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || die "voyagerd did not start"
mkdir -p "$A/runtime/runc" "$B/runtime/runc"
: >"$WORK/runs.jsonl"
: >"$WORK/iperf.jsonl"
: >"$WORK/fio.jsonl"
: >"$WORK/meta.jsonl"
FAILED=0

NBLOBS=$((DISK / 256))
if want downtime || want fio; then
	log "writing $DISK MiB of random data ($NBLOBS files of 256 MiB; once, each run copies them)"
	mkdir -p "$A/tmp/vyjitfill" || die "mkdir"
	for ((i = 0; i < NBLOBS; i++)); do
		head -c $((256 << 20)) /dev/urandom >"$A/tmp/vyjitfill/blob$i" || die "random data failed"
	done
fi

# ------------------------------------------------------------- helpers

# start_container ID full|empty|meta: a fresh counter container on a
start_container() {
	local id=$1 kind=$2 b="$A/bundles/$1" i
	"$BUNDLE_SH" create "$b" busybox --id "$id" --cgroup-parent "$(lab_cgroup_parent "$LAB" a)" \
		-- /sbin/counter >/dev/null || return 1
	case $kind in
	full) cp "$A/tmp/vyjitfill"/blob* "$b/rootfs/data/" || return 1 ;;
	meta) cp -a "$A/tmp/vyjitmeta" "$b/rootfs/data/meta" || return 1 ;;
	esac
	sync -f "$b/rootfs/data"
	lab_exec "$LAB" a runc --root "$A/runtime/runc" run -d --bundle "$b" "$id" \
		</dev/null >/dev/null 2>&1 || return 1
	for i in $(seq 100); do
		[ -s "$b/rootfs/data/counter" ] && return 0
		sleep 0.1
	done
	return 1
}

# counter_advances ID: the container runs on b (its counter moves)
counter_advances() {
	local id=$1 pid c1 c2
	pid=$(lab_exec "$LAB" b runc --root "$B/runtime/runc" state "$id" 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null) || return 1
	[ -n "$pid" ] || return 1
	read -r _ c1 <"/proc/$pid/root/data/counter" || return 1
	sleep 0.3
	read -r _ c2 <"/proc/$pid/root/data/counter" || return 1
	[ "$c2" -gt "$c1" ]
}

mnt_of() { echo "$B/state/containers/$1/bundle/rootfs"; }
backing_of() { echo "$B/state/containers/$1/backing/1"; }

fs_status() { # ID -> voyager-fs status JSON of the rootfs tree (b's namespace)
	lab_exec "$LAB" b getfattr --absolute-names --only-values -n user.voyager.status "$(mnt_of "$1")" 2>/dev/null
}
fs_get() { # ID KEY
	fs_status "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])" 2>/dev/null
}

# poll_start ID OUT: sample the status xattr in b every 0.1 s until it says
# independent (or STOP appears), one JSON line per sample.  The mount point
# exists only once voyager-fs runs; until then getxattr fails and nothing
# is written.
poll_start() {
	rm -f "$B/tmp/vyjit-poll.stop"
	lab_exec "$LAB" b python3 - "$(mnt_of "$1")" "$2" "$B/tmp/vyjit-poll.stop" <<'PY' &
import json, os, sys, time
mnt, out, stop = sys.argv[1:4]
keys = ("bytes_total", "bytes_present", "background_bytes", "demand_bytes", "files_total",
        "files_complete", "independent", "source_up", "fetch_errors")
deadline = time.time() + 1800
with open(out, "w") as f:
    while not os.path.exists(stop) and time.time() < deadline:
        try:
            s = json.loads(os.getxattr(mnt, "user.voyager.status"))
        except (OSError, ValueError):
            s = None
        if s:
            r = {"t": round(time.time(), 3)}
            r.update({k: s.get(k) for k in keys})
            f.write(json.dumps(r) + "\n")
            f.flush()
            if s.get("independent"):
                break
        time.sleep(0.1)
PY
	POLL_PID=$!
}
poll_stop() {
	[ -n "$POLL_PID" ] || return 0
	touch "$B/tmp/vyjit-poll.stop"
	wait "$POLL_PID" 2>/dev/null
	POLL_PID=""
}

# cleanup_container ID: runc delete on both hosts, the FUSE mounts under
# the container's directory in b (voyager-fs exits when unmounted), files.
cleanup_container() {
	local id=$1 m
	lab_exec "$LAB" b runc --root "$B/runtime/runc" delete -f "$id" >/dev/null 2>&1
	lab_exec "$LAB" a runc --root "$A/runtime/runc" delete -f "$id" >/dev/null 2>&1
	for m in $(lab_exec "$LAB" b awk -v d="$B/state/containers/$id/" \
		'index($5, d) == 1 {print length($5) " " $5}' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-); do
		lab_exec "$LAB" b umount -l "$m" 2>/dev/null
	done
	sleep 0.2
	rm -rf "$B/state/containers/$id" "$A/bundles/$id"
}

# run_migration MODE KIND REP ORDER [keep]: one container, one migration,
# one JSON line in runs.jsonl.  jit: waits until b is independent and the
# journal says migrated (source released).
run_migration() {
	local mode=$1 kind=$2 rep=$3 order=$4 keep=${5:-} id out ok=false runs=false mid="" st=""
	id="${LAB}${mode:0:1}${kind:0:1}$rep"
	if ! start_container "$id" "$kind"; then
		log "run $rep $mode/$kind: the container did not start on a"
		printf '{"mode":"%s","kind":"%s","rep":%d,"order":%d,"ok":false,"error":"container start"}\n' \
			"$mode" "$kind" "$rep" "$order" >>"$WORK/runs.jsonl"
		FAILED=$((FAILED + 1))
		cleanup_container "$id"
		return 1
	fi
	: >"$WORK/poll-$id.jsonl"
	[ "$mode" = jit ] && poll_start "$id" "$WORK/poll-$id.jsonl"
	out=$(vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode "$mode" --memory "$MEMORY" --json 2>>"$WORK/cli.err")
	[ "$(vy_json_get "${out:-$NOJSON}" result 2>/dev/null)" = migrated ] && ok=true
	mid=$(vy_json_get "${out:-$NOJSON}" id 2>/dev/null)
	counter_advances "$id" && runs=true
	if [ "$mode" = jit ] && [ $ok = true ]; then
		# Independent: the poller stops by itself; then the release.
		local i
		for ((i = 0; i < 3000; i++)); do
			kill -0 "$POLL_PID" 2>/dev/null || break
			sleep 0.1
		done
		poll_stop
		vy_wait_independent "$LAB" b "$mid" 120 || { ok=false; log "run $rep $mode/$kind: not independent + released within 120 s"; }
		st=$(vy_cli "$LAB" b --json status "$mid" 2>/dev/null)
	fi
	poll_stop
	python3 - "${out:-$NOJSON}" "${st:-$NOJSON}" "$WORK/poll-$id.jsonl" "$mode" "$kind" "$rep" "$order" "$ok" "$runs" \
		>>"$WORK/runs.jsonl" <<'PY'
import json, sys
rep_s, st_s, poll, mode, kind, rep, order, ok, runs = sys.argv[1:10]
r = json.loads(rep_s) if rep_s.strip() else {}
st = json.loads(st_s) if st_s.strip() else {}
samples = [json.loads(l) for l in open(poll) if l.strip()]
out = {"mode": mode, "kind": kind, "rep": int(rep), "order": int(order),
       "ok": ok == "true" and runs == "true", "migrated": ok == "true", "runs_on_b": runs == "true",
       "id": r.get("id"), "result": r.get("result"), "downtime_ms": r.get("downtime_ms"),
       "total_ms": r.get("total_ms"), "bytes": r.get("bytes"), "phases_ms": r.get("phases_ms"),
       "error": r.get("error")}
if mode == "jit":
    h = (st.get("migration") or {}).get("hydration") or {}
    out["journal_hydration"] = {k: h.get(k) for k in ("bytes", "files", "ms")}
    if h.get("bytes") and h.get("ms"):
        out["journal_hydration"]["bps"] = round(8 * h["bytes"] * 1000 / h["ms"])
    bg = [s for s in samples if (s.get("background_bytes") or 0) > 0]
    end = next((s for s in samples if s.get("independent")), None)
    hyd = {"samples": len(samples), "bytes_total": samples[-1]["bytes_total"] if samples else None,
           "demand_bytes": samples[-1]["demand_bytes"] if samples else None, "bps": None}
    if bg and end and end["t"] > bg[0]["t"]:
        b = end["background_bytes"] - bg[0]["background_bytes"]
        dt = end["t"] - bg[0]["t"]
        hyd.update({"bytes": b, "seconds": round(dt, 3), "bps": round(8 * b / dt),
                    "background_bytes": end["background_bytes"],
                    "first_sample_t": samples[0]["t"], "first_background_t": bg[0]["t"],
                    "independent_t": end["t"]})
    out["hydration"] = hyd
print(json.dumps(out))
PY
	log "run $rep $mode/$kind: $(tail -1 "$WORK/runs.jsonl" | python3 -c 'import json,sys
r = json.load(sys.stdin)
s = "downtime %s ms, total %s ms, migrated %s, runs on b %s" % (r.get("downtime_ms"), r.get("total_ms"), r["migrated"], r["runs_on_b"])
h = r.get("hydration")
if h and h.get("bps"):
    s += ", hydration %.0f Mbit/s (%d MiB in %.1f s; journal %s)" % (h["bps"] / 1e6, h["bytes"] >> 20, h["seconds"],
         "%.0f Mbit/s" % (r["journal_hydration"]["bps"] / 1e6) if r["journal_hydration"].get("bps") else "-")
print(s)')"
	if [ $ok = false ] || [ $runs = false ]; then
		FAILED=$((FAILED + 1))
		log "run $rep $mode/$kind FAILED: ${out:-no report} (see the agents' logs)"
	fi
	if [ "$keep" = keep ] && [ $ok = true ]; then
		KEPT_ID=$id
	else
		cleanup_container "$id"
	fi
}

# iperf3 REP: a -> b over the shaped link, server in b, client in a
run_iperf() {
	local rep=$1 out port=$((7720 + $1))
	lab_exec "$LAB" b timeout $((IPERF_S + 20)) iperf3 -s -1 -B "$IPB" -p "$port" \
		>/dev/null 2>>"$WORK/iperf.err" </dev/null &
	IPERF_PID=$!
	sleep 0.5
	out=$(lab_exec "$LAB" a timeout $((IPERF_S + 15)) iperf3 -c "$IPB" -p "$port" -t "$IPERF_S" -J \
		2>>"$WORK/iperf.err" </dev/null)
	wait "$IPERF_PID" 2>/dev/null
	IPERF_PID=""
	python3 -c 'import json, sys
try:
    e = json.loads(sys.argv[2])["end"]
    r = {"rep": int(sys.argv[1]), "bps": round(e["sum_received"]["bits_per_second"]),
         "sent_bps": round(e["sum_sent"]["bits_per_second"]), "retransmits": e["sum_sent"].get("retransmits")}
except Exception as x:
    r = {"rep": int(sys.argv[1]), "bps": None, "error": "iperf3: %s" % (str(x) or "no output")}
print(json.dumps(r))' "$rep" "${out:-}" >>"$WORK/iperf.jsonl"
	log "iperf3 a -> b ($IPERF_S s): $(tail -1 "$WORK/iperf.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f Mbit/s" % (r["bps"]/1e6) if r["bps"] else r["error"])')"
}

# drop_cache FILE...: in b; fdatasync, then POSIX_FADV_DONTNEED
drop_cache() {
	lab_exec "$LAB" b python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$@"
}

# prime_memory MIB: write to MIB of fresh memory and free it.  This VM
# hands freed memory back to its host (free page reporting, about 2 s
# after it is freed), and memory the host must fault in again made the
# next cold job's page cache, for either target, up to 4x slower; the
# kernel hands out memory freed last first, so a job that starts right
# after this fills memory the host still backs.
prime_memory() {
	python3 -c 'import mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, n, 4096):
    m[i] = 1
m.close()' "$1"
}

# run_fio TARGET(native|voyager-fs) DIR JOB REP STATE: one fio job over
# DIR/blob*; STATE: local (hydration held) or independent
run_fio() {
	local target=$1 dir=$2 job=$3 rep=$4 state=$5 files="" i args out pt0 pt1 c0 c1 resident
	for ((i = 0; i < NBLOBS; i++)); do files="$files${files:+:}$dir/blob$i"; done
	case $job in
	seqread | seqread-warm) args=(--rw=read --bs=1M --direct=0) ;;
	seqread-direct) args=(--rw=read --bs=512k --direct=1) ;;
	randread) args=(--rw=randread --bs=4k --direct=0 --time_based --runtime="$FIO_S") ;;
	randwrite) args=(--rw=randwrite --bs=4k --direct=0 --time_based --runtime="$FIO_S") ;;
	randwrite-direct) args=(--rw=randwrite --bs=4k --direct=1 --time_based --runtime="$FIO_S") ;;
	esac
	# The kernel serves a passthrough file from its backing file's page
	# cache: drop that one (a FUSE file's own fadvise does not reach it),
	# and the mount's files too, for a file that was not opened passthrough.
	local bk=() mn=()
	for ((i = 0; i < NBLOBS; i++)); do
		bk+=("$(backing_of "$KEPT_ID")/data/blob$i")
		mn+=("$(mnt_of "$KEPT_ID")/data/blob$i")
	done
	# The VM's disk has a cache of its own on the host: read the files
	# once first, so that every job finds them there (and not in ours),
	# whichever target runs first.
	cat "${bk[@]}" >/dev/null
	if [ "$job" = seqread-warm ]; then
		# warm: every byte in the page cache the job will read from (the
		# backing file's for passthrough, the mount's otherwise)
		lab_exec "$LAB" b cat "${mn[@]}" >/dev/null
		args+=(--invalidate=0)
	else
		drop_cache "${bk[@]}"
		drop_cache "${mn[@]}"
		args+=(--invalidate=1)
	fi
	# page cache the backing files still hold (fincore), to show the job starts cold
	resident=$(fincore -b -n -o RES "${bk[@]}" 2>/dev/null | awk '{s += $1} END {print s + 0}')
	[ "$job" = seqread-warm ] || prime_memory $((DISK + 256))
	pt0=$(fs_get "$KEPT_ID" passthrough_opens)
	c0=$(fs_get "$KEPT_ID" cached_opens)
	# read requests the backing files' block device completed, and their
	# size: how much the kernel read ahead for each target
	local dev d0="" d1=""
	dev=$(stat -c '%Hd:%Ld' "${bk[0]}" 2>/dev/null)
	[ -r "/sys/dev/block/$dev/stat" ] && d0=$(awk '{print $1, $3}' "/sys/dev/block/$dev/stat")
	out=$(lab_exec "$LAB" b timeout $((FIO_S + 120)) fio --name="vyjit-$job" --filename="$files" \
		--size=$((DISK << 20)) --ioengine=psync --iodepth=1 \
		--randrepeat=0 --norandommap --output-format=json "${args[@]}" 2>>"$WORK/fio.err")
	[ -n "$d0" ] && d1=$(awk '{print $1, $3}' "/sys/dev/block/$dev/stat")
	pt1=$(fs_get "$KEPT_ID" passthrough_opens)
	c1=$(fs_get "$KEPT_ID" cached_opens)
	python3 -c 'import json, sys
target, job, rep, pt0, pt1, c0, c1, resident, state, d0, d1 = sys.argv[1:12]
try:
    j = json.loads(sys.argv[12])["jobs"][0]
    d = j["write" if job.startswith("randwrite") else "read"]
    r = {"bw_bytes": d["bw_bytes"], "iops": round(d["iops"], 1), "runtime_ms": d["runtime"],
         "io_bytes": d["io_bytes"]}
except Exception as x:
    r = {"bw_bytes": None, "error": "fio: %s" % (str(x) or "no output")}
r.update({"target": target, "job": job, "rep": int(rep), "state": state, "resident_before": int(resident or 0)})
if d0 and d1:
    (n0, s0), (n1, s1) = (map(int, d0.split()), map(int, d1.split()))
    r["dev_reads"], r["dev_read_kib"] = n1 - n0, (s1 - s0) // 2
if target == "voyager-fs":
    n = lambda s: int(s) if s.isdigit() else None
    r["passthrough_opens"] = n(pt1) - n(pt0) if n(pt1) is not None and n(pt0) is not None else None
    r["cached_opens"] = n(c1) - n(c0) if n(c1) is not None and n(c0) is not None else None
print(json.dumps(r))' "$target" "$job" "$rep" "${pt0:-}" "${pt1:-}" "${c0:-}" "${c1:-}" "${resident:-}" "$state" \
		"$d0" "$d1" "${out:-}" >>"$WORK/fio.jsonl"
	log "fio $job $target ($state): $(tail -1 "$WORK/fio.jsonl" | python3 -c 'import json,sys
r = json.load(sys.stdin)
print(("%.1f MiB/s, %.0f IOPS, %d MiB cached before" % (r["bw_bytes"] / 1048576, r["iops"], r["resident_before"] >> 20)) if r.get("bw_bytes") else r.get("error"),
      ("device: %d reads, %d KiB each" % (r["dev_reads"], r["dev_read_kib"] // max(r["dev_reads"], 1))) if r.get("dev_reads") is not None else "",
      ("(opens: %s passthrough, %s cached)" % (r.get("passthrough_opens"), r.get("cached_opens"))) if r["target"] == "voyager-fs" else "")')"
}

# scan STATE TARGET DIR REP: cold (unless --no-drop-caches) then warm
scan() {
	local state=$1 target=$2 dir=$3 rep=$4 cache out
	for cache in cold warm; do
		[ $cache = cold ] && [ "$DROP_CACHES" = 0 ] && continue
		out=$(lab_exec "$LAB" b bash -c '
			[ "$2" = cold ] && { sync; echo 2 >/proc/sys/vm/drop_caches; }
			t0=$(date +%s%N)
			n=$(find "$1" -xdev -print0 2>>"$3" | xargs -0 -n 10000 stat -c "%i %s %Y %a %U" 2>>"$3" | wc -l)
			t1=$(date +%s%N)
			echo "$(( (t1 - t0) / 1000 )) $n"' _ "$dir" "$cache" "$B/tmp/vyjit-scan.err")
		printf '{"files":%d,"state":"%s","target":"%s","cache":"%s","rep":%d,"us":%s,"entries":%s}\n' \
			"$MN" "$state" "$target" "$cache" "$rep" "${out%% *}" "${out##* }" >>"$WORK/meta.jsonl"
		log "scan $MN files, $state, $cache, $target: $((${out%% *} / 1000)) ms, ${out##* } entries$([ -s "$B/tmp/vyjit-scan.err" ] &&
			echo "; $(wc -l <"$B/tmp/vyjit-scan.err") errors, first: $(head -1 "$B/tmp/vyjit-scan.err")")"
		rm -f "$B/tmp/vyjit-scan.err"
	done
}

# scans_complete STATE: every voyager-fs scan in STATE (of MN files) saw
# what native saw
scans_complete() {
	python3 - "$WORK/meta.jsonl" "$1" "$MN" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["state"] == sys.argv[2] and r["files"] == int(sys.argv[3])]
native = {r["entries"] for r in rows if r["target"] == "native"}
sys.exit(0 if all(r["entries"] in native for r in rows if r["target"] == "voyager-fs") else 1)
PY
}

# scan_round STATE FIRST SECOND: RUNS rounds, the order alternating
scan_round() {
	local r
	for ((r = 1; r <= RUNS; r++)); do
		if [ $((r % 2)) = 1 ]; then
			scan "$1" "$2" "$([ "$2" = native ] && backing_of "$META_ID" || mnt_of "$META_ID")" "$r"
			scan "$1" "$3" "$([ "$3" = native ] && backing_of "$META_ID" || mnt_of "$META_ID")" "$r"
		else
			scan "$1" "$3" "$([ "$3" = native ] && backing_of "$META_ID" || mnt_of "$META_ID")" "$r"
			scan "$1" "$2" "$([ "$2" = native ] && backing_of "$META_ID" || mnt_of "$META_ID")" "$r"
		fi
	done
}

# run_meta N: part 4 for one container with N small files, migrated with
# the background held to 256 KB/s; scans while hydrating, then once
# independent.  Sets MN (the scans' file count) and META_ID.
run_meta() {
	local out mid
	MN=$1
	log "part 4: $MN files of about 1 KiB (500 per directory)"
	[ $((MN + 2000)) -le "$(ulimit -n)" ] ||
		log "part 4: note: $MN files and RLIMIT_NOFILE $(ulimit -n): past its fd budget voyager-fs keeps file handles (handle_inodes in its status)"
	rm -rf "$A/tmp/vyjitmeta"
	python3 - "$A/tmp/vyjitmeta" "$MN" <<'PY' || die "could not write the metadata tree"
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = os.urandom(4096)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 500))
    if i % 500 == 0:
        os.makedirs(d)
    size = 512 + (i * 7919) % 1024
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(rnd[i % 2048:i % 2048 + size])
PY
	META_ID="${LAB}m$MN"
	migrate_held "$META_ID" meta 256K "part 4" "$WORK/meta-report-$MN.json" || return
	mid=$(vy_json_get "$out" id)
	log "migrated $META_ID (downtime $(vy_json_get "$out" downtime_ms) ms), hydration held to 256 KB/s"
	fs_status "$META_ID" >"$WORK/meta-status-before-$MN.json"
	scan_round hydrating native voyager-fs
	fs_status "$META_ID" >"$WORK/meta-status-after-$MN.json"
	if ! scans_complete hydrating; then
		log "part 4 FAILED: scans through voyager-fs saw fewer entries than native; not waiting for independence: $(fs_status "$META_ID")"
		FAILED=$((FAILED + 1))
		cleanup_container "$META_ID"
		return
	fi
	log "lifting the rate limit; waiting for independence"
	lab_exec "$LAB" b setfattr -n user.voyager.hydrate_rate -v 0 "$(mnt_of "$META_ID")"
	if vy_wait_independent "$LAB" b "$mid" 300; then
		fs_status "$META_ID" >"$WORK/meta-status-hydrated-$MN.json"
		scan_round hydrated voyager-fs native
	else
		log "part 4: not independent within 300 s: $(fs_status "$META_ID")"
		FAILED=$((FAILED + 1))
	fi
	cleanup_container "$META_ID"
}

# ------------------------------------------------------------- 1 and 2
KEPT_ID=""
if want downtime; then
	log "part 1+2: downtime (jit and stop-copy, empty and $DISK MiB rootfs), hydration, iperf3"
	METHODS=(jit/empty jit/full stop-copy/empty stop-copy/full iperf3)
	for ((r = 1; r <= RUNS; r++)); do
		nm=${#METHODS[@]}
		for ((k = 0; k < nm; k++)); do
			m=${METHODS[$(((k + r - 1) % nm))]}
			case $m in
			iperf3) run_iperf "$r" ;;
			*) run_migration "${m%/*}" "${m#*/}" "$r" $((k + 1)) ;;
			esac
		done
	done
fi

# ------------------------------------------------------------- 3: fio
# fio_round STATE: every job on KEPT_ID, each repetition in both orders,
# native, voyager-fs, voyager-fs, native in odd repetitions and the mirror
# image in even ones, so that each target takes each of the four places
# equally often: on this VM a cold read's speed depends on its place (the
# host's disk cache), by up to a third, and not the same way in every run.
fio_round() {
	local job r t1 t2
	for job in ${FIO_JOBS//,/ }; do
		for ((r = 1; r <= RUNS; r++)); do
			t1=native t2=voyager-fs
			[ $((r % 2)) = 0 ] && t1=voyager-fs t2=native
			fio_on "$t1" "$job" "$r" "$1"
			fio_on "$t2" "$job" "$r" "$1"
			fio_on "$t2" "$job" "$r" "$1"
			fio_on "$t1" "$job" "$r" "$1"
		done
	done
}
# fio_on TARGET JOB REP STATE
fio_on() {
	if [ "$1" = native ]; then
		run_fio native "$(backing_of "$KEPT_ID")/data" "$2" "$3" "$4"
	else
		run_fio voyager-fs "$(mnt_of "$KEPT_ID")/data" "$2" "$3" "$4"
	fi
}

# migrate_held ID KIND RATE PART REPORT: start a KIND container on a and
# migrate it jit to b with background hydration held to RATE; the report
# goes to REPORT and $out.  On failure: logged as PART, counted, cleaned up,
# status 1.
migrate_held() {
	local id=$1 kind=$2 rate=$3 part=$4 report=$5
	if ! start_container "$id" "$kind"; then
		log "$part FAILED: the container did not start on a"
		FAILED=$((FAILED + 1))
		cleanup_container "$id"
		return 1
	fi
	out=$(vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode jit --memory "$MEMORY" --hydrate-rate "$rate" \
		--json 2>>"$WORK/cli.err")
	echo "$out" >"$report"
	if [ "$(vy_json_get "${out:-$NOJSON}" result)" != migrated ]; then
		log "$part FAILED: migrate: $out"
		FAILED=$((FAILED + 1))
		cleanup_container "$id"
		return 1
	fi
}

# run_fio_part: one full container migrated jit with the background held
# to 1 KB/s; its blobs read once through the mount (demand fetches make
# them local); fio while hydration is still held (data already local);
# then the limit lifted, independence, and fio again on the same files.
run_fio_part() {
	local out mid mn=() i
	KEPT_ID="${LAB}jf"
	migrate_held "$KEPT_ID" full 1K "part 3" "$WORK/fio-report.json" || return
	mid=$(vy_json_get "$out" id)
	for ((i = 0; i < NBLOBS; i++)); do mn+=("$(mnt_of "$KEPT_ID")/data/blob$i"); done
	lab_exec "$LAB" b cat "${mn[@]}" >/dev/null || log "part 3: reading the blobs through the mount failed"
	fs_status "$KEPT_ID" >"$WORK/fio-fs-status-local.json"
	if [ "$(fs_get "$KEPT_ID" independent)" = False ]; then
		log "part 3: fio on $KEPT_ID, data local, hydration held to 1 KB/s: $DISK MiB in $NBLOBS files"
		fio_round local
		fs_status "$KEPT_ID" >"$WORK/fio-fs-status-local-after.json"
	else
		log "part 3: already independent after the demand reads; no fio while hydrating"
	fi
	lab_exec "$LAB" b setfattr -n user.voyager.hydrate_rate -v 0 "$(mnt_of "$KEPT_ID")"
	if vy_wait_independent "$LAB" b "$mid" 300 && [ "$(fs_get "$KEPT_ID" independent)" = True ]; then
		log "part 3: fio on $KEPT_ID (independent): $DISK MiB in $NBLOBS files, through voyager-fs and in its backing directory"
		fio_round independent
		fs_status "$KEPT_ID" >"$WORK/fio-fs-status.json"
	else
		log "part 3 FAILED: not independent within 300 s of lifting the rate limit: $(fs_status "$KEPT_ID")"
		FAILED=$((FAILED + 1))
	fi
	cleanup_container "$KEPT_ID"
}
want fio && run_fio_part

# ------------------------------------------------------------- 4: metadata
if want meta; then
	run_meta "$NFILES"
fi
rm -rf "$A/tmp/vyjitmeta" "$A/tmp/vyjitfill"

# ------------------------------------------------------------- results
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$(dirname "$OUT")" || die "cannot make $(dirname "$OUT")"
VYJ_ROOT=$ROOT python3 - "$WORK" "$OUT" "$RATE" "$DISK" "$NFILES" "$RUNS" "$QUICK" "$STARTED" "$FINISHED" \
	"$LOAD_START" "$LOAD_END" "$IPERF_S" "$FIO_S" "$DROP_CACHES" "$NOFILE" "$PARTS" "$MEMORY" <<'PY' || die "could not write results"
import json, os, platform, statistics, subprocess, sys
work, out, rate, disk, nfiles, runs, quick, started, finished, load0, load1, iperf_s, fio_s, dropc, nofile, parts, memory = sys.argv[1:18]

def lines(name):
    p = os.path.join(work, name)
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []

def jfile(name):
    try:
        return json.load(open(os.path.join(work, name)))
    except (OSError, ValueError):
        return None

sys.path.insert(0, os.path.join(os.environ["VYJ_ROOT"], "bench"))
from hostinfo import git_describe, ver  # noqa: E402
import federation  # noqa: E402

def stats(v):
    v = [x for x in v if x is not None]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} if v else None

def ratio(a, b):
    return round(a["median"] / b["median"], 3) if a and b and b["median"] else None

runs_l, iperf_l, fio_l, meta_l = lines("runs.jsonl"), lines("iperf.jsonl"), lines("fio.jsonl"), lines("meta.jsonl")
S = {}
for mode in ("jit", "stop-copy"):
    for kind in ("empty", "full"):
        S["downtime/%s/%s" % (mode, kind)] = stats([r["downtime_ms"] for r in runs_l
                                                   if r["mode"] == mode and r["kind"] == kind and r["ok"]])
S["hydration_bps"] = stats([r["hydration"]["bps"] for r in runs_l
                            if r["mode"] == "jit" and r["kind"] == "full" and r["ok"] and r.get("hydration")])
S["journal_hydration_bps"] = stats([r["journal_hydration"].get("bps") for r in runs_l
                                    if r["mode"] == "jit" and r["kind"] == "full" and r["ok"]])
S["iperf3_bps"] = stats([r["bps"] for r in iperf_l])
FIO_JOBS = ("seqread", "seqread-warm", "seqread-direct", "randread", "randwrite", "randwrite-direct")
for job in FIO_JOBS:
    for t in ("native", "voyager-fs"):
        for st, pre in (("independent", "fio"), ("local", "fio_local")):
            S["%s/%s/%s" % (pre, job, t)] = stats([r.get("bw_bytes") for r in fio_l if r["job"] == job and
                                                   r["target"] == t and r.get("state", "independent") == st])

def paired(job, st):
    return federation.paired_ratio(fio_l, job, st)
# A scan counts only when it saw every entry the native scan saw (one that
# failed part-way, e.g. EMFILE inside voyager-fs, is listed, not used).
native_n = {(r["files"], r["state"], r["rep"], r["cache"]): r["entries"] for r in meta_l if r["target"] == "native"}
for r in meta_l:
    r["complete"] = r["entries"] == native_n.get((r["files"], r["state"], r["rep"], r["cache"]))
invalid_scans = [r for r in meta_l if not r["complete"]]
counts = sorted({r["files"] for r in meta_l}, reverse=True) or [int(nfiles)]
for n in counts:
    for st in ("hydrating", "hydrated"):
        for cache in ("cold", "warm"):
            for t in ("native", "voyager-fs"):
                S["scan/%d/%s/%s/%s" % (n, st, cache, t)] = stats([r["us"] for r in meta_l if r["complete"] and
                    r["files"] == n and r["state"] == st and r["cache"] == cache and r["target"] == t])

# (figure, what, ratio, goal, "<=" or ">=", value text, baseline text)
fmt_ms = lambda s: "-" if not s else "%d ms" % s["median"]
fmt_rng = lambda s, f: "-" if not s else "%s (%s-%s)" % (f(s["median"]), f(s["min"]), f(s["max"]))
mbit = lambda x: "%.0f Mbit/s" % (x / 1e6)
mibs = lambda x: "%.1f MiB/s" % (x / 1048576)
msec = lambda x: "%.0f ms" % (x / 1000)
ms = lambda x: "%d ms" % x
rows = []
def row(key, name, num, den, goal, op, f, pair=None):
    r = ratio(S.get(num), S.get(den))
    met = None if r is None or goal is None else (r <= goal if op == "<=" else r >= goal)
    rows.append({"key": key, "figure": name, "value": S.get(num), "baseline": S.get(den), "ratio": r,
                 "paired_ratio": pair, "goal": goal, "op": op, "met": met,
                 "value_text": fmt_rng(S.get(num), f), "baseline_text": fmt_rng(S.get(den), f)})
row("downtime_jit", "downtime, %s MiB rootfs / empty rootfs: jit" % disk,
    "downtime/jit/full", "downtime/jit/empty", 1.1, "<=", ms)
row("downtime_stopcopy", "downtime, %s MiB rootfs / empty rootfs: stop-copy (for comparison)" % disk,
    "downtime/stop-copy/full", "downtime/stop-copy/empty", None, "<=", ms)
row("hydration", "background hydration rate / iperf3 (a -> b, same link)",
    "hydration_bps", "iperf3_bps", 0.9, ">=", mbit)
row("hydration_journal", "the same from the target journal's hydration {bytes, ms} (from the commit)",
    "journal_hydration_bps", "iperf3_bps", None, ">=", mbit)
for job, what in (("seqread", "sequential read 1 MiB, cold"), ("seqread-warm", "sequential read 1 MiB, warm"),
                  ("seqread-direct", "sequential read 512 KiB, O_DIRECT"), ("randread", "random read 4 KiB, cold"), ("randwrite", "random write 4 KiB, buffered"),
                  ("randwrite-direct", "random write 4 KiB, O_DIRECT")):
    if not any(r["job"] == job for r in fio_l) and job not in ("seqread", "randread", "randwrite"):
        continue
    key = job.replace("-", "_")
    row("fio_" + key, "fio %s: voyager-fs / native (independent)" % what,
        "fio/%s/voyager-fs" % job, "fio/%s/native" % job, 0.95, ">=", mibs, paired(job, "independent"))
    row("fio_local_" + key, "fio %s: voyager-fs / native (data local, hydration held)" % what,
        "fio_local/%s/voyager-fs" % job, "fio_local/%s/native" % job, 0.95, ">=", mibs, paired(job, "local"))
for n in counts:
    for st, when in (("hydrated", "independent"), ("hydrating", "hydration in progress")):
        for cache in ("cold", "warm"):
            row("scan_%d_%s_%s" % (n, st, cache), "find + stat over %d files, %s, %s: voyager-fs / native (time)" % (n, cache, when),
                "scan/%d/%s/%s/voyager-fs" % (n, st, cache), "scan/%d/%s/%s/native" % (n, st, cache), 1.10, "<=", msec)

mem_total = None
for l in open("/proc/meminfo"):
    if l.startswith("MemTotal:"):
        mem_total = int(l.split()[1]) // 1024
root = os.environ["VYJ_ROOT"]
doc = {
    "benchmark": "jit", "started": started, "finished": finished,
    "params": {"rate": rate, "disk_mib": int(disk), "meta_files": int(nfiles), "runs": int(runs),
               "quick": quick == "1", "iperf3_s": int(iperf_s), "fio_s": int(fio_s),
               "cold_scans": dropc == "1", "workload": "/sbin/counter (busybox)",
               "agents_nofile": int(nofile), "parts": parts.split(","), "memory": memory},
    "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "mem_mib": mem_total,
             "criu": (ver("criu", "--version") or "").replace("Version: ", "criu "),
             "runc": ver("runc", "--version"), "fio": ver("fio", "--version"), "iperf3": ver("iperf3", "--version"),
             "voyager": ver(os.environ["VY_BUILD"] + "/voyager", "--version"),
             "voyager_build": os.environ["VY_BUILD"],
             "bench_checkout": git_describe(root),
             "loadavg_start": load0, "loadavg_end": load1},
    "definitions": {
        "downtime_ms": "the report's downtime_ms: freeze -> restored on the target",
        "hydration_bps": "8 * (background_bytes at the first status sample that says independent - at the first "
                         "sample with background bytes) / the time between them; status sampled in b every 0.1 s",
        "journal_hydration_bps": "8 * hydration.bytes / hydration.ms from the target journal (bytes present at the "
                                 "end, ms from the commit, the agent samples every 0.5 s)",
        "iperf3_bps": "iperf3 -c (in a) -> -s (in b), one TCP stream, sum_received bits_per_second",
        "fio": "bandwidth (bytes/s) of one fio job (psync, iodepth 1, direct=0 but seqread-direct's) over the migrated /data/blob* files: "
               "through the voyager-fs mount and on the same files in its backing directory; page cache of every file "
               "dropped before each job (fdatasync + POSIX_FADV_DONTNEED), except seqread-warm's (read through the "
               "mount and natively first)",
        "paired_ratio": "per repetition: mean bandwidth of its voyager-fs jobs / mean of its native ones (they ran "
                        "next to each other), median/min/max over the repetitions",
        "scan": "wall time of find ROOT -xdev -print0 | xargs -0 stat over the whole rootfs: through the mount and "
                "over the backing directory, in b's mount namespace; cold: after echo 2 > drop_caches; warm: again "
                "right after"},
    "figures": rows, "summary": S,
    "runs": runs_l, "iperf3": iperf_l, "fio": fio_l, "scans": meta_l,
    "fio_fs_status": jfile("fio-fs-status.json"),
    "fio_fs_status_local": {"before": jfile("fio-fs-status-local.json"), "after": jfile("fio-fs-status-local-after.json")},
    "meta": {str(n): {"report": jfile("meta-report-%d.json" % n), "status_before_scans": jfile("meta-status-before-%d.json" % n),
                      "status_after_scans": jfile("meta-status-after-%d.json" % n),
                      "status_hydrated": jfile("meta-status-hydrated-%d.json" % n)} for n in counts},
}
with open(out + ".json", "w") as f:
    json.dump(doc, f, indent=1)

t = ["| figure | voyager | baseline | ratio | paired ratio | goal | met |", "|---|---|---|---|---|---|---|"]
for r in rows:
    pr = r.get("paired_ratio")
    t.append("| %s | %s | %s | %s | %s | %s | %s |" % (
        r["figure"], r["value_text"], r["baseline_text"], "-" if r["ratio"] is None else "%.2f" % r["ratio"],
        "-" if not pr else "%.2f (%.2f-%.2f)" % (pr["median"], pr["min"], pr["max"]),
        "-" if r["goal"] is None else "%s %.2f" % ("≤" if r["op"] == "<=" else "≥", r["goal"]),
        "-" if r["met"] is None else ("yes" if r["met"] else "**no**")))
table = "\n".join(t)
pct = lambda s: "%.0f%%" % (100.0 * s["bytes_present"] / s["bytes_total"]) if (s or {}).get("bytes_total") else "?"
hyd_txt = "; ".join("%s files: %s of the bytes local before the scans, %s after" % (
    n, pct(m["status_before_scans"]), pct(m["status_after_scans"])) for n, m in doc["meta"].items())
md = ["# Just-in-time migration: issue 3's figures", "",
      "%s to %s; link %s (tbf, both hosts), %s run(s) each, order rotating; counter workload (busybox); "
      "%s MiB of random rootfs data in 256 MiB files; %s files for the scans. Kernel %s, %s, %s, %s. "
      "%d CPUs; load average %s at the start, %s at the end (other work shares the machine). "
      "Parts: %s; the agents' (and voyager-fs's) RLIMIT_NOFILE: %s; --memory %s." % (
          started, finished, rate, runs, disk, nfiles, doc["host"]["kernel"], doc["host"]["criu"],
          doc["host"]["runc"], doc["host"]["fio"], doc["host"]["cpus"], load0, load1, parts, nofile, memory), "",
      "Values: median (min-max).", "", table, "",
      "- downtime: the report's downtime_ms (freeze -> restored on b).",
      "- hydration: background bytes / time, first background byte -> independent, from voyager-fs's status "
      "sampled every 0.1 s in b; iperf3: one TCP stream a -> b on the same link, %s s per run." % iperf_s,
      "- fio: psync, iodepth 1, direct=0 (seqread-direct: O_DIRECT, 512 KiB reads), over the migrated blob files (%s MiB); seqread reads them once, "
      "randread/randwrite run %s s; page cache dropped per file before each job, except seqread warm (read "
      "through the mount and natively first); native = the same files in voyager-fs's backing directory. "
      "Ratio: of the medians; paired ratio: per repetition, mean of its voyager-fs jobs / mean of its "
      "native ones (order native, voyager-fs, voyager-fs, native, mirrored in even repetitions), median (min-max) over the "
      "repetitions." % (disk, fio_s),
      "- scans: `find ROOT -xdev -print0 | xargs -0 stat` over the whole rootfs, in b's mount namespace; "
      "cold after `echo 2 > /proc/sys/vm/drop_caches`, warm right after; native = the backing directory. "
      "Hydration in progress (rate held to 256 KB/s): %s." % hyd_txt, ""]
if invalid_scans:
    md.append("Scans left out (fewer entries than the native scan): " + "; ".join(
        "%s files %s %s %s rep %s: %s entries" % (r["files"], r["state"], r["cache"], r["target"], r["rep"], r["entries"])
        for r in invalid_scans))
    md.append("")
fails = [r for r in runs_l if not r["ok"]]
if fails:
    md.append("Failed runs: " + "; ".join("%s/%s rep %s: %s" % (r["mode"], r["kind"], r["rep"], r.get("error"))
                                           for r in fails))
md.append("Per migration:")
md.append("")
for r in runs_l:
    h = r.get("hydration") or {}
    md.append("- rep %s %s/%s (position %s): downtime %s ms, total %s ms%s%s" % (
        r["rep"], r["mode"], r["kind"], r["order"], r.get("downtime_ms"), r.get("total_ms"),
        (", hydration %.0f Mbit/s over %.1f s" % (h["bps"] / 1e6, h["seconds"])) if h.get("bps") else "",
        "" if r["ok"] else ", FAILED"))
with open(out + ".md", "w") as f:
    f.write("\n".join(md) + "\n")
print(table)
PY
log "results: ${OUT#$ROOT/}.json and .md; load average $LOAD_START -> $LOAD_END"
[ "$FAILED" = 0 ] || { log "$FAILED measurement(s) failed; see the JSON"; exit 1; }
exit 0
