#!/bin/bash
# Post-copy memory (CRIU lazy pages) in `voyager migrate`.  A memhog
# container holds 512 MiB of non-zero memory and re-checks its checksum on
# SIGUSR1.
#   1. --memory post-copy a -> b: migrated, checksum intact on b, the report
#      says post-copy, when the last page arrived and how long it was
#      exposed; meanwhile the page server's port is open on a but a third
#      host cannot reach it (the guard), and nothing is left behind after
#   2. --memory auto b -> a on this kernel: post-copy, and the report says why
#   3. the target agent dies before its restore completes (failpoint):
#      rolled back, the container runs on a with its memory intact
#   4. the target's lazy-pages daemon dies while exposed: the target deletes
#      its incomplete copy, the source rolls back (thaw), memory intact
#   5. the source agent dies while exposed: the target deletes its copy;
#      the restarted source ends CRIU's session and thaws its original
#   6. the target agent dies right after RESTORED: the source thaws only
#      once the restarted target has dropped its copy
#   7. pre-copy on this kernel, and post-copy with crun: clear refusals
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

MIB=${VY_POSTCOPY_MIB:-512}
e2e_setup a b c || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
IPA=$(lab_ip "$LAB" a)
IPB=$(lab_ip "$LAB" b)
ID=${LAB}m
PIPE_BEFORE=$(sysctl -n fs.pipe-max-size)

"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/memhog "$MIB" >/dev/null ||
	{ t_fail "bundle"; t_done; }
ctr_run a runc "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
wait_until 120 test -s "$A/bundles/$ID/rootfs/data/memhog" || { t_fail "memhog filled its memory"; t_done; }
read -r _ SUM <"$A/bundles/$ID/rootfs/data/memhog"
vy_agent_start "$LAB" a runc --peer-timeout 5 || { t_fail "agent a"; t_done; }
vy_agent_start "$LAB" b runc --peer-timeout 5 || { t_fail "agent b"; t_done; }

