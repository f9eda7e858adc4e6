#!/bin/bash
# Failures after the freeze roll back: the source restores the container
# from its own checkpoint, the target drops what it received, and the
# container runs on exactly one host, with its memory intact.
#   1. the target agent is killed during the transfer
#   2. the target's restore fails
#   3. the target's disk fills up during the transfer
#   4. the link drops during the transfer
#   5. the source agent is killed during the transfer, and restarts
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
ID=${LAB}k
IPB=$(lab_ip "$LAB" b)
"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/counter >/dev/null ||
	{ t_fail "bundle"; t_done; }
# 48 MiB of incompressible data: about 4 s on the 100 Mbit/s link below.
dd if=/dev/urandom of="$A/bundles/$ID/rootfs/payload" bs=1M count=48 status=none
ctr_run a runc "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
wait_until 10 test -s "$A/bundles/$ID/rootfs/data/counter" || { t_fail "counter runs"; t_done; }
read -r TOKEN _ <"$A/bundles/$ID/rootfs/data/counter"
lab_shape "$LAB" a 100mbit
lab_shape "$LAB" b 100mbit
vy_agent_start "$LAB" a runc --peer-timeout 5 || { t_fail "agent a"; t_done; }
vy_agent_start "$LAB" b runc --peer-timeout 5 || { t_fail "agent b"; t_done; }

# back_home NAME: runs on A only, same incarnation, still counting, and B
# holds nothing of it.
back_home() {
	local tok c1 c2 bst
	read -r tok c1 <"$A/bundles/$ID/rootfs/data/counter"
	sleep 0.3
	read -r _ c2 <"$A/bundles/$ID/rootfs/data/counter"
	bst=$(ctr_state b runc "$ID")
	if [ "$(ctr_state a runc "$ID")" = running ] && [ "$tok" = "$TOKEN" ] &&
		[ "$c2" -gt "$c1" ] && [ "$bst" = absent ]; then
		t_ok "$1: runs on A only, memory intact"
	else
		t_fail "$1: runs on A only, memory intact" \
			"A=$(ctr_state a runc "$ID") tok=$tok/$TOKEN $c1->$c2 B=$bst"
	fi
	wait_until 20 test ! -e "$B/state/containers/$ID" &&
		t_ok "$1: the target dropped what it received" ||
		t_fail "$1: the target dropped what it received" "$(ls "$B/state/containers")"
}

