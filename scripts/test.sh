#!/bin/bash
# The whole test suite, with its own set-up, on a fresh Debian 12 or 13
# host as root:  bash scripts/test.sh
#
#   1. installs what is missing (scripts/install-deps.sh)
#   2. builds with AddressSanitizer and UndefinedBehaviorSanitizer (build-test/)
#   3. runs the C unit tests (meson test)
#   4. runs the end-to-end tests: real containers, real CRIU, real TLS,
#      on lab hosts made of network and mount namespaces (tests/e2e/t_*.sh)
# and ends with one line "N passed, N failed" over all of them.
#
# VY_TESTS="t_basic t_rollback" runs only those end-to-end tests;
# VY_SKIP_E2E=1 runs only the unit tests.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [ "$(id -u)" != 0 ]; then
	echo "test: must run as root (containers, namespaces, CRIU)" >&2
	exit 1
fi

bash scripts/install-deps.sh || { echo "test: dependency install failed" >&2; exit 1; }

build=build-test
if [ ! -d "$build" ]; then
	meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false >/dev/null ||
		{ echo "test: meson setup failed" >&2; exit 1; }
fi
meson compile -C "$build" >"$build/compile.log" 2>&1 ||
	{ tail -40 "$build/compile.log"; echo "test: build failed" >&2; exit 1; }

passed=0
failed=0
failures=()

# count_from LOG NAME: add the "N passed, N failed" line of LOG to the totals
count_from() {
	local line p f
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
	if [ -z "$line" ]; then
		failed=$((failed + 1))
		failures+=("$2 (no summary line)")
		return
	fi
	p=${line%% passed*}
	f=${line#*passed, }
	f=${f%% failed*}
	passed=$((passed + p))
	failed=$((failed + f))
	[ "$f" -gt 0 ] && failures+=("$2")
	return 0
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
logs=$root/$build/test-logs
mkdir -p "$logs"

echo "== unit tests"
for t in "$build"/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	name=$(basename "$t")
	"$t" >"$logs/$name.log" 2>&1
	rc=$?
	count_from "$logs/$name.log" "$name"
	[ $rc -ne 0 ] && ! grep -q "FAIL" "$logs/$name.log" && failures+=("$name (exit $rc)")
	grep -E '^(ok|FAIL) ' "$logs/$name.log" | sed "s/^/  $name: /"
done

if [ -z "${VY_SKIP_E2E:-}" ]; then
	echo "== end-to-end tests"
	export VY_BUILD=$root/$build
	# Daemons under ASan: report errors, but a leak at exit must not fail a test.
	export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0
	for t in tests/e2e/t_*.sh; do
		name=$(basename "$t" .sh)
		if [ -n "${VY_TESTS:-}" ] && ! [[ " $VY_TESTS " == *" $name "* ]]; then
			continue
		fi
		echo "-- $name"
		timeout 900 bash "$t" >"$logs/$name.log" 2>&1
		count_from "$logs/$name.log" "$name"
		grep -E '^(ok|not ok) ' "$logs/$name.log" | sed 's/^/  /'
	done
fi

if [ -z "${VY_SKIP_E2E:-}" ] && [ -z "${VY_TESTS:-}" ]; then
	echo "== benchmark harness"
	# The report generator's unit tests, then the harness itself on a tiny
	# grid (no timing is asserted: it must run and report).
	python3 bench/tests/run.py >"$logs/bench_report.log" 2>&1
	count_from "$logs/bench_report.log" "bench report tests"
	tail -1 "$logs/bench_report.log" | sed 's/^/  bench report tests: /'
	if timeout 900 bash bench/run.sh --profile smoke --no-setup --build "$build" \
		--out "$root/$build/bench-smoke" >"$logs/bench_smoke.log" 2>&1 &&
		[ -s "$root/$build/bench-smoke/report.md" ]; then
		passed=$((passed + 1))
		echo "  ok - bench smoke profile ran and wrote its report"
	else
		failed=$((failed + 1))
		failures+=("bench smoke")
		echo "  not ok - bench smoke profile (see $logs/bench_smoke.log)"
	fi
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
	echo "failing: ${failures[*]} (logs in $logs)"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
