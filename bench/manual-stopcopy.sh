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
set -uo pipefail
RATE=${1:-1gbit}
DATA_MIB=${2:-16}
MEM_MIB=${3:-64}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/lab/lab.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"
LAB="vyb$$"
LAB=${LAB:0:13}
PORT=7711
PY=/usr/bin/python3

cleanup() {
	local rc=$? h
	trap - EXIT INT TERM
	for h in A B; do
		[ -d "$(lab_dir "$LAB" "$h")/runtime/runc" ] &&
			lab_exec "$LAB" "$h" runc --root "$(lab_dir "$LAB" "$h")/runtime/runc" delete -f bench >/dev/null 2>&1
	done
	[ -n "${RECV_PID:-}" ] && kill "$RECV_PID" 2>/dev/null
	lab_down "$LAB" >&2
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
die() { echo "manual-stopcopy: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

"$ROOT/tests/workloads/mkrootfs.sh" build busybox >/dev/null || die "mkrootfs failed"
lab_up "$LAB" A B >&2 || die "lab_up failed"
lab_shape "$LAB" A "$RATE" && lab_shape "$LAB" B "$RATE" || die "shape failed"
A=$(lab_dir "$LAB" A)
B=$(lab_dir "$LAB" B)
IPB=$(lab_ip "$LAB" B)

"$BUNDLE_SH" create "$A/bundles/bench" busybox --cgroup-parent "$(lab_cgroup_parent "$LAB" A)" \
	--id bench /sbin/memhog "$MEM_MIB" >&2 || die "bundle failed"
head -c "$((DATA_MIB * 1024 * 1024))" /dev/urandom >"$A/bundles/bench/rootfs/data/blob"
mkdir -p "$A/runtime/runc" "$B/runtime/runc" "$B/incoming"
lab_exec "$LAB" A runc --root "$A/runtime/runc" run -d --bundle "$A/bundles/bench" bench \
	</dev/null >/dev/null 2>&1 || die "runc run failed"
for i in $(seq 600); do [ -s "$A/bundles/bench/rootfs/data/memhog" ] && break; sleep 0.1; done
[ -s "$A/bundles/bench/rootfs/data/memhog" ] || die "memhog did not start"
want=$(cut -d' ' -f2 "$A/bundles/bench/rootfs/data/memhog")

T_START=$(now_ms)
# Listener in B: accept one connection, pipe it into tar, report bytes.
lab_exec "$LAB" B $PY -c '
import socket, subprocess, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
open(sys.argv[4] + "/.ready", "w").close()
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
' "$IPB" "$PORT" "$B/tmp/bytes" "$B/incoming" </dev/null >&2 &
RECV_PID=$!
for i in $(seq 100); do [ -e "$B/incoming/.ready" ] && break; sleep 0.05; done
rm -f "$B/incoming/.ready"

T0=$(now_ms)
lab_exec "$LAB" A runc --root "$A/runtime/runc" checkpoint --image-path "$A/state/img" \
	--work-path "$A/state/work" bench </dev/null >/dev/null 2>&1 || die "checkpoint failed (see $A/state/work/dump.log)"
T_DUMP=$(now_ms)
lab_exec "$LAB" A sh -c 'tar -C "$1" -c bundles/bench state/img | "$2" -c "
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
while True:
    b = sys.stdin.buffer.read(1 << 20)
    if not b: break
    c.sendall(b)
c.close()
" "$3" "$4"' sh "$A" "$PY" "$IPB" "$PORT" || die "send failed"
wait "$RECV_PID" || die "receive failed"
RECV_PID=
T_COPY=$(now_ms)
"$BUNDLE_SH" set-cgroup "$B/incoming/bundles/bench" "$(lab_cgroup_parent "$LAB" B)" bench || die "set-cgroup failed"
lab_exec "$LAB" B runc --root "$B/runtime/runc" restore -d --image-path "$B/incoming/state/img" \
	--work-path "$B/state/rwork" --bundle "$B/incoming/bundles/bench" bench \
	</dev/null >/dev/null 2>&1 || die "restore failed (see $B/state/rwork/restore.log)"
T1=$(now_ms)

# Check the memory came across intact.
pid=$(lab_exec "$LAB" B runc --root "$B/runtime/runc" state bench | $PY -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
kill -USR1 "$pid"
ok=false
for i in $(seq 100); do
	if [ -s "$B/incoming/bundles/bench/rootfs/data/memhog.verify" ]; then
		read -r _ got verdict <"$B/incoming/bundles/bench/rootfs/data/memhog.verify"
		[ "$got" = "$want" ] && [ "$verdict" = ok ] && ok=true
		break
	fi
	sleep 0.1
done

printf '{"downtime_ms": %d, "total_ms": %d, "bytes": %d, "dump_ms": %d, "copy_ms": %d, "restore_ms": %d, "rate": "%s", "data_mib": %d, "mem_mib": %d, "memory_intact": %s}\n' \
	$((T1 - T0)) $((T1 - T_START)) "$(cat "$B/tmp/bytes")" $((T_DUMP - T0)) $((T_COPY - T_DUMP)) \
	$((T1 - T_COPY)) "$RATE" "$DATA_MIB" "$MEM_MIB" "$ok"
