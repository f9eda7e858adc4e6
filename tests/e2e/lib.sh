#!/bin/bash
# Shared helpers for end-to-end tests.  Source it:
#
#   . "$(dirname "$0")/lib.sh"
#   e2e_setup A B            # lab "vy<pid><rand>" with hosts A and B,
#                            # teardown trapped on EXIT INT TERM
#   crun_prepare             # only for crun tests; call BEFORE e2e_setup
#   ...
#   t_ok "counter continued" / t_fail "name" "why"
#   t_done                   # prints "N passed, N failed", exits 1 on failure
#
# Containers: runtimes keep state in $LAB_DIR/runtime/<runc|crun> (never
# share one --root between runc and crun: each chokes on the other's state).
#   ctr_run HOST RUNTIME ID BUNDLE         start detached, stdio /dev/null
#   ctr_state HOST RUNTIME ID              status ("running", ...) or "absent"
#   ctr_pid HOST RUNTIME ID                host PID of the container's init
#   ctr_checkpoint HOST RUNTIME ID IMG [RUNTIME-OPTS...]
#   ctr_restore HOST RUNTIME ID BUNDLE IMG [RUNTIME-OPTS...]
#   ctr_delete HOST RUNTIME ID             delete -f
#   ctr_cat HOST RUNTIME ID PATH           a file from the running container
#                                          (via /proc/PID/root)
#   bundle_cat HOST ID PATH                a file from $LAB_DIR/bundles/ID/rootfs
#   host_dir HOST                          the host directory
#   wait_until SECONDS CMD...              poll CMD every 0.1 s (CMD is run
#                                          each time: no "$(...)" in it)
#   state_is HOST RUNTIME ID STATE         for wait_until
#
# Everything a test makes is named with the lab's prefix; the trap removes
# the containers, then the lab, then (if we mounted it) the hugetlb v1
# hierarchy.

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$E2E_ROOT/lab/lab.sh"
BUNDLE_SH="$E2E_ROOT/tests/workloads/bundle.sh"
MKROOTFS_SH="$E2E_ROOT/tests/workloads/mkrootfs.sh"

T_PASS=0
T_FAIL=0
T_DONE=0
LAB=""
E2E_HOSTS=()
E2E_HUGETLB_MOUNTED=0

t_ok() {
	T_PASS=$((T_PASS + 1))
	echo "ok $((T_PASS + T_FAIL)) - $1"
}

t_fail() {
	T_FAIL=$((T_FAIL + 1))
	echo "not ok $((T_PASS + T_FAIL)) - $1${2:+ # $2}"
}

# t_check NAME CMD...: ok if CMD succeeds
t_check() {
	local name=$1
	shift
	if "$@"; then t_ok "$name"; else t_fail "$name" "failed: $*"; fi
}

t_summary() { echo "$T_PASS passed, $T_FAIL failed"; }

t_done() {
	T_DONE=1
	t_summary
	[ "$T_FAIL" = 0 ]
	exit $?
}

# crun 1.21 refuses hybrid cgroups ("cgroups in hybrid mode not supported")
# while the hugetlb controller sits on cgroup2.  Binding hugetlb to a v1
# hierarchy makes crun run and checkpoint.  This test set-up does exactly
# that, and nothing else: it mounts "-t cgroup -o hugetlb" at
# /sys/fs/cgroup/hugetlb (/sys/fs/cgroup is a tmpfs here) unless hugetlb is
# already on a v1 hierarchy, records that it did, and crun_cleanup unmounts
# it only then.  It never touches memory, cpu or any other v1 hierarchy.
# Call it BEFORE e2e_setup: the lab hosts' mount namespaces are copies made
# at lab_up time and must already contain the mount.
# Several tests may run at once: users register in /run/vylab-hugetlb/PID,
# and the last one out unmounts, if a vylab test made the mount
# (/run/vylab-hugetlb/.mounted).
E2E_HUGETLB_DIR=/run/vylab-hugetlb
crun_prepare() {
	local rc=0
	mkdir -p "$E2E_HUGETLB_DIR" || return 1
	exec {E2E_HUGETLB_LOCK}>"$E2E_HUGETLB_DIR/.lock"
	flock "$E2E_HUGETLB_LOCK"
	: >"$E2E_HUGETLB_DIR/$$"
	E2E_HUGETLB_MOUNTED=1
	# Mounted, not only bound: a v1 hierarchy that exists unmounted (kept
	# by a child cgroup) made crun 1.21 restore into the root cgroup, and
	# one just unmounted by the test before may still be dying, and then
	# hugetlb falls back to cgroup2 under crun's feet.
	if ! awk '{ for (i = 7; i < NF; i++) if ($i == "-") break }
		$(i + 1) == "cgroup" && ("," $(i + 3) ",") ~ /,hugetlb,/ { f = 1 }
		END { exit !f }' /proc/self/mountinfo; then
		if [ -e /sys/fs/cgroup/hugetlb ] && [ -n "$(ls -A /sys/fs/cgroup/hugetlb)" ]; then
			echo "crun_prepare: /sys/fs/cgroup/hugetlb exists and is not empty" >&2
			rc=1
		elif mkdir -p /sys/fs/cgroup/hugetlb &&
			mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb; then
			: >"$E2E_HUGETLB_DIR/.mounted"
		else
			rmdir /sys/fs/cgroup/hugetlb 2>/dev/null
			rc=1
		fi
	fi
	flock -u "$E2E_HUGETLB_LOCK"
	return $rc
}

