#!/bin/bash
# Voyager demo: move a live, busy redis from one host to another.
#
#   bash scripts/demo.sh            (as root, on Debian 12 or 13)
#
# Everything it needs it sets up itself, and it removes everything it made
# when it ends, on failure or Ctrl-C too:
#   1. installs what is missing (scripts/install-deps.sh) and builds
#      Voyager into build/ (meson) if needed
#   2. a two-host lab (network + mount namespaces, lab/lab.sh): hosts a, b
#   3. a cluster key and voyagerd on both hosts
#   4. a redis container on host a, loaded with DEMO_KEYS keys (20000)
#      whose values the script can recompute
#   5. a client that keeps incrementing demo:counter (runc exec redis-cli
#      INCR inside the container, on whichever host runs it) and records
#      every increment redis acknowledged
#   6. voyager migrate to host b, with the CLI's progress and report
#   7. proof, from host b: every key present with the right value, the
#      counter at least the last acknowledged value, the container gone
#      from a
# Exits 0 only if everything verified.
#
# Environment: DEMO_KEYS (default 20000), DEMO_KEEP_LOGS=DIR copies the
# agents' logs there before the teardown.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
KEYS=${DEMO_KEYS:-20000}

if [ -t 1 ]; then
	B=$'\033[1m' G=$'\033[32m' R=$'\033[31m' D=$'\033[2m' N=$'\033[0m'
else
	B="" G="" R="" D="" N=""
fi
T_BEGIN=$(date +%s%3N)
stamp() { printf '%6.1fs' "$(( $(date +%s%3N) - T_BEGIN ))e-3"; }
step() { printf '\n%s %s==> %s%s\n' "$(stamp)" "$B" "$*" "$N"; }
info() { printf '%s     %s\n' "$(stamp)" "$*"; }
die() { printf '\n%sdemo: FAILED: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
	echo "demo: must run as root (containers, namespaces, CRIU)" >&2
	exit 1
fi
case $KEYS in '' | *[!0-9]*) die "DEMO_KEYS must be a number" ;; esac

step "Dependencies and build"
bash scripts/install-deps.sh || die "scripts/install-deps.sh failed"
if [ ! -f build/build.ninja ]; then
	meson setup build >/dev/null || die "meson setup build failed"
fi
meson compile -C build >/tmp/vydemo-build.$$.log 2>&1 ||
	{ tail -30 /tmp/vydemo-build.$$.log; rm -f /tmp/vydemo-build.$$.log; die "build failed"; }
rm -f /tmp/vydemo-build.$$.log
info "build/voyagerd and build/voyager are up to date"
tests/workloads/mkrootfs.sh build redis || die "redis rootfs template failed"

. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"

LAB="vyd$$$(printf '%04x' $((RANDOM % 65536)))"
LAB=${LAB:0:13}
ID=${LAB}redis
CLIENT_PID=""
WORK=""
LAB_MADE=0

rt() { # HOST ARGS... : runc with HOST's runtime root, inside HOST
	local h=$1
	shift
	lab_exec "$LAB" "$h" runc --root "$(lab_dir "$LAB" "$h")/runtime/runc" "$@"
}

teardown() {
	local rc=$? h
	trap - EXIT INT TERM
	echo
	echo "${D}--- teardown ---${N}"
	if [ -n "$CLIENT_PID" ]; then
		[ -n "$WORK" ] && : >"$WORK/stop"
		kill "$CLIENT_PID" 2>/dev/null
		wait "$CLIENT_PID" 2>/dev/null
	fi
	if [ "$LAB_MADE" = 1 ]; then
		if [ -n "${DEMO_KEEP_LOGS:-}" ]; then
			mkdir -p "$DEMO_KEEP_LOGS"
			for h in a b; do
				cp "$(lab_dir "$LAB" "$h")/voyagerd.log" "$DEMO_KEEP_LOGS/voyagerd-$h.log" 2>/dev/null
			done
		fi
		for h in a b; do
			vy_agent_stop "$LAB" "$h"
			rt "$h" delete -f "$ID" >/dev/null 2>&1
		done
		lab_down "$LAB" || echo "demo: lab_down $LAB reported leftovers" >&2
		# lab_down removes $LAB-* namespaces; this covers a failed lab_up.
		[ -e "/run/netns/$LAB-redis" ] && ip netns del "$LAB-redis"
	fi
	[ -n "$WORK" ] && rm -rf "$WORK"
	echo "${D}lab $LAB removed${N}"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d /tmp/vydemo.XXXXXX) || die "mktemp failed"

step "Lab $LAB: two hosts, a and b, on one bridge"
LAB_MADE=1
# The container's own network namespace (only lo), made here and not by
# runc: runc 1.1 + CRIU 4.2 do not carry a runtime-made namespace's state,
# so it would come back with lo DOWN, and a client connection open at the
# checkpoint would then make the restore fail.  Made before the lab, so
# both hosts' mount namespaces see it; on real hosts the target recreates
# the namespace (the network-identity issue).
CNS=$LAB-redis
ip netns add "$CNS" && ip -n "$CNS" link set lo up || die "could not make netns $CNS"
lab_up "$LAB" a b || die "lab_up failed"
HA=$(lab_dir "$LAB" a)
HB=$(lab_dir "$LAB" b)
IPA=$(lab_ip "$LAB" a)
IPB=$(lab_ip "$LAB" b)
info "host a = $IPA, host b = $IPB  (state in /var/lib/vylab/$LAB/hosts/)"

