#!/bin/bash
# Just-in-time migration (runc) of a tree that changes between the
# skeleton and the freeze.
#
# A jit migration sends the rootfs and volume manifests before the freeze
# (the skeleton); at the freeze the source sends only what changed since
# (a delta, from its inotify watch), and the target applies it to the
# skeleton it laid out and to the voyager-fs it pre-started.  A hard link
# in the change cannot be said as a delta: then the whole manifest goes.
#
# VOYAGER_WAITPOINT holds A's agent right after the skeleton, with the
# container still running, while this test changes the tree under it:
#   1. delta: new files (one of 3 MiB of random bytes), a new nested
#      directory, a file and a whole subtree gone, a file grown, rewritten
#      and chmodded, a file rewritten in place in a directory whose names
#      did not change, 4 KiB written into the 64 MiB sparse file, a
#      symlink retargeted, a directory replaced by a file
#      and a file by a directory, a new user.* xattr, a chmodded directory;
#      and in the directory volume, a file new, one changed, one gone.
#      A's log shows the delta for the rootfs and the volume, B's log that
#      it brought its skeleton up to date, and on B (through voyager-fs)
#      every entry, mode, owner, time, xattr, symlink, hard link and every
#      regular file's SHA-256 (fixture.py list) is the changed tree's; the
#      same once B is independent.
#   2. fallback, twice, each with a fresh container paused the same way: a
#      hard link is added, with both names in a directory read again at
#      the freeze (fsame), or with the file's first name in a directory
#      that saw no event (fcross).  A sends the whole manifest (no delta
#      line; its size is the skeleton's), and B's tree, hard link
#      included, is the changed one.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
# Inside host A, only A's own directory is visible: the waitpoint's files
# live there.
WORK=$A/jd
mkdir -p "$WORK"
MIG_PID=""

# The background migrate (a subshell of ours) goes first; the agents,
# voyager-fs and containers go with the lab.
jd_teardown() {
	local rc=$?
	if [ -n "$MIG_PID" ]; then
		kill "$MIG_PID" 2>/dev/null
		wait "$MIG_PID" 2>/dev/null
	fi
	(exit $rc)
	e2e_teardown
}
trap jd_teardown EXIT

VY_AGENT_ENV="VOYAGER_WAITPOINT=source-after-skeleton:$WORK/go1" vy_agent_start "$LAB" a runc &&
	vy_agent_start "$LAB" b runc || { t_fail "agents start"; t_done; }

# extra_tree DIR: more to remove, replace and retarget than fixture.py has
extra_tree() {
	local x=$1/extra
	mkdir -p "$x/olddir/one/two" "$x/olddir/three" "$x/dir2file" "$x/keep"
	echo "will go with its directory" >"$x/olddir/one/two/f"
	head -c 70000 /dev/urandom >"$x/olddir/three/g.bin"
	echo "a file in a directory that becomes a file" >"$x/dir2file/inside"
	echo "a file that becomes a directory" >"$x/file2dir"
	echo "short" >"$x/grow.txt"
	chmod 0644 "$x/grow.txt"
	echo "target one" >"$x/keep/target1"
	echo "target two" >"$x/keep/target2"
	ln -s keep/target1 "$x/link"
	echo "goes alone" >"$x/keep/lonely"
}

# start_fixture_ctr ID [VOLDIR]: a counter container on A with a fixture
# tree (and extra_tree) at /fixture, and VOLDIR at /vol
start_fixture_ctr() {
	local id=$1 vol=${2:-} b
	b=$A/bundles/$id
	"$BUNDLE_SH" create "$b" busybox --id "$id" --cgroup-parent "$(lab_cgroup_parent "$LAB" a)" \
		${vol:+--volume "$vol:/vol"} -- /sbin/counter >/dev/null || return 1
	mkdir -p "$b/rootfs/fixture" &&
		python3 "$here/fixture.py" make "$b/rootfs/fixture" &&
		extra_tree "$b/rootfs/fixture" || return 1
	ctr_run a runc "$id" "$b" || return 1
	wait_until 10 test -s "$b/rootfs/data/counter"
}

# migrate_start ID TAG: voyager migrate ID to B in the background; its JSON
# in $WORK/TAG.out, its exit code in $WORK/TAG.rc
migrate_start() {
	rm -f "$WORK/$2.out" "$WORK/$2.rc"
	(
		vy_cli "$LAB" a migrate "$1" --to "$(lab_ip "$LAB" b)" --mode jit --json \
			>"$WORK/$2.out" 2>"$WORK/$2.err"
		echo $? >"$WORK/$2.rc"
	) </dev/null &
	MIG_PID=$!
}

