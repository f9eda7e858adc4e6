#!/bin/bash
# The default mode copies the rootfs while the container runs and, at the
# freeze, only what changed since.  The workload here changes its rootfs all
# the time: it appends to a log, creates a new file and deletes an old one,
# and stamps a counter into the middle of a large file, every 20 ms.  And
# once, when told (a file appears), it rewrites a file of random data as a
# sparse one with one block of data: told after the pre-sync sent that
# file and before the freeze, so that the freeze sends it again.  A third
# move does the same with a hard link made to it, which no delta carries:
# then the whole manifest goes, and the target still works in place.  And
# all along a second process stamps a counter into a 1 MiB file through a
# shared mapping only (maphold stamp), which moves neither the file's times
# (its pages stay dirty and writable) nor raises any event: the freeze must
# read that file again all the same, because the container maps it shared
# and writable.  After
# the move (paused on b so that nothing changes while we look) the tree
# must be exactly what the process's memory says it wrote: no lost append,
# no resurrected file, no stale block, no byte of an older copy where the
# file has a hole now.  The freeze sends what changed as a delta of the
# manifest and the target updates its tree in place.  Also: downtime does not carry the
# pre-synced bytes, and --mode stop-copy still works.  A last move goes to a
# target that could not index its pre-sync (VOYAGER_TEST_NO_PRESYNC_INDEX):
# the whole manifest at the freeze, with a second file stamped through a
# mapping that the source must name in its resend list.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || { t_fail "agents"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
ID=${LAB}p
IPA=$(lab_ip "$LAB" a)
IPB=$(lab_ip "$LAB" b)
SCRIPT='/sbin/maphold /ring.bin:stamp >/dev/null 2>&1 &
i=0
while true; do
  i=$((i+1))
  echo $i >>/data/log
  echo $i >/data/f$i
  rm -f /data/f$((i-5))
  printf "%08d" $i | dd of=/data/big bs=8 count=1 seek=2097152 conv=notrunc 2>/dev/null
  if [ -e /data/go ]; then
    : >/holey
    printf "%08d" $i | dd of=/holey bs=65536 seek=$((i % 16)) conv=notrunc 2>/dev/null
    truncate -s 1048576 /holey
    rm /data/go
  fi
  if [ -e /data/link ]; then
    ln /holey /data/holey-link
    : >/holey
    printf "%08d" $i | dd of=/holey bs=65536 seek=$((i % 16)) conv=notrunc 2>/dev/null
    truncate -s 1048576 /holey
    rm /data/link
  fi
  usleep 20000
done'
"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /bin/sh -c "$SCRIPT" >/dev/null ||
	{ t_fail "bundle"; t_done; }
# 96 MiB of static data: its pre-sync takes a while on the shaped link
# (about 4 s), so the workload changes
# plenty between the pre-sync and the freeze.
dd if=/dev/urandom of="$A/bundles/$ID/rootfs/static.bin" bs=1M count=64 status=none
dd if=/dev/urandom of="$A/bundles/$ID/rootfs/data/big" bs=1M count=32 status=none
dd if=/dev/urandom of="$A/bundles/$ID/rootfs/holey" bs=1M count=1 status=none
dd if=/dev/zero of="$A/bundles/$ID/rootfs/ring.bin" bs=1M count=1 status=none
lab_shape "$LAB" a 200mbit
lab_shape "$LAB" b 200mbit
ctr_run a runc "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
# stamped FILE: maphold has stamped slot 1 of FILE (a stamp of 1 or more)
stamped() {
	wait_until 10 bash -c "head -c 4104 '$1' | tail -c 8 | grep -q '^[0-9]*[1-9][0-9]*\$'"
}

# presync_move FROM IP OUT CUE [ARGS...]: migrate from host FROM to IP with
# --mode presync (and ARGS) in the background, its output into OUT; 1 s
# into its pre-sync (FROM's log has one more "presync" line than before)
# create CUE, for the workload; then wait for it, with its exit status.
presync_move() {
	local from=$1 ip=$2 out=$3 cue=$4 log n mig
	shift 4
	log="$(host_dir "$from")/voyagerd.log"
	n=$(grep -c "($ID): presync" "$log")
	vy_cli "$LAB" "$from" migrate "$ID" --to "$ip" --mode presync "$@" >"$out" 2>"$out.err" &
	mig=$!
	wait_until 20 bash -c "[ \$(grep -c '($ID): presync' '$log') -gt $n ]" && sleep 1 && touch "$cue"
	wait "$mig"
}

wait_until 10 test -s "$A/bundles/$ID/rootfs/data/log" || { t_fail "workload runs"; t_done; }
stamped "$A/bundles/$ID/rootfs/ring.bin" || { t_fail "maphold stamps ring.bin"; t_done; }

