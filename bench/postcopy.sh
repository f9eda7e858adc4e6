#!/bin/bash
# Post-copy downtime against memory size: Voyager stop-copy, Voyager
# post-copy and the hand-driven post-copy (bench/manual-postcopy.sh), in
# one run, on links shaped to RATE.
#
#   bench/postcopy.sh [--sizes "64 1024 4096"] [--rate 1gbit] [--reps N]
#                     [--methods LIST] [--mode MODE] [--out PREFIX]
#       --sizes    memhog sizes in MiB                     "64 1024 4096"
#       --rate     tc tbf rate of both lab hosts' links    1gbit
#       --reps     runs per method and size                1
#       --methods  comma-separated subset of stop-copy,post-copy,manual,
#                  criu (all by default; ratios need manual)
#       --mode     voyager migrate --mode for the rootfs: jit (Voyager's
#                  default), presync or stop-copy            jit
#                  (presync rebuilds the rootfs tree on the target at
#                  the freeze: about 50 ms more for busybox here)
#       --out      results prefix (default bench/results/DATE/postcopy)
#   Quick check: bench/postcopy.sh --sizes 64 --reps 1
#   An A/B of an agent setting, post-copy only: run it twice with
#   --methods post-copy, the setting in the environment of one (voyagerd
#   inherits it), e.g. VOYAGER_NO_CPU_LATENCY=1.
#
# 1. manual: bench/manual-postcopy.sh RATE SIZES --reps N in its own lab:
#    runc pause, runc checkpoint --lazy-pages (plain TCP page server), the
#    images by tar, criu lazy-pages + runc restore --lazy-pages on b;
#    downtime = pause -> restore returned (bundle copied before the freeze).
# 2. criu: bench/criu-lazy-dump.sh --sizes SIZES --reps N: CRIU's own lazy
#    dump of a plain memhog process, no runtime (--no-bound when
#    VOYAGER_NO_CPU_LATENCY=1, as voyagerd then holds none).  Its growth from
#    the smallest to the largest size, added to Voyager's post-copy downtime
#    at the smallest, gives the lowest ratio any post-copy through this CRIU
#    could reach with every cost of its own constant ("CRIU floor").
# 3. voyager: one lab (a, b), voyagerd from build/ on both, links shaped to
#    RATE; for each size a fresh memhog container moved with
#    `voyager migrate --mode MODE --memory stop-copy` and another with
#    `--memory post-copy`; downtime_ms, phases_ms and post_copy.* from the
#    report; memhog re-checks its checksum on b after every run.
# Ratios are medians over the manual baseline of the same run; the goals
# (issue 5): post-copy 4096 / 64 MiB <= 1.2, and post-copy no slower than
# manual at every size.  No timed assertion: exit 0 when every run
# migrated and every checksum held.  Writes PREFIX.json and PREFIX.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES="64 1024 4096"
RATE=1gbit
REPS=1
OUT=""
METHODS=stop-copy,post-copy,manual,criu
MODE=jit
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--sizes) SIZES=${2:-}; shift 2 ;;
	--rate) RATE=${2:-}; shift 2 ;;
	--reps) REPS=${2:-}; shift 2 ;;
	--out) OUT=${2:-}; shift 2 ;;
	--methods) METHODS=${2:-}; shift 2 ;;
	--mode) MODE=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "postcopy: unknown argument '$1'" >&2; usage ;;
	esac
done
for v in $SIZES $REPS; do
	[[ $v =~ ^[0-9]+$ ]] || { echo "postcopy: --sizes and --reps want numbers" >&2; exit 2; }
done
for m in ${METHODS//,/ }; do
	case $m in stop-copy | post-copy | manual | criu) ;; *) echo "postcopy: unknown method '$m'" >&2; exit 2 ;; esac
