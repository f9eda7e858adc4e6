#!/bin/bash
# Voyager demo: move a live, busy redis from one host to another while a
# client on a third host keeps talking to it over one TCP connection.
#
#   bash scripts/demo.sh            (as root, on Debian 12 or 13)
#
# Everything it needs it sets up itself, and it removes everything it made
# when it ends, on failure or Ctrl-C too:
#   1. installs what is missing (scripts/install-deps.sh) and builds
#      Voyager into build/ (meson) if needed
#   2. a three-host lab (network + mount namespaces, lab/lab.sh): hosts a
#      and b run voyagerd, host c is the client's machine
#   3. a cluster key and voyagerd on a and b
#   4. a network identity for the container on host a (voyager net create:
#      a namespace with its own address on a's bridge vybr0), and redis in
#      a container on a in that namespace, loaded from host c over the
#      network with DEMO_KEYS keys (20000) whose values the script can
#      recompute
#   5. a client on host c (tests/workloads/redis_client.py) that keeps ONE
#      TCP connection to the container's address and talks on it every few
#      ms, checking every reply
#   6. voyager migrate to host b (just-in-time, the default mode), with the
#      CLI's progress and report; the address and the client's connection
#      go with the container, which resumes on b at once on voyager-fs
#      while its files arrive in the background
#   7. proof: the client's connection never broke and every write it got
#      acknowledged is there; from host c, on a fresh connection, every key
#      present with the right value; the container runs on b as the same
#      redis process (run_id) and is gone from a; its files all arrived
#      (voyager status on b showed the hydration), b is independent and a
#      released its copy
# Exits 0 only if everything verified.
#
# Environment: DEMO_KEYS (default 20000), DEMO_KEEP_LOGS=DIR copies the
# agents' logs there before the teardown.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
KEYS=${DEMO_KEYS:-20000}
# The client's run: ~2 s before the migration, the migration itself (about
# 1-2 s here), and a few seconds on host b after it.
CLIENT_SECONDS=7

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
case $KEYS in '' | *[!0-9]* | 0) die "DEMO_KEYS must be a positive number" ;; esac

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
AGENTS=""

rt() { # HOST ARGS... : runc with HOST's runtime root, inside HOST
	local h=$1
	shift
	lab_exec "$LAB" "$h" runc --root "$(lab_dir "$LAB" "$h")/runtime/runc" "$@"
}

teardown() {
	local rc=$? h i
	trap - EXIT INT TERM
	echo
	echo "${D}--- teardown ---${N}"
	if [ -n "$CLIENT_PID" ]; then
		# The client (python, in host c) wrote its own pid; the job is
		# its launcher.
		[ -s "$WORK/client.pid" ] && kill "$(cat "$WORK/client.pid")" 2>/dev/null
		kill "$CLIENT_PID" 2>/dev/null
		for i in $(seq 50); do kill -0 "$CLIENT_PID" 2>/dev/null || break; sleep 0.1; done
		wait "$CLIENT_PID" 2>/dev/null
	fi
	if [ "$LAB_MADE" = 1 ]; then
		if [ -n "${DEMO_KEEP_LOGS:-}" ]; then
			mkdir -p "$DEMO_KEEP_LOGS"
			for h in a b; do
				cp "$(lab_dir "$LAB" "$h")/voyagerd.log" "$DEMO_KEEP_LOGS/voyagerd-$h.log" 2>/dev/null
			done
			echo "${D}agents' logs kept in $DEMO_KEEP_LOGS${N}"
		fi
		for h in $AGENTS; do
			rt "$h" delete -f "$ID" >/dev/null 2>&1
			vy_cli "$LAB" "$h" net delete "$ID" >/dev/null 2>&1
			vy_agent_stop "$LAB" "$h"
		done
		lab_down "$LAB" || echo "demo: lab_down $LAB reported leftovers" >&2
	fi
	[ -n "$WORK" ] && rm -rf "$WORK"
	echo "${D}lab $LAB removed${N}"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d /tmp/vydemo.XXXXXX) || die "mktemp failed"

step "Lab $LAB: three hosts, a, b and c, on one switch"
LAB_MADE=1
lab_up "$LAB" a b c || die "lab_up failed"
HA=$(lab_dir "$LAB" a)
HB=$(lab_dir "$LAB" b)
IPA=$(lab_ip "$LAB" a)
IPB=$(lab_ip "$LAB" b)
IPC=$(lab_ip "$LAB" c)
# The container's own address: in the lab's /24, used by no host.
CIP=$(lab_subnet_prefix "$LAB").50
info "host a = $IPA, host b = $IPB, host c = $IPC (the client's)  (state in /var/lib/vylab/$LAB/hosts/)"

