#!/bin/bash
# CRIU's own lazy dump against memory size: the floor under any post-copy
# driven through CRIU (issue 5), with no runtime, no container and no
# Voyager in the way.
#
#   bench/criu-lazy-dump.sh [--sizes "64 4096"] [--reps N] [--no-bound]
#                           [--out PREFIX]
#       --sizes     memhog sizes in MiB                        "64 1024 4096"
#       --reps      runs per size, sizes alternating            3
#       --no-bound  do not hold the PM QoS CPU latency bound of 0 us that
#                   voyagerd holds through a checkpoint (see voyagerd(8))
#       --out       results prefix (default bench/results/DATE/criu-lazy-dump)
#
# One run: a plain memhog process (tests/workloads/memhog.c, non-zero
# pages) in a network namespace of its own, then
#   criu dump -t PID --lazy-pages --address 127.0.0.1 --port P -v4
# inside that namespace, so that the page server is reachable from nowhere
# else.  CRIU's log gives the times, in ms from CRIU's start:
#   ready     "Starting lazy pages server": the images are written and the
#             target could restore; this is what a post-copy freeze waits
#             for on the source
#   setup     start -> "Collecting mappings" (seize, freeze, namespaces)
#   smaps     "Collecting mappings" -> "Collected, longest area" (reads
#             /proc/PID/smaps, which walks every mapped page)
#   pipes     "Dumping pages" -> "page-pipe: Page pipe:" (the pagemap and
#             one page pipe per 1 024 pages, each grown by F_SETPIPE_SZ)
#   drain     -> "page-xfer: Transferring pages:" (one parasite call per
#             pipe, which vmsplices its pages)
#   finish    -> ready (the rest of the images, the cure)
# Then CRIU and memhog are killed; nothing is restored.  fs.pipe-max-size is
# raised to 16 MiB for the run (CRIU's 4 MiB pipes need it here) and put back.
# Writes PREFIX.json and PREFIX.md; VY_KEEP=1 keeps CRIU's logs in the work
# directory.  bench/postcopy.sh --methods ...,criu runs this in the same run
# and puts its growth beside Voyager's.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES="64 1024 4096"
REPS=3
BOUND=1
OUT=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--sizes) SIZES=${2:-}; shift 2 ;;
	--reps) REPS=${2:-}; shift 2 ;;
	--no-bound) BOUND=0; shift ;;
	--out) OUT=${2:-}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "criu-lazy-dump: unknown argument '$1'" >&2; usage ;;
	esac
done
for v in $SIZES $REPS; do
	[[ $v =~ ^[0-9]+$ ]] && [ "$v" -gt 0 ] ||
		{ echo "criu-lazy-dump: --sizes and --reps want positive numbers" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "criu-lazy-dump: must run as root" >&2; exit 1; }
command -v criu >/dev/null || { echo "criu-lazy-dump: criu is not installed (scripts/install-deps.sh)" >&2; exit 1; }
[ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date +%Y-%m-%d)/criu-lazy-dump"
for s in $SIZES; do
	need=$((s + 1024))
	avail=$(($(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 1024))
	[ "$avail" -ge "$need" ] || { echo "criu-lazy-dump: $s MiB needs about $need MiB of memory, $avail available" >&2; exit 1; }
done

NS="vycld$$"
NS=${NS:0:15}
WORK=$(mktemp -d /tmp/vycld.XXXXXX) || exit 1
PIPE_OLD=""
PIPE_SET=16777216
NS_MADE=0
HOG=""
DUMPER=""
BOUND_PID=""
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "criu-lazy-dump: $*"; exit 1; }

