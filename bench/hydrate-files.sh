#!/bin/bash
# How fast a jit target hydrates many small files: two voyager-fs
# binaries, in one lab, in one run.
#
#   bench/hydrate-files.sh --base-fs BIN [--files N] [--size BYTES] [--runs R]
#                          [--rate RATE] [--out PREFIX]
#       --base-fs  the voyager-fs to compare with (e.g. built from an older
#                  commit: git worktree add /tmp/old REV && meson setup
#                  /tmp/old/build /tmp/old && meson compile -C /tmp/old/build)
#       --files    small files in the container's rootfs          30000
#       --size     bytes in each (at most 64 MiB)                 2600
#       --runs     migrations per binary                          3
#       --rate     link rate of both lab hosts (tc tbf)           1gbit
#       --out      results prefix (default bench/results/DATE/hydrate-files)
#
# One two-host lab (a, b), links shaped to RATE, voyagerd from build/ on
# both.  Each run makes a fresh busybox counter container on a with FILES
# files of SIZE random bytes (1000 per directory), moves it to b with
# `voyager migrate --mode jit --memory stop-copy`, and waits until b is
# independent.  Before each run b's agent is restarted with VOYAGER_FS set
# to one of the two binaries (build/voyager-fs, "new", or --base-fs,
# "base"); the order alternates run by run.  Figure: the target journal's
# hydration {bytes, files, ms} (ms from the commit to every byte local and
# durable, polled every 0.5 s), as a rate, median(new) / median(base), and
# each against iperf3 a -> b on the same link.  No timing is asserted: the
# exit status is 0 when every run migrated and became independent.
# Writes PREFIX.json and PREFIX.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=30000
SIZE=2600
RUNS=3
RATE=1gbit
OUT=""
BASE_FS=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--base-fs) BASE_FS=${2:-}; shift 2 ;;
	--files) FILES=${2:-}; shift 2 ;;
	--size) SIZE=${2:-}; shift 2 ;;
	--runs) RUNS=${2:-}; shift 2 ;;
	--rate) RATE=${2:-}; shift 2 ;;
	--out) OUT=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "hydrate-files: unknown argument '$1'" >&2; usage ;;
	esac
done
for v in "$FILES" "$SIZE" "$RUNS"; do
	[[ $v =~ ^[0-9]+$ ]] && [ "$v" -ge 1 ] || { echo "hydrate-files: --files, --size, --runs want positive numbers" >&2; exit 2; }
done
[ "$FILES" -le 1000000 ] && [ "$SIZE" -le 67108864 ] && [ "$RUNS" -le 20 ] ||
	{ echo "hydrate-files: at most 1000000 files, of 64 MiB, 20 runs" >&2; exit 2; }
