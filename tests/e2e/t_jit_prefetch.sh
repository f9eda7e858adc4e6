#!/bin/bash
# Just-in-time migration (runc): the mapped files go with the skeleton.
#
# While the container still runs, A sends the files its processes map (a
# restore reads their pages at once: a library's, an executable's) with the
# skeleton, and B writes them into it before the freeze; B's voyager-fs
# then starts with them local.  Not sent: a file mapped shared and
# writable, since writes through a mapping are no inotify event.  A file
# sent that changes before the freeze is fetched again at it: by a write(2)
# (an inotify event, the delta names it) or through a shared mapping made
# by someone else (no event; the mtime moves, and A's check at the freeze
# sees it).
#
# The container: /sbin/maphold maps fixture/private.bin, written.bin and
# quiet/mmapped.bin privately and fixture/rw/rw.bin shared and writable;
# PID 1 is /sbin/counter.  mmapped.bin is alone in its directory: an event
# there would have its directory read again at the freeze anyway.  VOYAGER_WAITPOINT holds A's agent after the skeleton:
#   - A's log says what it sent; B's present list has the mapped files,
#     not rw.bin, and B's backing copy of private.bin is whole already;
#   - written.bin gets 4 KiB by dd, mmapped.bin and rw.bin 4 KiB each
#     through a shared mapping (python's mmap, from the host, holding the
#     files open until the migration ends: no event at all);
#   - the report: prefetch.files >= 3, prefetch.refetched == 2; A's log names
#     mmapped.bin as changed; on B the four files have the changed bytes,
#     the counter goes on, maphold still maps them, and the same once B is
#     independent;
#   - then back to A with --no-prefetch: nothing sent before the freeze
#     (the report, B's log, A's present list), and maphold runs on A with
#     the same files.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
WORK=$A/jp
mkdir -p "$WORK"
MIG_PID=""
WRITER=""

jp_teardown() {
	local rc=$?
	local p
	for p in "$MIG_PID" "$WRITER"; do
		[ -n "$p" ] || continue
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	(exit $rc)
	e2e_teardown
}
trap jp_teardown EXIT

VY_AGENT_ENV="VOYAGER_WAITPOINT=source-after-skeleton:$WORK/go" vy_agent_start "$LAB" a runc &&
	vy_agent_start "$LAB" b runc || { t_fail "agents start"; t_done; }

ID=${LAB}p
BUN=$A/bundles/$ID
F=$BUN/rootfs/fixture
"$BUNDLE_SH" create "$BUN" busybox --id "$ID" --cgroup-parent "$(lab_cgroup_parent "$LAB" a)" \
	-- /bin/sh -c '/sbin/maphold /fixture/private.bin:private /fixture/written.bin:private /fixture/quiet/mmapped.bin:private /fixture/rw/rw.bin:shared & exec /sbin/counter' \
	>/dev/null || { t_fail "bundle"; t_done; }
mkdir -p "$F/quiet" "$F/rw"
head -c 2097152 /dev/urandom >"$F/private.bin"
head -c 1048576 /dev/urandom >"$F/written.bin"
head -c 1048576 /dev/urandom >"$F/quiet/mmapped.bin"
head -c 1048576 /dev/urandom >"$F/rw/rw.bin"
ctr_run a runc "$ID" "$BUN" || { t_fail "container start"; t_done; }
wait_until 10 test -s "$BUN/rootfs/data/counter" || { t_fail "counter runs"; t_done; }
P1=$(ctr_pid a runc "$ID")
MH=""
maphold_ready() {
	MH=$(cat "/proc/$P1/task/$P1/children" 2>/dev/null | awk '{print $1}')
	[ -n "$MH" ] && grep -q "fixture/rw/rw.bin" "/proc/$MH/maps" 2>/dev/null
}
wait_until 10 maphold_ready && grep fixture "/proc/$MH/maps" &&
	t_ok "maphold (pid $MH) maps the four files in the container" ||
	{ t_fail "maphold maps its files"; t_done; }
read -r tok cnt <"$BUN/rootfs/data/counter"

