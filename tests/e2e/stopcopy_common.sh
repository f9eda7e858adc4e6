# stopcopy_common.sh - the migration test, for one runtime and one mode
# (RUNTIME=runc|crun and MODE=presync|stop-copy|jit, set by the t_*.sh that
# sources this; MODE defaults to presync).
#
# Everything on B is read through the container's own root
# (/proc/PID/root): with MODE=jit that is voyager-fs, mounted inside host
# B's mount namespace, where the files may still be arriving.
#
# Host A runs the counter workload with a rich fixture tree in its rootfs,
# a directory volume and a single-file volume.  It migrates to B.  Then:
# the counter went on from where it was (same incarnation, larger value),
# the container runs on B and not on A, every file, mode, owner, xattr,
# symlink and hard link is identical, and status/list tell the story.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

[ "$RUNTIME" = crun ] && { crun_prepare || { t_fail "crun set-up (hugetlb v1)"; t_done; }; }
e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
# Storage both hosts see at the same path, as an NFS mount would be: the
# agents are told so, and a volume there is re-mounted, never copied.
SHARED=$LAB_VAR_BASE/$LAB/shared
mkdir -p "$SHARED" && echo "on the network" >"$SHARED/note"
vy_agent_start "$LAB" a "$RUNTIME" --shared-path "$SHARED" &&
	vy_agent_start "$LAB" b "$RUNTIME" --shared-path "$SHARED" ||
	{ t_fail "agents start"; t_done; }

ID=${LAB}c
A=$(host_dir a)
B=$(host_dir b)
mkdir -p "$A/vol" && python3 "$here/fixture.py" make "$A/vol"
echo "setting=42" >"$A/app.conf"
"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" \
	--volume "$A/vol:/vol" --volume "$A/app.conf:/etc/app.conf" --volume "$SHARED:/shared" \
	-- /sbin/counter >/dev/null ||
	{ t_fail "bundle"; t_done; }
mkdir -p "$A/bundles/$ID/rootfs/fixture"
python3 "$here/fixture.py" make "$A/bundles/$ID/rootfs/fixture"
python3 "$here/fixture.py" list "$A/bundles/$ID/rootfs/fixture" >"$A/fixture.before"
python3 "$here/fixture.py" list "$A/vol" >"$A/vol.before"

ctr_run a "$RUNTIME" "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
wait_until 10 test -s "$A/bundles/$ID/rootfs/data/counter" || { t_fail "counter runs"; t_done; }
sleep 0.5
read -r tok_before cnt_before <"$A/bundles/$ID/rootfs/data/counter"

MODE=${MODE:-presync}
out=$(vy_cli "$LAB" a migrate "$ID" --to "$(lab_ip "$LAB" b)" --mode "$MODE" --json)
rc=$?
echo "report: $out"
[ $rc = 0 ] && [ "$(vy_json_get "$out" result)" = migrated ] &&
	t_ok "$RUNTIME: migrate exits 0 with result migrated" ||
	t_fail "$RUNTIME: migrate exits 0 with result migrated" "rc=$rc"

for k in downtime_ms total_ms bytes.memory bytes.rootfs bytes.volumes phases_ms.checkpoint \
	phases_ms.transfer phases_ms.restore id; do
	[ -n "$(vy_json_get "$out" "$k")" ] || missing="$missing $k"
done
[ -z "${missing:-}" ] && t_ok "report has downtime, total, bytes per kind, phase times" ||
	t_fail "report fields" "missing:$missing"
# Where the freeze went: the runtime's checkpoint and restore are steps of
# their own, and the checkpoint's steps fit in the checkpoint phase.
python3 - "$out" <<'PY' && t_ok "report has the freeze's steps (steps_ms), within their phases" ||
import json, sys
r = json.loads(sys.argv[1])
st, ph = r["steps_ms"], r["phases_ms"]
assert st["checkpoint"]["runtime"] > 0 and st["restore"]["runtime"] > 0, st
assert sum(st["checkpoint"].values()) <= ph["checkpoint"] + 2, (st, ph)
assert st["restore"]["runtime"] <= ph["restore"] + 2, (st, ph)
# every step its own key: the target's two journal writes are two steps
assert "journal" in st["restore"] and "recorded" in st["restore"], st
assert sum(st["restore"].values()) <= ph["restore"] + 2, (st, ph)
# the target's intake of the trees sent in the freeze, and its wait for
# RESTORE after them: inside the transfer and restore phases
rx = st["receive"]
assert "memory" in rx and "rootfs" in rx and "wait" in rx, st
assert sum(rx.values()) + sum(st["restore"].values()) <= ph["transfer"] + ph["restore"] + 2, (st, ph)
PY
	t_fail "steps_ms" "$(vy_json_get "$out" steps_ms)"