step "Cluster key and voyagerd on both hosts"
vy_key_init "$HA/../../keys" || die "voyager keygen failed"
vy_agent_start "$LAB" a runc || die "voyagerd on a did not start"
vy_agent_start "$LAB" b runc || die "voyagerd on b did not start"
info "voyagerd a: pid $(vy_agent_pid "$LAB" a), listening on $IPA:7600"
info "voyagerd b: pid $(vy_agent_pid "$LAB" b), listening on $IPB:7600"

step "redis in container $ID on host a"
tests/workloads/bundle.sh create "$HA/bundles/$ID" redis --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" --netns "/run/netns/$CNS" \
	-- redis-server /etc/redis.conf >/dev/null ||
	die "bundle create failed"
mkdir -p "$HA/runtime/runc"
# stdio must not be a host file or our pipe: CRIU could not dump it.
rt a run -d --bundle "$HA/bundles/$ID" "$ID" </dev/null >/dev/null 2>&1 || die "runc run failed"
rcli() { # HOST ARGS... : redis-cli inside the container on HOST
	local h=$1
	shift
	lab_exec "$LAB" "$h" timeout 10 runc --root "$(lab_dir "$LAB" "$h")/runtime/runc" \
		exec "$ID" redis-cli --raw "$@" </dev/null 2>>"$WORK/rcli-$h.err"
}
up=0
for _ in $(seq 100); do
	[ "$(rcli a PING)" = PONG ] && { up=1; break; }
	sleep 0.1
done
[ $up = 1 ] || die "redis did not answer PING on host a"
info "redis answers PING on host a (container pid $(rt a state "$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'))"

# Values the script can recompute: demo:key:I -> "value-I-<(I*7919) mod 1000003>"
step "Loading $KEYS keys (redis-cli --pipe inside the container)"
python3 - "$KEYS" >"$WORK/load.resp" <<'PY'
import sys
out = sys.stdout.buffer
for i in range(1, int(sys.argv[1]) + 1):
    k = b"demo:key:%d" % i
    v = b"value-%d-%d" % (i, (i * 7919) % 1000003)
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
PY
t0=$(date +%s%3N)
load=$(lab_exec "$LAB" a timeout 60 runc --root "$HA/runtime/runc" exec "$ID" \
	redis-cli --pipe <"$WORK/load.resp" 2>&1) || { echo "$load"; die "loading failed"; }
info "$(tail -1 <<<"$load")  ($(( $(date +%s%3N) - t0 )) ms)"
rcli a SET demo:counter 0 >/dev/null
n=$(rcli a DBSIZE)
[ "$n" = $((KEYS + 1)) ] || die "DBSIZE on a is '$n', expected $((KEYS + 1))"
info "DBSIZE on host a: $n ($KEYS keys + demo:counter)"
RUNID=$(rcli a INFO server | tr -d '\r' | sed -n 's/^run_id://p')
info "redis run_id $RUNID (a restarted redis would get a new one)"

# The client: INCR demo:counter over and over, on whichever host runs the
# container.  Each acknowledged value goes to acked (last one wins);
# failures are counted, and the longest time without an answer is kept.
client() {
	local host=a other=b v t_ok t gap maxgap=0 acks=0 acks_b=0 fails=0 i x
	t_ok=$(date +%s%3N)
	for ((i = 0; i < 20000; i++)); do
		[ -e "$WORK/stop" ] && break
		v=$(rcli "$host" INCR demo:counter)
		t=$(date +%s%3N)
		if [[ $v =~ ^[0-9]+$ ]]; then
			acks=$((acks + 1))
			[ "$host" = b ] && acks_b=$((acks_b + 1))
			gap=$((t - t_ok))
			[ $gap -gt $maxgap ] && maxgap=$gap
			t_ok=$t
			echo "$v" >"$WORK/acked.tmp" && mv "$WORK/acked.tmp" "$WORK/acked"
		else
			fails=$((fails + 1))
			# Not answered here: the container may have moved.
			x=$host
			host=$other
			other=$x
			sleep 0.05
		fi
		echo "$host $acks $fails $maxgap $acks_b" >"$WORK/client.tmp" && mv "$WORK/client.tmp" "$WORK/client"
	done
}
step "Client starts: INCR demo:counter in a loop (runc exec redis-cli, on host a)"
client &
CLIENT_PID=$!
for _ in $(seq 100); do [ -s "$WORK/acked" ] && break; sleep 0.1; done
[ -s "$WORK/acked" ] || die "the client got no answer"
sleep 2
info "client: counter at $(cat "$WORK/acked"), $(cut -d' ' -f2 "$WORK/client") increments acknowledged so far"

