#!/bin/bash
# What must be refused before the container is touched: a wrong cluster
# key, a peer that does not speak TLS, a runtime missing on the target, an
# unreachable target, a name already taken there, a target without room,
# an agent of another protocol version.
# Each time the container keeps running on the source, with its memory
# (the counter's incarnation) intact, and nothing is left on the target.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
KEYS=$(host_dir a)/../../keys
vy_key_init "$KEYS" || { t_fail "keygen"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
ID=${LAB}r
"$BUNDLE_SH" create "$A/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/counter >/dev/null ||
	{ t_fail "bundle"; t_done; }
ctr_run a runc "$ID" "$A/bundles/$ID" || { t_fail "container start"; t_done; }
wait_until 10 test -s "$A/bundles/$ID/rootfs/data/counter" || { t_fail "counter runs"; t_done; }
read -r TOKEN _ <"$A/bundles/$ID/rootfs/data/counter"
vy_agent_start "$LAB" a runc || { t_fail "agent a"; t_done; }
chk=$(vy_cli "$LAB" a check)
echo "$chk"
grep -q "^ok: criu 4\.[2-9]" <<<"$chk" && grep -q "userfaultfd" <<<"$chk" &&
	t_ok "voyager check: CRIU version and the memory-mode features" || t_fail "voyager check" "$chk"

# still_home NAME: the container runs on A, same incarnation, still counting,
# and B holds nothing of it.
still_home() {
	local tok c1 c2
	read -r tok c1 <"$A/bundles/$ID/rootfs/data/counter"
	sleep 0.3
	read -r _ c2 <"$A/bundles/$ID/rootfs/data/counter"
	if [ "$(ctr_state a runc "$ID")" = running ] && [ "$tok" = "$TOKEN" ] && [ "$c2" -gt "$c1" ] &&
		[ "$(ctr_state b runc "$ID")" = absent ] && [ ! -e "$B/state/containers/$ID" ]; then
		t_ok "$1: container untouched on A, nothing on B"
	else
		t_fail "$1: container untouched on A, nothing on B" \
			"A=$(ctr_state a runc "$ID") tok=$tok/$TOKEN $c1->$c2 B=$(ctr_state b runc "$ID")"
	fi
}

# expect_refusal NAME PATTERN: migrate fails in pre-flight, error matches
expect_refusal() {
	local name=$1 pat=$2 out rc
	out=$(vy_cli "$LAB" a migrate "$ID" --to "${3:-$(lab_ip "$LAB" b)}" --json)
	rc=$?
	echo "$name: $out"
	if [ $rc != 0 ] && [ "$(vy_json_get "$out" result)" = failed ] &&
		[ "$(vy_json_get "$out" error.phase)" = preflight ] &&
		grep -qiE "$pat" <<<"$(vy_json_get "$out" error.message)"; then
		t_ok "$name: refused in pre-flight with a clear error"
	else
		t_fail "$name: refused in pre-flight with a clear error" "rc=$rc $out"
	fi
	still_home "$name"
}

# 1. wrong key
mkdir -p "$KEYS/other"
"$VY_BUILD/voyager" keygen --key "$KEYS/other/cluster.key" >/dev/null
VY_AGENT_KEY=$KEYS/other/cluster.key vy_agent_start "$LAB" b runc || t_fail "agent b (other key)"
expect_refusal "wrong key" "cluster key"
grep -q "refused a peer.*cluster key" "$B/voyagerd.log" && t_ok "wrong key: target logs the refusal" ||
	t_fail "wrong key: target logs the refusal"
vy_agent_stop "$LAB" b

# 2. a peer that does not speak TLS gets nothing, and the agent lives on
vy_agent_start "$LAB" b runc || t_fail "agent b"
reply=$(lab_exec "$LAB" a python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 7600), timeout=5)
s.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 8)
s.settimeout(5)
data = b""
try:
    while True:
        d = s.recv(4096)
        if not d: break
        data += d
except Exception:
    pass
print(len(data), data[:64].hex())
' "$(lab_ip "$LAB" b)")
echo "plain peer got: $reply"
# TLS may answer with a (plaintext) alert record of a few bytes, no more.
[ "${reply%% *}" -lt 16 ] 2>/dev/null && t_ok "non-TLS peer learns nothing" ||
	t_fail "non-TLS peer learns nothing" "$reply"
grep -q "refused a peer.*TLS" "$B/voyagerd.log" && t_ok "non-TLS peer is logged" ||
	t_fail "non-TLS peer is logged"
kill -0 "$(vy_agent_pid "$LAB" b)" && t_ok "agent survives a non-TLS peer" ||
	t_fail "agent survives a non-TLS peer"

