#!/bin/bash
# Does the freeze of a just-in-time migration grow with the number of files?
#
#   bench/jit-files.sh [--files N] [--runs R] [--rate RATE] [--mode MODE]
#                      [--out PREFIX]
#       --files  files in the large tree                 100000
#       --runs   measurements per tree size               3
#       --rate   link rate of both lab hosts (tc tbf)     1gbit
#       --mode   jit, or presync (the tree copied while the
#                container runs, then its changes at the
#                freeze)                                 jit
#       --out    results prefix (default bench/results/DATE/jit-files)
#
# One two-host lab (a, b), voyagerd on both.  Each run makes a fresh busybox
# counter container on a whose rootfs holds either 100 small files or N
# small files (64 bytes each, 1000 per directory), and moves it to b with
# `voyager migrate --mode jit` (or presync).  Reported: downtime_ms and the
# report's phases (skeleton or presync = before the freeze; checkpoint,
# transfer, restore = inside it).  The sizes alternate run by run.  The ratio that matters is
# downtime(N files) / downtime(100 files); the issue's goal is that it
# stays near 1.  Runs are not waited for to hydrate fully (100 000 files
# take a while over one fetch lane): right after each run its hydration is
# held to 1 byte/s (user.voyager.hydrate_rate), so that it does not compete
# with the runs after it; each run's container is left on b and removed
# with the lab.  Each target voyager-fs's log is kept with the agents'.
# Writes PREFIX.json and PREFIX.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=100000
RUNS=3
RATE=1gbit
MODE=jit
OUT=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--files) FILES=${2:-}; shift 2 ;;
	--runs) RUNS=${2:-}; shift 2 ;;
	--rate) RATE=${2:-}; shift 2 ;;
	--mode) MODE=${2:-}; shift 2 ;;
	--out) OUT=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "jit-files: unknown argument '$1'" >&2; usage ;;
	esac
done
[[ $FILES =~ ^[0-9]+$ ]] && [[ $RUNS =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] ||
	{ echo "jit-files: --files and --runs (1..20) want numbers" >&2; exit 2; }
[ "$MODE" = jit ] || [ "$MODE" = presync ] || { echo "jit-files: --mode jit or presync" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "jit-files: must run as root" >&2; exit 1; }
[ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/$MODE-files"
[ -x "$ROOT/build/voyager" ] && [ -x "$ROOT/build/voyagerd" ] && [ -x "$ROOT/build/voyager-fs" ] ||
	{ echo "jit-files: build first (meson setup build && meson compile -C build)" >&2; exit 1; }
. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"

. "$ROOT/bench/twohosts.sh"
twohosts_init jit-files vyjf
twohosts_up "$RATE"
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || die "agents"

one_run() { # N RUN -> prints the report JSON
	local n=$1 run=$2 id=${LAB}f${n}r$run
	id=${id:0:30}
	"$BUNDLE_SH" create "$A/bundles/$id" busybox --id "$id" \
		--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/counter >/dev/null || return 1
	python3 - "$A/bundles/$id/rootfs/files" "$n" <<'PY' || return 1
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(b"%-63d\n" % i)
PY
	lab_exec "$LAB" a runc --root "$A/runtime/runc" run -d --bundle "$A/bundles/$id" "$id" \
		</dev/null >/dev/null 2>&1 || return 1
	sleep 1
	sync
	vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode "$MODE" --json
}

echo "[" >"$WORK/runs.json"
first=1
for run in $(seq 1 "$RUNS"); do
	order="100 $FILES"
	[ $((run % 2)) = 0 ] && order="$FILES 100"
	for n in $order; do
		log "run $run: $n files"
		r=$(one_run "$n" "$run") || die "run $run ($n files) failed to start"
		[ "$(vy_json_get "$r" result)" = migrated ] || die "run $run ($n files): $r"
		id=${LAB}f${n}r$run
		if [ "$MODE" = jit ]; then
			lab_exec "$LAB" b setfattr -n user.voyager.hydrate_rate -v 1 \
				"$B/state/containers/${id:0:30}/bundle/rootfs" ||
				log "  could not hold the hydration of ${id:0:30}"
		fi
		log "  downtime $(vy_json_get "$r" downtime_ms) ms; phases $(vy_json_get "$r" phases_ms)"
		[ $first = 1 ] || echo "," >>"$WORK/runs.json"
		first=0
		printf '{"files": %s, "run": %s, "report": %s}\n' "$n" "$run" "$r" >>"$WORK/runs.json"
	done
done
echo "]" >>"$WORK/runs.json"

mkdir -p "$(dirname "$OUT")"
python3 - "$WORK/runs.json" "$OUT" "$FILES" "$RATE" "$MODE" <<'PY'
import json, statistics, sys
runs, out, big, rate, mode = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
before = "skeleton" if mode == "jit" else "presync"
def med(n, key):
    v = [r["report"]["phases_ms"].get(key, 0) if key != "downtime" else r["report"]["downtime_ms"]
         for r in runs if r["files"] == n]
    return statistics.median(v)
rows = []
for key in ("downtime", before, "checkpoint", "transfer", "restore"):
    s, b = med(100, key), med(big, key)
    rows.append((key, s, b, (b / s) if s else float("nan")))
summary = {"mode": mode, "files_small": 100, "files_large": big, "rate": rate,
           "median_ms": {k: {"small": s, "large": b} for k, s, b, _ in rows},
           "downtime_ratio": rows[0][3]}
json.dump({"runs": runs, "summary": summary}, open(out + ".json", "w"), indent=1)
md = ["# %s freeze vs number of files (%s, medians of %d runs)" % (mode, rate, len(runs) // 2), "",
      "| ms | 100 files | %d files | ratio |" % big, "|---|---:|---:|---:|"]
for k, s, b, r in rows:
    md.append("| %s%s | %.0f | %.0f | %.2f |" % (k, " (before the freeze)" if k == before else "", s, b, r))
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
