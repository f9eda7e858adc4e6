#!/bin/bash
# What does a file written in place cost presync's freeze?
#
#   bench/presync-writes.sh [--mib N] [--runs R] [--rate RATE] [--out PREFIX]
#       --mib    size of the file the workload writes in     256
#       --runs   migrations                                  3
#       --rate   link rate of both lab hosts (tc tbf)        1gbit
#       --out    results prefix (default bench/results/DATE/presync-writes)
#
# One two-host lab (a, b), voyagerd on both.  Each run makes a fresh busybox
# container on a whose rootfs holds one file of N MiB of random data, and a
# workload that writes 4 KiB at a pseudo-random place in it every 20 ms, as
# a database does.  It moves to b with `voyager migrate --mode presync`: the
# file goes whole before the freeze, and at the freeze what changed since.
# Reported per run: downtime_ms, the phases, the rootfs bytes the report
# counts and the source's log line on what the freeze sent again.  Run it
# with two builds (BUILD=DIR picks one; default build/) for an A/B.
# Writes PREFIX.json and PREFIX.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=256
RUNS=3
RATE=1gbit
OUT=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--mib) MIB=${2:-}; shift 2 ;;
	--runs) RUNS=${2:-}; shift 2 ;;
	--rate) RATE=${2:-}; shift 2 ;;
	--out) OUT=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "presync-writes: unknown argument '$1'" >&2; usage ;;
	esac
done
[[ $MIB =~ ^[0-9]+$ ]] && [ "$MIB" -ge 1 ] && [ "$MIB" -le 4096 ] &&
	[[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] ||
	{ echo "presync-writes: --mib 1..4096 and --runs 1..20" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "presync-writes: must run as root" >&2; exit 1; }
[ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/presync-writes"
: "${VY_BUILD:=$ROOT/build}"
export VY_BUILD
[ -x "$VY_BUILD/voyager" ] && [ -x "$VY_BUILD/voyagerd" ] ||
	{ echo "presync-writes: build first (meson setup build && meson compile -C build)" >&2; exit 1; }
. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"

. "$ROOT/bench/twohosts.sh"
twohosts_init presync-writes vypw
twohosts_up "$RATE"
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || die "agents"

# 4 KiB at block (i * 7919) mod (N MiB / 4 KiB) of /db, every 20 ms
SCRIPT="i=0
while true; do
  i=\$((i+1))
  printf '%4096d' \$i | dd of=/db bs=4096 count=1 seek=\$(( (i * 7919) % ($MIB * 256) )) conv=notrunc 2>/dev/null
  usleep 20000
done"

one_run() { # RUN -> prints the report JSON
	local id=${LAB}w$1
	"$BUNDLE_SH" create "$A/bundles/$id" busybox --id "$id" \
		--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /bin/sh -c "$SCRIPT" >/dev/null || return 1
	dd if=/dev/urandom of="$A/bundles/$id/rootfs/db" bs=1M count="$MIB" status=none || return 1
	lab_exec "$LAB" a runc --root "$A/runtime/runc" run -d --bundle "$A/bundles/$id" "$id" \
		</dev/null >/dev/null 2>&1 || return 1
	sleep 1
	vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode presync --json
}

echo "[" >"$WORK/runs.json"
for run in $(seq 1 "$RUNS"); do
	log "run $run: $MIB MiB written in place"
	r=$(one_run "$run") || die "run $run failed to start"
	[ "$(vy_json_get "$r" result)" = migrated ] || die "run $run: $r"
	sent=$(grep -o "rootfs: [0-9]* entries changed or new.*" "$A/voyagerd.log" | tail -1)
	log "  downtime $(vy_json_get "$r" downtime_ms) ms; phases $(vy_json_get "$r" phases_ms)"
	log "  ${sent:-no delta line}"
	[ "$run" = 1 ] || echo "," >>"$WORK/runs.json"
	python3 -c 'import json, sys; print(json.dumps({"run": int(sys.argv[1]), "freeze_sent": sys.argv[2], "report": json.loads(sys.argv[3])}))' \
		"$run" "$sent" "$r" >>"$WORK/runs.json"
done
echo "]" >>"$WORK/runs.json"

mkdir -p "$(dirname "$OUT")"
python3 - "$WORK/runs.json" "$OUT" "$MIB" "$RATE" "$VY_BUILD" <<'PY'
import json, statistics, sys
runs, out, mib, rate, build = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def med(key):
    return statistics.median(r["report"]["phases_ms"].get(key, 0) if key != "downtime" else r["report"]["downtime_ms"] for r in runs)
summary = {"mib": mib, "rate": rate, "build": build,
           "median_ms": {k: med(k) for k in ("downtime", "presync", "checkpoint", "transfer", "restore")}}
json.dump({"runs": runs, "summary": summary}, open(out + ".json", "w"), indent=1)
md = ["# presync with a %d MiB file written in place (%s, %d runs, %s)" % (mib, rate, len(runs), build), "",
      "| run | downtime | presync | checkpoint | transfer | restore | rootfs bytes | the freeze sent |",
      "|---|---:|---:|---:|---:|---:|---:|---|"]
for r in runs:
    p = r["report"]["phases_ms"]
    md.append("| %d | %d | %d | %d | %d | %d | %d | %s |" % (r["run"], r["report"]["downtime_ms"], p.get("presync", 0),
              p.get("checkpoint", 0), p.get("transfer", 0), p.get("restore", 0), r["report"]["bytes"]["rootfs"],
              r["freeze_sent"] or "-"))
m = summary["median_ms"]
md += ["", "Medians: downtime %d ms, transfer %d ms." % (m["downtime"], m["transfer"])]
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
