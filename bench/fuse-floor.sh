#!/bin/bash
# What FUSE passthrough costs by itself on this machine, and how much of
# voyager-fs's distance from native that is.
#
#   bench/fuse-floor.sh [--runs R] [--disk MiB] [--fio-seconds S]
#                       [--jobs LIST] [--build DIR] [--out PREFIX]
#       --runs         repetitions of each job on each target          6
#       --disk         MiB in 4 files                               1024
#       --fio-seconds  length of the time-based jobs                   5
#       --jobs         randwrite, randwrite-direct, randread,
#                      seqread-warm (comma-separated)          all four
#       --build        meson build directory with voyager-fs,
#                      vyfs_source and vyfs_skeleton             ./build
#       --out          PREFIX of PREFIX.md and PREFIX.jsonl
#                                   bench/results/DATE/fuse-floor-HHMM
#
# No lab and no migration.  A tree of DISK MiB in 4 files is served on
# loopback (bench/loopfs.sh); voyager-fs mounts its skeleton and hydrates
# all of it, so that each open goes passthrough, as in bench/jit.sh once
# independent.  The very same backing files are then used three ways:
# natively ("native"), through voyager-fs, and through ptfloor
# (bench/ptfloor.c, built here with gcc): a FUSE file system that does
# nothing but open files passthrough, and asks the kernel for what
# voyager-fs asks for on that path.  Its figure is the floor: what any
# FUSE passthrough file system costs here.
#
# Jobs as in bench/jit.sh (fio, psync, iodepth 1, over the 4 files):
# randwrite (4 KiB, buffered, no fsync, time-based), randwrite-direct
# (the same with O_DIRECT: each write reaches the disk), randread (4 KiB,
# time-based) and seqread-warm (1 MiB, the files in the page cache).
# Before each job the files are read once; but for seqread-warm, they are
# then synced and dropped from the page cache (fdatasync + FADV_DONTNEED).
# Repetition k runs the three targets in the k-th of the six orders.
#
# Figures: median(target) / median(native) for voyager-fs and for ptfloor,
# and voyager-fs / ptfloor.  Beside voyager-fs: its daemon's CPU time and
# the bytes written through it (local_write_bytes) during its jobs, which
# show whether any read or write reached the daemon.  No timing is
# asserted: the exit status is 0 when every job ran.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=6
DISK=1024
FIO_S=5
JOBS=randwrite,randwrite-direct,randread,seqread-warm
BUILD=$ROOT/build
OUT=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--runs) RUNS=${2:-}; shift 2 || usage ;;
	--disk) DISK=${2:-}; shift 2 || usage ;;
	--fio-seconds) FIO_S=${2:-}; shift 2 || usage ;;
	--jobs) JOBS=${2:-}; shift 2 || usage ;;
	--build) BUILD=${2:-}; shift 2 || usage ;;
	--out) OUT=${2:-}; shift 2 || usage ;;
	-h | --help) usage ;;
	*) echo "fuse-floor: unknown argument '$1'" >&2; usage ;;
	esac
done
for v in "$RUNS" "$DISK" "$FIO_S"; do
	[[ $v =~ ^[0-9]+$ ]] || { echo "fuse-floor: --runs, --disk, --fio-seconds want numbers" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 30 ] || { echo "fuse-floor: --runs 1..30" >&2; exit 2; }
