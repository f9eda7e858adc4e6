#!/bin/bash
# What bench/fs-scan-cpu.sh and bench/fuse-floor.sh share: a voyager-fs
# with no lab and no migration.  The test drivers of tests/e2e/t_fs.sh
# serve a tree on loopback (vyfs_source), its skeleton is laid out
# (vyfs_skeleton) and voyager-fs mounts it.  Sourced; the caller has BUILD
# (a meson build directory) and die, and stops SRC_PID and FS_PID.
#
#   loopfs_up TREE WORK MNT NOFILE [VOYAGER-FS OPTIONS...]
#       TREE is served; WORK gets the key, the manifest, the skeleton
#       (WORK/back), the state file and the logs (source.log, fs.log);
#       voyager-fs mounts MNT with the OPTIONS, under an open-file limit of
#       NOFILE (soft and hard; empty: as inherited).  Returns once the
#       mount answers; sets SRC_PID and FS_PID.

loopfs_up() {
	local tree=$1 w=$2 mnt=$3 nofile=$4 port wrap=()
	shift 4
	openssl rand -hex 32 >"$w/key" && chmod 600 "$w/key" || die "key"
	port=$((24000 + RANDOM % 20000))
	"$BUILD/vyfs_source" --tree "$tree" --listen "127.0.0.1:$port" --key "$w/key" --stream 1 \
		--manifest-out "$w/manifest" 2>"$w/source.log" &
	SRC_PID=$!
	for _ in $(seq 1 100); do [ -s "$w/manifest" ] && break; sleep 0.1; done
	[ -s "$w/manifest" ] || die "no manifest from vyfs_source: $(tail -3 "$w/source.log")"
	"$BUILD/vyfs_skeleton" "$w/manifest" "$w/back" || die "skeleton"
	[ -n "$nofile" ] && wrap=(prlimit --nofile="$nofile:$nofile" --)
	"${wrap[@]}" "$BUILD/voyager-fs" --backing "$w/back" --state "$w/state" --manifest "$w/manifest" \
		--source "127.0.0.1:$port" --key "$w/key" --stream 1 "$@" "$mnt" 2>"$w/fs.log" &
	FS_PID=$!
	for _ in $(seq 1 100); do
		getfattr --absolute-names -n user.voyager.status "$mnt" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "voyager-fs did not mount: $(tail -3 "$w/fs.log")"
}
