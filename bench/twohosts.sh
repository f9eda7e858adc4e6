#!/bin/bash
# What presync-writes.sh, jit-files.sh and hydrate-files.sh share: a lab of
# two hosts (a, b) on links shaped to one rate, and its teardown.  Sourced
# (with lab/lab.sh and tests/e2e/agents.sh) after OUT is set:
#
#   twohosts_init NAME PREFIX   LAB (PREFIX and this shell's pid), WORK (a
#                               new directory under /tmp), log and die
#                               (which names NAME); the teardown on EXIT,
#                               INT and TERM
#   twohosts_up RATE            the lab up, both links shaped to RATE, the
#                               agents' keys in WORK; A, B and IPB
#
# The teardown stops both agents, copies their logs and those of the
# target's voyager-fs processes into $OUT.logs, deletes the lab's
# containers and the lab, and removes WORK.  Starting the agents is left to
# each bench (hydrate-files.sh starts b's with a voyager-fs of its choice).

twohosts_init() {
	BENCH_NAME=$1
	LAB="$2$$"
	LAB=${LAB:0:13}
	LAB_MADE=0
	WORK=$(mktemp -d "/tmp/$2.XXXXXX") || exit 1
	trap twohosts_teardown EXIT INT TERM
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$BENCH_NAME: $*"; exit 1; }

twohosts_teardown() {
	local rc=$? h f c
	trap - EXIT INT TERM
	if [ "$LAB_MADE" = 1 ]; then
		for h in a b; do vy_agent_stop "$LAB" "$h"; done
		mkdir -p "$OUT.logs" &&
			for h in a b; do cp "$(lab_dir "$LAB" "$h")/voyagerd.log" "$OUT.logs/$h.log"; done
		# what each target voyager-fs said, one per run's container
		for f in "$(lab_dir "$LAB" b)"/state/containers/*/fs/*.log; do
			[ -f "$f" ] || continue
			c=${f%/fs/*}
			cp "$f" "$OUT.logs/b-fs-${c##*/}-$(basename "$f")"
		done
		lab_delete_containers "$LAB" a b
		lab_down "$LAB" >/dev/null 2>&1 || log "lab_down reported leftovers"
	fi
	rm -rf "$WORK"
	exit "$rc"
}

twohosts_up() {
	lab_up "$LAB" a b >/dev/null || die "lab up"
	LAB_MADE=1
	lab_shape "$LAB" a "$1" && lab_shape "$LAB" b "$1" || die "shaping"
	vy_key_init "$WORK/keys" || die "keygen"
	A=$(lab_dir "$LAB" a)
	B=$(lab_dir "$LAB" b)
	IPB=$(lab_ip "$LAB" b)
}
