#!/bin/bash
# Manual post-copy (CRIU lazy pages) between two lab hosts, without Voyager:
# the groundwork for `voyager migrate --memory post-copy` (issue 5).
#
#   bench/manual-postcopy.sh [--tunnel] [--reps N] [--out DIR] [RATE] [MIB...]
#     RATE     tc tbf rate of both hosts' links (default 1gbit)
#     MIB...   container memory sizes (memhog, non-zero pages; default 64 1024)
#     --reps   repetitions per size (default 3)
#     --tunnel the page traffic goes through Voyager's TLS tunnel
#              (src/lib/tunnel.c, driven by build-pc/vytunnel or $VYTUNNEL)
#              instead of a plain TCP port; results are then named
#              manual-postcopy-tunnel.{md,json}
#     --out    result directory (default bench/results/<UTC date>)
#
# One run, by hand, on host a (source) and host b (target):
#   before the freeze  the bundle is copied to b (as Voyager's presync does;
#                      memhog has written its checksum), cgroupsPath
#                      rewritten for b; in tunnel mode both tunnel ends start
#   T0                 runc pause (freeze)
#                      runc checkpoint --leave-running --lazy-pages
#                        --page-server ADDR:PORT --status-fd 3 (background)
#   T_ready            CRIU wrote its status byte: images are complete
#                      (without pages) and the page server listens
#                      the image directory goes to b by tar over TCP across
#                      the shaped link
#                      on b: criu lazy-pages --page-server --address A
#                        --port P --images-dir IMG --work-dir WORK, then
#                      runc restore -d --lazy-pages --image-path IMG
#                        --work-path WORK (same WORK: lazy-pages.socket)
#   T1                 runc restore returned: the container runs on b
#   T2                 the lazy-pages daemon exited: every page is on b
# downtime_ms = T1 - T0, all_pages_ms = T2 - T0, after_running_ms = T2 - T1.
# Then: memhog re-checks its memory on b (SIGUSR1), the source's checkpoint
# must have exited 0 and the source container must be "paused" again.
#
# Findings (CRIU 4.2.1, runc 1.1.15, crun 1.21, kernel 6.18; checked here):
# - Options.  Source: `runc checkpoint --lazy-pages --page-server ADDR:PORT
#   --status-fd FD` (plus --leave-running, below).  --status-fd is what
#   tells you when to ship the images: CRIU writes one \0 to it once the
#   images are written and its page server listens.  Target: the daemon
#   `criu lazy-pages --page-server --address SRC --port PORT --images-dir
#   IMG --work-dir W` must be started first; `runc restore --lazy-pages
#   --work-path W` finds it through W/lazy-pages.socket, so both must name
#   the same work directory.  Without fs.pipe-max-size >= 4 MiB (no
#   CAP_SYS_RESOURCE here) the source fails at the first page request
#   ("page-pipe: splice: -1: Bad file descriptor"); this script raises it to
#   16 MiB and puts the old value back on exit.
# - The page server listens on 0.0.0.0:PORT, not on ADDR: in lazy mode CRIU
#   takes only the port from runc's RPC request.  It is unauthenticated and
#   serves the container's memory to whoever connects first.  A CRIU config
#   file with "address 127.0.0.1", named by the annotation org.criu.config
#   in config.json *when the container is created* (runc reads it from its
#   state, and falls back to /etc/criu/runc.conf), makes it listen on
#   127.0.0.1 only; --tunnel mode does that.
# - Paused + --leave-running + --lazy-pages works.  After `runc pause` the
#   dump seizes the tasks with ptrace and *thaws the freezer cgroup*: while
#   pages are served the tasks are stopped by ptrace only, and `runc state`
#   says "running".  When the page server's session ends CRIU puts the
#   cgroup back to FROZEN ("paused") and exits 0: rollback is still a thaw.
# - The session "ends successfully" on ANY clean EOF from the client, with
#   or without pages sent.  So `runc checkpoint` exiting 0 says nothing
#   about whether the target got its memory.  Without --leave-running the
#   source's tasks are killed at that point: a target whose lazy-pages
#   daemon dies mid-transfer would leave the container nowhere.  Always
#   dump with --leave-running.
# - Target never connects: the source waits (no timeout; seen for minutes)
#   with the tasks ptrace-stopped.  Ending it cleanly: connect to the page
#   server from the source host and close (the session is "over"), the
#   checkpoint exits 0, the container is "paused", `runc resume` runs it
#   again with its memory intact.
# - Target's restore fails before any page is requested: its lazy-pages
#   daemon exits ("uffd: PID recv: short read") without connecting, so the
#   source is in the case above; connect-and-close, then `runc resume`.
# - Killing the source's CRIU (SIGKILL) instead: ptrace lets go, the
#   freezer is already thawed, so the source container RUNS at once.  Never
#   do that once the target runs: both copies would run.
# - Page server dies mid-transfer: the target's lazy-pages daemon exits 1
#   ("Error reading data from page server: Connection reset by peer"), but
#   the restored container stays "running" with the pages it had; the rest
#   are gone (its userfaultfd is closed, later faults are served by the
#   kernel as fresh pages).  memhog died on its next pass over its memory
#   (runc state "stopped").  The container is exposed: only the source's
#   frozen copy is whole.
# - Target's lazy-pages daemon killed mid-transfer (SIGKILL): the source
#   logs "Lazy pages transfer FAILED", `runc checkpoint` exits 1 and the
#   source container is "paused" again, memory intact (thawed, memhog's
#   check passed).  The target's container is the exposed one, as above.
#   So neither exit status alone proves completeness: the target's
#   lazy-pages exit 0 is the one witness that every page arrived.
# - crun 1.21 has no lazy pages: `crun checkpoint --lazy-pages` and
#   `crun restore --lazy-pages` fail with "checkpoint: unrecognized option
#   '--lazy-pages'" (also --page-server; no --status-fd), exit 64; its
#   libcriu calls include neither criu_set_lazy_pages nor a page server nor
#   a config file, and it knows no org.criu.config.  CRIU still reads
#   $CRIU_CONFIG_FILE in RPC mode: "lazy-pages / port P [/ address A]" for
#   `crun checkpoint --leave-running` and "lazy-pages" for `crun restore`
#   did a lazy migration here (memory intact, the paused source paused
#   again), but there is no status fd (poll the port), the restored
#   container lands in the root cgroup (crun 1.21), and in one of three
#   tries the source's process died during the dump ("Unable to detach
#   from PID: No such process") for no reason found.  Not a basis for
#   Voyager; post-copy needs runc.
# - --tunnel: CRIU's page traffic through src/lib/tunnel.c works with real
#   CRIU (both tunnel ends exit 0, every page arrives, memory intact); the
#   page server listens on 127.0.0.1 only.  Measured cost on this 2-core
#   machine: downtime about the same, all-pages about 12-16% longer (TLS and
#   two relays on the same two cores).
set -uo pipefail
MPC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$MPC_ROOT/lab/lab.sh"
BUNDLE_SH="$MPC_ROOT/tests/workloads/bundle.sh"
PY=/usr/bin/python3

