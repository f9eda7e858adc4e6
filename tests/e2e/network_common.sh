# network_common.sh - the container keeps its IP address and its open TCP
# connections across hosts (RUNTIME=runc|crun, set by the t_*.sh that
# sources this).
#
# Hosts a and b run agents; c runs a redis client that keeps one TCP
# connection to the container and talks every 5 ms, checking each reply.
#   1. an address already in use on b: refused in pre-flight, and the
#      client's connection goes on untouched on a
#   2. a restore that fails on b: rolled back, the connection goes on on a,
#      whose network is as before (veth up on its bridge, no lock)
#  2b. the same with --no-hold: nothing held, the report says so, and the
#      client still sees a pause only (its own retransmission ends it)
#   3. the migration to b: no reset, every acknowledged write present, a
#      fresh connection reaches the container on b, the same process; a
#      second client writes 20 000-byte values meanwhile, so that what it
#      sends in the freeze comes as batches over the MTU (GSO), which are
#      held cut into segments; a third talks to the container's IPv6
#      address, which b advertises (unsolicited NA) once it runs there
# In 2 and 3 the client talks through the freeze: the packets it sends
# then are held on a (AF_PACKET on the veth's host end) and replayed into
# the container where it runs next, so the report counts them.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"
CLIENT="$E2E_ROOT/tests/workloads/redis_client.py"