# migrate_wait TAG: until the background migrate is done (60 s at most)
migrate_wait() {
	wait_until 60 test -s "$WORK/$1.rc" || return 1
	wait "$MIG_PID" 2>/dev/null
	MIG_PID=""
}

# manifest_bytes MID FLAVOR: size of the rootfs manifest A sent in that
# phase ("skeleton" or "jit"), from A's log
manifest_bytes() {
	sed -nE "s/.*migration $1: $2 rootfs: .*, manifest of ([0-9]+) bytes sent.*/\1/p" \
		"$A/voyagerd.log" | tail -1
}

# counting FILE TOKEN COUNT: the counter in FILE is TOKEN's, past COUNT, and advances
counting() {
	local tok c1 c2
	read -r tok c1 <"$1" || return 1
	sleep 0.3
	read -r _ c2 <"$1" || return 1
	echo "counter: $3 -> $c1 -> $c2"
	[ "$tok" = "$2" ] && [ "$c1" -gt "$3" ] && [ "$c2" -gt "$c1" ]
}

# expect DIR: fixture.py list of DIR on A, during the wait.  It reads the
# files with O_NOATIME: a read sets a file's atime, which the manifest
# holds, and a changed hard-linked file (atime included) in a directory
# read again makes the freeze send the whole manifest, which is not what
# the delta case is about.
expect() {
	python3 -B - "$here" "$1" <<'EOF'
import hashlib, os, sys
sys.path.insert(0, sys.argv[1])
import fixture

def sha256(path):
    h = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOATIME | os.O_CLOEXEC), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

fixture.sha256 = sha256
print("\n".join(fixture.listing(sys.argv[2])))
EOF
}

# same_tree EXPECTED DIR: fixture.py list of DIR (on B) is EXPECTED
same_tree() {
	python3 "$here/fixture.py" list "$2" >"$1.got" 2>&1 &&
		diff -u "$1" "$1.got" >"$1.diff" && return 0
	cat "$1.diff"
	return 1
}

# ---------------------------------------------------------------------------
# 1. The delta
ID=${LAB}d
VOL=$A/vol
mkdir -p "$VOL/sub"
echo "volume file that changes" >"$VOL/changes.txt"
echo "volume file that goes" >"$VOL/goes.txt"
head -c 200000 /dev/urandom >"$VOL/sub/keep.bin"
start_fixture_ctr "$ID" "$VOL" || { t_fail "container start"; t_done; }
F=$A/bundles/$ID/rootfs/fixture
read -r tok cnt <"$A/bundles/$ID/rootfs/data/counter"

migrate_start "$ID" m1
wait_until 60 test -e "$WORK/go1.reached" &&
	t_ok "delta: A's agent waits after the skeleton" ||
	{ t_fail "delta: waitpoint reached" "$(tail -5 "$A/voyagerd.log")"; t_done; }
[ "$(ctr_state a runc "$ID")" = running ] && t_ok "delta: the container still runs on A during the wait" ||
	t_fail "delta: still running on A" "$(ctr_state a runc "$ID")"

# The changes, while it runs.
head -c 3145728 /dev/urandom >"$F/new-big.bin"
echo "a small new file" >"$F/new-small.txt"
head -c 4096 /dev/urandom >"$F/new-4k.bin"
: >"$F/new-empty"
mkdir -p "$F/newdir/inner/deepest"
echo "new and nested" >"$F/newdir/inner/a.txt"
head -c 123457 /dev/urandom >"$F/newdir/inner/deepest/b.bin"
chmod 0700 "$F/newdir/inner"
rm -f "$F/extra/keep/lonely"
rm -rf "$F/extra/olddir"
echo "grown and rewritten, now much longer than before: $(head -c 3000 /dev/urandom | base64 -w0)" \
	>"$F/extra/grow.txt"
chmod 0751 "$F/extra/grow.txt"
echo "appended on A during the wait" >>"$F/plain.txt"
dd if=/dev/urandom of="$F/dir/sub/deeper/nested.bin" bs=4096 seek=10 count=2 conv=notrunc status=none
dd if=/dev/urandom of="$F/sparse.img" bs=4096 seek=4096 count=1 conv=notrunc status=none
ln -sfn keep/target2 "$F/extra/link"
rm -rf "$F/extra/dir2file"
echo "was a directory" >"$F/extra/dir2file"
rm -f "$F/extra/file2dir"
mkdir "$F/extra/file2dir"
echo "was a file" >"$F/extra/file2dir/now-inside"
python3 -c 'import os, sys
os.setxattr(sys.argv[1], "user.delta.new", b"set during the wait")
os.setxattr(sys.argv[2], "user.voyager.test", b"changed value")' "$F/new-small.txt" "$F/plain.txt"
chmod 0710 "$F/extra/keep"
chmod 0755 "$F/sticky"
echo "changed on A during the wait, longer" >"$VOL/changes.txt"
rm -f "$VOL/goes.txt"
echo "new in the volume" >"$VOL/sub/new.txt"
expect "$F" >"$WORK/d.fixture.expected"
expect "$VOL" >"$WORK/d.vol.expected"

