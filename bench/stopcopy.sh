#!/bin/bash
# Voyager (stop-copy and presync modes) against the manual runc stop-and-copy baseline.
#
#   bench/stopcopy.sh [--mem MIB] [--disk MIB] [--rate RATE] [--runs N] [--out PREFIX]
#       --mem    MiB of non-zero memory in the container (memhog)   256
#       --disk   MiB of random (incompressible) data in its rootfs  1024
#       --rate   link rate of both lab hosts (tc tbf)                1gbit
#       --runs   measurements per method                             3
#       --out    results prefix  (default bench/results/DATE/stopcopy for
#                the default sizes, .../stopcopy-mMEM-dDISK-RATE otherwise)
#   Quick check: bench/stopcopy.sh --mem 64 --disk 128 --runs 1
#
# One two-host lab (a, b), both links shaped to RATE, voyagerd on both.
# Each run makes a fresh busybox container on a running /sbin/memhog MEM
# with DISK MiB of random data in rootfs/data/blob, and moves it to b:
#   voyager  `voyager migrate ID --to B --json`: downtime_ms and total_ms
#            from its report (freeze -> running on b; request -> done)
#   manual   bench/manual-stopcopy.sh's msc_run: runc checkpoint, tar of
#            bundle + images over TCP across the shaped link, runc restore
#            on b; downtime = checkpoint start -> restore returned, total =
#            listener start -> restore returned
# The order alternates (run 1 voyager first, run 2 manual first, ...).
# After every restore, memhog re-checks its memory (SIGUSR1) and the
# checksum must match the one it wrote on a.  No timed assertions: the
# exit status is 0 when every run migrated and every checksum held.
# Writes PREFIX.json (every run and the summary) and PREFIX.md (the table).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MEM=256
DISK=1024
RATE=1gbit
RUNS=3
OUT=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--mem) MEM=${2:-}; shift 2 ;;
	--disk) DISK=${2:-}; shift 2 ;;
	--rate) RATE=${2:-}; shift 2 ;;
	--runs) RUNS=${2:-}; shift 2 ;;
	--out) OUT=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "stopcopy: unknown argument '$1'" >&2; usage ;;
	esac
done
for v in "$MEM" "$DISK" "$RUNS"; do
	[[ $v =~ ^[0-9]+$ ]] || { echo "stopcopy: --mem, --disk, --runs want numbers" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 50 ] || { echo "stopcopy: --runs 1..50" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "stopcopy: must run as root" >&2; exit 1; }
if [ -z "$OUT" ]; then
	OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/stopcopy"
	[ "$MEM/$DISK/$RATE" = 256/1024/1gbit ] || OUT="$OUT-m$MEM-d$DISK-$RATE"
fi

[ -x "$ROOT/build/voyager" ] && [ -x "$ROOT/build/voyagerd" ] ||
	{ echo "stopcopy: build first (meson setup build && meson compile -C build)" >&2; exit 1; }
. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"
. "$ROOT/bench/manual-stopcopy.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"

LAB="vys$$$(printf '%04x' $((RANDOM % 65536)))"
LAB=${LAB:0:13}
LAB_MADE=0
CUR_ID=""
WORK=$(mktemp -d /tmp/vystopcopy.XXXXXX) || exit 1

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "stopcopy: $*"; exit 1; }

