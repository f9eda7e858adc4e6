#!/bin/bash
# Network identity figures: what a client sees while redis moves a -> b.
#
#   bench/network.sh [--data-mib MIB] [--rate RATE] [--runs N] [--client-s S] [--out PREFIX]
#       --data-mib  MiB of data held by redis (values of ~1 KiB)     64
#       --rate      link rate of hosts a, b and c (tc tbf)           1gbit
#       --runs      measurements per method                          3
#       --client-s  seconds the client talks (the move starts at ~2) 10
#       --bridge-mac pinned|free  pinned (default): each host's vybr0 keeps
#                   the MAC it had (set explicitly once, as systemd-networkd
#                   does); free: the lab's default, where a bridge takes the
#                   lowest MAC of its ports, so attaching or removing a
#                   container's veth can change the host's own MAC under
#                   its peers' ARP caches (seen: a->b connects stalling for
#                   seconds after a migration)
#       --memory    auto|stop-copy|post-copy: voyager migrate --memory for
#                   the Voyager methods                              auto
#       --methods   comma-separated subset of default,no-prefetch,no-hold,
#                   stop-copy,manual (their order is kept)        all
#       --out       results prefix (default bench/results/DATE/network
#                   for the default sizes, .../network-dMIB-RATE-rN else)
#   Quick check: bench/network.sh --data-mib 8 --runs 1
#
# One three-host lab (a, b: voyagerd; c: the client), every link shaped to
# RATE.  Per run and method a fresh redis container on a with a network
# identity of its own (an address of the lab's /24 on a's bridge vybr0),
# loaded from c with `redis-cli --pipe` (random values of 1000 bytes; the
# JSON keeps redis's used_memory), then, while tests/workloads/
# redis_client.py on c keeps ONE TCP connection to it (INCR + SET every
# 5 ms, every reply checked), moved to b:
#   default    `voyager migrate ID --to B --json` (whatever mode the CLI
#              defaults to; the report's mode is recorded): the packets
#              that reach the container during the freeze are held on a
#              and replayed on b (the report's network section counts them)
#   no-hold    the same with --no-hold: today's behaviour before holding,
#              where the client's own retransmission timer ends its pause
#   no-prefetch the same with --no-prefetch: jit sends no mapped file
#              before the freeze, and the restore reads redis's binary
#              and libraries from a through voyager-fs
#   stop-copy  `voyager migrate ID --to B --mode stop-copy --json`
#   manual     by hand, as DESIGN.md's hand-made migration: the container's
#              netns made by the host (nsfs bind mount in HOSTDIR/vynetns,
#              veth on vybr0, fixed MAC), the bundle copied to b before the
#              freeze, and on b the same namespace (same IP and MAC) with an
#              nft drop table and its veth down.  At the freeze, on a: nft
#              drop table in the container's netns, `runc checkpoint
#              --tcp-established`, source veth down, tar of the CRIU images
#              over TCP across the shaped link to a listener on b; on b, as
#              soon as the stream ends: veth up, `runc restore -d
#              --tcp-established`, drop table removed, gratuitous ARP (python
#              raw socket).  downtime_ms = lock on a -> ARP sent on b (what
#              Voyager's downtime spans too: freeze -> target unlocked and
#              announced); restore_returned_ms = lock -> runc restore
#              returned.
# The order alternates (odd runs default, no-hold, stop-copy, manual; even
# runs the reverse).  After each move: the client's verdict (reset, errors, missing
# acknowledged writes), the same redis run_id and the whole data set
# (DBSIZE) on a fresh connection from c.  No timed assertions: the exit
# status is 0 when every run migrated with no reset, no error, nothing
# missing.  Writes PREFIX.json (every run, the summary) and PREFIX.md.
#
# Voyager's binaries (voyager, voyagerd, voyager-fs) are copied from build/ at the start (the build may
# change while this runs); their sha256 and the tree state go in the JSON.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_MIB=64
RATE=1gbit
RUNS=3
CLIENT_S=10
OUT=""
BRIDGE_MAC=pinned
MEMORY=auto
METHODS=default,no-prefetch,no-hold,stop-copy,manual
VALUE_LEN=1000
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--data-mib) DATA_MIB=${2:-}; shift 2 ;;
	--rate) RATE=${2:-}; shift 2 ;;
	--runs) RUNS=${2:-}; shift 2 ;;
	--client-s) CLIENT_S=${2:-}; shift 2 ;;
	--out) OUT=${2:-}; shift 2 ;;
	--bridge-mac) BRIDGE_MAC=${2:-}; shift 2 ;;
	--memory) MEMORY=${2:-}; shift 2 ;;
	--methods) METHODS=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "network: unknown argument '$1'" >&2; usage ;;
	esac
done
for v in "$DATA_MIB" "$RUNS" "$CLIENT_S"; do
	[[ $v =~ ^[0-9]+$ ]] || { echo "network: --data-mib, --runs, --client-s want numbers" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 40 ] || { echo "network: --runs 1..40" >&2; exit 2; }
