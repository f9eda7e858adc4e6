#!/bin/bash
# Where a cold metadata scan through voyager-fs spends its time: wall time
# against native, and the voyager-fs daemon's own CPU (user and system).
#
#   bench/fs-scan-cpu.sh [--files N] [--runs R] [--nofile N] [--build DIR]
#       --files  small files (64 bytes, 1000 per directory)         50000
#       --runs   cold scans on each side, alternating                  3
#       --nofile voyager-fs's open-file limit (soft and hard): past
#                about 3/4 of it, inodes keep file handles           20000
#       --build  meson build directory with voyager-fs, vyfs_source and
#                vyfs_skeleton                                   ./build
#
# No lab and no migration: the test drivers of tests/e2e/t_fs.sh serve a
# tree on loopback (vyfs_source), its skeleton is laid out (vyfs_skeleton)
# and voyager-fs mounts it with hydration held to 1 byte/s.  Each scan is
# `find ROOT -xdev -print0 | xargs -0 stat` after `echo 2 >
# /proc/sys/vm/drop_caches`, through the mount and on the backing
# directory (native).  The daemon's CPU comes from /proc/PID/stat.  On an
# idle 2-core machine the daemon runs beside the scan: equal wall times and
# a large daemon CPU mean the scan costs CPU that a busy host turns into
# time (bench/jit.sh's cold scans run beside a container and two agents).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=50000
RUNS=3
NOFILE=20000
BUILD=$ROOT/build
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--files) FILES=${2:-}; shift 2 ;;
	--runs) RUNS=${2:-}; shift 2 ;;
	--nofile) NOFILE=${2:-}; shift 2 ;;
	--build) BUILD=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "fs-scan-cpu: unknown argument '$1'" >&2; usage ;;
	esac
done
[[ $FILES =~ ^[0-9]+$ ]] && [[ $RUNS =~ ^[0-9]+$ ]] && [[ $NOFILE =~ ^[0-9]+$ ]] &&
	[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] && [ "$NOFILE" -ge 64 ] ||
	{ echo "fs-scan-cpu: --files, --runs (1..20) and --nofile (>= 64) want numbers" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "fs-scan-cpu: must run as root (drop_caches, FUSE)" >&2; exit 1; }
for b in voyager-fs vyfs_source vyfs_skeleton; do
	[ -x "$BUILD/$b" ] || { echo "fs-scan-cpu: no $BUILD/$b (meson compile -C $BUILD)" >&2; exit 1; }
done

W=$(mktemp -d /tmp/vyscan.XXXXXX) || exit 1
MNT=$W/mnt
SRC_PID=""
FS_PID=""
cleanup() {
	[ -n "$FS_PID" ] && kill "$FS_PID" 2>/dev/null
	sleep 0.3
	findmnt -rn --mountpoint "$MNT" >/dev/null 2>&1 && { fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"; }
	[ -n "$SRC_PID" ] && kill "$SRC_PID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "fs-scan-cpu: $*" >&2; exit 1; }
. "$ROOT/bench/loopfs.sh"

mkdir -p "$W/src" "$W/back" "$MNT"
python3 - "$W/src" "$FILES" <<'PY' || die "making the tree"
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(b"%-63d\n" % i)
PY
loopfs_up "$W/src" "$W" "$MNT" "$NOFILE" --hydrate-rate 1

ticks() { awk '{print $14, $15}' "/proc/$FS_PID/stat"; }
hz=$(getconf CLK_TCK)
echo "# cold find + stat over $FILES files; voyager-fs open-file limit $NOFILE"
echo "side run wall_ms daemon_user_ms daemon_sys_ms"
for run in $(seq 1 "$RUNS"); do
	for side in voyager-fs native; do
		dir=$MNT
		[ "$side" = native ] && dir=$W/back
		sync
		echo 2 >/proc/sys/vm/drop_caches
		sleep 0.3
		read -r u0 s0 < <(ticks)
		t0=$(date +%s%N)
		find "$dir" -xdev -print0 | xargs -0 stat >/dev/null || die "scan of $dir"
		t1=$(date +%s%N)
		read -r u1 s1 < <(ticks)
		echo "$side $run $(((t1 - t0) / 1000000)) $(((u1 - u0) * 1000 / hz)) $(((s1 - s0) * 1000 / hz))"
	done
done
echo "# handle inodes made: $(getfattr --absolute-names --only-values -n user.voyager.status "$MNT" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["handle_inodes"])')"