[ "$DISK" -ge 64 ] && [ $((DISK % 4)) = 0 ] || { echo "fuse-floor: --disk: a multiple of 4, at least 64" >&2; exit 2; }
[ "$FIO_S" -ge 1 ] && [ "$FIO_S" -le 600 ] || { echo "fuse-floor: --fio-seconds 1..600" >&2; exit 2; }
for j in ${JOBS//,/ }; do
	[[ $j =~ ^(randwrite|randwrite-direct|randread|seqread-warm)$ ]] ||
		{ echo "fuse-floor: --jobs: randwrite, randwrite-direct, randread, seqread-warm" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "fuse-floor: must run as root (FUSE passthrough)" >&2; exit 1; }
for b in voyager-fs vyfs_source vyfs_skeleton; do
	[ -x "$BUILD/$b" ] || { echo "fuse-floor: no $BUILD/$b (meson compile -C $BUILD)" >&2; exit 1; }
done
for t in fio gcc pkg-config getfattr openssl python3; do
	command -v $t >/dev/null || { echo "fuse-floor: $t missing (apt-get install fio attr)" >&2; exit 1; }
done
[ -n "$OUT" ] || OUT=$ROOT/bench/results/$(date -u +%F)/fuse-floor-$(date -u +%H%M)

W=$(mktemp -d /tmp/vyfloor.XXXXXX) || exit 1
SRC_PID="" FS_PID="" PT_PID=""
unmount() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1 && { fusermount3 -u "$1" 2>/dev/null || umount -l "$1"; }; }
cleanup() {
	[ -n "$PT_PID" ] && kill "$PT_PID" 2>/dev/null
	[ -n "$FS_PID" ] && kill "$FS_PID" 2>/dev/null
	sleep 0.3
	unmount "$W/pt"
	unmount "$W/vy"
	[ -n "$SRC_PID" ] && kill "$SRC_PID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "fuse-floor: $*"; exit 1; }
. "$ROOT/bench/loopfs.sh"

gcc -O2 -Wall -o "$W/ptfloor" "$ROOT/bench/ptfloor.c" $(pkg-config --cflags --libs fuse3) -lpthread ||
	die "building ptfloor (libfuse3-dev)"
mkdir -p "$W/src/data" "$W/back" "$W/vy" "$W/pt"
log "writing $DISK MiB of random data in 4 files"
for i in 0 1 2 3; do
	head -c $((DISK / 4))M /dev/urandom >"$W/src/data/blob$i" || die "writing the data"
done
loopfs_up "$W/src" "$W" "$W/vy" ""
status() { getfattr --absolute-names --only-values -n user.voyager.status "$W/vy" 2>/dev/null; }
field() { status | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" 2>/dev/null; }
for _ in $(seq 1 600); do
	[ "$(field independent)" = True ] && break
	sleep 0.2
done
[ "$(field independent)" = True ] || die "voyager-fs did not hydrate within 120 s: $(status) $(tail -3 "$W/fs.log")"
log "voyager-fs hydrated $DISK MiB over loopback"
kill "$SRC_PID" 2>/dev/null
wait "$SRC_PID" 2>/dev/null
SRC_PID=""
"$W/ptfloor" "$W/back" "$W/pt" 2>"$W/pt.log" &
PT_PID=$!
for _ in $(seq 1 100); do findmnt -rn --mountpoint "$W/pt" >/dev/null && break; sleep 0.1; done
findmnt -rn --mountpoint "$W/pt" >/dev/null || die "ptfloor did not mount: $(cat "$W/pt.log")"

dir_of() { case $1 in native) echo "$W/back" ;; voyager-fs) echo "$W/vy" ;; ptfloor) echo "$W/pt" ;; esac; }
# drop the backing files' page cache (passthrough reads and writes use it)
drop() {
	python3 -c 'import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$W"/back/data/blob*
}
ticks() { awk '{print $14 + $15}' "/proc/$FS_PID/stat"; }
HZ=$(getconf CLK_TCK)

# one_job TARGET JOB REP: appends a row to $W/rows.jsonl
one_job() {
	local target=$1 job=$2 rep=$3 dir files="" paths=() i args out c0 c1 w0 w1 p0 p1
	dir=$(dir_of "$target")
	for i in 0 1 2 3; do
		files="$files${files:+:}$dir/data/blob$i"
		paths+=("$dir/data/blob$i") # ptfloor lists no directory: no glob
	done
	case $job in
	randwrite) args=(--rw=randwrite --bs=4k --time_based --runtime="$FIO_S" --invalidate=1) ;;
	randwrite-direct) args=(--rw=randwrite --bs=4k --time_based --runtime="$FIO_S" --direct=1) ;;
	randread) args=(--rw=randread --bs=4k --time_based --runtime="$FIO_S" --invalidate=1) ;;
	seqread-warm) args=(--rw=read --bs=1M --invalidate=0) ;;
	esac
	cat "$W"/back/data/blob* >/dev/null
	if [ "$job" = seqread-warm ]; then
		cat "${paths[@]}" >/dev/null
	else
		drop
	fi
	c0=$(ticks) w0=$(field local_write_bytes) p0=$(field passthrough_opens)
	out=$(fio --name="vyfloor-$job" --filename="$files" --size=$((DISK << 20)) --ioengine=psync \
		--iodepth=1 --fallocate=none --randrepeat=0 --norandommap --output-format=json \
		"${args[@]}" 2>>"$W/fio.err")
	c1=$(ticks) w1=$(field local_write_bytes) p1=$(field passthrough_opens)
	python3 -c 'import json, sys