# migrate_bg [MODE]: start a migration in the background; sets MIG_PID,
# MIG_OUT.  stop-copy by default, so that the long phase is the transfer
# after the freeze, where failures must roll back.
migrate_bg() {
	MIG_OUT=$(mktemp -p "$A/tmp" vymig.XXXX)
	vy_cli "$LAB" a migrate "$ID" --to "$IPB" --mode "${1:-stop-copy}" --json >"$MIG_OUT" &
	MIG_PID=$!
}
# expect_rolled_back NAME PATTERN
expect_rolled_back() {
	wait "$MIG_PID"
	local rc=$? out
	out=$(cat "$MIG_OUT")
	echo "$1: $out"
	if [ $rc != 0 ] && [ "$(vy_json_get "$out" result)" = rolled-back ] &&
		grep -qiE "$2" <<<"$(vy_json_get "$out" error.message)"; then
		t_ok "$1: result rolled-back, error says why"
	else
		t_fail "$1: result rolled-back, error says why" "rc=$rc $out"
	fi
	back_home "$1"
}
# The phase of the migration in flight (status also lists every journal,
# whose phase history names every phase an earlier migration went through).
active_phase_is() { vy_cli "$LAB" a --json status | python3 -c '
import json, sys
a = json.load(sys.stdin).get("active", [])
sys.exit(0 if any(m.get("phase") == sys.argv[1] for m in a) else 1)' "$1"; }
in_transfer() { active_phase_is transfer; }
in_presync() { active_phase_is presync; }

# 0. presync (the default mode): the target dies before the freeze.  The
# container was never frozen, so nothing rolls back: it simply stays.
migrate_bg presync
wait_until 20 in_presync && sleep 1
vy_agent_kill "$LAB" b
wait "$MIG_PID"
out=$(cat "$MIG_OUT")
echo "presync, target killed: $out"
[ "$(vy_json_get "$out" result)" = failed ] && [ "$(vy_json_get "$out" error.phase)" = presync ] &&
	[ -z "$(vy_json_get "$out" downtime_ms)" ] &&
	t_ok "presync, target killed: result failed in presync, never frozen (no downtime)" ||
	t_fail "presync, target killed: failed in presync, never frozen" "$out"
vy_agent_start "$LAB" b runc --peer-timeout 5 || t_fail "agent b restart"
back_home "presync, target killed"

# 1. target agent killed mid-transfer
migrate_bg
wait_until 20 in_transfer && sleep 1
vy_agent_kill "$LAB" b
# The dead agent cannot clean up; its next run does, from its journal.
vy_agent_start "$LAB" b runc --peer-timeout 5 || t_fail "agent b restart"
expect_rolled_back "target agent killed" "peer|closed|reset|broken"
j=$(ls "$B/state/journal/" | head -1)
grep -qE '"result": ?"aborted"' "$B/state/journal/$j" 2>/dev/null &&
	t_ok "restarted target marks the interrupted migration aborted" ||
	t_fail "restarted target marks the interrupted migration aborted" "$(cat "$B/state/journal/$j")"

# 2. the restore fails on the target (a runtime that refuses to restore)
mkdir -p "$B/fakebin"
cat >"$B/fakebin/runc" <<'SH'
#!/bin/sh
for a in "$@"; do [ "$a" = restore ] && { echo "injected restore failure" >&2; exit 1; }; done
exec /usr/sbin/runc "$@"
SH
chmod +x "$B/fakebin/runc"
vy_agent_stop "$LAB" b
VY_AGENT_ENV="PATH=$B/fakebin:/usr/sbin:/usr/bin:/sbin:/bin" vy_agent_start "$LAB" b runc --peer-timeout 5
lab_shape "$LAB" a off
lab_shape "$LAB" b off
migrate_bg
expect_rolled_back "restore fails" "injected restore failure"
lab_shape "$LAB" a 100mbit
lab_shape "$LAB" b 100mbit
vy_agent_stop "$LAB" b

# 3. the target's disk fills up during the transfer
lab_exec "$LAB" b mount -t tmpfs -o size=160m vytmpfs "$B/state"
vy_agent_start "$LAB" b runc --peer-timeout 5
migrate_bg
wait_until 20 in_transfer && sleep 1
# (inside host b: the tmpfs exists only in b's mount namespace)
lab_exec "$LAB" b dd if=/dev/zero of="$B/state/vyfill" bs=1M status=none 2>/dev/null
expect_rolled_back "target disk full" "disk is full|No space"
vy_agent_stop "$LAB" b
lab_exec "$LAB" b umount -l "$B/state"
vy_agent_start "$LAB" b runc --peer-timeout 5

# 4. the link drops during the transfer
migrate_bg
wait_until 20 in_transfer && sleep 1
lab_exec "$LAB" b ip link set vyeth0 down
expect_rolled_back "link drops" "timed out|timeout|reset|closed|unreachable"
lab_exec "$LAB" b ip link set vyeth0 up
lab_shape "$LAB" b 100mbit

# 5. the source agent dies mid-transfer: the container is checkpointed and
# stopped; the target drops its half; the restarted agent restores it here.
migrate_bg
wait_until 20 in_transfer && sleep 1
vy_agent_kill "$LAB" a
wait "$MIG_PID"
# Frozen means "not counting": with post-copy memory (auto) CRIU's page
# server still holds the tasks under ptrace, and runc then says "running".
read -r _ f1 <"$A/bundles/$ID/rootfs/data/counter"
sleep 0.5
read -r _ f2 <"$A/bundles/$ID/rootfs/data/counter"
ast=$(ctr_state a runc "$ID")
{ [ "$ast" = paused ] || [ "$ast" = running ]; } && [ "$f1" = "$f2" ] &&
	[ "$(ctr_state b runc "$ID")" = absent ] &&
	t_ok "source agent killed: the container waits frozen on A, not on B" ||
	t_fail "source agent killed: the container waits frozen on A, not on B" \
		"A=$ast ($f1 -> $f2) B=$(ctr_state b runc "$ID")"
vy_agent_start "$LAB" a runc --peer-timeout 5 || t_fail "agent a restart"
wait_until 20 state_is a runc "$ID" running
back_home "source agent killed, restarted"
grep -q "rolled back, $ID runs here again" "$A/voyagerd.log" &&
	t_ok "restarted source agent says it rolled back" ||
	t_fail "restarted source agent says it rolled back"

# And a clean migration still works afterwards.
lab_shape "$LAB" a off
lab_shape "$LAB" b off
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --json)
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(ctr_state b runc "$ID")" = running ] &&
	[ "$(ctr_state a runc "$ID")" = absent ] && t_ok "a clean migration afterwards" ||
	t_fail "a clean migration afterwards" "$out"
t_done