# 3. the name is already taken on the target
"$BUNDLE_SH" create "$B/bundles/$ID" busybox --id "$ID" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" b)" -- /bin/sleep 600 >/dev/null
ctr_run b runc "$ID" "$B/bundles/$ID"
out=$(vy_cli "$LAB" a migrate "$ID" --to "$(lab_ip "$LAB" b)" --json)
echo "name taken: $out"
grep -q "already exists" <<<"$(vy_json_get "$out" error.message)" &&
	[ "$(vy_json_get "$out" error.phase)" = preflight ] &&
	[ "$(ctr_state a runc "$ID")" = running ] &&
	t_ok "name taken on target: refused, container still on A" ||
	t_fail "name taken on target" "$out"
ctr_delete b runc "$ID"
vy_agent_stop "$LAB" b

# 4. runtime missing on the target (voyagerd starts, pre-flight says why)
mkdir -p "$B/nobin"
ln -sf "$(command -v criu)" "$B/nobin/criu"
VY_AGENT_ENV="PATH=$B/nobin" vy_agent_start "$LAB" b runc || t_fail "agent b (no runc)"
expect_refusal "runtime missing" "runc is not installed"
vy_agent_stop "$LAB" b

# 5. nobody listening there
expect_refusal "unreachable target" "connect|refused|unreachable|timed out" "$(lab_ip "$LAB" b):7699"

# 6. not enough room on the target
vy_agent_start "$LAB" b runc || t_fail "agent b"
lab_exec "$LAB" b mount -t tmpfs -o size=2m vytmpfs "$B/state" && {
	dd if=/dev/urandom of="$A/bundles/$ID/rootfs/filler" bs=1M count=80 status=none
	expect_refusal "no room on target" "not enough room"
	rm -f "$A/bundles/$ID/rootfs/filler"
	vy_agent_stop "$LAB" b
	lab_exec "$LAB" b umount "$B/state"
}

# 6b. a volume on "shared" storage that the target cannot see: refused, and
# never copied instead (a second container; A's agent is told that
# $A/netvol is shared, which B cannot see)
ID2=${ID}n
mkdir -p "$A/netvol" && echo data >"$A/netvol/f"
"$BUNDLE_SH" create "$A/bundles/$ID2" busybox --id "$ID2" \
	--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" --volume "$A/netvol:/net" -- /sbin/counter \
	>/dev/null && ctr_run a runc "$ID2" "$A/bundles/$ID2" || t_fail "second container"
vy_agent_stop "$LAB" a
vy_agent_start "$LAB" a runc --shared-path "$A/netvol"
vy_agent_start "$LAB" b runc
out=$(vy_cli "$LAB" a migrate "$ID2" --to "$(lab_ip "$LAB" b)" --json)
echo "shared volume: $out"
[ "$(vy_json_get "$out" error.phase)" = preflight ] &&
	grep -q "not reachable on this host" <<<"$(vy_json_get "$out" error.message)" &&
	[ "$(ctr_state a runc "$ID2")" = running ] && [ "$(ctr_state b runc "$ID2")" = absent ] &&
	t_ok "a shared volume the target cannot reach: refused in pre-flight, container stays" ||
	t_fail "shared volume unreachable on the target" "$out"
ctr_delete a runc "$ID2"
vy_agent_stop "$LAB" a
vy_agent_stop "$LAB" b
vy_agent_start "$LAB" a runc

# 7. an agent of another version (one that speaks protocol 1) as the source
vy_agent_start "$LAB" b runc
vy_agent_stop "$LAB" a
VY_AGENT_ENV="VOYAGER_TEST_PROTOCOL=1" vy_agent_start "$LAB" a runc || t_fail "agent a (protocol 1)"
expect_refusal "another version on the target" "speaks protocol 1 and this one protocol [0-9]+: run the same Voyager version on both hosts"
vy_agent_stop "$LAB" a
vy_agent_start "$LAB" a runc || t_fail "agent a restart"

# 8. a memory mode this kernel cannot do is refused before anything moves
if criu check --feature mem_dirty_track >/dev/null 2>&1; then
	pat="not implemented"
else
	pat="soft-dirty"
fi
out=$(vy_cli "$LAB" a migrate "$ID" --to "$(lab_ip "$LAB" b)" --memory pre-copy --json)
echo "pre-copy: $out"
[ "$(vy_json_get "$out" result)" = failed ] && grep -q "$pat" <<<"$(vy_json_get "$out" error.message)" &&
	t_ok "--memory pre-copy: a clear refusal ($pat)" || t_fail "--memory pre-copy refused" "$out"
still_home "pre-copy refused"

# After all that, a correct migration still works; auto says what it chose.
out=$(vy_cli "$LAB" a migrate "$ID" --to "$(lab_ip "$LAB" b)" --json)
[ "$(vy_json_get "$out" result)" = migrated ] && [ "$(ctr_state b runc "$ID")" = running ] &&
	t_ok "after the refusals, migration succeeds" || t_fail "migration after refusals" "$out"
[ "$(vy_json_get "$out" memory.requested)" = auto ] && [ -n "$(vy_json_get "$out" memory.reason)" ] &&
	t_ok "the report says which memory mode auto chose, and why: $(vy_json_get "$out" memory.reason)" ||
	t_fail "memory mode in the report" "$out"
t_done