target, job, rep, c0, c1, hz, w0, w1, p0, p1, out = sys.argv[1:12]
r = {"target": target, "job": job, "rep": int(rep)}
try:
    j = json.loads(out)["jobs"][0]
    d = j["write" if job.startswith("randwrite") else "read"]
    r.update(bw_bytes=d["bw_bytes"], iops=round(d["iops"]), runtime_ms=d["runtime"])
except Exception as x:
    r.update(bw_bytes=None, error="fio: %s" % (str(x) or "no output"))
if target == "voyager-fs":
    r.update(daemon_cpu_ms=(int(c1) - int(c0)) * 1000 // int(hz), local_write_bytes=int(w1) - int(w0),
             passthrough_opens=int(p1) - int(p0))
print(json.dumps(r))' "$target" "$job" "$rep" "$c0" "$c1" "$HZ" "${w0:-0}" "${w1:-0}" "${p0:-0}" "${p1:-0}" \
		"${out:-}" >>"$W/rows.jsonl"
	log "$job $target: $(tail -1 "$W/rows.jsonl")"
	# a job without a result: what fio and the file system said (the
	# work directory goes with the run)
	if [ -z "$out" ]; then
		log "  fio: $(tail -2 "$W/fio.err" 2>/dev/null | tr '\n' ' ')"
		case $target in
		voyager-fs) log "  voyager-fs: $(tail -2 "$W/fs.log" | tr '\n' ' ')" ;;
		ptfloor) log "  ptfloor: $(tail -2 "$W/pt.log" | tr '\n' ' ')" ;;
		esac
	fi
}

ORDERS=("native voyager-fs ptfloor" "voyager-fs ptfloor native" "ptfloor native voyager-fs"
	"native ptfloor voyager-fs" "ptfloor voyager-fs native" "voyager-fs native ptfloor")
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for job in ${JOBS//,/ }; do
	for ((r = 1; r <= RUNS; r++)); do
		for t in ${ORDERS[$(((r - 1) % 6))]}; do one_job "$t" "$job" "$r"; done
	done
done

mkdir -p "$(dirname "$OUT")" || die "cannot make $(dirname "$OUT")"
cp "$W/rows.jsonl" "$OUT.jsonl" || die "cannot write $OUT.jsonl"
python3 - "$W/rows.jsonl" "$OUT.md" "$STARTED" "$DISK" "$RUNS" "$FIO_S" <<'PY' || die "could not write the table"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, started, disk, runs, fio_s = sys.argv[2:7]
bad = [r for r in rows if not r.get("bw_bytes")]
med = lambda job, t: statistics.median([r["bw_bytes"] for r in rows if r["job"] == job and r["target"] == t and r.get("bw_bytes")] or [0])
mib = lambda b: "%.1f MiB/s" % (b / 1048576)
lines = ["# FUSE passthrough floor, started %s" % started, "",
         "%s MiB in 4 files, %s repetitions, time-based jobs %s s; medians." % (disk, runs, fio_s), "",
         "| fio job | native | ptfloor | voyager-fs | ptfloor / native (the floor) | voyager-fs / native | voyager-fs / ptfloor | voyager-fs daemon CPU, bytes written through it |",
         "|---|---:|---:|---:|---:|---:|---:|---|"]
for job in dict.fromkeys(r["job"] for r in rows):
    n, p, v = (med(job, t) for t in ("native", "ptfloor", "voyager-fs"))
    vy = [r for r in rows if r["job"] == job and r["target"] == "voyager-fs"]
    cpu = sum(r.get("daemon_cpu_ms", 0) for r in vy)
    wr = sum(r.get("local_write_bytes", 0) for r in vy)
    ratio = lambda a, b: "%.2f" % (a / b) if b else "-"
    lines.append("| %s | %s | %s | %s | %s | %s | %s | %d ms, %d bytes over %d jobs |" % (
        job, mib(n), mib(p), mib(v), ratio(p, n), ratio(v, n), ratio(v, p), cpu, wr, len(vy)))
if bad:
    lines += ["", "Jobs without a result: %d (see %s)" % (len(bad), out.replace(".md", ".jsonl"))]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if bad else 0)
PY