crun_cleanup() {
	local f others=0
	[ "$E2E_HUGETLB_MOUNTED" = 1 ] || return 0
	flock "$E2E_HUGETLB_LOCK"
	rm -f "$E2E_HUGETLB_DIR/$$"
	E2E_HUGETLB_MOUNTED=0
	for f in "$E2E_HUGETLB_DIR"/[0-9]*; do
		[ -e "$f" ] || continue
		if kill -0 "${f##*/}" 2>/dev/null; then others=1; else rm -f "$f"; fi
	done
	if [ $others = 0 ] && [ -e "$E2E_HUGETLB_DIR/.mounted" ]; then
		if [ -n "$(find /sys/fs/cgroup/hugetlb -mindepth 1 -type d 2>/dev/null)" ]; then
			echo "crun_cleanup: hugetlb hierarchy still has cgroups, leaving it mounted" >&2
		elif umount /sys/fs/cgroup/hugetlb && rmdir /sys/fs/cgroup/hugetlb; then
			rm -f "$E2E_HUGETLB_DIR/.mounted"
		fi
	fi
	flock -u "$E2E_HUGETLB_LOCK"
	if [ $others = 0 ] && [ ! -e "$E2E_HUGETLB_DIR/.mounted" ]; then
		rm -rf "$E2E_HUGETLB_DIR"
	fi
}

e2e_teardown() {
	local rc=$? h
	trap - EXIT INT TERM
	if [ -n "$LAB" ] && [ "$T_FAIL" -gt 0 ]; then
		# What the agents said, for the failure's log.
		for h in "${E2E_HOSTS[@]}"; do
			[ -f "$(lab_dir "$LAB" "$h")/voyagerd.log" ] || continue
			echo "--- voyagerd.log of host $h (last 40 lines) ---" >&2
			tail -40 "$(lab_dir "$LAB" "$h")/voyagerd.log" >&2
		done
	fi
	if [ -n "$LAB" ]; then
		lab_delete_containers "$LAB" "${E2E_HOSTS[@]}"
		lab_down "$LAB" || echo "e2e: lab_down $LAB reported leftovers" >&2
	fi
	crun_cleanup
	if [ "$T_DONE" = 0 ] && [ $((T_PASS + T_FAIL)) -gt 0 ]; then
		t_summary
	fi
	exit "$rc"
}

# e2e_setup HOST...: a fresh lab; sets LAB
e2e_setup() {
	LAB="vy$$$(printf '%04x' $((RANDOM % 65536)))"
	LAB=${LAB:0:13}
	E2E_HOSTS=("$@")
	trap e2e_teardown EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	"$MKROOTFS_SH" build all >/dev/null || return 1
	lab_up "$LAB" "$@"
}

host_dir() { lab_dir "$LAB" "$1"; }

_rt_root() { echo "$(lab_dir "$LAB" "$1")/runtime/$2"; }

# ctr_run HOST RUNTIME ID BUNDLE
# stdio must be /dev/null: a container whose stdio is a host file (or the
# caller's pipe) cannot be checkpointed (CRIU: "Can't lookup mount ... for
# fd=2").
ctr_run() {
	local h=$1 rt=$2 id=$3 b=$4 root
	root=$(_rt_root "$h" "$rt")
	mkdir -p "$root"
	lab_exec "$LAB" "$h" "$rt" --root "$root" run -d --bundle "$b" "$id" </dev/null >/dev/null 2>&1
}

ctr_state() {
	local out
	out=$(lab_exec "$LAB" "$1" "$2" --root "$(_rt_root "$1" "$2")" state "$3" 2>/dev/null) || { echo absent; return 0; }
	python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' <<<"$out" 2>/dev/null || echo absent
}

ctr_pid() {
	local out
	out=$(lab_exec "$LAB" "$1" "$2" --root "$(_rt_root "$1" "$2")" state "$3" 2>/dev/null) || return 1
	python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' <<<"$out"
}

# ctr_checkpoint HOST RUNTIME ID IMGDIR [extra runtime options]
# The work dir (CRIU logs) is IMGDIR.work; crun needs it to exist.
ctr_checkpoint() {
	local h=$1 rt=$2 id=$3 img=$4
	shift 4
	mkdir -p "$img" "$img.work"
	lab_exec "$LAB" "$h" "$rt" --root "$(_rt_root "$h" "$rt")" checkpoint \
		--image-path "$img" --work-path "$img.work" "$@" "$id" </dev/null >/dev/null 2>&1
}

# ctr_restore HOST RUNTIME ID BUNDLE IMGDIR [extra runtime options]
ctr_restore() {
	local h=$1 rt=$2 id=$3 b=$4 img=$5 root
	shift 5
	root=$(_rt_root "$h" "$rt")
	mkdir -p "$root" "$img.rwork"
	lab_exec "$LAB" "$h" "$rt" --root "$root" restore -d --image-path "$img" \
		--work-path "$img.rwork" --bundle "$b" "$@" "$id" </dev/null >/dev/null 2>&1
}

ctr_delete() {
	lab_exec "$LAB" "$1" "$2" --root "$(_rt_root "$1" "$2")" delete -f "$3" >/dev/null 2>&1
}

ctr_cat() {
	local pid
	pid=$(ctr_pid "$1" "$2" "$3") || return 1
	cat "/proc/$pid/root/${4#/}"
}

bundle_cat() { cat "$(host_dir "$1")/bundles/$2/rootfs/${3#/}"; }

# state_is HOST RUNTIME ID STATE: for wait_until (evaluated each time)
state_is() { [ "$(ctr_state "$1" "$2" "$3")" = "$4" ]; }

wait_until() {
	local t=$1 i
	shift
	for ((i = 0; i < t * 10; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