# consistent HOST ROOTFS: the tree is one the workload can have left at
# some instant (checked while paused).  With L the log's last line, each
# iteration goes through: appended L (files L-5..L-1, stamp L-1), made fL
# (files L-5..L; the shell opens it, truncating, before it writes L, so a
# pause in between leaves fL empty), removed f(L-5) (files L-4..L),
# stamped L.
consistent() {
	local r=$2 last stamp files want_a want_b want_c
	last=$(tail -n1 "$r/data/log")
	seq 1 "$last" | cmp -s - "$r/data/log" || { echo "log has gaps or repeats (last $last)"; return 1; }
	stamp=$((10#$(dd if="$r/data/big" bs=8 count=1 skip=2097152 2>/dev/null)))
	files=$(cd "$r/data" && ls | grep '^f' | sed 's/^f//' | sort -n | tr '\n' ' ')
	for k in $files; do
		[ "$(cat "$r/data/f$k")" = "$k" ] || { [ "$k" = "$last" ] && [ ! -s "$r/data/f$k" ]; } ||
			{ echo "f$k holds '$(cat "$r/data/f$k")' (log ends at $last)"; return 1; }
	done
	want_a="$(seq -s ' ' $((last - 5)) $((last - 1))) "
	want_b="$(seq -s ' ' $((last - 5)) "$last") "
	want_c="$(seq -s ' ' $((last - 4)) "$last") "
	if [ "$stamp" = $((last - 1)) ] && { [ "$files" = "$want_a" ] || [ "$files" = "$want_b" ] ||
		[ "$files" = "$want_c" ]; }; then
		return 0
	fi
	[ "$stamp" = "$last" ] && [ "$files" = "$want_c" ] && return 0
	echo "log ends at $last, stamp $stamp, files: $files"
	return 1
}

# holey ROOTFS: /holey as the told rewrite left it: 1 MiB, and no
# non-zero byte but a stamp K at block K % 16.  A byte of the pre-synced
# copy (random) where the file has a hole now would be one: the freeze
# sends the file again, and b must empty it before it writes.
holey() {
	python3 - "$1/holey" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
nz = [i // 65536 for i in range(0, len(data), 65536) if any(data[i:i + 65536])]
if len(data) == 1048576 and len(nz) == 1:
    off = nz[0] * 65536
    k = data[off:off + 8]
    if k.isdigit() and int(k) % 16 == nz[0] and not any(data[off + 8:off + 65536]):
        sys.exit(0)
print("holey (%d bytes) has data in blocks %s" % (len(data), nz))
sys.exit(1)
PY
}

# ring ROOTFS: each 4 KiB slot j of /ring.bin holds the last stamp K with
# K % 256 = j up to the highest stamp M found, "00000000" where none fell
# yet.  A slot of the pre-synced copy that the freeze did not send again
# holds an older stamp.
ring() { # ROOTFS [FILE]
	python3 - "$1/${2:-ring.bin}" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
n = len(data) // 4096
got = []
for j in range(n):
    s = data[j * 4096:j * 4096 + 8]
    if not s.isdigit():
        print("ring.bin slot %d holds %r" % (j, s))
        sys.exit(1)
    got.append(int(s))
m = max(got)
bad = [j for j in range(n) if got[j] != (m - (m - j) % n if m - (m - j) % n >= 1 else 0)]
if len(data) == 1048576 and m > 0 and not bad:
    sys.exit(0)
print("%s: highest stamp %d; %d stale slots, e.g. %s" % (sys.argv[1].split("/")[-1], m, len(bad),
      ", ".join("%d: %d" % (j, got[j]) for j in bad[:4])))
sys.exit(1)
PY
}

# the rewrite is told 1 s into the pre-sync: holey (1 MiB, the first file
# of the manifest, which lists a directory's entries before any of its
# subdirectories') went at once, and the freeze comes at about 4 s
presync_move a "$IPB" "$A/vy-presync.json" "$A/bundles/$ID/rootfs/data/go" --json
out=$(cat "$A/vy-presync.json")
echo "presync: $out"
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(vy_json_get "$out" mode)" = presync ] &&
	t_ok "--mode presync migrates" || t_fail "presync migrates" "$out"
pre=$(vy_json_get "$out" phases_ms.presync)
xfer=$(vy_json_get "$out" phases_ms.transfer)
[ -n "$pre" ] && [ "$xfer" -lt "$pre" ] 2>/dev/null &&
	t_ok "the freeze carries only the changes (transfer $xfer ms < presync $pre ms)" ||
	t_fail "the freeze carries only the changes" "presync $pre transfer $xfer"
# the freeze sent a delta and only the changed files, the big ones as
# patches (data/big: one chunk of 32 MiB); b updated in place
line=$(grep -o "gone since the pre-sync (delta of [0-9]* bytes); [0-9]* files sent again, [0-9]* of them as patches ([0-9]* bytes of [0-9]*)" "$A/voyagerd.log" | tail -1)
nfiles=$(echo "$line" | grep -o "[0-9]* files" | cut -d' ' -f1)
npatch=$(echo "$line" | grep -o "[0-9]* of them" | cut -d' ' -f1)
sent=$(echo "$line" | grep -o "([0-9]* bytes of" | tr -dc 0-9)
due=$(echo "$line" | grep -o "bytes of [0-9]*)" | tr -dc 0-9)
# and the source read again only the directories that changed (the
# workload writes in / and /data), not all of them
fast=$(grep -o "rootfs: [0-9]* entries changed without an event; [0-9]* directories read again" "$A/voyagerd.log" | tail -1)
ndirs=$(echo "$fast" | grep -o "[0-9]* directories" | cut -d' ' -f1)
alldirs=$(find "$B/state/containers/$ID/bundle/rootfs" -xdev -type d | wc -l)
[ -n "$line" ] && [ "$nfiles" -ge 1 ] && [ "$nfiles" -le 12 ] &&
	[ -n "$ndirs" ] && [ "$ndirs" -ge 1 ] && [ $((ndirs * 2)) -lt "$alldirs" ] &&
	[ "$npatch" -ge 1 ] && [ $((sent * 10)) -lt "$due" ] &&
	grep -q "bundle/rootfs brought up to date in [0-9]* ms" "$B/voyagerd.log" &&
	t_ok "the freeze read $ndirs of $alldirs directories, sent a delta and $nfiles changed files, $npatch as patches ($sent bytes of $due); b updated its tree in place" ||
	t_fail "a delta at the freeze" "source: '$line', '$fast'; b: $(grep "brought up to date" "$B/voyagerd.log")"
lab_exec "$LAB" b runc --root "$B/runtime/runc" pause "$ID"
RB="$B/state/containers/$ID/bundle/rootfs"
msg=$(consistent b "$RB") && t_ok "after presync: log, created and deleted files, big-file block all exact" ||
	t_fail "after presync: tree matches what the process wrote" "$msg"
msg=$(holey "$RB") && [ ! -e "$RB/data/go" ] &&
	t_ok "a file rewritten with holes after its pre-sync: no byte of the old copy in them" ||
	t_fail "the sparse rewrite" "$msg; data/go there: $(ls "$RB/data/go" 2>&1)"
cmp -s "$A/bundles/$ID/rootfs/static.bin" "$RB/static.bin" && t_ok "static data identical" ||
	t_fail "static data identical"
# (the processes read from the frozen cgroup, not from a scan of the host's)
found=$(grep -o "1 files mapped shared and writable by the container (its processes from its cgroup, in [0-9]* ms)" "$A/voyagerd.log" | head -1)
detail=${found#*(}
msg=$(ring "$RB") && [ -n "$found" ] &&
	t_ok "a file written through a shared mapping, with no trace in its times: read again at the freeze, exact (${detail%)})" ||
	t_fail "the file written through a shared mapping" "$msg; $(grep -c "mapped shared and writable" "$A/voyagerd.log") lines on a"
[ ! -e "$B/state/containers/$ID/bundle/rootfs.old" ] && [ ! -e "$B/state/containers/$ID/bundle/rootfs.delta" ] &&
	t_ok "no stale trees left on b" || t_fail "no stale trees left on b"
lab_exec "$LAB" b runc --root "$B/runtime/runc" resume "$ID"
sleep 0.5

out=$(vy_cli "$LAB" b migrate "$ID" --to "$IPA" --mode stop-copy --json)
echo "stop-copy: $out"
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(vy_json_get "$out" mode)" = stop-copy ] &&
	[ -z "$(vy_json_get "$out" phases_ms.presync)" ] &&
	t_ok "--mode stop-copy migrates back without a pre-sync" || t_fail "stop-copy back" "$out"
lab_exec "$LAB" a runc --root "$A/runtime/runc" pause "$ID"
msg=$(consistent a "$A/state/containers/$ID/bundle/rootfs") && msg=$(holey "$A/state/containers/$ID/bundle/rootfs") &&
	msg=$(ring "$A/state/containers/$ID/bundle/rootfs") &&
	t_ok "after stop-copy: the tree is exact too" || t_fail "after stop-copy: tree exact" "$msg"
lab_exec "$LAB" a runc --root "$A/runtime/runc" resume "$ID"
sleep 0.5

# this one prints the report as a person reads it (no --json)
RA="$A/state/containers/$ID/bundle/rootfs"
presync_move a "$IPB" "$A/vy-presync.txt" "$RA/data/link"
rc=$?
out=$(cat "$A/vy-presync.txt")
echo "presync with a new hard link:"
echo "$out" | sed 's/^/#   /'
lab_exec "$LAB" b runc --root "$B/runtime/runc" pause "$ID"
msg=$(consistent b "$RB") && msg=$(holey "$RB") && msg=$(ring "$RB") && [ "$RB/holey" -ef "$RB/data/holey-link" ] &&
	[ "$rc" = 0 ] && echo "$out" | grep -q "^migrated: $ID -> $IPB  (migration [0-9a-f]*, presync)" &&
	grep -q "bundle/rootfs brought up to date in place in" "$B/voyagerd.log" &&
	t_ok "presync with a hard link made after the pre-sync: whole manifest, updated in place, exact" ||
	t_fail "presync with a new hard link" "${msg:-}; linked: $(stat -c '%i %h' "$RB/holey" "$RB/data/holey-link" 2>&1 | tr '\n' ' '); exit $rc"
# the summary's lines, each from the report's fields
echo "$out" | grep -Eq "^  downtime  [0-9]+ ms$" &&
	echo "$out" | grep -Eq "^  phases    preflight [0-9]+ ms; presync [0-9]+ ms; checkpoint [0-9]+ ms; transfer" &&
	echo "$out" | grep -Eq "^  receive   memory [0-9.]+; rootfs [0-9.]+; wait [0-9.]+; \(ms\)$" &&
	echo "$out" | grep -Eq "^  rcu       expedited grace periods in the freeze: source (set|already on), target (set|already on)$" &&
	echo "$out" | grep -Eq "^  wake-up   CPU latency bound 0 in the freeze: source (set|already 0), target (set|already 0)$" &&
	echo "$out" | grep -Eq "^  bytes     memory [0-9.]+ [KMG]?i?B, rootfs " &&
	t_ok "the summary for a person: result, downtime, phases, steps, RCU and wake-up lines" ||
	t_fail "the summary for a person" "$out"
lab_exec "$LAB" b runc --root "$B/runtime/runc" resume "$ID"
sleep 0.5

# back to a, whose agent cannot index what it pre-synced (as when out of
# memory): its ACK says so, and the freeze sends the whole manifest, which
# a applies in place; the sparse rewrite and the stamped file still exact.
# A second stamping process starts just before, so that its file's pages
# stay dirty and writable (no time moves) from before the pre-sync until
# the freeze: ring.bin's pages, 30 s after they were dirtied, get written
# back, and its next stamps move its mtime again.
dd if=/dev/zero of="$RB/ring2.bin" bs=1M count=1 status=none
lab_exec "$LAB" b runc --root "$B/runtime/runc" exec -d "$ID" \
	/bin/sh -c 'exec /sbin/maphold /ring2.bin:stamp </dev/null >/dev/null 2>&1' ||
	t_fail "maphold for ring2.bin"
stamped "$RB/ring2.bin" || t_fail "maphold stamps ring2.bin"
vy_agent_stop "$LAB" a
VY_AGENT_ENV="VOYAGER_TEST_NO_PRESYNC_INDEX=1" vy_agent_start "$LAB" a runc || t_fail "agent a (no index)"
presync_move b "$IPA" "$B/vy-presync4.json" "$RB/data/go" --json
out=$(cat "$B/vy-presync4.json")
lab_exec "$LAB" a runc --root "$A/runtime/runc" pause "$ID"
msg=$(consistent a "$RA") && msg=$(holey "$RA") && msg=$(ring "$RA") && msg=$(ring "$RA" ring2.bin) &&
	[ ! -e "$RA/data/go" ] &&
	[ "$(vy_json_get "$out" result)" = migrated ] &&
	grep -q "not indexed (VOYAGER_TEST_NO_PRESYNC_INDEX); the freeze will send the whole manifest" "$A/voyagerd.log" &&
	grep -q "entries unchanged since the pre-sync" "$B/voyagerd.log" &&
	grep -q "2 files mapped shared and writable by the container" "$B/voyagerd.log" &&
	grep -q "bundle/rootfs brought up to date in place in" "$A/voyagerd.log" &&
	t_ok "a target that could not index its pre-sync: the whole manifest at the freeze, applied in place, exact" ||
	t_fail "a target without the pre-sync's index" "${msg:-}; $out"
lab_exec "$LAB" a runc --root "$A/runtime/runc" resume "$ID"
t_done