case $MEMORY in auto | stop-copy | post-copy) ;; *) echo "network: --memory auto, stop-copy or post-copy" >&2; exit 2 ;; esac
[ "$DATA_MIB" -ge 1 ] && [ "$DATA_MIB" -le 4096 ] || { echo "network: --data-mib 1..4096" >&2; exit 2; }
[ "$CLIENT_S" -ge 4 ] && [ "$CLIENT_S" -le 300 ] || { echo "network: --client-s 4..300" >&2; exit 2; }
ALL_METHODS=(default no-prefetch no-hold stop-copy manual)
IFS=, read -r -a want_methods <<<"$METHODS"
for m in "${want_methods[@]}"; do
	[[ " ${ALL_METHODS[*]} " == *" $m "* ]] || { echo "network: unknown method '$m'" >&2; exit 2; }
done
[[ ${RATE,,} =~ ^[0-9]+(bit|kbit|mbit|gbit)$ ]] || { echo "network: bad --rate '$RATE'" >&2; exit 2; }
case $BRIDGE_MAC in pinned | free) ;; *) echo "network: --bridge-mac pinned|free" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "network: must run as root" >&2; exit 1; }
if [ -z "$OUT" ]; then
	OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/network"
	[ "$DATA_MIB/$RATE/$RUNS/$BRIDGE_MAC" = 64/1gbit/3/pinned ] || OUT="$OUT-d$DATA_MIB-$RATE-r$RUNS-$BRIDGE_MAC"
	[ "$MEMORY" = auto ] || OUT="$OUT-mem-$MEMORY"
	[ "$METHODS" = default,no-prefetch,no-hold,stop-copy,manual ] || OUT="$OUT-${METHODS//,/-}"
fi
# voyager-fs too: the default mode (jit) restores on it, found next to voyagerd.
[ -x "$ROOT/build/voyager" ] && [ -x "$ROOT/build/voyagerd" ] && [ -x "$ROOT/build/voyager-fs" ] ||
	{ echo "network: build first (meson setup build && meson compile -C build; voyager-fs needs libfuse3)" >&2; exit 1; }
PY=/usr/bin/python3
[ -x $PY ] || PY=$(command -v python3)

. "$ROOT/lab/lab.sh"
WORK=$(mktemp -d /tmp/vynet.XXXXXX) || exit 1
mkdir -p "$WORK/bin"
cp "$ROOT/build/voyager" "$ROOT/build/voyagerd" "$ROOT/build/voyager-fs" "$WORK/bin/" ||
	{ rm -rf "$WORK"; exit 1; }
VY_BUILD=$WORK/bin
. "$ROOT/tests/e2e/agents.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"
CLIENT="$ROOT/tests/workloads/redis_client.py"

LAB="vyn$$$(printf '%04x' $((RANDOM % 65536)))"
LAB=${LAB:0:13}
LAB_MADE=0
PIDS=()     # background jobs and the processes they ran (pid files)
NSFILES=()  # "HOST FILE": our own nsfs bind mounts

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "network: $*"; exit 1; }
now() { date +%s%3N; }