if [ "$MODE" = jit ]; then
	[ "$(vy_json_get "$out" hydration.bytes_left)" -gt 60000000 ] 2>/dev/null &&
		t_ok "jit: the volumes' bytes are left to hydrate" ||
		t_fail "jit: bytes left to hydrate" "$(vy_json_get "$out" hydration.bytes_left)"
else
	[ "$(vy_json_get "$out" bytes.volumes)" -gt 60000000 ] 2>/dev/null &&
		t_ok "volume bytes counted" || t_fail "volume bytes counted" "$(vy_json_get "$out" bytes.volumes)"
fi

stb=$(ctr_state b "$RUNTIME" "$ID")
# crun 1.21 may call a container it restored outside its cgroup "stopped"
# while it runs; the counter below shows whether it runs.
[ "$stb" = running ] || { [ "$RUNTIME" = crun ] && [ "$stb" = stopped ]; } &&
	t_ok "runs on B ($RUNTIME says $stb)" || t_fail "runs on B" "$stb"
[ "$(ctr_state a "$RUNTIME" "$ID")" = absent ] && t_ok "gone from A" || t_fail "gone from A" \
	"$(ctr_state a "$RUNTIME" "$ID")"

RB="/proc/$(ctr_pid b "$RUNTIME" "$ID")/root"
sleep 0.5
read -r tok_after cnt_after <"$RB/data/counter"
[ "$tok_after" = "$tok_before" ] && [ "$cnt_after" -gt "$cnt_before" ] &&
	t_ok "counter continued ($cnt_before -> $cnt_after, same incarnation)" ||
	t_fail "counter continued" "before $tok_before $cnt_before, after $tok_after $cnt_after"
sleep 0.3
read -r _ cnt_later <"$RB/data/counter"
[ "$cnt_later" -gt "$cnt_after" ] && t_ok "counter still advancing on B" ||
	t_fail "counter still advancing on B"

python3 "$here/fixture.py" list "$RB/fixture" >"$B/fixture.after"
diff -u "$A/fixture.before" "$B/fixture.after" >"$B/fixture.diff" &&
	t_ok "rootfs: every file, mode, owner, time, xattr, symlink, hard link identical" ||
	{ t_fail "rootfs identical" "see diff"; cat "$B/fixture.diff"; }
python3 "$here/fixture.py" list "$RB/vol" >"$B/vol.after"
diff -u "$A/vol.before" "$B/vol.after" >"$B/vol.diff" &&
	t_ok "directory volume identical" || { t_fail "directory volume identical"; cat "$B/vol.diff"; }
[ "$(ctr_cat b "$RUNTIME" "$ID" /etc/app.conf)" = "setting=42" ] &&
	t_ok "file volume mounted on B" || t_fail "file volume mounted on B"
[ "$(ctr_cat b "$RUNTIME" "$ID" /vol/plain.txt | head -1)" = "hello from the source host" ] &&
	t_ok "directory volume mounted on B" || t_fail "directory volume mounted on B"
echo "written on B" >"$RB/shared/from-b" 2>/dev/null
[ "$(ctr_cat b "$RUNTIME" "$ID" /shared/note)" = "on the network" ] &&
	[ "$(cat "$SHARED/from-b" 2>/dev/null)" = "written on B" ] &&
	[ ! -e "$B/state/containers/$ID/volumes/2" ] &&
	t_ok "shared volume re-mounted on B, not copied (a write there lands on the shared storage)" ||
	t_fail "shared volume re-mounted" "$(ls "$B/state/containers/$ID/volumes" 2>&1)"

lst=$(vy_cli "$LAB" a list)
echo "$lst"
grep -q "source.*$ID.*migrated" <<<"$lst" && t_ok "list on A shows the migration" ||
	t_fail "list on A"
want_b="committed.*migrated"
[ "$MODE" = jit ] && want_b="(committed|hydrating|independent)"
grep -qE "target.*$ID.*$want_b" <<<"$(vy_cli "$LAB" b list)" &&
	t_ok "list on B shows it committed" || t_fail "list on B"