TUNNEL=0
REPS=3
OUT=""
RATE=1gbit
SIZES=()
while [ $# -gt 0 ]; do
	case $1 in
	--tunnel) TUNNEL=1; shift ;;
	--reps) REPS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -uo/s/^# \{0,1\}//p' "$0" | sed '$d'; exit 0 ;;
	*bit) RATE=$1; shift ;;
	[0-9]*) SIZES+=("$1"); shift ;;
	*) echo "manual-postcopy: bad argument '$1'" >&2; exit 2 ;;
	esac
done
[ ${#SIZES[@]} -gt 0 ] || SIZES=(64 1024)
[ -n "$OUT" ] || OUT="$MPC_ROOT/bench/results/$(date -u +%Y-%m-%d)"
NAME=manual-postcopy
[ $TUNNEL = 1 ] && NAME=manual-postcopy-tunnel
VYTUNNEL=${VYTUNNEL:-$MPC_ROOT/build-pc/vytunnel}

LAB="vypc$$"
LAB=${LAB:0:13}
WORK=$(mktemp -d /tmp/vypc-bench.XXXXXX)
PIPE_OLD=""
PIPE_SET=""
BG_PIDS=()

_now() { date +%s%3N; }
say() { echo "manual-postcopy: $*" >&2; }
die() { say "$*"; exit 1; }

cleanup() {
	local rc=$? p h
	trap - EXIT INT TERM
	for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	if [ -d "$LAB_VAR_BASE/$LAB" ]; then
		for h in A B; do
			for p in $(ls "$(lab_dir "$LAB" $h)/runtime/runc" 2>/dev/null); do
				lab_exec "$LAB" $h runc --root "$(lab_dir "$LAB" $h)/runtime/runc" \
					delete -f "$p" >/dev/null 2>&1
			done
		done
		lab_down "$LAB" >&2
	fi
	# Put the sysctl back, unless someone changed it after us.
	if [ -n "$PIPE_OLD" ] && [ "$(sysctl -n fs.pipe-max-size)" = "$PIPE_SET" ]; then
		sysctl -qw fs.pipe-max-size="$PIPE_OLD"
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# CRIU's lazy page server needs a 4 MiB pipe (see the header).
pipe_size_up() {
	local cur
	cur=$(sysctl -n fs.pipe-max-size)
	[ "$cur" -ge 16777216 ] && return 0
	[ -n "$PIPE_OLD" ] || PIPE_OLD=$cur
	PIPE_SET=16777216
	sysctl -qw fs.pipe-max-size=$PIPE_SET || die "cannot raise fs.pipe-max-size"
}

# Receive one tar stream on HOST at ADDR:PORT into DIR; "bytes" in DIR.rx.
# The ready file appears once it listens.
receiver() {
	local host=$1 addr=$2 port=$3 dir=$4
	lab_exec "$LAB" "$host" $PY -c '
import socket, subprocess, sys
addr, port, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(1); s.settimeout(120)
open(dest + ".ready", "w").close()
c, _ = s.accept(); c.settimeout(120)
tar = subprocess.Popen(["tar", "-x", "-C", dest], stdin=subprocess.PIPE)
n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b); tar.stdin.write(b)
tar.stdin.close()
open(dest + ".rx", "w").write(str(n))
sys.exit(tar.wait())
' "$addr" "$port" "$dir" </dev/null >&2
}

# Send DIR (tar) from HOST to ADDR:PORT.
sender() {
	local host=$1 dir=$2 addr=$3 port=$4
	lab_exec "$LAB" "$host" sh -c 'tar -C "$1" -c . | "$2" -c "
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
while True:
    b = sys.stdin.buffer.read(1 << 20)
    if not b: break
    c.sendall(b)
c.close()
" "$3" "$4"' sh "$dir" "$PY" "$addr" "$port"
}

# Run CMD... on HOST in the background; "RC END_MS" lands in FILE when it
# ends.  The PID (of the wrapper) is added to BG_PIDS.
bg_timed() {
	local host=$1 file=$2
	shift 2
	(
		lab_exec "$LAB" "$host" "$@" </dev/null >"$file.out" 2>&1
		echo "$? $(_now)" >"$file"
	) &
	BG_PIDS+=($!)
}

wait_file() { # FILE SECONDS [TEST]: wait for test TEST (default -s) on FILE
	local f=$1 n=$(($2 * 100)) t=${3:--s} i
	for ((i = 0; i < n; i++)); do
		test "$t" "$f" && return 0
		sleep 0.01
	done
	return 1
}

ctr_status() { # HOST ID
	lab_exec "$LAB" "$1" runc --root "$(lab_dir "$LAB" "$1")/runtime/runc" state "$2" 2>/dev/null |
		$PY -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], d["pid"])' 2>/dev/null ||
		echo "absent 0"
}