step "voyager migrate $ID --to $IPB  (run on host a)"
t_mig=$(date +%s%3N)
report=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB")
mrc=$?
t_mig_end=$(date +%s%3N)
echo "$report" | sed 's/^/     /'
[ $mrc = 0 ] || die "voyager migrate exited $mrc (see $HA/voyagerd.log)"
MID=$(sed -n '1s/.*(migration \([0-9a-f]*\),.*/\1/p' <<<"$report")
st=$(vy_cli "$LAB" a --json status "$MID" 2>/dev/null)
rep=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["migration"]["report"]))' "$st" 2>/dev/null)
[ -n "$rep" ] || rep='{}'

# Let the client talk to b for a while.
sleep 2
: >"$WORK/stop"
wait "$CLIENT_PID"
CLIENT_PID=""
read -r c_host c_acks c_fails c_gap c_acks_b <"$WORK/client"
ACKED=$(cat "$WORK/acked")
info "client stopped on host $c_host: $c_acks increments acknowledged, last value $ACKED," \
	"$c_acks_b of them by redis on b, $c_fails unanswered tries, longest gap between answers ${c_gap} ms"

step "Proof from host b"
fail=0
check() { # OK? TEXT
	if [ "$1" = 0 ]; then
		printf '     %s✔%s %s\n' "$G" "$N" "$2"
	else
		printf '     %s✘ %s%s\n' "$R" "$2" "$N"
		fail=1
	fi
}
sa=$(rt a state "$ID" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null)
sb=$(rt b state "$ID" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null)
[ "$sb" = running ]; check $? "container runs on host b (runc state: ${sb:-absent})"
[ -z "$sa" ]; check $? "container is gone from host a (runc state: ${sa:-absent})"
rid=$(rcli b INFO server | tr -d '\r' | sed -n 's/^run_id://p')
[ -n "$RUNID" ] && [ "$rid" = "$RUNID" ]; check $? "same redis process on b, not a restart (run_id ${rid:-?})"
n=$(rcli b DBSIZE)
[ "$n" = $((KEYS + 1)) ]; check $? "DBSIZE on b: ${n:-?} (expected $((KEYS + 1)))"
# Every key, checked inside redis on b against the same formula.
bad=$(rcli b EVAL "local bad = 0
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('GET', 'demo:key:' .. i)
  if v ~= ('value-' .. i .. '-' .. ((i * 7919) % 1000003)) then bad = bad + 1 end
end
return bad" 0 "$KEYS")
[ "$bad" = 0 ]; check $? "all $KEYS keys have their exact value (checked by a Lua script in redis on b: ${bad:-?} wrong)"
# And a sample, read out and compared here.
sample=""
for i in 1 2 $((KEYS / 3)) $((KEYS / 2)) $((KEYS - 1)) $KEYS; do
	[ "$i" -ge 1 ] && sample="$sample $i"
done
bad=0
for i in $sample; do
	v=$(rcli b GET "demo:key:$i")
	[ "$v" = "value-$i-$(((i * 7919) % 1000003))" ] || bad=$((bad + 1))
	last="demo:key:$i = $v"
done
[ $bad = 0 ]; check $? "spot check of keys$sample read from b (e.g. $last)"
cnt=$(rcli b GET demo:counter)
[[ $cnt =~ ^[0-9]+$ ]] && [ "$cnt" -ge "$ACKED" ]
check $? "demo:counter on b = ${cnt:-?} >= last acknowledged $ACKED (no acknowledged write lost)"
[ "$c_host" = b ] && [ "$c_acks_b" -gt 0 ]
check $? "the client went on talking to redis on host b ($c_acks_b increments acknowledged there)"

python3 - "$rep" "$KEYS" "$((t_mig_end - t_mig))" "$fail" <<'PY'
import json, sys
r, keys, wall, fail = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def mib(n): return "%.1f MiB" % ((n or 0) / 1048576)
b = r.get("bytes", {})
print()
print("  ==================== summary ====================")
print("  result      %s" % r.get("result", "?"))
print("  downtime    %s ms   (container frozen on a -> running on b)" % r.get("downtime_ms", "?"))
print("  total       %s ms   (CLI wall clock %s ms)" % (r.get("total_ms", "?"), wall))
print("  bytes       memory %s, rootfs %s, volumes %s, wire %s" % (
    mib(b.get("memory")), mib(b.get("rootfs")), mib(b.get("volumes")), mib(b.get("wire"))))
ph = r.get("phases_ms", {})
print("  phases      " + ", ".join("%s %s ms" % kv for kv in ph.items()))
print("  verified    %s keys + counter: %s" % (keys, "ALL OK" if fail == "0" else "FAILURES (see above)"))
print("  =================================================")
PY
if [ $fail != 0 ]; then
	for h in a b; do
		[ -s "$WORK/rcli-$h.err" ] && { echo "     last errors of runc exec on $h:"; tail -3 "$WORK/rcli-$h.err" | sed 's/^/       /'; }
	done
	die "verification failed"
fi
printf '\n%sdemo: OK%s\n' "$G" "$N"