step "Cluster key and voyagerd on hosts a and b"
vy_key_init "$HA/../../keys" || die "voyager keygen failed"
AGENTS="a"
vy_agent_start "$LAB" a runc || die "voyagerd on a did not start"
AGENTS="a b"
vy_agent_start "$LAB" b runc || die "voyagerd on b did not start"
info "voyagerd a: pid $(vy_agent_pid "$LAB" a), listening on $IPA:7600"
info "voyagerd b: pid $(vy_agent_pid "$LAB" b), listening on $IPB:7600"

step "Network identity for $ID on host a: $CIP/24 on vybr0"
NS=$(vy_cli "$LAB" a net create "$ID" --ip "$CIP/24" --bridge vybr0) ||
	die "voyager net create failed (see $HA/voyagerd.log)"
[ -n "$NS" ] || die "voyager net create printed no namespace path"
info "voyager net create: namespace $NS"
nsinfo=$(vy_cli "$LAB" a --json net show "$ID" 2>/dev/null)
info "eth0 $(python3 -c 'import json,sys
i = json.loads(sys.argv[1])["identity"]["interfaces"][0]
print("mac %s, %s, host side %s on %s" % (i["mac"], " ".join(i["addrs"]), i["host_if"], i["bridge"]))' "$nsinfo" 2>/dev/null)"

step "redis in container $ID on host a, in that namespace"
tests/workloads/bundle.sh create "$HA/bundles/$ID" redis --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" --netns "$NS" \
	-- redis-server /etc/redis.conf >/dev/null ||
	die "bundle create failed"
mkdir -p "$HA/runtime/runc"
# stdio must not be a host file or our pipe: CRIU could not dump it.
rt a run -d --bundle "$HA/bundles/$ID" "$ID" </dev/null >/dev/null 2>&1 || die "runc run failed"
rc() { # ARGS... : redis-cli on host c, a fresh connection to the container
	lab_exec "$LAB" c timeout 10 redis-cli -h "$CIP" --raw "$@" </dev/null 2>>"$WORK/rc.err"
}
up=0
for _ in $(seq 100); do
	[ "$(rc PING)" = PONG ] && { up=1; break; }
	sleep 0.1
done
[ $up = 1 ] || die "redis at $CIP did not answer PING from host c"
PID_A=$(rt a state "$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
info "redis answers PING at $CIP:6379 from host c (container pid $PID_A on host a)"

# Values the script can recompute: demo:key:I -> "value-I-<(I*7919) mod 1000003>"
step "Loading $KEYS keys from host c (redis-cli --pipe over the network)"
python3 - "$KEYS" >"$WORK/load.resp" <<'PY'
import sys
out = sys.stdout.buffer
for i in range(1, int(sys.argv[1]) + 1):
    k = b"demo:key:%d" % i
    v = b"value-%d-%d" % (i, (i * 7919) % 1000003)
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
PY
t0=$(date +%s%3N)
load=$(lab_exec "$LAB" c timeout 60 redis-cli -h "$CIP" --pipe <"$WORK/load.resp" 2>&1) ||
	{ echo "$load"; die "loading failed"; }
info "$(tail -1 <<<"$load")  ($(( $(date +%s%3N) - t0 )) ms)"
rc SET demo:counter 0 >/dev/null
n=$(rc DBSIZE)
[ "$n" = $((KEYS + 1)) ] || die "DBSIZE is '$n', expected $((KEYS + 1))"
info "DBSIZE: $n ($KEYS keys + demo:counter)"
RUNID=$(rc INFO server | tr -d '\r' | sed -n 's/^run_id://p')
[ -n "$RUNID" ] || die "could not read redis's run_id"
info "redis run_id $RUNID (a restarted redis would get a new one)"

# The client: one TCP connection from host c to $CIP:6379; every 5 ms INCR
# demo:counter and SET demo:k<n> <n>, every reply checked; at the end it
# reads back every acknowledged SET on the same connection.
step "Client on host c: one connection to $CIP:6379, INCR + SET every 5 ms for ${CLIENT_SECONDS}s"
lab_exec "$LAB" c sh -c 'echo $$ >"$1"; shift; exec "$@"' vydemo "$WORK/client.pid" \
	python3 "$ROOT/tests/workloads/redis_client.py" "$CIP" 6379 "$CLIENT_SECONDS" \
	"$WORK/client.json" --prefix demo --interval 0.005 --ready "$WORK/client.ready" \
	>"$WORK/client.out" 2>&1 </dev/null &
CLIENT_PID=$!
for _ in $(seq 100); do
	[ -e "$WORK/client.ready" ] && break
	kill -0 "$CLIENT_PID" 2>/dev/null || break
	sleep 0.1
done
[ -e "$WORK/client.ready" ] || { cat "$WORK/client.json" "$WORK/client.out" 2>/dev/null; die "the client did not connect"; }
T_CLIENT=$(date +%s%3N)
sleep 2
info "client connected; demo:counter at $(rc GET demo:counter) after 2 s"

step "voyager migrate $ID --to $IPB  (run on host a)"
t_mig=$(date +%s%3N)
report=$(vy_cli "$LAB" a migrate "$ID" --to "$IPB")
mrc=$?
t_mig_end=$(date +%s%3N)
echo "$report" | sed 's/^/     /'
[ $mrc = 0 ] || die "voyager migrate exited $mrc (see $HA/voyagerd.log and $HB/voyagerd.log)"
MID=$(sed -n '1s/.*(migration \([0-9a-f]*\),.*/\1/p' <<<"$report")
st=$(vy_cli "$LAB" a --json status "$MID" 2>/dev/null)
rep=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["migration"]["report"]))' "$st" 2>/dev/null)
[ -n "$rep" ] || rep='{}'
HANDOVER=$(rc GET demo:counter)
left=$((T_CLIENT + CLIENT_SECONDS * 1000 - t_mig_end))
CLIENT_AFTER=0
kill -0 "$CLIENT_PID" 2>/dev/null && [ $left -gt 1000 ] && CLIENT_AFTER=1
info "demo:counter at $HANDOVER right after the migration; the client goes on for ~$((left > 0 ? left / 1000 : 0)) s more"

