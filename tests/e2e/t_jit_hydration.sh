#!/bin/bash
# Just-in-time migration while the files are still arriving (runc).
#
# A counter container with a 192 MiB file of random bytes in its rootfs
# moves from A to B with the background stream held to 16 MB/s, so that
# hydration takes about 12 s and each step below happens mid-way:
#   - a 4 KiB write into the big file, which has not arrived, moves at most
#     a few chunks (voyager-fs's demand counters say how many bytes);
#   - A's agent is stopped: B keeps running on what it has, hydration
#     waits; A's agent comes back and serves again (journal recovery);
#   - B's agent is killed: voyager-fs runs on, the container runs on; the
#     restarted agent follows hydration to the end and releases A;
#   - every byte of the big file on B is the source's, with our 4 KiB;
#   - once independent, A's agent is stopped for good: the container on B
#     runs on and every file in it reads back.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || { t_fail "agents start"; t_done; }

ID=${LAB}h
A=$(host_dir a)
B=$(host_dir b)
"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/counter >/dev/null ||
	{ t_fail "bundle"; t_done; }
head -c $((192 << 20)) /dev/urandom >"$A/bundles/$ID/rootfs/big"
cp "$A/bundles/$ID/rootfs/big" "$A/big.expected"
ctr_run a runc "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
wait_until 10 test -s "$A/bundles/$ID/rootfs/data/counter" || { t_fail "counter runs"; t_done; }

MNT=$B/state/containers/$ID/bundle/rootfs
fs_status() { lab_exec "$LAB" b getfattr --absolute-names --only-values -n user.voyager.status "$MNT"; }
fs_get() { fs_status | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
counter_on_b() { read -r _ c <"/proc/$(ctr_pid b runc "$ID")/root/data/counter" && echo "$c"; }
advancing_on_b() {
	local c1 c2
	c1=$(counter_on_b) && sleep 0.4 && c2=$(counter_on_b) && [ "$c2" -gt "$c1" ]
}
source_down() { [ "$(fs_get source_up)" = False ]; }
source_up() { [ "$(fs_get source_up)" = True ]; }

out=$(vy_cli "$LAB" a migrate "$ID" --to "$(lab_ip "$LAB" b)" --mode jit --hydrate-rate 16M --json)
echo "report: $out"
mid=$(vy_json_get "$out" id)
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(vy_json_get "$out" mode)" = jit ] &&
	t_ok "jit migrate: migrated" || { t_fail "jit migrate" "$out"; t_done; }
[ "$(fs_get independent)" = False ] && t_ok "B is not independent yet (the big file is on its way)" ||
	t_fail "B should still be hydrating" "$(fs_status)"
advancing_on_b && t_ok "the container runs on B" || t_fail "the container runs on B"
sta=$(vy_cli "$LAB" a status)
grep -q "$mid  source: serving 1 trees" <<<"$sta" && t_ok "voyager status on A shows what it serves" ||
	t_fail "status on A shows serving" "$sta"
stb=$(vy_cli "$LAB" b status)
echo "$stb"
grep -qE "hydration [0-9]+%: .* of [0-9]+ files, .*/s, eta" <<<"$stb" &&
	t_ok "voyager status on B shows hydration: bytes, files, rate, ETA" ||
	t_fail "status shows hydration" "$stb"

# A 4 KiB write at 150 MiB, far ahead of the background stream.
before=$(fs_get demand_bytes)
head -c 4096 /dev/urandom >"$A/patch"
dd if="$A/patch" of="/proc/$(ctr_pid b runc "$ID")/root/big" bs=4096 seek=$((150 * 256)) \
	conv=notrunc status=none && t_ok "a 4 KiB write into the missing part of the big file" ||
	t_fail "4 KiB write"
after=$(fs_get demand_bytes)
moved=$((after - before))
echo "demand bytes for the 4 KiB write: $moved (chunk size $(fs_get chunk_size))"
[ "$moved" -gt 0 ] && [ "$moved" -le $((4 << 20)) ] &&
	t_ok "the write moved $moved bytes over the wire: a few chunks, not the 192 MiB file" ||
	t_fail "bytes moved for a 4 KiB write" "$moved"
dd if="$A/patch" of="$A/big.expected" bs=4096 seek=$((150 * 256)) conv=notrunc status=none

# The source's agent goes away mid-hydration, then comes back.
vy_agent_stop "$LAB" a
wait_until 30 source_down && t_ok "B sees the source gone" || t_fail "B sees the source gone" "$(fs_status)"
sleep 1
p1=$(fs_get bytes_present)
sleep 1.5
p2=$(fs_get bytes_present)
[ "$p1" = "$p2" ] && [ "$(fs_get independent)" = False ] &&
	t_ok "hydration waits while the source is away ($p2 bytes local)" ||
	t_fail "hydration waits" "$p1 -> $p2"
advancing_on_b && t_ok "the container runs on B while the source is away" ||
	t_fail "runs while the source is away"
cmp -s <(dd if="/proc/$(ctr_pid b runc "$ID")/root/big" bs=4096 skip=$((150 * 256)) count=1 status=none) \
	"$A/patch" && t_ok "local data (our write) is served while the source is away" ||
	t_fail "local data while the source is away"
vy_agent_start "$LAB" a runc || t_fail "agent A restarts"
wait_until 30 source_up && t_ok "hydration resumes when the source's agent is back" ||
	t_fail "hydration resumes" "$(fs_status)"

# The target's agent crashes mid-hydration.
[ "$(fs_get independent)" = False ] || echo "note: already independent before the agent kill"
vy_agent_kill "$LAB" b
advancing_on_b && t_ok "the container runs on B without B's agent" ||
	t_fail "runs without B's agent"
sleep 1
vy_agent_start "$LAB" b runc || t_fail "agent B restarts"
vy_wait_independent "$LAB" b "$mid" 120 &&
	t_ok "the restarted agent followed hydration to the end" ||
	t_fail "hydration completes after the agent restart" "$(vy_cli "$LAB" b --json status "$mid")"
st=$(vy_cli "$LAB" a --json status "$mid")
[ "$(vy_json_get "$st" migration.released)" = True ] && [ ! -e "$A/state/migrations/$mid" ] &&
	t_ok "A was released and deleted its copy" || t_fail "A released" "$st"
[ "$(fs_get fetch_errors)" -gt 0 ] && t_ok "the outage shows in voyager-fs's counters" ||
	t_fail "fetch_errors counted"

# Every byte is the source's (plus our write).
cmp -s "/proc/$(ctr_pid b runc "$ID")/root/big" "$A/big.expected" &&
	t_ok "no corruption: the big file on B is the source's, with our 4 KiB" ||
	t_fail "big file differs on B"

# Independent: the source can go away for good.
vy_agent_stop "$LAB" a
rootb="/proc/$(ctr_pid b runc "$ID")/root"
n=$(find "$rootb/" -xdev -type f 2>/dev/null | wc -l)
find "$rootb/" -xdev -type f -print0 2>/dev/null | xargs -0 cat >/dev/null 2>"$B/read.err" &&
	[ "$n" -ge 4 ] && t_ok "with the source's agent gone, all $n files read on B" ||
	{ t_fail "read every file on B" "$n files; $(head -3 "$B/read.err")"; }
advancing_on_b && t_ok "and the container runs on" || t_fail "runs after the source left"
t_done