[ "$RUNTIME" = crun ] && { crun_prepare || { t_fail "crun set-up (hugetlb v1)"; t_done; }; }
e2e_setup a b c || { t_fail "lab set-up"; t_done; }
RCU_BEFORE=$(cat /sys/kernel/rcu_expedited 2>/dev/null)
# the CPU wake-up latency bound in force (PM QoS): reading it adds no request
cpu_latency() {
	python3 -c 'import os, struct
fd = os.open("/dev/cpu_dma_latency", os.O_RDONLY)
print(struct.unpack("i", os.read(fd, 4))[0])' 2>/dev/null
}
LAT_BEFORE=$(cpu_latency)
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
vy_agent_start "$LAB" a "$RUNTIME" && vy_agent_start "$LAB" b "$RUNTIME" ||
	{ t_fail "agents start"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
C=$(host_dir c)
ID=${LAB}n
IP=$(lab_subnet_prefix "$LAB").50
IPB=$(lab_ip "$LAB" b)
# and an IPv6 address of its own, announced after the move too
IP6="fd77:0:0:$(lab_subnet_prefix "$LAB" | cut -d. -f3)::50"

ns=$(vy_cli "$LAB" a net create "$ID" --ip "$IP/24" --ip "$IP6/64" --bridge vybr0) ||
	{ t_fail "voyager net create"; t_done; }
t_ok "voyager net create gives the container $IP and $IP6 on a's bridge"
"$BUNDLE_SH" create "$A/bundles/$ID" redis --id "$ID" --netns "$ns" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /usr/bin/redis-server /etc/redis.conf \
	>/dev/null || { t_fail "bundle"; t_done; }
ctr_run a "$RUNTIME" "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
wait_until 10 lab_exec "$LAB" c redis-cli -h "$IP" ping >/dev/null 2>&1 ||
	{ t_fail "redis answers from c"; t_done; }
RUNID=$(lab_exec "$LAB" c redis-cli -h "$IP" info server | sed -n 's/^run_id:\(.*\)\r$/\1/p')
# A dataset held in memory only (redis.conf: save "", appendonly no).
python3 -c 'import sys
for i in range(5000):
    k, v = "data:%d" % i, "v%d-%s" % (i, "x" * (i % 97))
    sys.stdout.write("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))' \
	>"$C/tmp/data.resp"
lab_exec "$LAB" c sh -c "redis-cli -h $IP --pipe <'$C/tmp/data.resp'" >/dev/null ||
	t_fail "load the dataset"
# every_key_back HOST: all 5000 keys hold their exact value, checked in redis
every_key_back() {
	lab_exec "$LAB" c redis-cli -h "$IP" eval '
local bad = 0
for i = 0, 4999 do
  if redis.call("GET", "data:" .. i) ~= "v" .. i .. "-" .. string.rep("x", i % 97) then bad = bad + 1 end
end
return bad' 0
}

# client_start NAME SECONDS [CLIENT-OPTS...]; client_check NAME LABEL: one
# connection from c each
declare -A CLIENT_PIDS
client_start() {
	local name=$1 secs=$2
	shift 2
	rm -f "$C/tmp/$name.ready" "$C/tmp/$name.json"
	lab_exec "$LAB" c python3 "$CLIENT" "${CLIENT_HOST:-$IP}" 6379 "$secs" "$C/tmp/$name.json" \
		--prefix "$name" --ready "$C/tmp/$name.ready" "$@" &
	CLIENT_PIDS[$name]=$!
	wait_until 10 test -e "$C/tmp/$name.ready"
	sleep 1
}
# Redis's clients send their next request only once the last one is
# answered: when each had a request in before the lock, none sends in the
# freeze, and nothing is there to hold (seen once, in a 208 ms freeze).
# This sender does not wait: a UDP datagram to the discard port every
# 5 ms for 2 s, so that some surely reach a while it holds.
udp_start() {
	lab_exec "$LAB" c python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(400):
    s.sendto(b"vy-hold %d" % i, (sys.argv[1], 9))
    time.sleep(0.005)' "$IP" &
	UDP_PID=$!
}
client_check() {
	wait "${CLIENT_PIDS[$1]}"
	local r
	r=$(cat "$C/tmp/$1.json")
	echo "client $1: $r"
	if [ "$(vy_json_get "$r" reset)" = False ] && [ -z "$(vy_json_get "$r" errors)" ] &&
		[ "$(vy_json_get "$r" missing)" = 0 ] && [ "$(vy_json_get "$r" acked_sets)" -gt 100 ]; then
		t_ok "$2: the client's connection never broke, no acknowledged write lost (max pause $(vy_json_get "$r" max_gap_ms) ms)"
	else
		t_fail "$2: the client's connection never broke, no acknowledged write lost" "$r"
	fi
}

# 1. the address is already in use on b
msg=$(vy_cli "$LAB" b net create "${LAB}x" --ip "$IP/24" --bridge vybr0 2>&1) &&
	t_fail "b refuses a second namespace with the address (duplicate address detection)" "$msg" ||
	{ grep -q "already in use on the segment" <<<"$msg" &&
		t_ok "b refuses a second namespace with the address (duplicate address detection)" ||
		t_fail "b refuses a second namespace with the address" "$msg"; }
lab_exec "$LAB" b ip addr add "$IP/32" dev lo
client_start conflict 4
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --json)
echo "conflict: $out"
[ "$(vy_json_get "$out" result)" = failed ] && [ "$(vy_json_get "$out" error.phase)" = preflight ] &&
	grep -q "already in use" <<<"$(vy_json_get "$out" error.message)" &&
	[ "$(ctr_state a "$RUNTIME" "$ID")" = running ] &&
	t_ok "address in use on the target: refused in pre-flight, container stays on a" ||
	t_fail "address in use on the target" "$out"
client_check conflict "address conflict"
lab_exec "$LAB" b ip addr del "$IP/32" dev lo

# 1b. the bridge the container needs is missing on b
vy_agent_stop "$LAB" b
vy_agent_start "$LAB" b "$RUNTIME" --bridge vynobr0
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --json)
echo "no bridge: $out"
[ "$(vy_json_get "$out" result)" = failed ] && [ "$(vy_json_get "$out" error.phase)" = preflight ] &&
	grep -q "bridge 'vynobr0'.*does not exist" <<<"$(vy_json_get "$out" error.message)" &&
	[ "$(ctr_state a "$RUNTIME" "$ID")" = running ] && [ ! -e "$B/state/netns/$ID" ] &&
	t_ok "missing bridge on the target: refused in pre-flight, container stays on a" ||
	t_fail "missing bridge on the target" "$out"