# Let the client finish its run (bounded: its own SECONDS, 30 s per reply).
for _ in $(seq $(((CLIENT_SECONDS + 90) * 10))); do
	kill -0 "$CLIENT_PID" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$CLIENT_PID" 2>/dev/null && die "the client did not finish"
wait "$CLIENT_PID"
CLIENT_PID=""
[ -s "$WORK/client.json" ] || { cat "$WORK/client.out"; die "the client wrote no summary"; }
cj=$(cat "$WORK/client.json")
cget() { vy_json_get "$cj" "$1"; }
C_ERR=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["errors"]))' "$cj")
C_RESET=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["reset"]))' "$cj")
C_GAP=$(cget max_gap_ms)
C_LAST=$(cget last_counter)
C_SETS=$(cget acked_sets)
C_MISS=$(cget missing)
C_REPLIES=$(cget replies)
info "client done: $C_REPLIES replies, $C_SETS acknowledged SETs, last INCR $C_LAST," \
	"longest pause ${C_GAP} ms, reset $C_RESET, errors $C_ERR"

step "Proof"
fail=0
check() { # OK? TEXT
	if [ "$1" = 0 ]; then
		printf '     %s✔%s %s\n' "$G" "$N" "$2"
	else
		printf '     %s✘ %s%s\n' "$R" "$2" "$N"
		fail=1
	fi
}
echo "     the client's connection (host c -> $CIP:6379, opened before the migration):"
[ "$(cget connected)" = True ] && [ "$C_RESET" = false ] && [ "$C_ERR" = null ]
check $? "never broke: reset $C_RESET, errors $C_ERR"
[[ $C_MISS =~ ^[0-9]+$ ]] && [ "$C_MISS" = 0 ] && [[ $C_SETS =~ ^[0-9]+$ ]] && [ "$C_SETS" -gt 0 ]
check $? "every acknowledged write is there: $C_SETS SETs acknowledged, ${C_MISS:-?} missing when read back"
[ "$CLIENT_AFTER" = 1 ] && [[ $C_LAST =~ ^[0-9]+$ ]] && [[ $HANDOVER =~ ^[0-9]+$ ]] && [ "$C_LAST" -gt "$HANDOVER" ]
check $? "it went on talking to redis on b: last INCR ${C_LAST:-?} > ${HANDOVER:-?} at the handover"
info "longest pause the client saw: ${C_GAP} ms (migration downtime $(vy_json_get "$rep" downtime_ms) ms)"

echo "     the container:"
sa=$(rt a state "$ID" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null)
sb=$(rt b state "$ID" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null)
[ "$sb" = running ]; check $? "runs on host b (runc state on b: ${sb:-absent})"
[ -z "$sa" ]; check $? "is gone from host a (runc state on a: ${sa:-absent})"
lab_exec "$LAB" b test -e "$HB/state/netns/$ID" && ! lab_exec "$LAB" a test -e "$NS"
check $? "its network namespace moved: held by b's agent ($HB/state/netns/$ID), gone from a"

echo "     its files (voyager-fs on b, hydrating from a in the background):"
for _ in $(seq 240); do
	hs=$(vy_cli "$LAB" b --json status "$MID" 2>/dev/null)
	[ "$(vy_json_get "$hs" migration.result 2>/dev/null)" = migrated ] && break
	sleep 0.5
