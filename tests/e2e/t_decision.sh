#!/bin/bash
# The two-phase decision under crashes.  The source's journal is the
# authority; an agent that dies at the worst moment learns the outcome
# when it comes back, and the container ends on exactly one host.
#   1. the target agent dies right after reporting RESTORED: the source
#      commits; the restarted target asks, hears "committed", keeps it.
#   2. the source agent dies after RESTORED, before recording a decision:
#      the target pauses the container and keeps asking; the restarted
#      source rolls back (thaws its frozen original) and answers
#      "rolled-back"; the target deletes its copy.
# VOYAGER_FAILPOINT makes an agent exit at exactly that step.  These are the
# stop-copy decision (--memory stop-copy); post-copy commits only once every
# page has arrived, and t_postcopy tests its failures.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
IPA=$(lab_ip "$LAB" a)
IPB=$(lab_ip "$LAB" b)

# start_counter HOST ID: a counter container there; prints its token
start_counter() {
	local d
	d=$(host_dir "$1")
	"$BUNDLE_SH" create "$d/bundles/$2" busybox --id "$2" \
		--cgroup-parent "$(lab_cgroup_parent "$LAB" "$1")" -- /sbin/counter >/dev/null || return 1
	ctr_run "$1" runc "$2" "$d/bundles/$2" || return 1
	wait_until 10 test -s "$d/bundles/$2/rootfs/data/counter" || return 1
	read -r tok _ <"$d/bundles/$2/rootfs/data/counter"
	echo "$tok"
}
# counting FILE TOKEN: the counter in FILE has TOKEN and advances
counting() {
	local tok c1 c2
	read -r tok c1 <"$1" || return 1
	sleep 0.3
	read -r _ c2 <"$1" || return 1
	[ "$tok" = "$2" ] && [ "$c2" -gt "$c1" ]
}
journal_is() { [ "$(journal_result "$1")" = "$2" ]; }
journal_result() { # DIR: result of the newest journal there
	python3 -c 'import json, os, sys
d = sys.argv[1]
js = [json.load(open(os.path.join(d, f))) for f in os.listdir(d) if f.endswith(".json")]
js.sort(key=lambda j: j.get("started_ms", 0))
print(js[-1].get("result", "none") if js else "none")' "$1/state/journal"
}

# 1. target dies after RESTORED
ID=${LAB}t
TOKEN=$(start_counter a "$ID") || { t_fail "container start"; t_done; }
vy_agent_start "$LAB" a runc --peer-timeout 5 || { t_fail "agent a"; t_done; }
VY_AGENT_ENV="VOYAGER_FAILPOINT=target-after-restored" vy_agent_start "$LAB" b runc --peer-timeout 5 ||
	{ t_fail "agent b"; t_done; }
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --memory stop-copy --json)
echo "target dies: $out"
[ "$(vy_json_get "$out" result)" = migrated ] && t_ok "target died after RESTORED: the source committed" ||
	t_fail "target died after RESTORED: the source committed" "$out"
grep -q "failpoint target-after-restored" "$B/voyagerd.log" && t_ok "the target agent did die there" ||
	t_fail "the target agent did die there"
[ "$(ctr_state a runc "$ID")" = absent ] && t_ok "the frozen original is gone from a" ||
	t_fail "the frozen original is gone from a" "$(ctr_state a runc "$ID")"
# (jit, the default mode: the source keeps everything and serves it until
# the target says it holds every byte)
grep -qE '"checkpoint_kept"|"serving": ?true' "$A/state/journal/$(vy_json_get "$out" id).json" &&
	t_ok "unconfirmed copy: the source keeps its checkpoint" || t_fail "checkpoint kept"
vy_agent_start "$LAB" b runc --peer-timeout 5 || t_fail "agent b restart"
wait_until 20 journal_is "$B" migrated &&
	t_ok "the restarted target asked and recorded migrated" ||
	t_fail "restarted target recorded migrated" "$(journal_result "$B")"
RB="/proc/$(ctr_pid b runc "$ID")/root/data/counter"
wait_until 10 counting "$RB" "$TOKEN" && [ "$(ctr_state b runc "$ID")" = running ] &&
	t_ok "the container runs on b, memory intact" || t_fail "runs on b" "$(ctr_state b runc "$ID")"
vy_agent_stop "$LAB" a
vy_agent_stop "$LAB" b

# 2. source dies after RESTORED, before deciding
ID=${LAB}s
TOKEN=$(start_counter a "$ID") || { t_fail "container start"; t_done; }
VY_AGENT_ENV="VOYAGER_FAILPOINT=source-before-decision" vy_agent_start "$LAB" a runc --peer-timeout 5 ||
	{ t_fail "agent a"; t_done; }
vy_agent_start "$LAB" b runc --peer-timeout 5 || { t_fail "agent b"; t_done; }
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --memory stop-copy --json 2>&1)
echo "source dies: $out"
grep -q "failpoint source-before-decision" "$A/voyagerd.log" && t_ok "the source agent did die there" ||
	t_fail "the source agent did die there"
wait_until 20 state_is b runc "$ID" paused &&
	t_ok "the target, with no decision, holds its copy paused" ||
	t_fail "target pauses its copy" "$(ctr_state b runc "$ID")"
[ "$(ctr_state a runc "$ID")" = paused ] && t_ok "the original waits frozen on a" ||
	t_fail "original frozen on a" "$(ctr_state a runc "$ID")"
vy_agent_start "$LAB" a runc --peer-timeout 5 || t_fail "agent a restart"
RA="$A/bundles/$ID/rootfs/data/counter"
wait_until 20 counting "$RA" "$TOKEN" && t_ok "the restarted source rolled back: runs on a, memory intact" ||
	t_fail "source rolled back" "$(ctr_state a runc "$ID")"
wait_until 30 state_is b runc "$ID" absent &&
	t_ok "the target heard rolled-back and deleted its copy" ||
	t_fail "target deleted its copy" "$(ctr_state b runc "$ID")"
wait_until 10 journal_is "$B" aborted && t_ok "the target's journal says aborted" ||
	t_fail "target journal aborted" "$(journal_result "$B")"
t_done