teardown() {
	local rc=$? h
	trap - EXIT INT TERM
	[ -n "$MSC_RECV_PID" ] && kill "$MSC_RECV_PID" 2>/dev/null
	if [ "$LAB_MADE" = 1 ]; then
		for h in a b; do vy_agent_stop "$LAB" "$h"; done
		lab_delete_containers "$LAB" a b
		lab_down "$LAB" >&2 || log "lab_down $LAB reported leftovers"
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ROOT/tests/workloads/mkrootfs.sh" build busybox >/dev/null || die "mkrootfs failed"
log "lab $LAB: hosts a, b; links shaped to $RATE; container: memhog $MEM MiB, rootfs blob $DISK MiB, $RUNS runs"
LAB_MADE=1
lab_up "$LAB" a b >&2 || die "lab_up failed"
lab_shape "$LAB" a "$RATE" && lab_shape "$LAB" b "$RATE" || die "shape failed"
A=$(lab_dir "$LAB" a)
B=$(lab_dir "$LAB" b)
IPB=$(lab_ip "$LAB" b)
vy_key_init "$A/../../keys" || die "keygen failed"
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || die "voyagerd did not start"
mkdir -p "$A/runtime/runc" "$B/runtime/runc"
log "writing $DISK MiB of random data (once; each run copies it)"
head -c "$((DISK * 1024 * 1024))" /dev/urandom >"$A/tmp/vyblob" || die "random data failed"

# start_container ID: a fresh memhog container on a; prints the checksum
start_container() {
	local id=$1 b="$A/bundles/$1" i
	"$BUNDLE_SH" create "$b" busybox --id "$id" --cgroup-parent "$(lab_cgroup_parent "$LAB" a)" \
		-- /sbin/memhog "$MEM" >/dev/null || return 1
	cp "$A/tmp/vyblob" "$b/rootfs/data/blob" || return 1
	sync -f "$b/rootfs/data/blob"
	lab_exec "$LAB" a runc --root "$A/runtime/runc" run -d --bundle "$b" "$id" \
		</dev/null >/dev/null 2>&1 || return 1
	for i in $(seq 1200); do
		[ -s "$b/rootfs/data/memhog" ] && break
		sleep 0.1
	done
	[ -s "$b/rootfs/data/memhog" ] || return 1
	cut -d' ' -f2 "$b/rootfs/data/memhog"
}

# verify_on_b ID ROOTFS WANT: memhog re-checks its memory on b
verify_on_b() {
	local id=$1 rootfs=$2 want=$3 pid i got verdict
	pid=$(lab_exec "$LAB" b runc --root "$B/runtime/runc" state "$id" 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null)
	[ -n "$pid" ] || return 1
	rm -f "$rootfs/data/memhog.verify"
	kill -USR1 "$pid" || return 1
	for i in $(seq 300); do
		if [ -s "$rootfs/data/memhog.verify" ]; then
			read -r _ got verdict <"$rootfs/data/memhog.verify"
			[ "$got" = "$want" ] && [ "$verdict" = ok ]
			return
		fi
		sleep 0.1
	done
	return 1
}

# Each result line: {"method", "run", "order", "ok", "memory_intact", ...}
run_voyager() { # RUN ORDER MODE
	local run=$1 order=$2 mode=$3 id="${LAB}v$1${3:0:1}" want out rc ok=false intact=false
	want=$(start_container "$id") || { echo "{\"method\":\"voyager-$mode\",\"run\":$run,\"order\":$order,\"ok\":false,\"error\":\"container start\"}"; return 1; }
	log "run $run: voyager migrate --mode $mode $id"
	# Memory as the baselines move it (auto would pick post-copy: bench/postcopy.sh).
	out=$(vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode "$mode" --memory stop-copy --json)
	rc=$?
	[ $rc = 0 ] && [ "$(vy_json_get "$out" result)" = migrated ] && ok=true
	if [ $ok = true ] && verify_on_b "$id" "$B/state/containers/$id/bundle/rootfs" "$want"; then
		intact=true
	fi
	[ -n "$out" ] || out='{}'
	python3 -c 'import json,sys
r = json.loads(sys.argv[1])
print(json.dumps({"method": "voyager-" + sys.argv[6], "run": int(sys.argv[2]), "order": int(sys.argv[3]),
  "ok": sys.argv[4] == "true", "memory_intact": sys.argv[5] == "true",
  "downtime_ms": r.get("downtime_ms"), "total_ms": r.get("total_ms"),
  "bytes": r.get("bytes"), "phases_ms": r.get("phases_ms"), "result": r.get("result"),
  "error": r.get("error")}))' "$out" "$run" "$order" "$ok" "$intact" "$mode"
	[ $ok = false ] && log "run $run: voyager: $out (see $A/voyagerd.log, $B/voyagerd.log)"
	lab_exec "$LAB" b runc --root "$B/runtime/runc" delete -f "$id" >/dev/null 2>&1
	lab_exec "$LAB" a runc --root "$A/runtime/runc" delete -f "$id" >/dev/null 2>&1
	rm -rf "$B/state/containers/$id" "$A/bundles/$id"
	[ $ok = true ] && [ $intact = true ]
}

run_voyager_stopcopy() { run_voyager "$1" "$2" stop-copy; }
run_voyager_presync() { run_voyager "$1" "$2" presync; }

run_manual() { # RUN ORDER
	local run=$1 order=$2 id="${LAB}m$1" out rc
	start_container "$id" >/dev/null || { echo "{\"method\":\"manual\",\"run\":$run,\"order\":$order,\"ok\":false,\"error\":\"container start\"}"; return 1; }
	log "run $run: manual runc checkpoint / copy / restore of $id"
	out=$(msc_run "$LAB" a b "$id" "$A/bundles/$id")
	rc=$?
	[ -n "$out" ] || out='{}'
	python3 -c 'import json,sys
r = json.loads(sys.argv[1])
r.update({"method": "manual", "run": int(sys.argv[2]), "order": int(sys.argv[3]),
  "ok": "downtime_ms" in r, "memory_intact": r.get("memory_intact", False)})
print(json.dumps(r))' "$out" "$run" "$order"
	msc_clean "$LAB" a b "$id"
	return $rc
}

fail=0
: >"$WORK/runs.jsonl"
for ((r = 1; r <= RUNS; r++)); do
	# rotate the order of the three methods from run to run
	methods=(voyager_stopcopy voyager_presync manual)
	order=()
	for ((k = 0; k < 3; k++)); do order+=("${methods[$(((k + r - 1) % 3))]}"); done
	for ((k = 0; k < 3; k++)); do
		m=${order[$k]}
		line=$("run_$m" "$r" "$((k + 1))") || fail=1
		echo "$line" >>"$WORK/runs.jsonl"
		log "run $r: $m: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("downtime %s ms, total %s ms, memory intact: %s" % (r.get("downtime_ms"), r.get("total_ms"), r.get("memory_intact")))' "$line")"
	done
done

mkdir -p "$(dirname "$OUT")" || die "cannot make $(dirname "$OUT")"
python3 - "$WORK/runs.jsonl" "$OUT" "$MEM" "$DISK" "$RATE" "$RUNS" <<'PY'
import json, os, platform, statistics, subprocess, sys, time
src, out, mem, disk, rate, runs = sys.argv[1:7]
rows = [json.loads(l) for l in open(src) if l.strip()]

def ver(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except Exception:
        return "?"

summary = {}
METHODS = ("voyager-stop-copy", "voyager-presync", "manual")
for m in METHODS:
    ok = [r for r in rows if r["method"] == m and r.get("ok") and r.get("downtime_ms") is not None]
    s = {"runs_ok": len(ok), "runs": sum(1 for r in rows if r["method"] == m)}
    for k in ("downtime_ms", "total_ms"):
        v = [r[k] for r in ok]
        s[k] = {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None
    s["memory_intact_all"] = all(r.get("memory_intact") for r in rows if r["method"] == m)
    summary[m] = s
ratio = {}
for m in METHODS[:2]:
    for k in ("downtime_ms", "total_ms"):
        v, mm = summary[m][k], summary["manual"][k]
        ratio["%s/%s" % (m, k)] = round(v["median"] / mm["median"], 3) if v and mm and mm["median"] else None
doc = {
    "benchmark": "stopcopy",
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "params": {"mem_mib": int(mem), "disk_mib": int(disk), "rate": rate, "runs": int(runs)},
    "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
             "criu": "criu " + ver(["criu", "--version"]).replace("Version: ", ""), "runc": ver(["runc", "--version"])},
    "timing": {"voyager-*": "report: downtime_ms = freeze -> RESTORED from target; "
                          "total_ms = request -> done (preflight, commit and cleanup included)",
               "manual": "downtime_ms = runc checkpoint start -> runc restore returned; "
                         "total_ms = listener start -> runc restore returned"},
    "runs": rows, "summary": summary, "ratio_over_manual_median": ratio,
}
with open(out + ".json", "w") as f:
    json.dump(doc, f, indent=2)

def cell(s, k, f):
    return "-" if not s[k] else str(int(s[k][f])) if s[k][f] == int(s[k][f]) else "%.1f" % s[k][f]
lines = ["| method | runs ok | downtime median | min | max | total median | min | max | memory intact |",
         "|---|---|---|---|---|---|---|---|---|"]
for m in METHODS:
    s = summary[m]
    lines.append("| %s | %d/%d | %s | %s | %s | %s | %s | %s | %s |" % (
        m, s["runs_ok"], s["runs"], cell(s, "downtime_ms", "median"), cell(s, "downtime_ms", "min"),
        cell(s, "downtime_ms", "max"), cell(s, "total_ms", "median"), cell(s, "total_ms", "min"),
        cell(s, "total_ms", "max"), "yes" if s["memory_intact_all"] else "NO"))
fmt = lambda x: "-" if x is None else "%.2f" % x
lines.append("")
for m in METHODS[:2]:
    lines.append("%s / manual (medians): downtime %s, total %s" % (
        m, fmt(ratio["%s/downtime_ms" % m]), fmt(ratio["%s/total_ms" % m])))
table = "\n".join(lines)
md = ["# Voyager (stop-copy and presync) vs manual runc stop-and-copy", "",
      "%s; %s MiB memhog memory, %s MiB random rootfs data, link %s (tbf, both hosts), %s runs each, order alternating. "
      "Kernel %s, %s, %s. Times in ms." % (doc["date"], mem, disk, rate, runs, doc["host"]["kernel"],
                                           doc["host"]["criu"], doc["host"]["runc"]), "",
      table, "",
      "- voyager-stop-copy / voyager-presync: `voyager migrate --mode MODE --json`; downtime = freeze -> running on the target, total = whole request (presync copies the rootfs before the freeze).",
      "- manual: runc checkpoint, tar of bundle + images over TCP across the shaped link, runc restore; "
      "downtime = checkpoint start -> restore returned, total = listener start -> restore returned.",
      "- Per run (JSON has phases and bytes):", ""]
for r in rows:
    md.append("  - run %s %s (%s): downtime %s, total %s, memory intact %s%s" % (
        r["run"], r["method"], "position %s" % r.get("order"), r.get("downtime_ms"),
        r.get("total_ms"), r.get("memory_intact"), "" if r.get("ok") else ", FAILED: %s" % r.get("error")))
with open(out + ".md", "w") as f:
    f.write("\n".join(md) + "\n")
print(table)
PY
log "results: ${OUT#$ROOT/}.json and .md"
[ $fail = 0 ] || { log "some runs failed or their memory did not verify"; exit 1; }
