#!/bin/bash
# `voyager drain`: empty a host.  Two running containers on a move to b,
# one after the other; each keeps its memory; a holds none afterwards, and
# draining an empty host is a clean no-op.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/agents.sh"

e2e_setup a b || { t_fail "lab set-up"; t_done; }
vy_key_init "$(host_dir a)/../../keys" || { t_fail "keygen"; t_done; }
vy_agent_start "$LAB" a runc && vy_agent_start "$LAB" b runc || { t_fail "agents"; t_done; }
A=$(host_dir a)
B=$(host_dir b)
declare -A TOKEN
for n in 1 2; do
	id=${LAB}d$n
	"$BUNDLE_SH" create "$A/bundles/$id" busybox --id "$id" \
		--cgroup-parent "$(lab_cgroup_parent "$LAB" a)" -- /sbin/counter >/dev/null ||
		{ t_fail "bundle $n"; t_done; }
	ctr_run a runc "$id" "$A/bundles/$id" || { t_fail "start $n"; t_done; }
	wait_until 10 test -s "$A/bundles/$id/rootfs/data/counter" || { t_fail "counter $n"; t_done; }
	read -r tok _ <"$A/bundles/$id/rootfs/data/counter"
	TOKEN[$id]=$tok
done

out=$(vy_cli "$LAB" a drain --to "$(lab_ip "$LAB" b)" --json)
rc=$?
echo "drain: $out"
[ $rc = 0 ] && [ "$(vy_json_get "$out" migrated)" = 2 ] && [ "$(vy_json_get "$out" total)" = 2 ] &&
	t_ok "drain exits 0: 2 of 2 migrated" || t_fail "drain migrates both" "rc=$rc"
for n in 1 2; do
	id=${LAB}d$n
	# (through the container's root: with jit, the default, that is
	# voyager-fs inside host b's mount namespace)
	f="/proc/$(ctr_pid b runc "$id")/root/data/counter"
	read -r tok c1 <"$f"
	sleep 0.3
	read -r _ c2 <"$f"
	[ "$(ctr_state b runc "$id")" = running ] && [ "$(ctr_state a runc "$id")" = absent ] &&
		[ "$tok" = "${TOKEN[$id]}" ] && [ "$c2" -gt "$c1" ] &&
		t_ok "container $n runs on b only, memory intact" || t_fail "container $n on b" "$tok $c1 $c2"
done
out=$(vy_cli "$LAB" a drain --to "$(lab_ip "$LAB" b)")
rc=$?
echo "$out"
[ $rc = 0 ] && grep -q "0 of 0 containers migrated" <<<"$out" &&
	t_ok "draining an empty host is a clean no-op" || t_fail "empty drain" "rc=$rc $out"
t_done