# memory_ok HOST: memhog there re-checks its 512 MiB and finds the checksum
# (its files are read through the container's own root: with jit, the
# default mode, that is voyager-fs inside the host's mount namespace)
memory_ok() {
	local r pid got verdict
	pid=$(ctr_pid "$1" runc "$ID") || return 1
	r="/proc/$pid/root"
	rm -f "$r/data/memhog.verify"
	kill -USR1 "$pid" || return 1
	wait_until 60 test -s "$r/data/memhog.verify" || return 1
	read -r _ got verdict <"$r/data/memhog.verify"
	[ "$got" = "$SUM" ] && [ "$verdict" = ok ]
}
# only_on HOST NAME: running there with memory intact, absent on the other
only_on() {
	local other=b
	[ "$1" = b ] && other=a
	if [ "$(ctr_state "$1" runc "$ID")" = running ] && memory_ok "$1" &&
		[ "$(ctr_state "$other" runc "$ID")" = absent ]; then
		t_ok "$2: runs on $1 only, checksum intact"
	else
		t_fail "$2: runs on $1 only, checksum intact" \
			"$1=$(ctr_state "$1" runc "$ID") $other=$(ctr_state "$other" runc "$ID")"
	fi
}
# migrate_bg FROM TO [ARGS]: sets MIG_PID, MIG_OUT
migrate_bg() {
	MIG_OUT=$(mktemp -p "$A/tmp" vymig.XXXX)
	vy_cli "$LAB" "$1" migrate "$ID" --to "$(lab_ip "$LAB" "$2")" --json "${@:3}" >"$MIG_OUT" &
	MIG_PID=$!
}
# the migration in flight on HOST is in its exposed window (status also
# lists the journals, whose phase history must not count)
in_pages() { vy_cli "$LAB" "$1" --json status | python3 -c '
import json, sys
a = json.load(sys.stdin).get("active", [])
sys.exit(0 if any(m.get("phase") == "pages" for m in a) else 1)'; }
active_id() { vy_cli "$LAB" "$1" --json status | python3 -c '
import json, sys
a = json.load(sys.stdin).get("active", [])
print(a[0]["id"] if a else "")'; }

# 1. post-copy a -> b, on a shaped link so the exposed window is long
# enough to probe the page server from host c.  CRIU's page server listens
# on 0.0.0.0 (it takes only the port) until the target's daemon connects,
# a few hundred ms: catch it listening if we can; either way, a connection
# from c must be dropped by the guard (a timeout: with nothing listening
# and no guard the kernel would answer with a reset, "refused").
lab_shape "$LAB" a 300mbit
lab_shape "$LAB" b 300mbit
migrate_bg a b --memory post-copy
journal_page_server() {
	local j
	j=$(ls -t "$A/state/journal/" 2>/dev/null | head -1)
	[ -n "$j" ] && python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("page_server",""))' \
		"$A/state/journal/$j" 2>/dev/null
}
PS=""
for i in $(seq 1 600); do PS=$(journal_page_server); [ -n "$PS" ] && break; sleep 0.02; done
PORT=${PS##*:}
listening=""
for i in $(seq 1 100); do
	listening=$(lab_exec "$LAB" a ss -Hltn "sport = :$PORT" | awk '{print $4}' | head -1)
	[ -n "$listening" ] && break
	in_pages a && break
done
guard=$(lab_exec "$LAB" a nft list tables | grep -o 'vyps_[0-9a-f]*' | head -1)
guard_rule=$([ -n "$guard" ] && lab_exec "$LAB" a nft list table inet "$guard" | grep -c "tcp dport $PORT drop")
probe=$(lab_exec "$LAB" c timeout 8 python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except socket.timeout:
    print("dropped"); sys.exit(0)
except OSError as e:
    print("refused"); sys.exit(0)
print("CONNECTED")' "$IPA" "$PORT")
echo "page server $PS; seen listening on '$listening'; guard $guard ($guard_rule rule); probe from c: $probe"
[ -n "$PORT" ] && [ "$probe" = dropped ] && [ "$guard_rule" = 1 ] &&
	t_ok "the page server's port is guarded: host c's connection to $IPA:$PORT was dropped${listening:+ while it listened on $listening}" ||
	t_fail "the page server cannot be reached from another host" "port '$PORT' probe '$probe' guard '$guard' rule '$guard_rule'"
wait_until 60 in_pages a || t_fail "the migration reached its exposed window (phase pages)"
wait "$MIG_PID"
rc=$?
out=$(cat "$MIG_OUT")
echo "post-copy a -> b: $out"
[ $rc = 0 ] && [ "$(vy_json_get "$out" result)" = migrated ] &&
	[ "$(vy_json_get "$out" memory.mode)" = post-copy ] &&
	t_ok "--memory post-copy: migrated, report says post-copy" || t_fail "--memory post-copy migrates" "rc=$rc"
down=$(vy_json_get "$out" downtime_ms)
allp=$(vy_json_get "$out" post_copy.all_pages_ms)
expo=$(vy_json_get "$out" post_copy.exposed_ms)
[ "$(vy_json_get "$out" post_copy.pages)" = "all arrived" ] && [ -n "$allp" ] && [ -n "$expo" ] &&
	[ "$allp" -gt "$down" ] && [ "$expo" -gt 0 ] &&
	t_ok "report: downtime $down ms, last page at $allp ms, exposed for $expo ms" ||
	t_fail "report: all_pages_ms and exposed_ms" "down=$down all=$allp exposed=$expo"
pb=$(vy_json_get "$out" post_copy.page_bytes)
[ -n "$pb" ] && [ "$pb" -gt $((MIB * 1024 * 1024 * 9 / 10)) ] &&
	[ "$(vy_json_get "$out" bytes.memory)" -lt $((MIB * 1024 * 1024 / 4)) ] &&
	t_ok "the pages went through the tunnel ($pb bytes), not with the images" ||
	t_fail "pages through the tunnel" "page_bytes=$pb images=$(vy_json_get "$out" bytes.memory)"
only_on b "post-copy a -> b"
[ -z "$(lab_exec "$LAB" a nft list tables | grep vyps_)" ] &&
	t_ok "the page server's guard is gone afterwards" || t_fail "guard removed" "$(lab_exec "$LAB" a nft list tables)"
lab_shape "$LAB" a off
lab_shape "$LAB" b off

# 2. auto, back to a: post-copy on this kernel, and why
out=$(vy_cli "$LAB" b migrate "$ID" --to "$IPA" --json)
echo "auto b -> a: $out"
why=$(vy_json_get "$out" memory.reason)
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(vy_json_get "$out" memory.requested)" = auto ] &&
	[ "$(vy_json_get "$out" memory.mode)" = post-copy ] && grep -q "soft-dirty" <<<"$why" &&
	grep -q "userfaultfd" <<<"$why" &&
	t_ok "--memory auto picks post-copy here: $why" || t_fail "auto picks post-copy" "$out"
only_on a "auto b -> a"

# 3. the target agent dies before its restore completes
vy_agent_stop "$LAB" b
VY_AGENT_ENV="VOYAGER_FAILPOINT=target-postcopy-before-restore" \
	vy_agent_start "$LAB" b runc --peer-timeout 5 || t_fail "agent b (failpoint)"
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --memory post-copy --json)
echo "target dies before restore: $out"
[ "$(vy_json_get "$out" result)" = rolled-back ] && grep -q "failpoint target-postcopy-before-restore" "$B/voyagerd.log" &&
	t_ok "target killed before its restore: rolled back" || t_fail "target killed before restore: rolled back" "$out"
only_on a "target killed before restore"
vy_agent_start "$LAB" b runc --peer-timeout 5 || t_fail "agent b restart"

# 4. the target's lazy-pages daemon dies while exposed
lab_shape "$LAB" a 300mbit
lab_shape "$LAB" b 300mbit
migrate_bg a b --memory post-copy
if wait_until 60 in_pages a; then
	sleep 1
	# The daemon the target agent started for this migration: the PID its
	# log gives (the last line is this migration's), checked to be that.
	lp=$(grep -o "CRIU's lazy-pages daemon runs (pid [0-9]*)" "$B/voyagerd.log" | tail -1 | tr -dc 0-9)
	[ -n "$lp" ] && tr '\0' ' ' <"/proc/$lp/cmdline" 2>/dev/null | grep -q "^criu lazy-pages " &&
		kill -KILL "$lp" && t_ok "killed the target's lazy-pages daemon ($lp) mid-transfer" ||
		t_fail "killed the target's lazy-pages daemon"
else
	t_fail "lazy-pages killed: reached the exposed window"
fi
wait "$MIG_PID"
out=$(cat "$MIG_OUT")
echo "lazy-pages killed: $out"
[ "$(vy_json_get "$out" result)" = rolled-back ] && grep -qi "lazy-pages" <<<"$(vy_json_get "$out" error.message)" &&
	[ "$(vy_json_get "$out" post_copy.pages)" = incomplete ] &&
	t_ok "lazy-pages killed: rolled back, the report says the pages never all arrived" ||
	t_fail "lazy-pages killed: rolled back" "$out"
only_on a "lazy-pages killed"

# 5. the source agent dies while exposed
migrate_bg a b --memory post-copy
if wait_until 60 in_pages a; then
	sleep 1
	vy_agent_kill "$LAB" a
	wait "$MIG_PID"
	wait_until 30 state_is b runc "$ID" absent &&
		t_ok "source died while exposed: the target deleted its incomplete copy" ||
		t_fail "source died while exposed: the target deleted its copy" "$(ctr_state b runc "$ID")"
	grep -q "went away while pages were still coming\|before every page arrived" "$B/voyagerd.log" &&
		t_ok "the target says why" || t_fail "the target says why"
	vy_agent_start "$LAB" a runc --peer-timeout 5 || t_fail "agent a restart"
	wait_until 60 state_is a runc "$ID" running
	only_on a "source died while exposed, restarted"
else
	t_fail "source killed: reached the exposed window"
	wait "$MIG_PID"
fi
lab_shape "$LAB" a off
lab_shape "$LAB" b off

# 6. the target agent dies right after RESTORED, while exposed: its copy
# runs with part of its memory, so the source must not thaw before the
# target says its copy is gone; the restarted target asks, hears
# rolled-back, deletes its copy, and only then does the source thaw.
vy_agent_stop "$LAB" b
VY_AGENT_ENV="VOYAGER_FAILPOINT=target-after-restored" \
	vy_agent_start "$LAB" b runc --peer-timeout 5 || t_fail "agent b (failpoint)"
migrate_bg a b --memory post-copy
wait_until 60 grep -q "failpoint target-after-restored" "$B/voyagerd.log" ||
	t_fail "the target agent died after RESTORED"
sleep 3
if kill -0 "$MIG_PID" 2>/dev/null && grep -q "waiting for the target to confirm its copy is gone" "$A/voyagerd.log"; then
	t_ok "target died while exposed: the source waits for its word before thawing"
else
	t_fail "target died while exposed: the source waits for its word before thawing"
fi
vy_agent_start "$LAB" b runc --peer-timeout 5 || t_fail "agent b restart"
wait "$MIG_PID"
out=$(cat "$MIG_OUT")
echo "target died while exposed: $out"
[ "$(vy_json_get "$out" result)" = rolled-back ] &&
	t_ok "target died while exposed: rolled back once the target dropped its copy" ||
	t_fail "target died while exposed: rolled back" "$out"
only_on a "target died while exposed"

# 7. refusals: pre-copy on this kernel, post-copy with crun
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --memory pre-copy --json)
if criu check --feature mem_dirty_track >/dev/null 2>&1; then pat="not implemented"; else pat="soft-dirty"; fi
[ "$(vy_json_get "$out" result)" = failed ] && grep -q "$pat" <<<"$(vy_json_get "$out" error.message)" &&
	t_ok "--memory pre-copy: a clear refusal ($pat)" || t_fail "--memory pre-copy refused" "$out"
only_on a "pre-copy refused"
C=$(host_dir c)
mkdir -p "$C/runtime/crun"
vy_agent_start "$LAB" c crun || t_fail "agent c (crun)"
out=$(vy_cli "$LAB" c migrate "${LAB}x" --to "$IPB" --memory post-copy --json)
echo "crun post-copy: $out"
[ "$(vy_json_get "$out" result)" = failed ] && grep -q "crun.*--lazy-pages" <<<"$(vy_json_get "$out" error.message)" &&
	t_ok "crun: post-copy refused, saying crun has no --lazy-pages" || t_fail "crun post-copy refused" "$out"
vy_agent_stop "$LAB" c

# Nothing of ours outlives the migrations: the pipe limit is back (unless
# another agent on this kernel still holds a lease), no lease of ours.
vy_agent_stop "$LAB" a
vy_agent_stop "$LAB" b
others=$(ls /run/voyager/pipe-max-size 2>/dev/null | grep -E '^[0-9]+$' | while read -r p; do kill -0 "$p" 2>/dev/null && echo "$p"; done)
if [ -n "$others" ]; then
	t_ok "pipe limit: other agents hold leases ($others), not checked"
else
	[ "$(sysctl -n fs.pipe-max-size)" = "$PIPE_BEFORE" ] &&
		t_ok "fs.pipe-max-size is back to $PIPE_BEFORE" ||
		t_fail "fs.pipe-max-size is back" "$(sysctl -n fs.pipe-max-size) != $PIPE_BEFORE"
fi
t_done