[ -n "$BASE_FS" ] && [ -x "$BASE_FS" ] || { echo "hydrate-files: --base-fs BIN (an executable voyager-fs)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "hydrate-files: must run as root" >&2; exit 1; }
[ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/hydrate-files"
[ -x "$ROOT/build/voyager" ] && [ -x "$ROOT/build/voyagerd" ] && [ -x "$ROOT/build/voyager-fs" ] ||
	{ echo "hydrate-files: build first (meson setup build && meson compile -C build)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "hydrate-files: needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
. "$ROOT/lab/lab.sh"
. "$ROOT/tests/e2e/agents.sh"
BUNDLE_SH="$ROOT/tests/workloads/bundle.sh"

. "$ROOT/bench/twohosts.sh"
twohosts_init hydrate-files vyhf
# Both binaries are copied now: the build may change while this runs.
mkdir -p "$WORK/new" "$WORK/base"
cp "$ROOT/build/voyager-fs" "$WORK/new/voyager-fs" && cp "$BASE_FS" "$WORK/base/voyager-fs" ||
	die "cannot copy the voyager-fs binaries"
twohosts_up "$RATE"
vy_agent_start "$LAB" a runc || die "agent a"

# iperf3 a -> b, payload bits per second
iperf_bps() {
	local pid bps
	lab_exec "$LAB" b iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
	pid=$!
	sleep 0.5
	bps=$(lab_exec "$LAB" a iperf3 -c "$IPB" -p 5299 -t 3 -J 2>/dev/null |
		python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))' 2>/dev/null)
	wait "$pid" 2>/dev/null
	echo "${bps:-0}"
}

one_run() { # WHICH RUN -> prints {"report", "status"} JSON
	local which=$1 run=$2 id=${LAB}h${1:0:1}$2 r mid st
	vy_agent_stop "$LAB" b
	VY_AGENT_ENV="VOYAGER_FS=$WORK/$which/voyager-fs" vy_agent_start "$LAB" b runc || return 1
	"$BUNDLE_SH" create "$A/bundles/$id" busybox --id "$id" \
		--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/counter >/dev/null || return 1
	python3 - "$A/bundles/$id/rootfs/files" "$FILES" "$SIZE" <<'PY' || return 1
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(os.urandom(size))
PY
	lab_exec "$LAB" a runc --root "$A/runtime/runc" run -d --bundle "$A/bundles/$id" "$id" \
		</dev/null >/dev/null 2>&1 || return 1
	sleep 1
	sync
	r=$(vy_cli "$LAB" a migrate "$id" --to "$IPB" --mode jit --memory stop-copy --json) || return 1
	[ "$(vy_json_get "$r" result)" = migrated ] || return 1
	mid=$(vy_json_get "$r" id)
	vy_wait_independent "$LAB" b "$mid" 600 || return 1
	st=$(vy_cli "$LAB" b --json status "$mid") || return 1
	printf '{"which": "%s", "run": %s, "report": %s, "status": %s}\n' "$which" "$run" "$r" "$st"
	# the next run starts from a quiet host
	lab_exec "$LAB" b runc --root "$B/runtime/runc" delete -f "$id" >/dev/null 2>&1
}

: >"$WORK/runs.jsonl"
for run in $(seq 1 "$RUNS"); do
	order="new base"
	[ $((run % 2)) = 0 ] && order="base new"
	for which in $order; do
		log "run $run: $which voyager-fs, $FILES files of $SIZE bytes"
		line=$(one_run "$which" "$run") || die "run $run ($which) did not migrate and become independent"
		echo "$line" >>"$WORK/runs.jsonl"
		log "  $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["status"]["migration"].get("hydration"))' "$line")"
	done
	bps=$(iperf_bps)
	log "  iperf3 a -> b: $bps bit/s"
	echo "{\"iperf_bps\": $bps, \"run\": $run}" >>"$WORK/runs.jsonl"
done

mkdir -p "$(dirname "$OUT")"
python3 - "$WORK/runs.jsonl" "$OUT" "$FILES" "$SIZE" "$RATE" "$BASE_FS" "$ROOT" <<'PY'
import json, os, statistics, subprocess, sys
src, out, files, size, rate, base_fs, root = sys.argv[1:8]
sys.path.insert(0, os.path.join(root, "bench"))
import hostinfo
rows = [json.loads(l) for l in open(src) if l.strip()]
iperf = [r["iperf_bps"] for r in rows if "iperf_bps" in r and r["iperf_bps"]]
runs = [r for r in rows if "which" in r]
for r in runs:
    h = r["status"]["migration"]["hydration"]
    r["rate_bps"] = 8 * h["bytes"] * 1000 / h["ms"] if h.get("ms") else None
def med(which, key):
    v = [r["rate_bps"] if key == "rate_bps" else r["status"]["migration"]["hydration"][key]
         for r in runs if r["which"] == which]
    return statistics.median(v) if v else None
summary = {w: {"ms": med(w, "ms"), "rate_bps": med(w, "rate_bps")} for w in ("new", "base")}
ip = statistics.median(iperf) if iperf else None
summary["iperf_bps"] = ip
summary["new_over_base_rate"] = summary["new"]["rate_bps"] / summary["base"]["rate_bps"]
doc = {"benchmark": "hydrate-files", "files": int(files), "size": int(size), "rate": rate,
       "base_fs": base_fs, "git": hostinfo.git_describe(root), "runs": runs, "summary": summary}
json.dump(doc, open(out + ".json", "w"), indent=1)
md = ["# Hydration of %s files of %s bytes, %s (medians of %d runs each)" % (files, size, rate, len(runs) // 2), "",
      "Harness %s; base voyager-fs: %s." % (doc["git"], base_fs), "",
      "| voyager-fs | to independence, ms | rate, Mbit/s | rate / iperf3 |", "|---|---:|---:|---:|"]
for w in ("base", "new"):
    s = summary[w]
    md.append("| %s | %.0f | %.1f | %s |" % (w, s["ms"], s["rate_bps"] / 1e6,
                                            "%.2f" % (s["rate_bps"] / ip) if ip else "-"))
md += ["", "new / base, rate: **%.2f**. iperf3 a -> b: %s Mbit/s (median)." % (
    summary["new_over_base_rate"], "%.0f" % (ip / 1e6) if ip else "-"), "",
       "Per run (ms to independence): " + ", ".join(
           "%s#%d %d" % (r["which"], r["run"], r["status"]["migration"]["hydration"]["ms"]) for r in runs)]
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