done
case $MODE in jit | presync | stop-copy) ;; *) echo "postcopy: --mode jit, presync or stop-copy" >&2; exit 2 ;; esac
has_method() { [[ ",$METHODS," == *",$1,"* ]]; }
[ "$(id -u)" = 0 ] || { echo "postcopy: must run as root" >&2; exit 1; }
[ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/postcopy"
[ -x "$ROOT/build/voyager" ] && [ -x "$ROOT/build/voyagerd" ] ||
	{ echo "postcopy: build first (meson setup build && meson compile -C build)" >&2; exit 1; }
for s in $SIZES; do
	need=$((s * 2 + 2048))
	avail=$(($(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 1024))
	[ "$avail" -ge "$need" ] || { echo "postcopy: $s MiB needs about $need MiB of memory, $avail available" >&2; exit 1; }
done

VY_BUILD=$ROOT/build
. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"
LAB="vyq$$$(printf '%04x' $((RANDOM % 65536)))"
LAB=${LAB:0:13}
LAB_MADE=0
WORK=$(mktemp -d /tmp/vypostcopy.XXXXXX) || exit 1
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "postcopy: $*"; exit 1; }

teardown() {
	local rc=$? h
	trap - EXIT INT TERM
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

# ---- 1. the hand-driven baseline, in its own lab ----
if has_method manual; then
	log "manual post-copy: sizes $SIZES, $REPS rep(s), $RATE"
	# shellcheck disable=SC2086
	bash "$ROOT/bench/manual-postcopy.sh" --reps "$REPS" --out "$WORK/manual" "$RATE" $SIZES >&2 ||
		log "manual-postcopy reported a failure (see its runs)"
	[ -s "$WORK/manual/manual-postcopy.json" ] || die "no manual-postcopy results"
else
	mkdir -p "$WORK/manual" && echo '{"runs": []}' >"$WORK/manual/manual-postcopy.json"
fi

# ---- 2. CRIU alone (before the lab: no lab memory in use) ----
if has_method criu; then
	nobound=()
	[ -n "${VOYAGER_NO_CPU_LATENCY:-}" ] && nobound=(--no-bound)
	bash "$ROOT/bench/criu-lazy-dump.sh" --sizes "$SIZES" --reps "$REPS" "${nobound[@]}" \
		--out "$WORK/criu" >&2 || log "criu-lazy-dump reported a failure"
	[ -s "$WORK/criu.json" ] || die "no criu-lazy-dump results"
else
	echo '{"summary": {}}' >"$WORK/criu.json"
fi

# ---- 3. Voyager ----
"$ROOT/tests/workloads/mkrootfs.sh" build busybox >/dev/null || die "mkrootfs failed"
LAB_MADE=1
lab_up "$LAB" a b >&2 || die "lab_up failed"
lab_shape "$LAB" a "$RATE" && lab_shape "$LAB" b "$RATE" || die "shape failed"
A=$(lab_dir "$LAB" a)
B=$(lab_dir "$LAB" b)
IPB=$(lab_ip "$LAB" b)
vy_key_init "$A/../../keys" || die "keygen failed"
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || die "voyagerd did not start"
mkdir -p "$A/runtime/runc" "$B/runtime/runc"

start_container() { # ID MIB: prints memhog's checksum
	local id=$1 b="$A/bundles/$1" i
	"$BUNDLE_SH" create "$b" busybox --id "$id" --cgroup-parent "$(lab_cgroup_parent "$LAB" a)" \
		-- /sbin/memhog "$2" >/dev/null || return 1
	lab_exec "$LAB" a runc --root "$A/runtime/runc" run -d --bundle "$b" "$id" \
		</dev/null >/dev/null 2>&1 || return 1
	for i in $(seq 3000); do
		[ -s "$b/rootfs/data/memhog" ] && break
		sleep 0.1
	done
	[ -s "$b/rootfs/data/memhog" ] && cut -d' ' -f2 "$b/rootfs/data/memhog"
}

verify_on_b() { # ID WANT
	local r="$B/state/containers/$1/bundle/rootfs" pid i got verdict
	pid=$(lab_exec "$LAB" b runc --root "$B/runtime/runc" state "$1" 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null)
	[ -n "$pid" ] || return 1
	# read in b's mount namespace: with --mode jit the rootfs is b's
	# voyager-fs mount there
	lab_exec "$LAB" b rm -f "$r/data/memhog.verify"
	kill -USR1 "$pid" || return 1
	for i in $(seq 1200); do
		if lab_exec "$LAB" b test -s "$r/data/memhog.verify"; then
			read -r _ got verdict < <(lab_exec "$LAB" b cat "$r/data/memhog.verify")
			[ "$got" = "$2" ] && [ "$verdict" = ok ]
			return
		fi
		sleep 0.1
	done
	return 1
}

fail=0
: >"$WORK/voyager.jsonl"
for s in $SIZES; do
	for ((r = 1; r <= REPS; r++)); do
		for mem in stop-copy post-copy; do
			has_method "$mem" || continue
			id="${LAB}${s}${mem:0:1}$r"
			want=$(start_container "$id" "$s") || { log "$id: container start failed"; fail=1; continue; }
			log "voyager --memory $mem, $s MiB, rep $r"
			out=$(vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode "$MODE" --memory "$mem" --json)
			intact=false
			[ "$(vy_json_get "$out" result)" = migrated ] && verify_on_b "$id" "$want" && intact=true
			[ $intact = true ] || { fail=1; log "$id: $out"; }
			python3 -c 'import json,sys
r = json.loads(sys.argv[1] or "{}")
print(json.dumps({"method": "voyager-" + sys.argv[2], "mem_mib": int(sys.argv[3]), "rep": int(sys.argv[4]),
  "ok": r.get("result") == "migrated" and sys.argv[5] == "true", "memory_intact": sys.argv[5] == "true",
  "downtime_ms": r.get("downtime_ms"), "total_ms": r.get("total_ms"), "phases_ms": r.get("phases_ms"),
  "steps_ms": r.get("steps_ms"), "cpu_latency": r.get("cpu_latency"), "rcu_expedited": r.get("rcu_expedited"),
  "post_copy": r.get("post_copy"), "bytes": r.get("bytes"), "error": r.get("error")}))' \
				"$out" "$mem" "$s" "$r" "$intact" >>"$WORK/voyager.jsonl"
			log "  downtime $(vy_json_get "$out" downtime_ms) ms, phases $(vy_json_get "$out" phases_ms)"
			lab_exec "$LAB" b runc --root "$B/runtime/runc" delete -f "$id" >/dev/null 2>&1
			lab_exec "$LAB" a runc --root "$A/runtime/runc" delete -f "$id" >/dev/null 2>&1
			rm -rf "$B/state/containers/$id" "$A/bundles/$id"
		done
	done
done

mkdir -p "$(dirname "$OUT")" || die "cannot make $(dirname "$OUT")"
python3 - "$WORK/voyager.jsonl" "$WORK/manual/manual-postcopy.json" "$OUT" "$RATE" "$REPS" "$MODE" "$WORK/criu.json" <<'PY' || fail=1
import json, platform, statistics, subprocess, sys, time
vpath, mpath, out, rate, reps, mode, cpath = sys.argv[1:]
vy = [json.loads(l) for l in open(vpath) if l.strip()]
man = json.load(open(mpath))
criu = json.load(open(cpath))
rows = vy + [dict(r, method="manual", ok=r.get("ok", False)) for r in man["runs"]]
sizes = sorted({r["mem_mib"] for r in rows})
METHODS = ("voyager-stop-copy", "voyager-post-copy", "manual")

def med(rs, key):
    v = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(v) if v else None

def pc(r, key):
    return (r.get("post_copy") or {}).get(key)

summary = {}
for s in sizes:
    for m in METHODS:
        rs = [r for r in rows if r["method"] == m and r["mem_mib"] == s and r.get("ok")]
        e = {"runs": sum(1 for r in rows if r["method"] == m and r["mem_mib"] == s), "ok": len(rs),
             "downtime_ms": med(rs, "downtime_ms")}
        if m == "manual":
            e["all_pages_ms"] = med(rs, "all_pages_ms")
            e["phases_ms"] = {k: med(rs, k + "_ms") for k in ("dump", "ship", "restore")}
        else:
            e["all_pages_ms"] = med([{"v": pc(r, "all_pages_ms")} for r in rs], "v")
            ph = {}
            for k in ("checkpoint", "transfer", "restore", "pages"):
                ph[k] = med([{"v": (r.get("phases_ms") or {}).get(k)} for r in rs], "v")
            e["phases_ms"] = ph
        summary["%s/%d" % (m, s)] = e

def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None

ratios = {}
for s in sizes:
    base = summary["manual/%d" % s]["downtime_ms"]
    for m in METHODS[:2]:
        ratios["%s/%d over manual" % (m, s)] = ratio(summary["%s/%d" % (m, s)]["downtime_ms"], base)
if len(sizes) > 1:
    lo, hi = sizes[0], sizes[-1]
    for m in METHODS:
        ratios["%s %d/%d MiB" % (m, hi, lo)] = ratio(summary["%s/%d" % (m, hi)]["downtime_ms"],
                                                     summary["%s/%d" % (m, lo)]["downtime_ms"])

def ver(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
    except Exception:
        return "?"

# CRIU alone: its lazy dump's growth, and the ratio Voyager would reach if
# everything but that growth stayed as it is at the smallest size
csum = criu.get("summary") or {}
floor = None
if csum and len(sizes) > 1:
    lo, hi = sizes[0], sizes[-1]
    c_lo = (csum.get(str(lo)) or {}).get("ready_ms")
    c_hi = (csum.get(str(hi)) or {}).get("ready_ms")
    v_lo = summary["voyager-post-copy/%d" % lo]["downtime_ms"]
    if c_lo is not None and c_hi is not None and v_lo:
        floor = {"criu_growth_ms": round(c_hi - c_lo, 1), "voyager_post_copy_lo_ms": v_lo,
                 "ratio": ratio(v_lo + (c_hi - c_lo), v_lo)}
        ratios["CRIU floor %d/%d MiB" % (hi, lo)] = floor["ratio"]

doc = {"benchmark": "postcopy", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
       "params": {"sizes_mib": sizes, "rate": rate, "reps": int(reps), "mode": mode},
       "host": {"kernel": platform.release(), "criu": ver(["criu", "--version"]), "runc": ver(["runc", "--version"])},
       "summary": summary, "ratios": ratios, "criu_alone": csum, "criu_floor": floor, "runs": rows}
json.dump(doc, open(out + ".json", "w"), indent=2)

f = lambda x: "-" if x is None else "%d" % x
g = lambda x: "-" if x is None else "%.2f" % x
lines = ["| MiB | method | ok | downtime (median ms) | / manual | last page (ms after freeze) |",
         "|---|---|---|---|---|---|"]
for s in sizes:
    for m in METHODS:
        e = summary["%s/%d" % (m, s)]
        lines.append("| %d | %s | %d/%d | %s | %s | %s |" % (s, m, e["ok"], e["runs"], f(e["downtime_ms"]),
                     "1" if m == "manual" else g(ratios["%s/%d over manual" % (m, s)]), f(e["all_pages_ms"])))
lines.append("")
for k, v in ratios.items():
    if " MiB" in k:
        lines.append("- downtime %s: %s" % (k, g(v)))
lines += ["", "Where the post-copy freeze goes (median ms; Voyager: the report's phases_ms, "
          "checkpoint = network lock + pause + lazy dump to CRIU's status byte, transfer = images and the "
          "rootfs delta, restore = RESTORE -> RESTORED: lazy-pages daemon, runc restore --lazy-pages, network; "
          "pages = after the downtime, until the last page):", ""]
for s in sizes:
    v = summary["voyager-post-copy/%d" % s]["phases_ms"]
    m = summary["manual/%d" % s]["phases_ms"]
    lines.append("- %d MiB: voyager checkpoint %s, transfer %s, restore %s (then pages %s); manual dump %s, ship %s, restore %s" % (
        s, f(v["checkpoint"]), f(v["transfer"]), f(v["restore"]), f(v["pages"]), f(m["dump"]), f(m["ship"]), f(m["restore"])))
lines += ["", "The same, step by step (median ms; the report's steps_ms: the source's checkpoint, the target's intake of the freeze's trees and its restore):", ""]
for s in sizes:
    rs = [r for r in rows if r["method"] == "voyager-post-copy" and r["mem_mib"] == s and r.get("ok")]
    for side in ("checkpoint", "receive", "restore"):
        names = []
        for r in rs:
            for k in ((r.get("steps_ms") or {}).get(side) or {}):
                if k not in names:
                    names.append(k)
        if names:
            lines.append("- %d MiB %s: %s" % (s, side, ", ".join(
                "%s %.1f" % (k, statistics.median([r["steps_ms"][side][k] for r in rs
                                                   if k in ((r.get("steps_ms") or {}).get(side) or {})]))
                for k in names)))
if csum:
    lines += ["", "CRIU's lazy dump alone (bench/criu-lazy-dump.sh: a plain memhog process, no runtime; "
              "median ms from CRIU's start until its page server is up):", ""]
    for s in sizes:
        e = csum.get(str(s)) or {}
        p = e.get("phases_ms") or {}
        lines.append("- %d MiB: %s (setup %s, smaps %s, pagemap + pipes %s, drain %s, finish %s)" % (
            s, g(e.get("ready_ms")), g(p.get("setup")), g(p.get("smaps")), g(p.get("pipes")),
            g(p.get("drain")), g(p.get("finish"))))
    if floor:
        lines.append("- CRIU floor: Voyager's post-copy at %d MiB (%s ms) plus CRIU's own growth (%s ms) "
                     "gives %s for %d/%d MiB, the lowest ratio any post-copy through this CRIU could reach "
                     "with all its other costs constant" % (sizes[0], g(floor["voyager_post_copy_lo_ms"]),
                     g(floor["criu_growth_ms"]), g(floor["ratio"]), sizes[-1], sizes[0]))
table = "\n".join(lines)
md = ["# Post-copy downtime vs memory size", "",
      "%s; link %s (tbf, both hosts); %s rep(s); voyager --mode %s; kernel %s, %s, %s." % (doc["date"], rate, reps, mode,
      doc["host"]["kernel"], doc["host"]["criu"], doc["host"]["runc"]), "", table, "", "Per run:", ""]
for r in rows:
    md.append("- %s %d MiB #%d: %s, downtime %s" % (r["method"], r["mem_mib"], r["rep"],
              "ok" if r.get("ok") else "FAILED", r.get("downtime_ms")))
open(out + ".md", "w").write("\n".join(md) + "\n")
print(table)
bad = [r for r in rows if not r.get("ok")]
sys.exit(1 if bad else 0)
PY
log "results: ${OUT#$ROOT/}.json and .md"
[ $fail = 0 ] || { log "some runs failed or their memory did not verify"; exit 1; }