# 2. the restore fails on b: the connection goes on on a
mkdir -p "$B/fakebin"
cat >"$B/fakebin/$RUNTIME" <<SH
#!/bin/sh
for a in "\$@"; do [ "\$a" = restore ] && { echo "injected restore failure" >&2; exit 1; }; done
exec $(command -v "$RUNTIME") "\$@"
SH
chmod +x "$B/fakebin/$RUNTIME"
vy_agent_stop "$LAB" b
VY_AGENT_ENV="PATH=$B/fakebin:/usr/sbin:/usr/bin:/sbin:/bin" vy_agent_start "$LAB" b "$RUNTIME"
client_start rollback 5
udp_start
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --json)
echo "rollback: $out"
wait "$UDP_PID"
[ "$(vy_json_get "$out" result)" = rolled-back ] && [ "$(ctr_state a "$RUNTIME" "$ID")" = running ] &&
	[ "$(ctr_state b "$RUNTIME" "$ID")" = absent ] && [ ! -e "$B/state/netns/$ID" ] &&
	t_ok "failed restore: rolled back to a, b dropped its namespace" ||
	t_fail "failed restore: rolled back to a" "$out"
[ "$(vy_json_get "$out" network.hold)" = af_packet ] &&
	[ "$(vy_json_get "$out" network.held_packets)" -gt 0 ] &&
	[ "$(vy_json_get "$out" network.replayed_on)" = source ] &&
	[ "$(vy_json_get "$out" network.replayed)" = "$(vy_json_get "$out" network.held_packets)" ] &&
	t_ok "rollback: the packets held during the freeze were replayed on a ($(vy_json_get "$out" network.replayed))" ||
	t_fail "rollback: held packets replayed on a" "$(vy_json_get "$out" network)"
client_check rollback "rollback"
# network_as_before LABEL: a's veth end is up on vybr0, no lock in the namespace
network_as_before() {
	local l
	l=$(lab_exec "$LAB" a ip -o link show master vybr0 | grep -v vyeth0)
	grep -q "state UP" <<<"$l" && ! lab_exec "$LAB" a nsenter --net="$ns" nft list table inet voyager_lock >/dev/null 2>&1 &&
		t_ok "$1: a's network is as before (veth up on vybr0, no lock)" ||
		t_fail "$1: a's network is as before" "$l; $(lab_exec "$LAB" a nsenter --net="$ns" nft list ruleset 2>&1)"
}
network_as_before "rollback"

# 2b. the same rollback without holding: the fallback, reported as such
client_start nohold 5
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --no-hold --json)
echo "rollback, --no-hold: $out"
[ "$(vy_json_get "$out" result)" = rolled-back ] && [ "$(ctr_state a "$RUNTIME" "$ID")" = running ] &&
	[ "$(vy_json_get "$out" network.hold)" = "off: --no-hold" ] &&
	[ "$(vy_json_get "$out" network.held_packets)" = 0 ] && [ -z "$(vy_json_get "$out" network.replayed)" ] &&
	t_ok "--no-hold: rolled back to a, nothing held, the report says 'off: --no-hold'" ||
	t_fail "--no-hold: rolled back, nothing held" "$out"
client_check nohold "rollback without holding"
network_as_before "rollback without holding"
vy_agent_stop "$LAB" b
vy_agent_start "$LAB" b "$RUNTIME"

# 3. the real move
# c listens for the unsolicited neighbour advertisement of IP6 (ICMPv6 136,
# hop limit 255, override set) that b sends once the container runs there.
lab_exec "$LAB" c timeout 90 python3 - "$IP6" >"$C/tmp/una.out" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
want = socket.inet_pton(socket.AF_INET6, sys.argv[1])
print("listening", flush=True)
while True:
    f = s.recv(4096)
    ip = f[14:]
    if len(ip) >= 72 and ip[6] == 58 and ip[7] == 255 and ip[40] == 136 and ip[48:64] == want:
        print("advertised", "override" if ip[44] & 0x20 else "no-override", ip[66:72].hex(":"))
        break