rm -f "$WORK/m.out" "$WORK/m.rc"
(
	vy_cli "$LAB" a migrate "$ID" --to "$(lab_ip "$LAB" b)" --mode jit --json \
		>"$WORK/m.out" 2>"$WORK/m.err"
	echo $? >"$WORK/m.rc"
) </dev/null &
MIG_PID=$!
wait_until 60 test -e "$WORK/go.reached" && t_ok "A's agent waits after the skeleton" ||
	{ t_fail "waitpoint reached" "$(tail -5 "$A/voyagerd.log")"; t_done; }

sent=$(grep -E "migration [0-9a-f]+: [0-9]+ mapped files \([0-9]+ bytes\) sent before the freeze" \
	"$A/voyagerd.log" | tail -1)
echo "A: $sent"
n=$(sed -nE 's/.*: ([0-9]+) mapped files.*/\1/p' <<<"$sent")
[ -n "$n" ] && [ "$n" -ge 3 ] && t_ok "A sent $n mapped files with the skeleton" ||
	t_fail "A's log says it sent the mapped files" "$(grep "mapped files" "$A/voyagerd.log")"
PRESENT=$B/state/containers/$ID/fs/1.present
cat "$PRESENT"
grep -qx "fixture/private.bin" "$PRESENT" && grep -qx "fixture/written.bin" "$PRESENT" &&
	grep -qx "fixture/quiet/mmapped.bin" "$PRESENT" && grep -qx "sbin/maphold" "$PRESENT" &&
	t_ok "B has the privately mapped files and maphold's own binary before the freeze" ||
	t_fail "B's present list" "$(cat "$PRESENT" 2>&1)"
! grep -q "rw.bin" "$PRESENT" && t_ok "B was not sent rw.bin, mapped shared and writable" ||
	t_fail "rw.bin was sent before the freeze"
want=$(sha256sum <"$F/private.bin")
[ "$(sha256sum <"$B/state/containers/$ID/backing/1/fixture/private.bin")" = "$want" ] &&
	t_ok "B's backing copy of private.bin is whole before the freeze" ||
	t_fail "B's backing copy of private.bin"

# The changes, while it runs.
dd if=/dev/urandom of="$F/written.bin" bs=4096 seek=2 count=1 conv=notrunc status=none
# Through a shared mapping, by a process that keeps the file open until the
# migration is over: a close after a write would be an inotify event
# (IN_CLOSE_WRITE), the writes themselves are none.
python3 - "$WORK/m.rc" "$WORK/written" "$F/quiet/mmapped.bin" "$F/rw/rw.bin" <<'EOF' &
import mmap, os, sys, time
held = []
for path in sys.argv[3:]:
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[4096:8192] = os.urandom(4096)
    held.append((fd, m))
open(sys.argv[2], "w").close()
for _ in range(1200):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)
EOF
WRITER=$!
wait_until 10 test -e "$WORK/written" || t_fail "the shared-mapping writer wrote"
for f in private written quiet/mmapped rw/rw; do
	sha256sum <"$F/$f.bin" | cut -d' ' -f1 >"$WORK/${f##*/}.want"
done

touch "$WORK/go"
wait_until 60 test -s "$WORK/m.rc" || { t_fail "migrate ends within 60 s"; t_done; }
wait "$MIG_PID" 2>/dev/null
MIG_PID=""
wait "$WRITER" 2>/dev/null
WRITER=""
out=$(cat "$WORK/m.out")
echo "report: $out"
mid=$(vy_json_get "$out" id)
[ "$(cat "$WORK/m.rc")" = 0 ] && [ "$(vy_json_get "$out" result)" = migrated ] &&
	t_ok "migrate exits 0 with result migrated" ||
	{ t_fail "migrate" "rc=$(cat "$WORK/m.rc") $(cat "$WORK/m.err")"; t_done; }
