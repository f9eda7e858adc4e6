#!/bin/bash
# Manual stop-and-copy baseline: what migrating by hand costs, without
# Voyager.  Usage: bench/manual-stopcopy.sh [RATE] [DATA_MIB] [MEM_MIB]
#   RATE      link rate for both hosts (tc tbf), default 1gbit
#   DATA_MIB  MiB of random data written into the container's rootfs (16)
#   MEM_MIB   MiB of non-zero memory held by the container (memhog) (64)
#
# In a fresh two-host lab: start a runc container on A, then
#   T0 = checkpoint starts; tar images + bundle on A, stream over TCP to a
#   listener in B's netns (so the bytes cross the shaped veths), untar,
#   rewrite cgroupsPath, runc restore -d on B; T1 = restore returned.
# Prints {"downtime_ms": T1-T0, "total_ms": ..., "bytes": ..., ...}.
# total_ms runs from the listener's start to T1.
#
# Sourced (after lab/lab.sh), it provides the same measurement on a lab
# that the caller made (bench/stopcopy.sh uses it):
#   msc_run LAB SRC DST ID BUNDLE
#       BUNDLE is SRC's bundle directory (under SRC's bundles/, named ID) of
#       a runc container ID that runs /sbin/memhog and is already running
#       under SRC's runtime root.  Migrates it to DST as above, checks
#       memhog's checksum there, prints one JSON line, and leaves the
#       container running on DST (bundle in DST/tmp/msc-ID/in/bundles/ID).
#       Returns non-zero if a step failed.  A listener it started is in
#       MSC_RECV_PID until it ends (the caller's trap may kill it).
#   msc_clean LAB SRC DST ID      delete the container on DST and the run's
#                                 files on both hosts
MSC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MSC_PORT=${MSC_PORT:-7711}
MSC_PY=/usr/bin/python3
MSC_RECV_PID=""

_msc_now() { date +%s%3N; }
_msc_err() { echo "manual-stopcopy: $*" >&2; }

msc_run() {
	local lab=$1 src=$2 dst=$3 id=$4 bundle=$5
	local A B IPB w wb want t_start t0 t_dump t_copy t1 pid ok=false i got verdict
	A=$(lab_dir "$lab" "$src")
	B=$(lab_dir "$lab" "$dst")
	IPB=$(lab_ip "$lab" "$dst") || return 1
	w="$A/tmp/msc-$id"
	wb="$B/tmp/msc-$id"
	case $bundle in "$A/bundles/$id") ;; *) _msc_err "bundle must be $A/bundles/$id"; return 1 ;; esac
	want=$(cut -d' ' -f2 "$bundle/rootfs/data/memhog" 2>/dev/null)
	[ -n "$want" ] || { _msc_err "memhog has not written its checksum"; return 1; }
	mkdir -p "$w" "$wb/in" "$B/runtime/runc" || return 1

	t_start=$(_msc_now)
	# Listener in DST: accept one connection, pipe it into tar, report bytes.
	lab_exec "$lab" "$dst" $MSC_PY -c '
import socket, subprocess, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
open(sys.argv[4] + "/.ready", "w").close()
s.settimeout(600)
c, _ = s.accept()
tar = subprocess.Popen(["tar", "-x", "-C", sys.argv[4]], stdin=subprocess.PIPE)
n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b); tar.stdin.write(b)
tar.stdin.close(); rc = tar.wait()
open(sys.argv[3], "w").write(str(n))
sys.exit(rc)
' "$IPB" "$MSC_PORT" "$wb/bytes" "$wb/in" </dev/null >&2 &
	MSC_RECV_PID=$!
	for i in $(seq 100); do [ -e "$wb/in/.ready" ] && break; sleep 0.05; done
	[ -e "$wb/in/.ready" ] || { _msc_err "listener did not start"; return 1; }
	rm -f "$wb/in/.ready"

	t0=$(_msc_now)
	lab_exec "$lab" "$src" runc --root "$A/runtime/runc" checkpoint --image-path "$w/img" \
		--work-path "$w/work" "$id" </dev/null >/dev/null 2>&1 ||
		{ _msc_err "checkpoint failed (see $w/work/dump.log)"; return 1; }
	t_dump=$(_msc_now)
	lab_exec "$lab" "$src" sh -c 'tar -C "$1" -c "bundles/$5" "tmp/msc-$5/img" | "$2" -c "
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
while True:
    b = sys.stdin.buffer.read(1 << 20)
    if not b: break
    c.sendall(b)