# Start memhog SIZE as container ID on A and copy its bundle to B.
prepare() {
	local id=$1 size=$2 bundle="$A/bundles/$1"
	"$BUNDLE_SH" create "$bundle" busybox --cgroup-parent "$(lab_cgroup_parent "$LAB" A)" \
		--id "$id" /sbin/memhog "$size" >&2 || return 1
	if [ $TUNNEL = 1 ]; then
		# Keep the page server on the loopback (see the header).
		echo "address 127.0.0.1" >"$A/tmp/$id.criu.conf"
		$PY - "$bundle/config.json" "$A/tmp/$id.criu.conf" <<'PY' || return 1
import json, sys
c = json.load(open(sys.argv[1]))
c.setdefault("annotations", {})["org.criu.config"] = sys.argv[2]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
	fi
	lab_exec "$LAB" A runc --root "$A/runtime/runc" run -d --bundle "$bundle" "$id" \
		</dev/null >/dev/null 2>&1 || { say "runc run $id failed"; return 1; }
	wait_file "$bundle/rootfs/data/memhog" 600 || { say "memhog $size did not start"; return 1; }
	cp -a "$bundle" "$B/bundles/$id" || return 1
	"$BUNDLE_SH" set-cgroup "$B/bundles/$id" "$(lab_cgroup_parent "$LAB" B)" "$id"
}