mid=$(vy_json_get "$out" id)
if [ "$MODE" = jit ]; then
	# rootfs, directory volume, file volume: each voyager-fs started before
	# the freeze and was told to go with a delta; none started inside it
	n_go=$(grep -c "migration $mid: voyager-fs .* serves .*after the go" "$B/voyagerd.log")
	n_start=$(grep -c "migration $mid: voyager-fs .* serves .*after its start" "$B/voyagerd.log")
	[ "$n_go" = 3 ] && [ "$n_start" = 0 ] &&
		t_ok "jit: the 3 trees' voyager-fs started before the freeze and went at the go" ||
		t_fail "jit: voyager-fs staged" "$n_go went at the go, $n_start started in the freeze"
	# and each held its cold files until B's agent said the container runs
	n_rel=$(grep -l "the container runs: the other files are hydrated now too" \
		"$B/state/containers/$ID"/fs/*.log 2>/dev/null | wc -l)
	[ "$n_rel" = 3 ] && t_ok "jit: B's agent ended the 3 trees' hold on cold files at the restore" ||
		t_fail "jit: hold on cold files ended" "$n_rel of 3 voyager-fs logs say so"
	vy_wait_independent "$LAB" b "$mid" 120 && t_ok "jit: B became independent and released A" ||
		t_fail "jit: B independent" "$(vy_cli "$LAB" b --json status "$mid")"
	st=$(vy_cli "$LAB" a --json status "$mid")
	[ "$(vy_json_get "$st" migration.released)" = True ] && t_ok "jit: A recorded the release" ||
		t_fail "jit: A released" "$st"
	python3 "$here/fixture.py" list "$RB/fixture" >"$B/fixture.hydrated"
	diff -u "$A/fixture.before" "$B/fixture.hydrated" &&
		t_ok "jit: rootfs still identical once every byte is local" ||
		t_fail "jit: rootfs identical once hydrated"
fi
st=$(vy_cli "$LAB" a --json status "$mid")
[ "$(vy_json_get "$st" migration.decision)" = committed ] && t_ok "status ID shows the decision" ||
	t_fail "status ID" "$st"
[ ! -e "$A/state/migrations/$mid" ] && t_ok "source checkpoint deleted after commit" ||
	t_fail "source checkpoint deleted after commit"

# crun 1.21 has restored containers into the root cgroup (seen on these
# machines while the hugetlb v1 hierarchy existed but was not mounted); the
# target sees where from the PID the runtime wrote (--pid-file), and must
# warn exactly then.  Checked against where the process is.
misplaced=0
if [ "$RUNTIME" = crun ]; then
	want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["linux"].get("cgroupsPath",""))' \
		"$B/state/containers/$ID/bundle/config.json")
	got=$(awk -F: '$2 == "freezer" { print $3; f = 1 } $1 == "0" && $2 == "" { u = $3 }
		END { if (!f) print u }' "/proc/$(ctr_pid b "$RUNTIME" "$ID")/cgroup")
	case $want in /*) [ "$got" != "$want" ] && misplaced=1 ;; esac
	warned=0
	grep -q "cgroup" <<<"$(vy_json_get "$out" warnings)" && warned=1
	[ "$warned" = "$misplaced" ] &&
		t_ok "crun: the report warns about the cgroup exactly when the restore left the container outside it (cgroup $got)" ||
		t_fail "crun: the cgroup warning" "restored into $got, config says $want; report: $out"
fi
if [ "$misplaced" = 1 ]; then
	# crun 1.21 restores into the root cgroup: Voyager says so, and refuses
	# to freeze such a container again rather than risk it running twice.
	grep -q "cgroup" <<<"$(vy_json_get "$out" warnings)" &&
		t_ok "crun: the report warns that the restore left the container outside its cgroup" ||
		t_fail "crun: warning about the cgroup" "$out"
	out2=$(vy_cli "$LAB" b migrate "$ID" --to "$(lab_ip "$LAB" a)" --json)
	[ "$(vy_json_get "$out2" result)" = failed ] && [ "$(vy_json_get "$out2" error.phase)" = preflight ] &&
		grep -qE "outside its cgroup|is not running" <<<"$(vy_json_get "$out2" error.message)" &&
		[ "$(ctr_state a "$RUNTIME" "$ID")" = absent ] &&
		t_ok "crun: a second move is refused in pre-flight, the container runs on B only" ||
		t_fail "crun: second move refused safely" "$out2"
	read -r _ c1 <"$RB/data/counter"
	sleep 0.3
	read -r _ c2 <"$RB/data/counter"
	[ "$c2" -gt "$c1" ] && t_ok "crun: and it still runs on B" || t_fail "crun: still runs on B"
	t_done
fi

# And back again: B's received bundle is B's to delete once A has it.
out2=$(vy_cli "$LAB" b migrate "$ID" --to "$(lab_ip "$LAB" a)" --mode "$MODE" --json)
[ "$MODE" = jit ] && { vy_wait_independent "$LAB" a "$(vy_json_get "$out2" id)" 120 ||
	t_fail "jit: A independent after the way back"; }
[ "$(vy_json_get "$out2" result)" = migrated ] && [ "$(ctr_state a "$RUNTIME" "$ID")" = running ] &&
	[ "$(ctr_state b "$RUNTIME" "$ID")" = absent ] && t_ok "migrates back to A" ||
	t_fail "migrates back to A" "$out2"
[ ! -e "$B/state/containers/$ID" ] && t_ok "B deleted its received copy" ||
	t_fail "B deleted its received copy"
read -r tok_back cnt_back <"/proc/$(ctr_pid a "$RUNTIME" "$ID")/root/data/counter"
[ "$tok_back" = "$tok_before" ] && [ "$cnt_back" -gt "$cnt_later" ] &&
	t_ok "counter continued after the round trip" || t_fail "counter after round trip"
t_done