touch "$WORK/go1"
migrate_wait m1 || { t_fail "delta: migrate ends within 60 s"; t_done; }
out=$(cat "$WORK/m1.out")
echo "report: $out"
mid=$(vy_json_get "$out" id)
[ "$(cat "$WORK/m1.rc")" = 0 ] && [ "$(vy_json_get "$out" result)" = migrated ] &&
	t_ok "delta: migrate exits 0 with result migrated" ||
	{ t_fail "delta: migrate" "rc=$(cat "$WORK/m1.rc") $(cat "$WORK/m1.err")"; t_done; }

line=$(grep -E "migration $mid: rootfs: [0-9]+ entries changed or new and [0-9]+ gone since the skeleton" \
	"$A/voyagerd.log")
echo "A: $line"
[ -n "$line" ] && t_ok "delta: A sent only the rootfs' change since the skeleton" ||
	t_fail "delta: A's log has the rootfs delta" "$(grep "migration $mid" "$A/voyagerd.log" | tail -8)"
vline=$(grep -E "migration $mid: volume: [0-9]+ entries changed or new and [0-9]+ gone since the skeleton" \
	"$A/voyagerd.log")
echo "A: $vline"
[ -n "$vline" ] && t_ok "delta: and the volume's" || t_fail "delta: A's log has the volume delta"
sk=$(manifest_bytes "$mid" skeleton)
dbytes=$(sed -nE 's/.*\(delta of ([0-9]+) bytes\).*/\1/p' <<<"$line")
echo "rootfs skeleton manifest: $sk bytes, delta: $dbytes bytes"
[ -n "$sk" ] && [ -n "$dbytes" ] && [ "$dbytes" -lt "$sk" ] &&
	t_ok "delta: smaller than the skeleton's manifest ($dbytes < $sk bytes)" ||
	t_fail "delta: smaller than the skeleton" "delta $dbytes, skeleton $sk"
bl=$(grep -E "migration $mid: skeleton .*: [0-9]+ entries changed since it was laid out" "$B/voyagerd.log")
echo "B: $bl"
# stream 1 is the rootfs (backing/1), the volumes come after it
grep -qE "skeleton [^ ]*/backing/1: [1-9][0-9]* entries changed since it was laid out" <<<"$bl" &&
	t_ok "delta: B brought its rootfs skeleton up to date" ||
	t_fail "delta: B's log has the skeleton update" "$(grep "migration $mid" "$B/voyagerd.log" | tail -8)"
grep -E "migration $mid: voyager-fs .*(is ready|after the go)" "$B/voyagerd.log"
grep -qE "migration $mid: voyager-fs .* serves .*rootfs, [0-9]+ ms after the go" "$B/voyagerd.log" &&
	t_ok "delta: B's voyager-fs was started before the freeze and went at the go" ||
	t_fail "delta: voyager-fs pre-started"

[ "$(ctr_state a runc "$ID")" = absent ] && t_ok "delta: gone from A" ||
	t_fail "delta: gone from A" "$(ctr_state a runc "$ID")"
RB="/proc/$(ctr_pid b runc "$ID")/root"
counting "$RB/data/counter" "$tok" "$cnt" && t_ok "delta: the counter goes on on B (same incarnation)" ||
	t_fail "delta: counter on B"
grep -q "link-group" "$WORK/d.fixture.expected" && grep -q "^extra/dir2file type=10 " "$WORK/d.fixture.expected" &&
	grep -q "^extra/file2dir/now-inside " "$WORK/d.fixture.expected" &&
	t_ok "delta: the expected tree has the fixture's hard links and the replacements" ||
	t_fail "delta: expected listing"
same_tree "$WORK/d.fixture.expected" "$RB/fixture" &&
	t_ok "delta: on B every entry, mode, owner, time, xattr, link and file's SHA-256 is the changed tree's" ||
	t_fail "delta: rootfs on B is the changed tree"
same_tree "$WORK/d.vol.expected" "$RB/vol" && t_ok "delta: the volume on B is the changed one" ||
	t_fail "delta: volume on B"
vy_wait_independent "$LAB" b "$mid" 90 && t_ok "delta: B became independent" ||
	t_fail "delta: B independent" "$(vy_cli "$LAB" b --json status "$mid")"