stop_pid() { # PID: SIGKILL a process this script started, and reap it
	[ -n "$1" ] || return 0
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

teardown() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$DUMPER"
	stop_pid "$HOG"
	stop_pid "$BOUND_PID"
	if [ -n "$PIPE_OLD" ] && [ "$(sysctl -n fs.pipe-max-size)" = "$PIPE_SET" ]; then
		sysctl -qw fs.pipe-max-size="$PIPE_OLD"
	fi
	[ "$NS_MADE" = 1 ] && ip netns delete "$NS" 2>/dev/null
	[ -n "${VY_KEEP:-}" ] || rm -rf "$WORK"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

gcc -static -O2 -o "$WORK/memhog" "$ROOT/tests/workloads/memhog.c" || die "cannot build memhog"
ip netns add "$NS" || die "cannot make network namespace $NS"
NS_MADE=1
ip -n "$NS" link set lo up || die "cannot bring up lo in $NS"
PIPE_OLD=$(sysctl -n fs.pipe-max-size)
if [ "$PIPE_OLD" -lt "$PIPE_SET" ]; then
	sysctl -qw fs.pipe-max-size=$PIPE_SET || die "cannot raise fs.pipe-max-size"
else
	PIPE_OLD=""
fi
if [ "$BOUND" = 1 ]; then
	[ -w /dev/cpu_dma_latency ] || die "no /dev/cpu_dma_latency (use --no-bound)"
	# a request of 0 us, held while the file stays open
	python3 -c 'import os, struct, time
fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
os.write(fd, struct.pack("i", 0))
time.sleep(86400)' &
	BOUND_PID=$!
fi

one_run() { # MIB REP: appends one JSON line to $WORK/runs.jsonl
	local mib=$1 rep=$2 d="$WORK/run-$1-$2" i port=$((27000 + RANDOM % 2000)) ok=false
	mkdir -p "$d/img" "$d/hog"
	# Close what this shell inherited (a caller's flock would be dumped as
	# a file lock, which CRIU refuses).  Not a process-group leader here,
	# so setsid does not fork, and the subshell execs: $! is memhog.
	(
		for fd in $(ls "/proc/$BASHPID/fd"); do
			[ "$fd" -gt 2 ] && eval "exec $fd>&-"
		done
		exec nsenter --net="/run/netns/$NS" setsid "$WORK/memhog" "$mib" "$d/hog" </dev/null >/dev/null 2>&1
	) &
	HOG=$!
	for i in $(seq 1200); do
		[ -s "$d/hog/memhog" ] && break
		sleep 0.1
	done
	[ -s "$d/hog/memhog" ] || { log "$mib MiB #$rep: memhog did not start"; stop_pid "$HOG"; HOG=""; return 1; }
	sleep 0.5
	nsenter --net="/run/netns/$NS" criu dump -t "$HOG" -D "$d/img" -o dump.log -v4 \
		--lazy-pages --address 127.0.0.1 --port "$port" </dev/null >/dev/null 2>&1 &
	DUMPER=$!
	for i in $(seq 1200); do
		grep -q 'Starting lazy pages server' "$d/img/dump.log" 2>/dev/null && { ok=true; break; }
		kill -0 "$DUMPER" 2>/dev/null || break
		sleep 0.05
	done
	stop_pid "$DUMPER"
	DUMPER=""
	stop_pid "$HOG"
	HOG=""
	[ $ok = true ] || log "$mib MiB #$rep: CRIU did not get to its page server (log: $(tail -n 2 "$d/img/dump.log" 2>/dev/null | tr '\n' ' '))"
	python3 - "$d/img/dump.log" "$mib" "$rep" "$ok" >>"$WORK/runs.jsonl" <<'PY'
import json, re, sys
path, mib, rep, ok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "true"
marks = {"collect": "Collecting mappings", "collected": "Collected, longest area",
         "pages": "Dumping pages (type", "piped": "page-pipe: Page pipe:",
         "xfer": "page-xfer: Transferring pages:", "ready": "Starting lazy pages server"}
t = {}
try:
    for line in open(path, errors="replace"):
        m = re.match(r"\((\d+\.\d+)\) (.*)", line)
        if not m:
            continue
        for k, text in marks.items():
            if k not in t and m.group(2).startswith(text):
                t[k] = float(m.group(1)) * 1000
except OSError:
    pass
def span(a, b):
    return round(t[b] - t[a], 1) if a in t and b in t and t[b] >= t[a] else None
print(json.dumps({"mem_mib": mib, "rep": rep, "ok": ok and "ready" in t,
                  "ready_ms": round(t["ready"], 1) if "ready" in t else None,
                  "phases_ms": {"setup": round(t["collect"], 1) if "collect" in t else None,
                                "smaps": span("collect", "collected"), "pipes": span("pages", "piped"),
                                "drain": span("piped", "xfer"), "finish": span("xfer", "ready")}}))
PY
	[ -n "${VY_KEEP:-}" ] || rm -rf "$d"
	[ $ok = true ]
}

fail=0
: >"$WORK/runs.jsonl"
log "CRIU lazy dump: sizes $SIZES, $REPS rep(s), CPU latency bound $([ $BOUND = 1 ] && echo on || echo off)"
for ((r = 1; r <= REPS; r++)); do
	order=$SIZES
	# mirror the order in even repetitions, so no size always goes first
	[ $((r % 2)) = 0 ] && order=$(printf '%s\n' $SIZES | tac | tr '\n' ' ')
	for s in $order; do
		one_run "$s" "$r" || fail=1
		log "  $s MiB #$r: ready at $(tail -n 1 "$WORK/runs.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ready_ms"])') ms"
	done
done

mkdir -p "$(dirname "$OUT")" || die "cannot make $(dirname "$OUT")"
python3 - "$WORK/runs.jsonl" "$OUT" "$REPS" "$BOUND" <<'PY' || fail=1
import json, platform, statistics, subprocess, sys, time
path, out, reps, bound = sys.argv[1:]
runs = [json.loads(l) for l in open(path) if l.strip()]
sizes = sorted({r["mem_mib"] for r in runs})
PH = ("setup", "smaps", "pipes", "drain", "finish")

def med(v):
    v = [x for x in v if x is not None]
    return round(statistics.median(v), 1) if v else None

summary = {}
for s in sizes:
    rs = [r for r in runs if r["mem_mib"] == s and r["ok"]]
    summary[str(s)] = {"runs": sum(1 for r in runs if r["mem_mib"] == s), "ok": len(rs),
                       "ready_ms": med([r["ready_ms"] for r in rs]),
                       "phases_ms": {p: med([r["phases_ms"][p] for r in rs]) for p in PH}}
lo, hi = str(sizes[0]), str(sizes[-1])
growth = None
if summary[lo]["ready_ms"] is not None and summary[hi]["ready_ms"] is not None:
    growth = round(summary[hi]["ready_ms"] - summary[lo]["ready_ms"], 1)
try:
    criu = subprocess.run(["criu", "--version"], capture_output=True, text=True).stdout.splitlines()[0].strip()
except Exception:
    criu = "?"
doc = {"benchmark": "criu-lazy-dump", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
       "params": {"sizes_mib": sizes, "reps": int(reps), "cpu_latency_bound": bound == "1"},
       "host": {"kernel": platform.release(), "criu": criu, "cpus": __import__("os").cpu_count()},
       "summary": summary, "growth_ms": growth, "growth_sizes_mib": [int(lo), int(hi)], "runs": runs}
json.dump(doc, open(out + ".json", "w"), indent=2)
f = lambda x: "-" if x is None else "%.1f" % x
lines = ["| MiB | ok | ready (median ms) | setup | smaps | pipes | drain | finish |", "|---|---|---|---|---|---|---|---|"]
for s in sizes:
    e = summary[str(s)]
    lines.append("| %d | %d/%d | %s | %s |" % (s, e["ok"], e["runs"], f(e["ready_ms"]),
                 " | ".join(f(e["phases_ms"][p]) for p in PH)))
lines += ["", "- CRIU's lazy dump grows by %s ms from %s to %s MiB" % (f(growth), lo, hi)]
table = "\n".join(lines)
md = ["# CRIU's lazy dump vs memory size (a plain process, no runtime)", "",
      "%s; %s rep(s); CPU latency bound %s; kernel %s, %s, %d CPUs." % (doc["date"], reps,
      "on" if bound == "1" else "off", doc["host"]["kernel"], criu, doc["host"]["cpus"]), "", table, ""]
open(out + ".md", "w").write("\n".join(md))
print(table)
sys.exit(0 if all(r["ok"] for r in runs) else 1)
PY
log "results: ${OUT#$ROOT/}.json and .md"
[ $fail = 0 ] || { log "some runs failed"; exit 1; }