# Kill what we started, by PID, if it still runs.
kill_ours() {
	local p f i
	for f in "$WORK"/*.pid; do
		[ -s "$f" ] || continue
		p=$(cat "$f")
		kill "$p" 2>/dev/null
	done
	# process groups we made with setsid (a listener and its tar)
	for f in "$WORK"/*.pgid; do
		[ -s "$f" ] || continue
		p=$(cat "$f")
		[[ $p =~ ^[0-9]+$ ]] && [ "$p" -gt 1 ] && kill -- "-$p" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for i in $(seq 30); do
		local alive=0
		for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	PIDS=()
	rm -f "$WORK"/*.pid "$WORK"/*.pgid
}

teardown() {
	local rc=$? h e
	trap - EXIT INT TERM
	kill_ours
	if [ "$LAB_MADE" = 1 ]; then
		for h in a b; do vy_agent_stop "$LAB" "$h"; done
		lab_delete_containers "$LAB" a b
		for e in "${NSFILES[@]}"; do ns_del ${e}; done
		lab_down "$LAB" >&2 || log "lab_down $LAB reported leftovers"
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rt() { # HOST ARGS... : runc with HOST's runtime root, inside HOST
	local h=$1
	shift
	lab_exec "$LAB" "$h" runc --root "$(lab_dir "$LAB" "$h")/runtime/runc" "$@"
}
rcli() { # HOST IP ARGS... : redis-cli in HOST, a fresh connection
	local h=$1 ip=$2
	shift 2
	lab_exec "$LAB" "$h" timeout 20 redis-cli -h "$ip" --raw "$@" </dev/null 2>>"$WORK/rcli.err"
}
ctr_status() { # HOST ID
	rt "$1" state "$2" 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null || echo absent
}
# wait_pid PID SECONDS: wait for a job of ours, bounded; 0 if it ended
wait_pid() {
	local p=$1 t=$2 i
	for ((i = 0; i < t * 10; i++)); do
		kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }
		sleep 0.1
	done
	return 1
}
drop_pid() { # PID: forget a job that ended
	local p keep=()
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# ---- the manual baseline's namespaces ----
# ns_make HOST FILE IP/P MAC HOSTIF LOCKED: a netns held at FILE (inside
# HOST's mount namespace), veth vyc0 (inside, MAC, IP) <-> HOSTIF on vybr0.
# LOCKED=1: the nft drop table goes in first and HOSTIF stays down.
LOCK_RULES='table inet vylock {
 chain in { type filter hook input priority -300; policy drop; iif "lo" accept; }
 chain out { type filter hook output priority -300; policy drop; oif "lo" accept; }
}'
ns_make() {
	local h=$1 f=$2 ip=$3 mac=$4 hif=$5 locked=$6
	NSFILES+=("$h $f")
	lab_exec "$LAB" "$h" sh -euc '
		f=$1 ip=$2 mac=$3 hif=$4 locked=$5 rules=$6
		mkdir -p "$(dirname "$f")"
		: >"$f"
		unshare --net="$f" true
		n() { nsenter --net="$f" "$@"; }
		n ip link set lo up
		[ "$locked" = 1 ] && printf "%s\n" "$rules" | n nft -f -
		n ip link add vyc0 type veth peer name "$hif" netns $$
		n ip link set vyc0 address "$mac"
		n ip addr add "$ip" dev vyc0
		n ip link set vyc0 up
		ip link set "$hif" master vybr0
		[ "$locked" = 1 ] || ip link set "$hif" up
	' vyns "$f" "$ip" "$mac" "$hif" "$locked" "$LOCK_RULES" >&2
}
ns_del() { # HOST FILE
	lab_exec "$LAB" "$1" sh -c 'umount "$1" 2>/dev/null; rm -f "$1"' vyns "$2" 2>/dev/null
	local e keep=()
	for e in "${NSFILES[@]}"; do [ "$e" = "$1 $2" ] || keep+=("$e"); done
	NSFILES=("${keep[@]}")
}

# ---- set-up ----
"$ROOT/tests/workloads/mkrootfs.sh" build redis >/dev/null || die "mkrootfs failed"
log "lab $LAB: hosts a, b (voyagerd) and c (client); links shaped to $RATE; redis with $DATA_MIB MiB; $RUNS runs per method"
LAB_MADE=1
lab_up "$LAB" a b c >&2 || die "lab_up failed"
for h in a b c; do lab_shape "$LAB" "$h" "$RATE" || die "shape $h failed"; done
if [ "$BRIDGE_MAC" = pinned ]; then
	for h in a b c; do
		lab_exec "$LAB" "$h" sh -c 'ip link set vybr0 address "$(ip -br link show vybr0 | awk "{print \$3}")"' ||
			die "pinning vybr0's MAC on $h failed"
	done
fi
A=$(lab_dir "$LAB" a)
B=$(lab_dir "$LAB" b)
C=$(lab_dir "$LAB" c)
IPB=$(lab_ip "$LAB" b)
PFX=$(lab_subnet_prefix "$LAB")
vy_key_init "$A/../../keys" || die "keygen failed"
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || die "voyagerd did not start"
mkdir -p "$A/runtime/runc" "$B/runtime/runc"

# The data: KEYS SETs of random 1000-byte values, as RESP for redis-cli --pipe.
KEYS=$((DATA_MIB * 1048576 / (VALUE_LEN + 80)))
$PY - "$KEYS" "$VALUE_LEN" >"$WORK/load.resp" <<'PY' || die "data generation failed"
import base64, os, sys
n, vlen = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
for i in range(n):
    k = b"vyk:%d" % i
    v = base64.b64encode(os.urandom(vlen))[:vlen]
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
PY
log "data: $KEYS keys of $VALUE_LEN bytes ($(($(stat -c %s "$WORK/load.resp") / 1048576)) MiB of RESP)"

GARP_PY='
import socket, struct, sys
ifn, ip, mac = sys.argv[1:4]
m = bytes.fromhex(mac.replace(":", ""))
a = socket.inet_aton(ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifn, 0))
for op, tha in ((1, b"\0" * 6), (2, b"\xff" * 6)):
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + m + a + tha + a
    s.send((b"\xff" * 6 + m + b"\x08\x06" + arp).ljust(60, b"\0"))
'

# start_redis HOST ID IP NETNS: bundle, run, load; prints "used_memory rss run_id"
start_redis() {
	local h=$1 id=$2 ip=$3 ns=$4 hd i load
	hd=$(lab_dir "$LAB" "$h")
	"$BUNDLE_SH" create "$hd/bundles/$id" redis --id "$id" --netns "$ns" \
		--cgroup-parent "$(lab_cgroup_parent "$LAB" "$h")" -- /usr/bin/redis-server /etc/redis.conf \
		>/dev/null || return 1
	rt "$h" run -d --bundle "$hd/bundles/$id" "$id" </dev/null >/dev/null 2>&1 || return 1
	for i in $(seq 100); do
		[ "$(rcli c "$ip" PING)" = PONG ] && break
		sleep 0.1
	done
	[ "$(rcli c "$ip" PING)" = PONG ] || { log "redis $id does not answer"; return 1; }
	load=$(lab_exec "$LAB" c timeout 120 redis-cli -h "$ip" --pipe <"$WORK/load.resp" 2>&1) ||
		{ log "load failed: $load"; return 1; }
	[ "$(rcli c "$ip" DBSIZE)" = "$KEYS" ] || { log "DBSIZE after load: $(rcli c "$ip" DBSIZE)"; return 1; }
	rcli c "$ip" INFO | tr -d '\r' | awk -F: '
		$1 == "used_memory" {u = $2} $1 == "used_memory_rss" {r = $2} $1 == "run_id" {id = $2}
		END {print u, r, id}'
}

# client_start NAME IP: one connection from c; returns when it talks
CLIENT_JOB=""
client_start() {
	local name=$1 ip=$2 i
	rm -f "$WORK/$name.ready" "$WORK/$name.json"
	lab_exec "$LAB" c sh -c 'echo $$ >"$1"; shift; exec "$@"' vycl "$WORK/client.pid" \
		$PY "$CLIENT" "$ip" 6379 "$CLIENT_S" "$WORK/$name.json" --prefix "$name" \
		--interval 0.005 --ready "$WORK/$name.ready" >"$WORK/$name.out" 2>&1 </dev/null &
	CLIENT_JOB=$!
	PIDS+=("$CLIENT_JOB")
	for i in $(seq 100); do
		[ -e "$WORK/$name.ready" ] && return 0
		kill -0 "$CLIENT_JOB" 2>/dev/null || break
		sleep 0.1
	done
	return 1
}
client_wait() { # NAME -> the client's JSON ({} if none)
	wait_pid "$CLIENT_JOB" $((CLIENT_S + 60)) || log "client did not finish in time"
	drop_pid "$CLIENT_JOB"
	rm -f "$WORK/client.pid"
	if [ -s "$WORK/$1.json" ]; then cat "$WORK/$1.json"; else echo '{}'; fi
}

# after_move IP RUNID CLIENTJSON -> {"same_run_id":..,"dbsize":..,"dbsize_want":..}
after_move() {
	local ip=$1 runid=$2 cj=$3 now n sets
	now=$(rcli c "$ip" INFO server | tr -d '\r' | sed -n 's/^run_id://p')
	n=$(rcli c "$ip" DBSIZE)
	sets=$($PY -c 'import json,sys; print(json.loads(sys.argv[1]).get("acked_sets") or 0)' "$cj")
	printf '{"same_run_id": %s, "dbsize": %s, "dbsize_want": %d}' \
		"$([ -n "$now" ] && [ "$now" = "$runid" ] && echo true || echo false)" "${n:-null}" \
		$((KEYS + 1 + sets))
}

# row METHOD RUN ORDER KEY=JSON... : one result line, appended to runs.jsonl
row() {
	$PY - "$@" <<'PY' >>"$WORK/runs.jsonl"
import json, sys
m, run, order = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = {"method": m, "run": run, "order": order}
for kv in sys.argv[4:]:
    k, v = kv.split("=", 1)
    try:
        r[k] = json.loads(v)
    except ValueError:
        r[k] = v
c = r.get("client") or {}
chk = r.get("check") or {}
r["ok"] = bool(r.get("migrated") and c.get("connected") and c.get("reset") is False
               and c.get("errors") is None and c.get("missing") == 0
               and chk.get("same_run_id") and chk.get("dbsize") == chk.get("dbsize_want"))
print(json.dumps(r))
PY
}

SEQ=0
next_ip() { SEQ=$((SEQ + 1)); IP="$PFX.$((50 + SEQ))"; }

run_voyager() { # METHOD RUN ORDER
	local m=$1 run=$2 order=$3 id ns mem rss runid out cj chk mode_args=(--memory "$MEMORY") t0 t1 mig=false
	case $m in no-prefetch) id="${LAB}p$run" ;; *) id="$LAB${m:0:1}$run" ;; esac
	next_ip
	[ "$m" = stop-copy ] && mode_args+=(--mode stop-copy)
	[ "$m" = no-hold ] && mode_args+=(--no-hold)
	[ "$m" = no-prefetch ] && mode_args+=(--no-prefetch)
	ns=$(vy_cli "$LAB" a net create "$id" --ip "$IP/24" --bridge vybr0) ||
		{ row "$m" "$run" "$order" error='"voyager net create failed"'; return 1; }
	read -r mem rss runid < <(start_redis a "$id" "$IP" "$ns") && [ -n "$runid" ] ||
		{ row "$m" "$run" "$order" error='"redis start/load failed"'; voy_clean "$id"; return 1; }
	log "run $run $m: $id at $IP, used_memory $((mem / 1048576)) MiB (rss $((rss / 1048576)) MiB)"
	client_start "$m$run" "$IP" || log "client did not start"
	sleep 2
	t0=$(now)
	out=$(lab_exec "$LAB" a timeout 300 "$VY_BUILD/voyager" --socket "$A/run/voyagerd.sock" \
		migrate "$id" --to "$IPB" "${mode_args[@]}" --json 2>"$WORK/migrate.err")
	t1=$(now)
	[ -n "$out" ] && [ "$(vy_json_get "$out" result 2>/dev/null)" = migrated ] && mig=true
	cj=$(client_wait "$m$run")
	chk=$(after_move "$IP" "$runid" "$cj")
	[ $mig = true ] || log "run $run $m: $out $(cat "$WORK/migrate.err") (see $A/voyagerd.log, $B/voyagerd.log)"
	$PY -c 'import json,sys; json.loads(sys.argv[1])' "$out" 2>/dev/null || out=$($PY -c 'import json,sys; print(json.dumps({"raw": sys.argv[1]}))' "$out")
	row "$m" "$run" "$order" id="$id" ip="$IP" used_memory="$mem" used_memory_rss="$rss" \
		migrated=$mig cli_wall_ms=$((t1 - t0)) report="$out" client="$cj" check="$chk" \
		where="{\"b\": \"$(ctr_status b "$id")\", \"a\": \"$(ctr_status a "$id")\"}"
	voy_clean "$id"
}
voy_clean() { # ID
	local id=$1 h
	for h in b a; do
		rt "$h" delete -f "$id" >/dev/null 2>&1
		vy_cli "$LAB" "$h" net delete "$id" >/dev/null 2>&1
	done
	rm -rf --one-file-system "$B/state/containers/$id" "$A/bundles/$id"
}

# The manual baseline's two halves, each one shell inside its host.
# a: lock, checkpoint, veth down, send the images.  Times in $W/a.times.
SRC_SH='
W=$1 RT=$2 ID=$3 NS=$4 HIF=$5 IPB=$6 PORT=$7 PY=$8 RULES=$9
t0=$(date +%s%3N)
printf "%s\n" "$RULES" | nsenter --net="$NS" nft -f - || exit 11
t_lock=$(date +%s%3N)
runc --root "$RT" checkpoint --tcp-established --image-path "$W/img" --work-path "$W/work" "$ID" \
	</dev/null >/dev/null 2>"$W/checkpoint.err" || exit 12
t_dump=$(date +%s%3N)
ip link set "$HIF" down || exit 13
tar -C "$W/img" -c . | "$PY" -c "
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
n = 0
while True:
    b = sys.stdin.buffer.read(1 << 20)
    if not b: break
    c.sendall(b); n += len(b)
c.close()
print(n)
" "$IPB" "$PORT" >"$W/sent" || exit 14
t_sent=$(date +%s%3N)
echo "$t0 $t_lock $t_dump $t_sent" >"$W/a.times"
'
# b: listen, receive, veth up, restore, unlock, announce.  Times in $W/b.times.
DST_SH='
W=$1 RT=$2 ID=$3 NS=$4 HIF=$5 IPB=$6 PORT=$7 PY=$8 IP=$9 MAC=${10} GARP=${11}
mkdir -p "$W/img" "$W/work"
"$PY" -c "
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
open(sys.argv[3], \"w\").close()
s.settimeout(300)
c, _ = s.accept()
while True:
    b = c.recv(1 << 20)
    if not b: break
    sys.stdout.buffer.write(b)
" "$IPB" "$PORT" "$W/.ready" | tar -x -C "$W/img" || exit 21
t_recv=$(date +%s%3N)
ip link set "$HIF" up || exit 22
runc --root "$RT" restore -d --tcp-established --image-path "$W/img" --work-path "$W/work" \
	--bundle "$W/bundle" "$ID" </dev/null >/dev/null 2>"$W/restore.err" || exit 23
t_rest=$(date +%s%3N)
nsenter --net="$NS" nft delete table inet vylock || exit 24
nsenter --net="$NS" "$PY" -c "$GARP" vyc0 "$IP" "$MAC" || exit 25
t_ann=$(date +%s%3N)
echo "$t_recv $t_rest $t_ann" >"$W/b.times"
'
run_manual() { # RUN ORDER
	local run=$1 order=$2 m=manual id mem rss runid cj chk mac hif wa wb nsa nsb job rc_a rc_b=1
	local mig=false port p i ta0 tlock tdump tsent trecv trest tann times='{}' bytes=0 t_prep
	id="${LAB}m$run"
	next_ip
	mac=$(printf '02:76:79:%02x:%02x:%02x' $((SEQ / 256)) $((SEQ % 256)) "$run")
	hif="vyh$SEQ"
	nsa="$A/vynetns/$id"
	nsb="$B/vynetns/$id"
	wa="$A/tmp/vyman-$id"
	wb="$B/tmp/vyman-$id"
	mkdir -p "$wa" "$wb"
	ns_make a "$nsa" "$IP/24" "$mac" "$hif" 0 ||
		{ row $m "$run" "$order" error='"netns on a failed"'; man_clean "$id"; return 1; }
	read -r mem rss runid < <(start_redis a "$id" "$IP" "$nsa") && [ -n "$runid" ] ||
		{ row $m "$run" "$order" error='"redis start/load failed"'; man_clean "$id"; return 1; }
	log "run $run $m: $id at $IP, used_memory $((mem / 1048576)) MiB (rss $((rss / 1048576)) MiB)"
	# Before the freeze: bundle to b, b's namespace (locked, veth down), listener.
	t_prep=$(now)
	cp -a "$A/bundles/$id" "$wb/bundle" &&
		"$BUNDLE_SH" set-cgroup "$wb/bundle" "$(lab_cgroup_parent "$LAB" b)" "$id" &&
		"$BUNDLE_SH" set-netns "$wb/bundle" "$nsb" ||
		{ row $m "$run" "$order" error='"bundle copy failed"'; man_clean "$id"; return 1; }
	ns_make b "$nsb" "$IP/24" "$mac" "$hif" 1 ||
		{ row $m "$run" "$order" error='"netns on b failed"'; man_clean "$id"; return 1; }
	port=$((7700 + SEQ))
	lab_exec "$LAB" b setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' vydst "$WORK/dst.pgid" \
		bash -c "$DST_SH" vydst "$wb" "$B/runtime/runc" "$id" "$nsb" "$hif" "$IPB" "$port" "$PY" \
		"$IP" "$mac" "$GARP_PY" </dev/null >"$WORK/dst.out" 2>&1 &
	job=$!
	PIDS+=("$job")
	for i in $(seq 100); do [ -e "$wb/.ready" ] && break; sleep 0.05; done
	[ -e "$wb/.ready" ] || log "run $run manual: listener on b did not start"
	t_prep=$(($(now) - t_prep))
	client_start "$m$run" "$IP" || log "client did not start"
	sleep 2
	lab_exec "$LAB" a timeout 300 bash -c "$SRC_SH" vysrc "$wa" "$A/runtime/runc" "$id" "$nsa" "$hif" "$IPB" "$port" \
		"$PY" "$LOCK_RULES" </dev/null >"$WORK/src.out" 2>&1
	rc_a=$?
	if [ $rc_a != 0 ]; then
		log "run $run manual: source side failed ($rc_a): $(cat "$WORK/src.out" "$wa/checkpoint.err" 2>/dev/null | tail -5)"
		p=$(cat "$WORK/dst.pgid" 2>/dev/null)
		[[ $p =~ ^[0-9]+$ ]] && [ "$p" -gt 1 ] && kill -- "-$p" 2>/dev/null
	fi
	if ! wait_pid "$job" 120; then
		log "run $run manual: target side did not finish"
		p=$(cat "$WORK/dst.pgid" 2>/dev/null)
		[[ $p =~ ^[0-9]+$ ]] && [ "$p" -gt 1 ] && kill -- "-$p" 2>/dev/null
	fi
	[ -s "$wb/b.times" ] && rc_b=0
	drop_pid "$job"
	rm -f "$WORK/dst.pgid"
	[ $rc_b = 0 ] || log "run $run manual: target side failed: $(cat "$WORK/dst.out" "$wb/restore.err" 2>/dev/null | tail -5)"
	cj=$(client_wait "$m$run")
	if [ -s "$wa/a.times" ] && [ -s "$wb/b.times" ]; then
		mig=true
		read -r ta0 tlock tdump tsent <"$wa/a.times"
		read -r trecv trest tann <"$wb/b.times"
		bytes=$(cat "$wa/sent" 2>/dev/null || echo 0)
		times=$(printf '{"downtime_ms": %d, "restore_returned_ms": %d, "phases_ms": {"lock": %d, "checkpoint": %d, "veth_down_and_copy": %d, "veth_up_and_restore": %d, "unlock_and_garp": %d}, "bytes": {"images_tar": %s}, "prepare_ms": %d}' \
			$((tann - ta0)) $((trest - ta0)) $((tlock - ta0)) $((tdump - tlock)) $((trecv - tdump)) \
			$((trest - trecv)) $((tann - trest)) "${bytes:-0}" "$t_prep")
	fi
	chk=$(after_move "$IP" "$runid" "$cj")
	row $m "$run" "$order" id="$id" ip="$IP" used_memory="$mem" used_memory_rss="$rss" \
		migrated=$mig report="$times" client="$cj" check="$chk" \
		where="{\"b\": \"$(ctr_status b "$id")\", \"a\": \"$(ctr_status a "$id")\"}"
	man_clean "$id"
}
man_clean() { # ID
	local id=$1
	rt b delete -f "$id" >/dev/null 2>&1
	rt a delete -f "$id" >/dev/null 2>&1
	ns_del b "$B/vynetns/$id"
	ns_del a "$A/vynetns/$id"
	rm -rf --one-file-system "$A/bundles/$id" "$A/tmp/vyman-$id" "$B/tmp/vyman-$id"
}

# ---- the runs ----
fail=0
: >"$WORK/runs.jsonl"
for ((r = 1; r <= RUNS; r++)); do
	order=()
	for m in "${ALL_METHODS[@]}"; do
		[[ ",$METHODS," == *",$m,"* ]] && order+=("$m")
	done
	if [ $((r % 2)) = 0 ]; then
		rev=()
		for ((k = ${#order[@]} - 1; k >= 0; k--)); do rev+=("${order[$k]}"); done
		order=("${rev[@]}")
	fi
	for ((k = 0; k < ${#order[@]}; k++)); do
		m=${order[$k]}
		before=$(wc -l <"$WORK/runs.jsonl")
		if [ "$m" = manual ]; then run_manual "$r" "$((k + 1))"; else run_voyager "$m" "$r" "$((k + 1))"; fi
		[ "$(wc -l <"$WORK/runs.jsonl")" -gt "$before" ] || row "$m" "$r" "$((k + 1))" error='"no result"'
		line=$(tail -n 1 "$WORK/runs.jsonl")
		$PY -c 'import json,sys
r = json.loads(sys.argv[1]); c = r.get("client") or {}; p = r.get("report") or {}
n = p.get("network") or {}
print("run %s %s: ok %s; max gap %s ms, reset %s, missing %s, errors %s; downtime %s ms (mode %s); hold %s, held %s, replayed %s" % (
  r["run"], r["method"], r["ok"], c.get("max_gap_ms"), c.get("reset"), c.get("missing"),
  c.get("errors"), p.get("downtime_ms"), p.get("mode", "-"), n.get("hold", "-"), n.get("held_packets", "-"),
  n.get("replayed", "-")))' "$line" | while read -r l; do log "$l"; done
		$PY -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["ok"] else 1)' "$line" || fail=1
	done
done

# ---- results ----
mkdir -p "$(dirname "$OUT")" || die "cannot make $(dirname "$OUT")"
$PY - "$WORK/runs.jsonl" "$OUT" "$DATA_MIB" "$RATE" "$RUNS" "$KEYS" "$VALUE_LEN" "$CLIENT_S" \
	"$WORK/bin" "$ROOT" "$BRIDGE_MAC" "$MEMORY" "$METHODS" <<'PY'
import hashlib, json, os, platform, statistics, subprocess, sys, time
src, out, data_mib, rate, runs, keys, vlen, client_s, bindir, root, brmac, memory, want = sys.argv[1:14]
rows = [json.loads(l) for l in open(src) if l.strip()]
methods = [m for m in ["default", "no-prefetch", "no-hold", "stop-copy", "manual"]
           if m in want.split(",")]

def ver(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=root).stdout.strip()
    except Exception:
        return "?"

def stats(v):
    v = [x for x in v if x is not None]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} if v else None

summary = {}
for m in methods:
    rs = [r for r in rows if r["method"] == m]
    mig = [r for r in rs if r.get("migrated")]
    s = {"runs": len(rs), "runs_ok": sum(1 for r in rs if r["ok"]), "runs_migrated": len(mig),
         "max_gap_ms": stats([(r.get("client") or {}).get("max_gap_ms") for r in mig]),
         "downtime_ms": stats([(r.get("report") or {}).get("downtime_ms") for r in mig]),
         "resets": sum(1 for r in rs if (r.get("client") or {}).get("reset")),
         "errors": sum(1 for r in rs if (r.get("client") or {}).get("errors")),
         "missing": sum((r.get("client") or {}).get("missing") or 0 for r in rs),
         "used_memory_mib": stats([round(r["used_memory"] / 1048576, 1) for r in rs if r.get("used_memory")]),
         "modes": sorted({(r.get("report") or {}).get("mode") for r in mig if (r.get("report") or {}).get("mode")})}
    summary[m] = s
for m in methods:
    summary[m]["restore_ms"] = stats([((r.get("report") or {}).get("phases_ms") or {}).get("restore")
                                      for r in rows if r["method"] == m and r.get("migrated")])
ratio = {}
base = summary.get("manual")
for m in methods:
    ratio[m] = {}
    for k in ("max_gap_ms", "downtime_ms"):
        a, b = summary[m][k], base[k] if base else None
        ratio[m][k] = round(a["median"] / b["median"], 2) if a and b and b["median"] else None
# what sending the mapped files before the freeze does, in the same run
prefetch_ratio = {}
if "default" in summary and "no-prefetch" in summary:
    for k in ("max_gap_ms", "downtime_ms", "restore_ms"):
        a, b = summary["default"][k], summary["no-prefetch"][k]
        prefetch_ratio[k] = round(a["median"] / b["median"], 2) if a and b and b["median"] else None

def sha(p):
    try:
        return hashlib.sha256(open(p, "rb").read()).hexdigest()[:16]
    except OSError:
        return "?"
doc = {
    "benchmark": "network",
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "params": {"data_mib": int(data_mib), "keys": int(keys), "value_bytes": int(vlen), "rate": rate,
               "runs": int(runs), "client_seconds": int(client_s), "client_interval_ms": 5,
               "links_shaped": ["a", "b", "c"], "bridge_mac": brmac, "memory": memory},
    "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
             "criu": "criu " + ((ver(["criu", "--version"]).splitlines() or ["?"])[0]).replace("Version: ", ""),
             "runc": (ver(["runc", "--version"]).splitlines() or ["?"])[0],
             "redis": ver(["redis-server", "--version"])},
    "voyager": {"git": ver(["git", "describe", "--always", "--dirty"]),
                "tree_changes": ver(["git", "status", "--short", "src"]).splitlines(),
                "voyager_sha256": sha(bindir + "/voyager"), "voyagerd_sha256": sha(bindir + "/voyagerd")},
    "timing": {
        "max_gap_ms": "redis_client.py on host c: longest time between two replies on its one connection",
        "voyager downtime_ms": "the report's: freeze -> target restored, unlocked and announced",
        "manual downtime_ms": "nft lock on a -> gratuitous ARP sent on b (restore_returned_ms: -> runc restore returned)"},
    "runs": rows, "summary": summary, "ratio_over_manual_median": ratio,
    "default_over_no_prefetch_median": prefetch_ratio,
}
with open(out + ".json", "w") as f:
    json.dump(doc, f, indent=2)

def f(x):
    return "-" if x is None else ("%d" % x if x == int(x) else "%.1f" % x)
def c(s, k, w):
    return "-" if not s[k] else f(s[k][w])
def rt(x):
    return "-" if x is None else "%.2f" % x
lines = ["| method | runs ok | max gap median | min | max | downtime median | min | max | resets | missing | gap / manual | downtime / manual |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for m in methods:
    s = summary[m]
    name = m + (" (%s)" % ",".join(s["modes"]) if m in ("default", "no-prefetch", "no-hold") and s["modes"] else "")
    lines.append("| %s | %d/%d | %s | %s | %s | %s | %s | %s | %d | %d | %s | %s |" % (
        name, s["runs_ok"], s["runs"], c(s, "max_gap_ms", "median"), c(s, "max_gap_ms", "min"),
        c(s, "max_gap_ms", "max"), c(s, "downtime_ms", "median"), c(s, "downtime_ms", "min"),
        c(s, "downtime_ms", "max"), s["resets"], s["missing"], rt(ratio[m]["max_gap_ms"]),
        rt(ratio[m]["downtime_ms"])))
table = "\n".join(lines)
um = [r["used_memory"] for r in rows if r.get("used_memory")]
md = ["# Network identity: the pause a client sees, Voyager vs manual runc", "",
      "%s; redis with %s keys of %s random bytes (used_memory %s MiB, median), links of a, b and c at %s "
      "(tbf), host bridges' MAC %s, %s runs per method, order alternating. One connection from host c, INCR + SET every 5 ms. "
      "Kernel %s, %s, %s; %s. Voyager %s. Times in ms." % (
          doc["date"], keys, vlen, f(round(statistics.median(um) / 1048576, 1)) if um else "?", rate, brmac, runs,
          doc["host"]["kernel"], doc["host"]["criu"], doc["host"]["runc"], doc["host"]["redis"].split(" sha")[0],
          doc["voyager"]["git"]), "",
      table, "",
      ] + (["default ÷ no-prefetch (medians): downtime %s, restore phase %s (%s / %s ms), max gap %s." % (
          rt(prefetch_ratio.get("downtime_ms")), rt(prefetch_ratio.get("restore_ms")),
          c(summary["default"], "restore_ms", "median"), c(summary["no-prefetch"], "restore_ms", "median"),
          rt(prefetch_ratio.get("max_gap_ms"))), ""] if prefetch_ratio else []) + [
      "- max gap: the client's longest wait between two replies (redis_client.py max_gap_ms).",
      "- downtime: Voyager's report (freeze -> restored, unlocked, announced on b); manual: nft lock on a -> "
      "gratuitous ARP sent on b.",
      "- default: `voyager migrate --json` with no --mode (the report's mode in brackets; packets that reach the "
      "container during the freeze held on a and replayed on b); no-prefetch: the same with `--no-prefetch` (no mapped "
      "file sent before the freeze); no-hold: the same with `--no-hold`; stop-copy: "
      "`--mode stop-copy`; manual: runc checkpoint/restore --tcp-established by hand, bundle copied before "
      "the freeze, CRIU images over TCP across the shaped link, nft lock, source veth down, gratuitous ARP.",
      "- Per run (JSON has phases, bytes, the client's counts):", ""]
for r in rows:
    cl, p = r.get("client") or {}, r.get("report") or {}
    ph = p.get("phases_ms") or {}
    nw = p.get("network") or {}
    pf = p.get("prefetch") or {}
    md.append("  - run %s %s (#%s): max gap %s, downtime %s, reset %s, missing %s, errors %s; used_memory %s MiB; "
              "hold %s (held %s, replayed %s); prefetch %s files, %s bytes; phases %s%s" % (
                  r["run"], r["method"], r.get("order"), cl.get("max_gap_ms"), p.get("downtime_ms"), cl.get("reset"),
                  cl.get("missing"), cl.get("errors"), f(round((r.get("used_memory") or 0) / 1048576, 1)),
                  nw.get("hold", "-"), nw.get("held_packets", "-"), nw.get("replayed", "-"),
                  pf.get("files", "-"), pf.get("bytes", "-"),
                  ", ".join("%s %s" % kv for kv in ph.items()) or "-",
                  "" if r["ok"] else "; NOT OK: %s" % json.dumps({k: r.get(k) for k in ("error", "check", "where", "migrated")})))
with open(out + ".md", "w") as fh:
    fh.write("\n".join(md) + "\n")
print(table)
PY
if [ $fail != 0 ]; then
	mkdir -p "$OUT.logs" && for h in a b; do
		cp "$(lab_dir "$LAB" "$h")/voyagerd.log" "$OUT.logs/voyagerd-$h.log" 2>/dev/null
	done
	log "agents' logs kept in $OUT.logs/"
fi
log "results: ${OUT}.json and .md"
[ $fail = 0 ] || { log "some runs did not migrate cleanly (reset, error, missing data or a failed step): see the JSON"; exit 1; }