# Ask memhog in ID on HOST to re-check its memory; prints ok, BAD or none.
verify_memory() {
	local host=$1 id=$2 want=$3 dir st pid got verdict
	dir="$(lab_dir "$LAB" "$host")/bundles/$id/rootfs/data"
	rm -f "$dir/memhog.verify"
	read -r st pid < <(ctr_status "$host" "$id")
	[ "$st" = running ] || { echo "none($st)"; return; }
	kill -USR1 "$pid"
	if wait_file "$dir/memhog.verify" 120; then
		read -r _ got verdict <"$dir/memhog.verify"
		[ "$got" = "$want" ] && [ "$verdict" = ok ] && { echo ok; return; }
		echo BAD
	else
		echo "none($(ctr_status "$host" "$id" | cut -d' ' -f1))"
	fi
}

# One migration of a fresh memhog SIZE container; prints one JSON object.
mpc_run() {
	local size=$1 rep=$2 idx=$3 id="vy${1}r$2"
	local ps_port=$((27000 + idx * 4)) rx_port=$((27001 + idx * 4))
	local tun_port=$((27002 + idx * 4)) loc_port=$((27003 + idx * 4))
	local wa="$A/tmp/$id" wb="$B/tmp/$id" want lp_addr lp_port
	local t0 t_ready t_shipped t1 t2 lp_rc ck_rc t_ck src_state ok
	local tun_a="" tun_b="" tun_note=""
	mkdir -p "$wa/img" "$wa/work" "$wb/img" "$wb/work" || return 1
	prepare "$id" "$size" || return 1
	want=$(cut -d' ' -f2 "$A/bundles/$id/rootfs/data/memhog")

	lp_addr=$IPA lp_port=$ps_port
	if [ $TUNNEL = 1 ]; then
		# Source end: TLS listener on a's address, relays to the page server
		# on a's loopback.  Target end: listens on b's loopback for
		# criu lazy-pages, opens the channels to a.
		bg_timed A "$wa/tunnel" "$VYTUNNEL" source --key "$WORK/key" \
			--listen "$IPA:$tun_port" --connect "127.0.0.1:$ps_port" --timeout 120
		bg_timed B "$wb/tunnel" "$VYTUNNEL" target --key "$WORK/key" \
			--listen "127.0.0.1:$loc_port" --source "$IPA:$tun_port" --timeout 120
		lp_addr=127.0.0.1 lp_port=$loc_port
		sleep 0.3
	fi
	receiver B "$IPB" "$rx_port" "$wb/img" &
	local rx_pid=$!
	BG_PIDS+=($rx_pid)
	wait_file "$wb/img.ready" 10 -e || { say "receiver did not start"; return 1; }

	# ---- freeze ----
	t0=$(_now)
	lab_exec "$LAB" A runc --root "$A/runtime/runc" pause "$id" || { say "pause failed"; return 1; }
	(
		lab_exec "$LAB" A runc --root "$A/runtime/runc" checkpoint --image-path "$wa/img" \
			--work-path "$wa/work" --leave-running --lazy-pages \
			--page-server "$IPA:$ps_port" --status-fd 3 "$id" \
			3>"$wa/status" </dev/null >"$wa/ckpt.out" 2>&1
		echo "$? $(_now)" >"$wa/ckpt"
	) &
	BG_PIDS+=($!)
	wait_file "$wa/status" 120 || { say "no status byte (see $wa/work/dump.log)"; return 1; }
	t_ready=$(_now)
	# Where the page server listens (in the background: not downtime).
	lab_exec "$LAB" A ss -Hltn "sport = :$ps_port" </dev/null 2>/dev/null |
		awk '{print $4}' >"$wa/listen" &
	sender A "$wa/img" "$IPB" "$rx_port" || { say "send failed"; return 1; }
	wait "$rx_pid" || { say "receive failed"; return 1; }
	t_shipped=$(_now)
	bg_timed B "$wb/lazy" criu lazy-pages --page-server --address "$lp_addr" --port "$lp_port" \
		--images-dir "$wb/img" --work-dir "$wb/work" -v4 -o lazy.log
	wait_file "$wb/work/lazy-pages.socket" 10 -S || { say "lazy-pages did not start"; return 1; }
	lab_exec "$LAB" B runc --root "$B/runtime/runc" restore -d --lazy-pages --image-path "$wb/img" \
		--work-path "$wb/work" --bundle "$B/bundles/$id" "$id" </dev/null >"$wb/restore.out" 2>&1 ||
		{ say "restore failed: $(tail -2 "$wb/restore.out")"; return 1; }
	t1=$(_now)
	# ---- running on b; pages keep coming ----
	wait_file "$wb/lazy" $((size / 20 + 120)) || { say "lazy-pages did not end"; return 1; }
	read -r lp_rc t2 <"$wb/lazy"
	wait_file "$wa/ckpt" 60 || { say "checkpoint did not end"; return 1; }
	read -r ck_rc t_ck <"$wa/ckpt"
	src_state=$(ctr_status A "$id" | cut -d' ' -f1)
	if [ $TUNNEL = 1 ]; then
		wait_file "$wa/tunnel" 30 && wait_file "$wb/tunnel" 30
		tun_a=$(cat "$wa/tunnel" 2>/dev/null | cut -d' ' -f1)
		tun_b=$(cat "$wb/tunnel" 2>/dev/null | cut -d' ' -f1)
		tun_note=$(tail -1 "$wb/tunnel.out" 2>/dev/null | tr -d '"\\')
	fi
	ok=$(verify_memory B "$id" "$want")
	$PY - <<PY
import json
print(json.dumps({"mem_mib": $size, "rep": $rep, "tunnel": bool($TUNNEL),
  "downtime_ms": $t1 - $t0, "dump_ms": $t_ready - $t0, "ship_ms": $t_shipped - $t_ready,
  "restore_ms": $t1 - $t_shipped, "all_pages_ms": $t2 - $t0, "after_running_ms": $t2 - $t1,
  "image_bytes": int(open("$wb/img.rx").read()), "lazy_pages_rc": $lp_rc,
  "checkpoint_rc": $ck_rc, "checkpoint_end_after_t2_ms": $t_ck - $t2,
  "source_state_after": "$src_state", "memory": "$ok",
  "page_server_listen": "$(head -1 "$wa/listen" 2>/dev/null)",
  "tunnel_rc": ["$tun_a", "$tun_b"] if $TUNNEL else None, "tunnel_target": "$tun_note" or None,
  "ok": "$ok" == "ok" and $lp_rc == 0 and $ck_rc == 0 and "$src_state" == "paused"}))
PY
}