done
hb=$(vy_json_get "$hs" migration.hydration)
[ "$(vy_json_get "$hs" migration.result 2>/dev/null)" = migrated ]
check $? "b holds every byte: $(vy_json_get "$hb" files) files, $(( $(vy_json_get "$hb" bytes 2>/dev/null || echo 0) / 1048576 )) MiB, all local $(vy_json_get "$hb" ms) ms after the commit; b is independent"
[ "$(vy_json_get "$(vy_cli "$LAB" a --json status "$MID" 2>/dev/null)" migration.released)" = True ]
check $? "a was told, and released its copy"

echo "     from host c, a fresh connection to $CIP:6379:"
rid=$(rc INFO server | tr -d '\r' | sed -n 's/^run_id://p')
[ "$rid" = "$RUNID" ]; check $? "same redis process, not a restart (run_id ${rid:-?})"
n=$(rc DBSIZE)
want=$((KEYS + 1 + ${C_SETS:-0}))
[ "$n" = "$want" ]; check $? "DBSIZE ${n:-?} (expected $want: $KEYS keys + demo:counter + the client's $C_SETS)"
# Every key, checked inside redis against the same formula.
bad=$(rc EVAL "local bad = 0
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('GET', 'demo:key:' .. i)
  if v ~= ('value-' .. i .. '-' .. ((i * 7919) % 1000003)) then bad = bad + 1 end
end
return bad" 0 "$KEYS")
[ "$bad" = 0 ]; check $? "all $KEYS keys have their exact value (checked by a Lua script in redis: ${bad:-?} wrong)"
# And a sample, read out and compared here.
sample=""
for i in 1 2 $((KEYS / 3)) $((KEYS / 2)) $((KEYS - 1)) $KEYS; do
	[ "$i" -ge 1 ] && sample="$sample $i"
done
bad=0
for i in $sample; do
	v=$(rc GET "demo:key:$i")
	[ "$v" = "value-$i-$(((i * 7919) % 1000003))" ] || bad=$((bad + 1))
	last="demo:key:$i = $v"
done
[ $bad = 0 ]; check $? "spot check of keys$sample (e.g. $last)"
cnt=$(rc GET demo:counter)
[[ $cnt =~ ^[0-9]+$ ]] && [[ $C_LAST =~ ^[0-9]+$ ]] && [ "$cnt" -ge "$C_LAST" ]
check $? "demo:counter = ${cnt:-?} >= last acknowledged ${C_LAST:-?} (no acknowledged write lost)"

python3 - "$rep" "$KEYS" "$((t_mig_end - t_mig))" "$fail" "$cj" <<'PY'
import json, sys
r, keys, wall, fail, c = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
def mib(n): return "%.1f MiB" % ((n or 0) / 1048576)
b = r.get("bytes", {})
print()
print("  ======================== summary ========================")
print("  result      %s" % r.get("result", "?"))
print("  downtime    %s ms   (container frozen on a -> running on b)" % r.get("downtime_ms", "?"))
print("  total       %s ms   (CLI wall clock %s ms)" % (r.get("total_ms", "?"), wall))
print("  bytes       memory %s, rootfs %s, volumes %s, wire %s" % (
    mib(b.get("memory")), mib(b.get("rootfs")), mib(b.get("volumes")), mib(b.get("wire"))))
ph = r.get("phases_ms", {})
print("  phases      " + ", ".join("%s %s ms" % kv for kv in ph.items()))
for phase, st in r.get("steps_ms", {}).items():
    print("  %-11s " % (phase + ":") + ", ".join("%s %s" % kv for kv in st.items()) + " (ms)")
print("  client      one connection, longest pause %s ms, reset %s, errors %s" % (
    c.get("max_gap_ms"), json.dumps(c.get("reset")), json.dumps(c.get("errors"))))
print("              %s replies, %s acknowledged SETs, %s missing" % (
    c.get("replies"), c.get("acked_sets"), c.get("missing")))
print("  verified    %s keys + counter + client writes: %s" % (keys, "ALL OK" if fail == "0" else "FAILURES (see above)"))
print("  =========================================================")
PY
if [ $fail != 0 ]; then
	[ -s "$WORK/rc.err" ] && { echo "     last errors of redis-cli on c:"; tail -3 "$WORK/rc.err" | sed 's/^/       /'; }
	[ -s "$WORK/client.out" ] && { echo "     client output:"; tail -5 "$WORK/client.out" | sed 's/^/       /'; }
	die "verification failed"
fi
printf '\n%sdemo: OK%s\n' "$G" "$N"