pf=$(vy_json_get "$out" prefetch)
echo "prefetch: $pf"
[ "$(vy_json_get "$out" prefetch.files)" -ge 3 ] 2>/dev/null &&
	[ "$(vy_json_get "$out" prefetch.bytes)" -ge 4194304 ] 2>/dev/null &&
	t_ok "the report counts the files and bytes sent before the freeze" ||
	t_fail "report's prefetch" "$pf"
[ "$(vy_json_get "$out" prefetch.refetched)" = 2 ] &&
	t_ok "the report says 2 of them changed before the freeze" ||
	t_fail "report's prefetch.refetched is 2" "$pf"
grep -q "migration $mid: fixture/quiet/mmapped.bin changed after it was sent before the freeze" \
	"$A/voyagerd.log" && t_ok "A saw the write through a shared mapping at the freeze" ||
	t_fail "A's log names mmapped.bin" "$(grep "migration $mid" "$A/voyagerd.log" | tail -8)"
fslog=$B/state/containers/$ID/fs/1.log
grep -E "[0-9]+ files whole here before the freeze" "$fslog" &&
	t_ok "B's voyager-fs started with them local" ||
	t_fail "B's voyager-fs log" "$(tail -5 "$fslog" 2>&1)"

[ "$(ctr_state a runc "$ID")" = absent ] && t_ok "gone from A" ||
	t_fail "gone from A" "$(ctr_state a runc "$ID")"
PB=$(ctr_pid b runc "$ID")
RB="/proc/$PB/root"
all_changed() {
	local f ok=0
	for f in private written quiet/mmapped rw/rw; do
		if [ "$(sha256sum <"$RB/fixture/$f.bin" | cut -d' ' -f1)" != "$(cat "$WORK/${f##*/}.want")" ]; then
			echo "fixture/$f.bin on B differs from A's at the freeze"
			ok=1
		fi
	done
	return $ok
}
all_changed && t_ok "on B the four files are A's at the freeze, changes included" ||
	t_fail "files on B"
read -r tok2 c2 <"$RB/data/counter"
[ "$tok2" = "$tok" ] && [ "$c2" -gt "$cnt" ] &&
	t_ok "the counter goes on on B (same incarnation, $cnt -> $c2)" || t_fail "counter on B"
MHB=$(cat "/proc/$PB/task/$PB/children" 2>/dev/null | awk '{print $1}')
[ -n "$MHB" ] && [ "$(grep -c "fixture/.*\.bin" "/proc/$MHB/maps")" -ge 4 ] &&
	t_ok "maphold runs on B and still maps the files" || t_fail "maphold on B"
vy_wait_independent "$LAB" b "$mid" 90 && t_ok "B became independent" ||
	t_fail "B independent" "$(vy_cli "$LAB" b --json status "$mid")"
all_changed && t_ok "and the files are still A's once every byte is local" ||
	t_fail "files once independent"

# Back to A with --no-prefetch: no file data before the freeze, and A's
# restore reads what maphold maps through A's voyager-fs, from B.
back=$(vy_cli "$LAB" b migrate "$ID" --to "$(lab_ip "$LAB" a)" --no-prefetch --json)
bid=$(vy_json_get "$back" id)
[ "$(vy_json_get "$back" result)" = migrated ] && [ "$(vy_json_get "$back" prefetch.files)" = 0 ] &&
	! grep -q "migration $bid: [0-9]* mapped files" "$B/voyagerd.log" &&
	[ ! -s "$A/state/containers/$ID/fs/1.present" ] &&
	t_ok "--no-prefetch: back on A, nothing sent before the freeze (report, B's log, A's present list)" ||
	t_fail "--no-prefetch back to A" "$back"
PA=$(ctr_pid a runc "$ID")
MHA=$(cat "/proc/$PA/task/$PA/children" 2>/dev/null | awk '{print $1}')
RB="/proc/$PA/root"
[ -n "$MHA" ] && [ "$(grep -c "fixture/.*\.bin" "/proc/$MHA/maps")" -ge 4 ] && all_changed &&
	t_ok "--no-prefetch: maphold runs on A with its files, changes included" ||
	t_fail "maphold on A after --no-prefetch"
t_done
