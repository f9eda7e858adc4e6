#!/bin/bash
# The default mode copies the rootfs while the container runs and, at the
# freeze, only what changed since.  The workload here changes its rootfs all
# the time: it appends to a log, creates a new file and deletes an old one,
# and stamps a counter into the middle of a large file, every 20 ms.  After
# the move (paused on b so that nothing changes while we look) the tree
# must be exactly what the process's memory says it wrote: no lost append,
# no resurrected file, no stale block.  Also: downtime does not carry the
# pre-synced bytes, and --mode stop-copy still works.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || { t_fail "agents"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
ID=${LAB}p
IPA=$(lab_ip "$LAB" a)
IPB=$(lab_ip "$LAB" b)
SCRIPT='i=0
while true; do
  i=$((i+1))
  echo $i >>/data/log
  echo $i >/data/f$i
  rm -f /data/f$((i-5))
  printf "%08d" $i | dd of=/data/big bs=8 count=1 seek=2097152 conv=notrunc 2>/dev/null
  usleep 20000
done'
"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /bin/sh -c "$SCRIPT" >/dev/null ||
	{ t_fail "bundle"; t_done; }
# 96 MiB of static data: its pre-sync takes a while on the shaped link,
# so the workload changes plenty between the pre-sync and the freeze.
dd if=/dev/urandom of="$A/bundles/$ID/rootfs/static.bin" bs=1M count=64 status=none
dd if=/dev/urandom of="$A/bundles/$ID/rootfs/data/big" bs=1M count=32 status=none
lab_shape "$LAB" a 400mbit
lab_shape "$LAB" b 400mbit
ctr_run a runc "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
wait_until 10 test -s "$A/bundles/$ID/rootfs/data/log" || { t_fail "workload runs"; t_done; }

# consistent HOST ROOTFS: the tree is one the workload can have left at
# some instant (checked while paused).  With L the log's last line, each
# iteration goes through: appended L (files L-5..L-1, stamp L-1), made fL
# (files L-5..L), removed f(L-5) (files L-4..L), stamped L.
consistent() {
	local r=$2 last stamp files want_a want_b want_c
	last=$(tail -n1 "$r/data/log")
	seq 1 "$last" | cmp -s - "$r/data/log" || { echo "log has gaps or repeats (last $last)"; return 1; }
	stamp=$((10#$(dd if="$r/data/big" bs=8 count=1 skip=2097152 2>/dev/null)))
	files=$(cd "$r/data" && ls | grep '^f' | sed 's/^f//' | sort -n | tr '\n' ' ')
	for k in $files; do
		[ "$(cat "$r/data/f$k")" = "$k" ] || { echo "f$k holds $(cat "$r/data/f$k")"; return 1; }
	done
	want_a="$(seq -s ' ' $((last - 5)) $((last - 1))) "
	want_b="$(seq -s ' ' $((last - 5)) "$last") "
	want_c="$(seq -s ' ' $((last - 4)) "$last") "
	if [ "$stamp" = $((last - 1)) ] && { [ "$files" = "$want_a" ] || [ "$files" = "$want_b" ] ||
		[ "$files" = "$want_c" ]; }; then
		return 0
	fi
	[ "$stamp" = "$last" ] && [ "$files" = "$want_c" ] && return 0
	echo "log ends at $last, stamp $stamp, files: $files"
	return 1
}

out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --mode presync --json)
echo "presync: $out"
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(vy_json_get "$out" mode)" = presync ] &&
	t_ok "default mode is presync, and it migrates" || t_fail "presync migrates" "$out"
pre=$(vy_json_get "$out" phases_ms.presync)
xfer=$(vy_json_get "$out" phases_ms.transfer)
[ -n "$pre" ] && [ "$xfer" -lt "$pre" ] 2>/dev/null &&
	t_ok "the freeze carries only the changes (transfer $xfer ms < presync $pre ms)" ||
	t_fail "the freeze carries only the changes" "presync $pre transfer $xfer"
grep -q "entries unchanged since the pre-sync" "$A/voyagerd.log" &&
	t_ok "the source reports what the pre-sync saved" || t_fail "pre-sync log line"
lab_exec "$LAB" b runc --root "$B/runtime/runc" pause "$ID"
RB="$B/state/containers/$ID/bundle/rootfs"
msg=$(consistent b "$RB") && t_ok "after presync: log, created and deleted files, big-file block all exact" ||
	t_fail "after presync: tree matches what the process wrote" "$msg"
cmp -s "$A/bundles/$ID/rootfs/static.bin" "$RB/static.bin" && t_ok "static data identical" ||
	t_fail "static data identical"
[ ! -e "$B/state/containers/$ID/bundle/rootfs.old" ] && [ ! -e "$B/state/containers/$ID/bundle/rootfs.delta" ] &&
	t_ok "no stale trees left on b" || t_fail "no stale trees left on b"
lab_exec "$LAB" b runc --root "$B/runtime/runc" resume "$ID"
sleep 0.5

out=$(vy_cli "$LAB" b migrate "$ID" --to "$IPA" --mode stop-copy --json)
echo "stop-copy: $out"
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(vy_json_get "$out" mode)" = stop-copy ] &&
	[ -z "$(vy_json_get "$out" phases_ms.presync)" ] &&
	t_ok "--mode stop-copy migrates back without a pre-sync" || t_fail "stop-copy back" "$out"
lab_exec "$LAB" a runc --root "$A/runtime/runc" pause "$ID"
msg=$(consistent a "$A/state/containers/$ID/bundle/rootfs") &&
	t_ok "after stop-copy: the tree is exact too" || t_fail "after stop-copy: tree exact" "$msg"
lab_exec "$LAB" a runc --root "$A/runtime/runc" resume "$ID"
t_done
