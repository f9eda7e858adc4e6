#!/bin/bash
# A UDP server keeps its socket and its memory across a migration with its
# network identity (runc).  /sbin/udpecho (tests/workloads/udpecho.c) runs
# as the container's PID 1 on a and answers every datagram with its
# incarnation token and how many it has answered; a sender on c keeps one
# UDP socket and sends a datagram every 10 ms through the move to b:
#   - every reply carries the one token (the same process answered), and
#     the answered count goes on rising across the move (same memory, same
#     socket);
#   - replies come from b after the move, and a fresh sender reaches it;
#   - the datagrams that reached a during the freeze were held and
#     replayed on b (the report's network section counts them).
# Lost datagrams and the longest gap between replies are printed, not
# asserted (UDP may drop; the freeze sets the gap).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b c || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || { t_fail "agents start"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
C=$(host_dir c)
ID=${LAB}u
IP=$(lab_subnet_prefix "$LAB").52
IPB=$(lab_ip "$LAB" b)

ns=$(vy_cli "$LAB" a net create "$ID" --ip "$IP/24" --bridge vybr0) ||
	{ t_fail "voyager net create"; t_done; }
"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" --netns "$ns" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/udpecho 9000 \
	>/dev/null || { t_fail "bundle"; t_done; }
ctr_run a runc "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }

# sender SECS OUT: one socket, a datagram every 10 ms for SECS seconds;
# OUT gets a JSON summary
sender() {
	lab_exec "$LAB" c timeout $(($1 + 20)) python3 - "$IP" "$1" "$2" <<'PY'
import json, select, socket, sys, time
ip, secs, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((ip, 9000))
sent, replies, tokens, counts = 0, {}, set(), []
start = time.monotonic()
nxt = start
while time.monotonic() < start + secs + 1.5:
    now = time.monotonic()
    if now >= nxt and now < start + secs:
        s.send(b"%d" % sent)
        sent += 1
        nxt += 0.01
    r, _, _ = select.select([s], [], [], max(0.0, min(nxt - time.monotonic(), 0.01)))
    if r:
        try:
            token, n, seq = s.recv(2048).decode().split(" ", 2)
        except (OSError, ValueError):
            continue
        tokens.add(token)
        counts.append(int(n))
        replies.setdefault(int(seq), time.monotonic() - start)
times = sorted(replies.values())
gaps = [b - a for a, b in zip(times, times[1:])]
json.dump({"sent": sent, "answered": len(replies), "lost": sent - len(replies),
           "tokens": sorted(tokens), "rising": all(b > a for a, b in zip(counts, counts[1:])),
           "first_count": counts[0] if counts else None, "last_count": counts[-1] if counts else None,
           "max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None}, open(out, "w"))
PY
}

sender 1 "$C/tmp/before.json"
before=$(cat "$C/tmp/before.json")
token=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["tokens"]; print(t[0] if len(t) == 1 else "")' "$C/tmp/before.json")
[ -n "$token" ] && [ "$(vy_json_get "$before" answered)" -gt 50 ] &&
	t_ok "udpecho answers on $IP:9000 from a (token $token)" ||
	{ t_fail "udpecho answers from a" "$before"; t_done; }

sender 8 "$C/tmp/move.json" &
SENDER=$!
sleep 2
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --json)
echo "move: $out"
wait "$SENDER"
move=$(cat "$C/tmp/move.json")
echo "sender through the move: $move"
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(ctr_state b runc "$ID")" = running ] &&
	[ "$(ctr_state a runc "$ID")" = absent ] &&
	t_ok "migrated to b (downtime $(vy_json_get "$out" downtime_ms) ms)" || t_fail "migrated" "$out"
python3 - "$C/tmp/move.json" "$token" "$(vy_json_get "$before" last_count)" <<'PY' &&
import json, sys
m = json.load(open(sys.argv[1]))
ok = m["tokens"] == [sys.argv[2]] and m["rising"] and m["first_count"] > int(sys.argv[3])
sys.exit(0 if ok and m["answered"] > 0 else 1)
PY
	t_ok "one socket through the move: the same token, the answered count rising from $(vy_json_get "$before" last_count) to $(vy_json_get "$move" last_count) ($(vy_json_get "$move" lost) of $(vy_json_get "$move" sent) lost, longest gap $(vy_json_get "$move" max_gap_ms) ms)" ||
	t_fail "same process and socket through the move" "$move"
[ "$(vy_json_get "$out" network.hold)" = af_packet ] &&
	[ "$(vy_json_get "$out" network.held_packets)" -gt 0 ] &&
	[ "$(vy_json_get "$out" network.replayed_on)" = target ] &&
	t_ok "the datagrams that reached a in the freeze were held and replayed on b ($(vy_json_get "$out" network.replayed))" ||
	t_fail "datagrams held and replayed" "$(vy_json_get "$out" network)"

sender 1 "$C/tmp/after.json"
after=$(cat "$C/tmp/after.json")
python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); sys.exit(0 if a["tokens"] == [sys.argv[2]] and a["answered"] > 50 and a["first_count"] > int(sys.argv[3]) else 1)' \
	"$C/tmp/after.json" "$token" "$(vy_json_get "$move" last_count)" &&
	t_ok "a fresh socket reaches the same udpecho on b (answered count $(vy_json_get "$after" last_count))" ||
	t_fail "fresh sender after the move" "$after"
t_done