same_tree "$WORK/d.fixture.expected" "$RB/fixture" &&
	same_tree "$WORK/d.vol.expected" "$RB/vol" &&
	t_ok "delta: and still, once every byte is local" || t_fail "delta: trees once independent"
counting "$RB/data/counter" "$tok" "$cnt" && t_ok "delta: the counter still goes on" ||
	t_fail "delta: counter once independent"

# ---------------------------------------------------------------------------
# 2. The fallback: a hard link made during the wait, so no delta.
# fallback TAG N OLD NEW: a fresh container ID${TAG}; A's agent, restarted
# with waitpoint goN (it has released the migration before), waits after
# the skeleton; NEW becomes a second name of OLD (paths under /fixture),
# with a new file beside it and a file grown.
fallback() {
	local tag=$1 n=$2 old=$3 new=$4 id=${LAB}$1 f out mid sk full rb tok cnt
	vy_agent_stop "$LAB" a
	VY_AGENT_ENV="VOYAGER_WAITPOINT=source-after-skeleton:$WORK/go$n" vy_agent_start "$LAB" a runc ||
		{ t_fail "$tag: agent a restarts with waitpoint go$n"; return 1; }
	start_fixture_ctr "$id" || { t_fail "$tag: container start"; return 1; }
	f=$A/bundles/$id/rootfs/fixture
	read -r tok cnt <"$A/bundles/$id/rootfs/data/counter"
	migrate_start "$id" "m$n"
	wait_until 60 test -e "$WORK/go$n.reached" && t_ok "$tag: A's agent waits after the skeleton" ||
		{ t_fail "$tag: waitpoint reached" "$(tail -5 "$A/voyagerd.log")"; return 1; }
	ln "$f/$old" "$f/$new"
	echo "new beside the hard link" >"$f/new-too.txt"
	echo "appended" >>"$f/extra/grow.txt"
	expect "$f" >"$WORK/$tag.fixture.expected"
	touch "$WORK/go$n"
	migrate_wait "m$n" || { t_fail "$tag: migrate ends within 60 s"; return 1; }
	out=$(cat "$WORK/m$n.out")
	echo "report: $out"
	mid=$(vy_json_get "$out" id)
	[ "$(cat "$WORK/m$n.rc")" = 0 ] && [ "$(vy_json_get "$out" result)" = migrated ] &&
		t_ok "$tag: migrate exits 0 with result migrated" ||
		{ t_fail "$tag: migrate" "rc=$(cat "$WORK/m$n.rc") $(cat "$WORK/m$n.err")"; return 1; }
	grep "migration $mid: .*rootfs" "$A/voyagerd.log"
	! grep -qE "migration $mid: rootfs: .* since the skeleton" "$A/voyagerd.log" &&
		t_ok "$tag: no rootfs delta from A" || t_fail "$tag: A sent a rootfs delta"
	sk=$(manifest_bytes "$mid" skeleton)
	full=$(manifest_bytes "$mid" jit)
	echo "rootfs skeleton manifest: $sk bytes, at the freeze: $full bytes"
	[ -n "$sk" ] && [ -n "$full" ] && [ "$full" -ge $((sk * 9 / 10)) ] &&
		t_ok "$tag: A sent the whole manifest at the freeze ($full bytes, skeleton $sk)" ||
		t_fail "$tag: whole manifest at the freeze" "skeleton $sk, freeze $full"
	[ "$(ctr_state a runc "$id")" = absent ] && t_ok "$tag: gone from A" || t_fail "$tag: gone from A"
	rb="/proc/$(ctr_pid b runc "$id")/root"
	counting "$rb/data/counter" "$tok" "$cnt" && t_ok "$tag: the counter goes on on B" ||
		t_fail "$tag: counter on B"
	grep -q "^$new .*link-group=" "$WORK/$tag.fixture.expected" &&
		t_ok "$tag: the expected tree has the new hard link" || t_fail "$tag: expected listing"
	same_tree "$WORK/$tag.fixture.expected" "$rb/fixture" &&
		t_ok "$tag: on B the tree is the changed one, new hard link included" ||
		t_fail "$tag: rootfs on B is the changed tree"
	vy_wait_independent "$LAB" b "$mid" 90 && t_ok "$tag: B became independent" ||
		t_fail "$tag: B independent" "$(vy_cli "$LAB" b --json status "$mid")"
	same_tree "$WORK/$tag.fixture.expected" "$rb/fixture" &&
		t_ok "$tag: and still, once every byte is local" || t_fail "$tag: tree once independent"
}
# Both names in a directory that is read again at the freeze.
fallback fsame 2 extra/grow.txt extra/grow-hard
# The file's first name in a directory that saw no event.
fallback fcross 3 extra/keep/target2 extra/hard-to-target2
t_done