PY
UNA_PID=$!
wait_until 10 grep -q listening "$C/tmp/una.out"
# c gets an address of the container's IPv6 subnet, and a third client
# talks to redis over IPv6 through the move
cif=$(lab_exec "$LAB" c ip -o -4 addr show | awk -v ip="$(lab_ip "$LAB" c)/" 'index($4, ip) == 1 {print $2; exit}')
lab_exec "$LAB" c ip -6 addr add "${IP6%::50}::c/64" dev "$cif" nodad ||
	t_fail "an IPv6 address for c on $cif"
CLIENT_HOST=$IP6 client_start v6 6
client_start bulk 7 --value-bytes 20000
client_start move 6
udp_start
out=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB" --json)
echo "move: $out"
wait "$UDP_PID"
wait_until 10 grep -q advertised "$C/tmp/una.out"
kill "$UNA_PID" 2>/dev/null
wait "$UNA_PID" 2>/dev/null
mac6=$(lab_exec "$LAB" b nsenter --net="$B/state/netns/$ID" ip -o link show 2>/dev/null |
	grep -v ': lo:' | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p' | head -1)
grep -qx "advertised override ${mac6:-none}" "$C/tmp/una.out" &&
	lab_exec "$LAB" b nsenter --net="$B/state/netns/$ID" ip -6 addr show | grep -q "$IP6/64" &&
	t_ok "$IP6 moved too, and b advertised it unsolicited (override, MAC $mac6)" ||
	t_fail "IPv6 address moved and advertised" "$(cat "$C/tmp/una.out"); mac $mac6"
[ "$(vy_json_get "$out" result)" = migrated ] && t_ok "migrated (downtime $(vy_json_get "$out" downtime_ms) ms)" ||
	t_fail "migrated" "$out"
[ "$(vy_json_get "$out" network.hold)" = af_packet ] &&
	[ "$(vy_json_get "$out" network.held_packets)" -gt 0 ] &&
	[ "$(vy_json_get "$out" network.replayed_on)" = target ] &&
	[ "$(vy_json_get "$out" network.replayed)" = "$(vy_json_get "$out" network.held_packets)" ] &&
	[ -z "$(vy_json_get "$out" network.replay_error)" ] &&
	t_ok "the packets that reached a during the freeze were held and replayed on b ($(vy_json_get "$out" network.replayed), $(vy_json_get "$out" network.held_bytes) bytes)" ||
	t_fail "held packets replayed on b" "$(vy_json_get "$out" network)"
client_check move "migration"
client_check bulk "migration, 20 000-byte writes"
client_check v6 "migration, over IPv6 ($IP6)"
n=$(vy_json_get "$out" network.held_gso_cut)
echo "batches over the MTU held as segments: $n"
[ "$(vy_json_get "$out" network.held_dropped)" = 0 ] &&
	t_ok "nothing in scope was dropped from the hold ($n batches over the MTU cut into segments)" ||
	t_fail "nothing dropped from the hold" "$(vy_json_get "$out" network)"
stb=$(ctr_state b "$RUNTIME" "$ID")
# crun 1.21 may call a container it restored outside its cgroup "stopped"
# while it runs; the fresh connection below shows whether it runs.
{ [ "$stb" = running ] || { [ "$RUNTIME" = crun ] && [ "$stb" = stopped ]; }; } &&
	[ "$(ctr_state a "$RUNTIME" "$ID")" = absent ] &&
	t_ok "runs on b ($RUNTIME says $stb), gone from a" || t_fail "runs on b, gone from a" "$stb"
[ -e "$B/state/netns/$ID" ] && [ ! -e "$A/state/netns/$ID" ] &&
	t_ok "the namespace moved: held by b, gone from a" || t_fail "the namespace moved"
# opened inside the freeze by accept rules, the lock's table goes after
# the commit, which the CLI waited for
! lab_exec "$LAB" b nsenter --net="$B/state/netns/$ID" nft list table inet voyager_lock \
	>/dev/null 2>&1 && t_ok "no network lock is left in b's namespace" ||
	t_fail "no network lock left on b" \
		"$(lab_exec "$LAB" b nsenter --net="$B/state/netns/$ID" nft list ruleset 2>&1)"
# The freeze wrote the container's freezer cgroup itself; the runtime's
# pause is only the fallback, and says so in the log.
! grep -q "frozen with \`$RUNTIME pause\` instead" "$A/voyagerd.log" &&
	t_ok "a froze the container through its freezer cgroup, not $RUNTIME pause" ||
	t_fail "freeze through the cgroup" "$(grep "pause\` instead" "$A/voyagerd.log")"
# both_hosts KEY HELD_WORD WHAT NOW BEFORE: each host's word in the
# report's KEY is "set" or HELD_WORD, and the setting (which the lab's
# hosts share) is back: NOW = BEFORE
both_hosts() {
	local got s t
	s=$(vy_json_get "$out" "$1.source")
	t=$(vy_json_get "$out" "$1.target")
	got="$s/$t"
	if [[ $s != set && $s != "$2" ]] || [[ $t != set && $t != "$2" ]]; then
		t_fail "$3" "report: $got"
	elif [ "$4" = "$5" ]; then
		t_ok "$3 on both hosts ($got), and back as it was ($5)"
	else
		t_fail "$3: back as it was" "now $4, before $5"
	fi
}
# Expedited RCU grace periods while each runtime worked, and a CPU wake-up
# latency bound of 0 in the freeze (kparam.h): both agents took them (the
# second may find the first's), and let go.
both_hosts rcu_expedited "already on" "expedited RCU in the freeze" \
	"$(cat /sys/kernel/rcu_expedited 2>/dev/null)" "$RCU_BEFORE"
both_hosts cpu_latency "already 0" "a CPU wake-up latency bound in the freeze" \
	"$(cpu_latency)" "$LAT_BEFORE"
now=$(lab_exec "$LAB" c redis-cli -h "$IP" info server | sed -n 's/^run_id:\(.*\)\r$/\1/p')
[ -n "$now" ] && [ "$now" = "$RUNID" ] &&
	t_ok "a fresh connection to $IP reaches the same redis process, now on b" ||
	t_fail "a fresh connection reaches the same process" "before $RUNID now $now"
[ "$(every_key_back)" = 0 ] && t_ok "every one of the 5000 keys held in memory reads back exact on b" ||
	t_fail "dataset on b" "$(every_key_back)"
n=$(lab_exec "$LAB" c redis-cli -h "$IP" get move:counter)
[ "$n" -ge "$(vy_json_get "$(cat "$C/tmp/move.json")" last_counter)" ] 2>/dev/null &&
	t_ok "counter on b >= last acknowledged ($n)" || t_fail "counter on b" "$n"
lab_exec "$LAB" b redis-cli -h "$IP" ping >/dev/null && t_ok "b reaches the container locally" ||
	t_fail "b reaches the container locally"
lab_exec "$LAB" a redis-cli -h "$IP" ping >/dev/null && t_ok "a reaches it across the segment" ||
	t_fail "a reaches it across the segment"

# And back to a: nothing of the identity stayed behind there (a veth still
# named for it would make a's pre-flight refuse: "interface name taken").
# With runc only: crun 1.21 has restored containers into the root cgroup,
# and a container outside its cgroup is refused a second move (README,
# limits; stopcopy_common.sh tests both cases).
if [ "$RUNTIME" = runc ]; then
	[ "$(vy_json_get "$out" mode)" = jit ] && { vy_wait_independent "$LAB" b "$(vy_json_get "$out" id)" 120 ||
		t_fail "b independent before the way back"; }
	back=$(vy_cli "$LAB" b migrate "$ID" --to "$(lab_ip "$LAB" a)" --json)
	now=$(lab_exec "$LAB" c redis-cli -h "$IP" info server | sed -n 's/^run_id:\(.*\)\r$/\1/p')
	[ "$(vy_json_get "$back" result)" = migrated ] && [ "$now" = "$RUNID" ] &&
		[ -e "$A/state/netns/$ID" ] && [ ! -e "$B/state/netns/$ID" ] &&
		t_ok "migrates back to a, where the same redis process answers at $IP" ||
		t_fail "migrates back to a" "$back"
else
	echo "# no move back with $RUNTIME (see above)"
fi
t_done