mpc_clean() { # ID
	local h d
	for h in A B; do
		d=$(lab_dir "$LAB" $h)
		lab_exec "$LAB" $h runc --root "$d/runtime/runc" delete -f "$1" >/dev/null 2>&1
		rm -rf "$d/bundles/$1" "$d/tmp/$1" "$d/tmp/$1".*
	done
}

# ---- main ----
[ "$(id -u)" = 0 ] || die "must run as root"
command -v criu >/dev/null && command -v runc >/dev/null || die "needs criu and runc"
if [ $TUNNEL = 1 ]; then
	[ -x "$VYTUNNEL" ] || die "no $VYTUNNEL (meson setup build-pc && meson compile -C build-pc)"
	(umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/key" && echo >>"$WORK/key")
fi
for s in "${SIZES[@]}"; do
	# Source and target copies coexist until the run ends, plus slack.
	need=$((s * 2 + 2048))
	avail=$(($(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 1024))
	[ "$avail" -ge "$need" ] || die "$s MiB needs about $need MiB of memory, $avail available"
done
pipe_size_up
"$MPC_ROOT/tests/workloads/mkrootfs.sh" build busybox >/dev/null || die "mkrootfs failed"
lab_up "$LAB" A B >&2 || die "lab_up failed"
lab_shape "$LAB" A "$RATE" && lab_shape "$LAB" B "$RATE" || die "shape failed"
A=$(lab_dir "$LAB" A)
B=$(lab_dir "$LAB" B)
IPA=$(lab_ip "$LAB" A)
IPB=$(lab_ip "$LAB" B)
mkdir -p "$A/runtime/runc" "$B/runtime/runc"

: >"$WORK/runs.jsonl"
idx=0
for s in "${SIZES[@]}"; do
	for ((r = 1; r <= REPS; r++)); do
		idx=$((idx + 1))
		pipe_size_up
		say "run $idx: $s MiB, repetition $r"
		if mpc_run "$s" "$r" "$idx" >"$WORK/run.json"; then
			cat "$WORK/run.json" >>"$WORK/runs.jsonl"
		else
			echo "{\"mem_mib\": $s, \"rep\": $r, \"tunnel\": $([ $TUNNEL = 1 ] && echo true || echo false), \"ok\": false, \"error\": \"harness step failed (see stderr)\"}" >>"$WORK/runs.jsonl"
		fi
		tail -1 "$WORK/runs.jsonl" >&2
		mpc_clean "vy${s}r$r"
	done
done

mkdir -p "$OUT" || die "cannot make $OUT"
$PY - "$WORK/runs.jsonl" "$OUT/$NAME" "$RATE" "$TUNNEL" "$(uname -r)" "$(criu --version | head -1)" \
	"$(runc --version | head -1)" <<'PY'
import json, statistics, sys, time
runs_path, out, rate, tunnel, kernel, criu, runc = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_path) if l.strip()]
sizes = sorted({r["mem_mib"] for r in runs})
keys = ["downtime_ms", "all_pages_ms", "after_running_ms", "dump_ms", "ship_ms", "restore_ms"]
summary = []
for s in sizes:
    rs = [r for r in runs if r["mem_mib"] == s]
    good = [r for r in rs if r.get("ok")]
    row = {"mem_mib": s, "runs": len(rs), "ok": len(good)}
    for k in keys:
        v = [r[k] for r in good if k in r]
        row[k] = {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None
    summary.append(row)
date = time.strftime("%Y-%m-%dT%H:%M:%S%z")
doc = {"benchmark": "manual-postcopy" + ("-tunnel" if tunnel == "1" else ""), "date": date,
       "params": {"rate": rate, "sizes_mib": sizes, "tunnel": tunnel == "1"},
       "host": {"kernel": kernel, "criu": criu, "runc": runc},
       "timing": {"downtime_ms": "runc pause -> runc restore --lazy-pages returned on b",
                  "all_pages_ms": "runc pause -> criu lazy-pages exited on b (every page there)",
                  "after_running_ms": "restore returned -> lazy-pages exited",
                  "dump_ms": "pause -> CRIU's status byte (images without pages written)",
                  "ship_ms": "images tar over TCP across the shaped link",
                  "restore_ms": "images received -> restore returned (lazy-pages started in between)"},
       "summary": summary, "runs": runs}
json.dump(doc, open(out + ".json", "w"), indent=2)
def cell(x):
    return "-" if x is None else "%d | %d | %d" % (x["median"], x["min"], x["max"])
lines = ["# Manual post-copy (CRIU lazy pages)%s" % (" through the Voyager TLS tunnel" if tunnel == "1" else ""), "",
         "%s; link %s (tbf, both hosts); %s, %s, kernel %s. Times in ms (median | min | max)." % (date, rate, criu, runc, kernel), "",
         "| MiB | ok | downtime med | min | max | all pages med | min | max | after running med | min | max |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for row in summary:
    lines.append("| %d | %d/%d | %s | %s | %s |" % (row["mem_mib"], row["ok"], row["runs"], cell(row["downtime_ms"]),
                 cell(row["all_pages_ms"]), cell(row["after_running_ms"])))
lines += ["", "Phases of the downtime (median ms): " + "; ".join(
    "%d MiB: dump %s, ship %s, restore %s" % (r["mem_mib"], *[("%d" % r[k]["median"]) if r[k] else "-" for k in ("dump_ms", "ship_ms", "restore_ms")])
    for r in summary), "",
          "- downtime: runc pause on a -> runc restore --lazy-pages returned on b (bundle copied before the freeze).",
          "- all pages: runc pause -> the target's criu lazy-pages daemon exited 0.",
          "- A run is ok when memhog's checksum matches on b, lazy-pages and the source's checkpoint exited 0, and the source container is paused again.",
          "", "Per run:", ""]
for r in runs:
    lines.append("- %d MiB #%d: %s" % (r["mem_mib"], r["rep"], "ok" if r.get("ok") else "FAILED") +
                 ("" if "downtime_ms" not in r else ", downtime %d, all pages %d, memory %s, source after: %s, image bytes %d, page server on %s" %
                  (r["downtime_ms"], r["all_pages_ms"], r["memory"], r["source_state_after"], r["image_bytes"], r.get("page_server_listen") or "?")) +
                 (", " + r["tunnel_target"] if r.get("tunnel_target") else "") +
                 (", " + r["error"] if "error" in r else ""))
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines[:6 + len(summary)]))
PY