c.close()
" "$3" "$4"' sh "$A" "$MSC_PY" "$IPB" "$MSC_PORT" "$id" || { _msc_err "send failed"; return 1; }
	wait "$MSC_RECV_PID" || { MSC_RECV_PID=""; _msc_err "receive failed"; return 1; }
	MSC_RECV_PID=""
	t_copy=$(_msc_now)
	"$MSC_ROOT/tests/workloads/bundle.sh" set-cgroup "$wb/in/bundles/$id" \
		"$(lab_cgroup_parent "$lab" "$dst")" "$id" || { _msc_err "set-cgroup failed"; return 1; }
	lab_exec "$lab" "$dst" runc --root "$B/runtime/runc" restore -d --image-path "$wb/in/tmp/msc-$id/img" \
		--work-path "$wb/rwork" --bundle "$wb/in/bundles/$id" "$id" \
		</dev/null >/dev/null 2>&1 || { _msc_err "restore failed (see $wb/rwork/restore.log)"; return 1; }
	t1=$(_msc_now)

	# Check the memory came across intact.
	pid=$(lab_exec "$lab" "$dst" runc --root "$B/runtime/runc" state "$id" |
		$MSC_PY -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
	[ -n "$pid" ] && kill -USR1 "$pid"
	for i in $(seq 300); do
		if [ -s "$wb/in/bundles/$id/rootfs/data/memhog.verify" ]; then
			read -r _ got verdict <"$wb/in/bundles/$id/rootfs/data/memhog.verify"
			[ "$got" = "$want" ] && [ "$verdict" = ok ] && ok=true
			break
		fi
		sleep 0.1
	done

	printf '{"downtime_ms": %d, "total_ms": %d, "bytes": %d, "dump_ms": %d, "copy_ms": %d, "restore_ms": %d, "memory_intact": %s}\n' \
		$((t1 - t0)) $((t1 - t_start)) "$(cat "$wb/bytes")" $((t_dump - t0)) $((t_copy - t_dump)) \
		$((t1 - t_copy)) "$ok"
	[ "$ok" = true ]
}

msc_clean() {
	local lab=$1 src=$2 dst=$3 id=$4 A B
	A=$(lab_dir "$lab" "$src")
	B=$(lab_dir "$lab" "$dst")
	lab_exec "$lab" "$dst" runc --root "$B/runtime/runc" delete -f "$id" >/dev/null 2>&1
	lab_exec "$lab" "$src" runc --root "$A/runtime/runc" delete -f "$id" >/dev/null 2>&1
	rm -rf "$A/tmp/msc-$id" "$B/tmp/msc-$id" "$A/bundles/$id"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

# ---- standalone: its own lab, one measurement ----
set -uo pipefail
RATE=${1:-1gbit}
DATA_MIB=${2:-16}
MEM_MIB=${3:-64}

. "$MSC_ROOT/lab/lab.sh"
BUNDLE_SH="$MSC_ROOT/tests/workloads/bundle.sh"
LAB="vyb$$"
LAB=${LAB:0:13}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -n "$MSC_RECV_PID" ] && kill "$MSC_RECV_PID" 2>/dev/null
	if [ -d "$LAB_VAR_BASE/$LAB" ]; then
		msc_clean "$LAB" A B bench
		lab_down "$LAB" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
die() { echo "manual-stopcopy: $*" >&2; exit 1; }

"$MSC_ROOT/tests/workloads/mkrootfs.sh" build busybox >/dev/null || die "mkrootfs failed"
lab_up "$LAB" A B >&2 || die "lab_up failed"
lab_shape "$LAB" A "$RATE" && lab_shape "$LAB" B "$RATE" || die "shape failed"
A=$(lab_dir "$LAB" A)

"$BUNDLE_SH" create "$A/bundles/bench" busybox --cgroup-parent "$(lab_cgroup_parent "$LAB" A)" \
	--id bench /sbin/memhog "$MEM_MIB" >&2 || die "bundle failed"
head -c "$((DATA_MIB * 1024 * 1024))" /dev/urandom >"$A/bundles/bench/rootfs/data/blob"
mkdir -p "$A/runtime/runc"
lab_exec "$LAB" A runc --root "$A/runtime/runc" run -d --bundle "$A/bundles/bench" bench \
	</dev/null >/dev/null 2>&1 || die "runc run failed"
for i in $(seq 600); do [ -s "$A/bundles/bench/rootfs/data/memhog" ] && break; sleep 0.1; done
[ -s "$A/bundles/bench/rootfs/data/memhog" ] || die "memhog did not start"

out=$(msc_run "$LAB" A B bench "$A/bundles/bench")
rc=$?
[ -n "$out" ] && echo "${out%\}}, \"rate\": \"$RATE\", \"data_mib\": $DATA_MIB, \"mem_mib\": $MEM_MIB}"
exit $rc
