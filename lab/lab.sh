#!/bin/bash
# Voyager lab: several "hosts" on one machine.
#
# A host is a network namespace plus a persistent mount namespace plus a
# host directory.  Hosts are joined by veth pairs on a bridge that lives in a
# dedicated "switch" network namespace, so the root namespace is untouched.
#
#   lab/lab.sh up NAME HOST...          build lab NAME with these hosts
#   lab/lab.sh down NAME                tear it down (idempotent)
#   lab/lab.sh exec NAME HOST CMD...    run CMD inside HOST
#   lab/lab.sh shape NAME HOST RATE     tbf-limit HOST's link both ways
#                                        (RATE: 1gbit, 500mbit, ...; "off")
#   lab/lab.sh ip NAME HOST             print HOST's IP address
#   lab/lab.sh subnet NAME              print the lab's /24
#   lab/lab.sh hosts NAME               list the lab's hosts
#   lab/lab.sh cgroup-parent NAME HOST  print HOST's cgroup parent name
#
# Sourced, it provides lab_up, lab_down, lab_exec, lab_shape, lab_ip,
# lab_subnet, lab_hosts, lab_dir, lab_netns, lab_netns_path, lab_mntns_path,
# lab_switch_netns, lab_cgroup_parent, and lab_delete_containers NAME HOST...
# (delete -f every runc and crun container whose state is in HOST's
# runtime/runc or runtime/crun; for teardowns, never fails).
#
# Names.  NAME must start with "vy" and be [A-Za-z0-9], at most 13
# characters (so "${NAME}br" fits IFNAMSIZ).  HOST is [A-Za-z0-9_], at most
# 12 characters.  Neither may contain "-", so "NAME-HOST" is unambiguous.
#
# What a lab owns (and what lab_down removes):
#   netns     NAME-sw (bridge NAMEbr), NAME-HOST (bridge "vybr0" holding the
#             host's address, with uplink veth "vyeth0" into NAMEbr; lo up)
#   mountns   /run/vylab/NAME/ns/HOST (a private bind mount holds the files)
#   dirs      /var/lib/vylab/NAME/hosts/HOST/{state,run,runtime,bundles,tmp}
#             /run/vylab/NAME
#   cgroups   /sys/fs/cgroup/*/vylab-NAME-HOST (made by the lab's containers
#             when they use lab_cgroup_parent as their cgroup parent)
#
# Inside HOST's mount namespace, /var/lib/vylab/NAME/hosts is a tmpfs that
# holds only HOST's own directory, so hosts cannot see each other's files.
# Where the machine's /run is not a tmpfs, HOST gets a tmpfs /run (as real
# hosts have; CRIU caches what it learns of the kernel only there) with the
# machine's /run entries bound in, except /run/vylab.
#
# Addresses: 10.77.X.(10+i) where X is derived from a hash of NAME and i is
# the host's position (1-based) on the "up" command line.  Labs are isolated
# from each other anyway (each has its own switch namespace); the hash only
# makes addresses differ between labs, which helps when reading logs.

LAB_RUN_BASE=${LAB_RUN_BASE:-/run/vylab}
LAB_VAR_BASE=${LAB_VAR_BASE:-/var/lib/vylab}

_lab_err() { echo "lab: $*" >&2; }

_lab_check_name() {
	if ! [[ $1 =~ ^vy[A-Za-z0-9]{1,11}$ ]]; then
		_lab_err "bad lab name '$1' (want vy[A-Za-z0-9]{1,11})"
		return 1
	fi
}

_lab_check_host() {
	if ! [[ $1 =~ ^[A-Za-z0-9_]{1,12}$ ]]; then
		_lab_err "bad host name '$1' (want [A-Za-z0-9_]{1,12})"
		return 1
	fi
}

lab_subnet_prefix() { # NAME -> 10.77.X
	local h
	h=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
	echo "10.77.$((h % 250 + 1))"
}

lab_subnet() { echo "$(lab_subnet_prefix "$1").0/24"; }
lab_dir() { echo "$LAB_VAR_BASE/$1/hosts/$2"; }
lab_netns() { echo "$1-$2"; }
lab_netns_path() { echo "/run/netns/$1-$2"; }
lab_mntns_path() { echo "$LAB_RUN_BASE/$1/ns/$2"; }
lab_switch_netns() { echo "$1-sw"; }
lab_cgroup_parent() { echo "vylab-$1-$2"; }

_lab_bridge() {
	if [ $((${#1} + 2)) -le 15 ]; then echo "${1}br"; else echo vybr; fi
}

lab_hosts() { # NAME -> one host per line, in "up" order
	local f="$LAB_RUN_BASE/$1/hosts"
	[ -f "$f" ] && cut -d' ' -f1 "$f"
	return 0
}

lab_ip() { # NAME HOST -> address (no prefix length)
	local f="$LAB_RUN_BASE/$1/hosts" h i ip
	if [ ! -f "$f" ]; then
		_lab_err "no lab '$1'"
		return 1
	fi
	while read -r h i ip; do
		if [ "$h" = "$2" ]; then
			echo "$ip"
			return 0
		fi
	done <"$f"
	_lab_err "no host '$2' in lab '$1'"
	return 1
}

# Make one host: netns, veth into the switch, mount namespace, directories.
_lab_host_up() {
	local name=$1 host=$2 idx=$3 ip=$4
	local ns sw br hdir mnt stage
	ns=$(lab_netns "$name" "$host")
	sw=$(lab_switch_netns "$name")
	br=$(_lab_bridge "$name")
	hdir=$(lab_dir "$name" "$host")
	mnt=$(lab_mntns_path "$name" "$host")
	stage="$LAB_RUN_BASE/$name/stage/$host"

	mkdir -p "$hdir"/{state,run,runtime,bundles,tmp} "$stage" || return 1
	chmod 700 "$hdir/run" || return 1

	ip netns add "$ns" || return 1
	ip link add vyeth0 netns "$ns" type veth peer name "vyp$idx" netns "$sw" || return 1
	ip -n "$sw" link set "vyp$idx" master "$br" up || return 1
	ip -n "$ns" link set lo up || return 1
	# The host's own bridge on the shared segment, as a real host would have
	# it: its uplink (vyeth0) and its containers' veths are ports of vybr0,
	# and the host's address sits on the bridge.
	ip -n "$ns" link add vybr0 type bridge || return 1
	# A bridge without a MAC of its own takes the lowest of its ports', and
	# changes it when a container's veth comes or goes: its peers' ARP
	# caches then point nowhere.  Pin it to the uplink's.
	ip -n "$ns" link set vybr0 address "$(ip -n "$ns" -br link show vyeth0 | awk '{print $3}')" ||
		return 1
	ip -n "$ns" link set vyeth0 master vybr0 || return 1
	ip -n "$ns" addr add "$ip/24" dev vybr0 || return 1
	ip -n "$ns" link set vyeth0 up || return 1
	ip -n "$ns" link set vybr0 up || return 1

	# Persistent mount namespace.  Inside it, hide the other hosts: bind our
	# own directory to a staging place, cover .../hosts with a tmpfs, and move
	# our directory back on top.
	#
	# Then, where the machine's /run is not a tmpfs (this VM's is on its
	# root filesystem), give the host a tmpfs /run as a real host has, with
	# every entry of the machine's /run bound back in (so /run/voyager and
	# /run/netns stay shared): CRIU keeps its cache of kernel facts
	# (/run/criu.kdat) only on tmpfs, and without it every checkpoint and
	# every restore probes the kernel again, 30-40 ms each here.
	# /run/voyager must exist first: agents on one kernel share it.
	mkdir -p /run/voyager "$LAB_VAR_BASE/$name/runstage-$host" || return 1
	: >"$mnt" || return 1
	unshare --mount="$mnt" --propagation private \
		/bin/sh -euc '
			hosts=$1 host=$2 stage=$3 old=$4 skip=$5
			mount --bind "$hosts/$host" "$stage"
			mount -t tmpfs -o mode=755,size=64k vylab "$hosts"
			mkdir "$hosts/$host"
			mount --move "$stage" "$hosts/$host"
			[ "$(stat -f -c %T /run)" = tmpfs ] && exit 0
			mount --rbind /run "$old"
			mount -t tmpfs -o mode=755,size=16m vylabrun /run
			for e in "$old"/* "$old"/.[!.]*; do
				[ -e "$e" ] || [ -L "$e" ] || continue
				n=${e##*/}
				# (CRIU'"'"'s cache must be the tmpfs'"'"'s own; mount(8)
				# made /run/mount already)
				case $n in "$skip" | criu.kdat* | .criu.kdat* | mount) continue ;; esac
				if [ -L "$e" ]; then
					ln -s "$(readlink "$e")" "/run/$n"
				elif [ -d "$e" ]; then
					mkdir "/run/$n" && mount --rbind "$e" "/run/$n"
				else
					: >"/run/$n" && mount --bind "$e" "/run/$n"
				fi || echo "lab: /run/$n is not in host $host" >&2
			done
			umount -l "$old"
		' vylab "$LAB_VAR_BASE/$name/hosts" "$host" "$stage" \
		"$LAB_VAR_BASE/$name/runstage-$host" "$(basename "$LAB_RUN_BASE")" || return 1
	rmdir "$LAB_VAR_BASE/$name/runstage-$host"
	echo "$host $idx $ip" >>"$LAB_RUN_BASE/$name/hosts"
}

lab_up() { # NAME HOST...
	local name=$1 host idx=0 pfx sw br rc=0
	shift
	_lab_check_name "$name" || return 1
	if [ $# -lt 1 ]; then
		_lab_err "usage: lab_up NAME HOST..."
		return 1
	fi
	for host in "$@"; do
		_lab_check_host "$host" || return 1
	done
	if [ "$(printf '%s\n' "$@" | sort | uniq -d)" != "" ]; then
		_lab_err "duplicate host names"
		return 1
	fi
	if [ -e "$LAB_RUN_BASE/$name" ] || [ -e "$LAB_VAR_BASE/$name" ] ||
		[ -e "/run/netns/$(lab_switch_netns "$name")" ]; then
		_lab_err "lab '$name' exists already (lab_down it first)"
		return 1
	fi
	pfx=$(lab_subnet_prefix "$name")
	sw=$(lab_switch_netns "$name")
	br=$(_lab_bridge "$name")
	{
		mkdir -p "$LAB_RUN_BASE/$name/ns" "$LAB_RUN_BASE/$name/stage" \
			"$LAB_VAR_BASE/$name/hosts" &&
			: >"$LAB_RUN_BASE/$name/hosts" &&
			# The namespace files must sit on a private mount, or the kernel
			# refuses to bind a mount namespace onto them.
			mount --bind "$LAB_RUN_BASE/$name/ns" "$LAB_RUN_BASE/$name/ns" &&
			mount --make-private "$LAB_RUN_BASE/$name/ns" &&
			ip netns add "$sw" &&
			ip -n "$sw" link set lo up &&
			ip -n "$sw" link add name "$br" type bridge forward_delay 0 stp_state 0 &&
			ip -n "$sw" link set "$br" up
	} || rc=1
	if [ $rc = 0 ]; then
		for host in "$@"; do
			idx=$((idx + 1))
			if ! _lab_host_up "$name" "$host" "$idx" "$pfx.$((10 + idx))"; then
				rc=1
				break
			fi
		done
	fi
	if [ $rc != 0 ]; then
		_lab_err "lab_up $name failed; tearing down"
		lab_down "$name"
		return 1
	fi
	return 0
}

lab_delete_containers() { # NAME HOST...
	local name=$1 h rt root id
	shift
	for h in "$@"; do
		for rt in runc crun; do
			root="$(lab_dir "$name" "$h")/runtime/$rt"
			[ -d "$root" ] || continue
			for id in $(ls "$root" 2>/dev/null); do
				lab_exec "$name" "$h" "$rt" --root "$root" delete -f "$id" >/dev/null 2>&1
			done
		done
	done
	return 0
}

lab_exec() { # NAME HOST CMD...
	local name=$1 host=$2 ip hdir wd
	shift 2
	ip=$(lab_ip "$name" "$host") || return 1
	hdir=$(lab_dir "$name" "$host")
	# Keep the caller's directory unless it is hidden inside the host.
	wd=$PWD
	case "$wd/" in "$LAB_VAR_BASE/$name/"*) wd=$hdir ;; esac
	[ -d "$wd" ] || wd=/
	LAB_NAME=$name LAB_HOST=$host LAB_DIR=$hdir LAB_IP=$ip \
		LAB_CGROUP_PARENT=$(lab_cgroup_parent "$name" "$host") \
		nsenter --net="$(lab_netns_path "$name" "$host")" \
		--mount="$(lab_mntns_path "$name" "$host")" --wd="$wd" -- "$@"
}

# RATE like 1gbit, 100mbit, 800kbit, 1000000bit -> bits per second
_lab_rate_bps() {
	local r=${1,,} n u
	if ! [[ $r =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]]; then
		return 1
	fi
	n=${BASH_REMATCH[1]}
	u=${BASH_REMATCH[2]}
	case $u in
	bit) echo "$n" ;;
	kbit) echo $((n * 1000)) ;;
	mbit) echo $((n * 1000000)) ;;
	gbit) echo $((n * 1000000000)) ;;
	esac
}

lab_shape() { # NAME HOST RATE|off
	local name=$1 host=$2 rate=$3 idx bps burst h i ip
	local ns sw
	ns=$(lab_netns "$name" "$host")
	sw=$(lab_switch_netns "$name")
	while read -r h i ip; do
		[ "$h" = "$host" ] && idx=$i
	done <"$LAB_RUN_BASE/$name/hosts"
	if [ -z "${idx:-}" ]; then
		_lab_err "no host '$host' in lab '$name'"
		return 1
	fi
	if [ "$rate" = off ] || [ "$rate" = none ]; then
		tc -n "$ns" qdisc del dev vyeth0 root 2>/dev/null
		tc -n "$sw" qdisc del dev "vyp$idx" root 2>/dev/null
		return 0
	fi
	if ! bps=$(_lab_rate_bps "$rate"); then
		_lab_err "bad rate '$rate' (want e.g. 1gbit, 100mbit)"
		return 1
	fi
	# Burst: 4 ms worth of data, at least 64 KiB so that one GSO super-packet
	# passes whole (1gbit -> 500 KB, 10gbit -> 5 MB).  The queue may hold
	# 20 ms of traffic before tbf drops.
	burst=$((bps / 8 / 250))
	[ "$burst" -lt 65536 ] && burst=65536
	tc -n "$ns" qdisc replace dev vyeth0 root tbf rate "$rate" burst "$burst" latency 20ms || return 1
	tc -n "$sw" qdisc replace dev "vyp$idx" root tbf rate "$rate" burst "$burst" latency 20ms || return 1
}

# Kill by PID: TERM, wait up to ~2 s, then KILL.
_lab_kill_pids() {
	local pids=("$@") p alive i
	[ ${#pids[@]} -eq 0 ] && return 0
	kill -TERM "${pids[@]}" 2>/dev/null
	for i in $(seq 20); do
		alive=()
		for p in "${pids[@]}"; do
			kill -0 "$p" 2>/dev/null && alive+=("$p")
		done
		[ ${#alive[@]} -eq 0 ] && return 0
		sleep 0.1
	done
	kill -KILL "${alive[@]}" 2>/dev/null
	sleep 0.2
	return 0
}

# The lab's cgroup directories: /sys/fs/cgroup/*/vylab-NAME-* (and a
# hugetlb hierarchy a test mounted there).  Children first.
_lab_cgroups() {
	local name=$1 top
	for top in /sys/fs/cgroup/*/vylab-"$name"-* /sys/fs/cgroup/vylab-"$name"-*; do
		[ -d "$top" ] || continue
		[[ $(basename "$top") =~ ^vylab-$name-[A-Za-z0-9_]+$ ]] || continue
		find "$top" -depth -type d 2>/dev/null
	done
}

# Mount points (from our own mountinfo) under DIR, deepest first.
_lab_mounts_under() {
	local dir=$1
	awk -v d="$dir" '{
		m = $5; gsub(/\\040/, " ", m)
		if (m == d || index(m, d "/") == 1) print length(m) " " m
	}' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-
}

lab_down() { # NAME ; idempotent, works on a half-built lab
	local name=$1 ns cg p pids=() m i
	_lab_check_name "$name" || return 1

	# 1. Processes: everything in the lab's network namespaces, and
	#    everything in the lab's cgroups (its containers, which have network
	#    namespaces of their own).  Thaw frozen cgroups so KILL lands.
	for cg in $(_lab_cgroups "$name"); do
		[ -f "$cg/freezer.state" ] && echo THAWED >"$cg/freezer.state" 2>/dev/null
		[ -f "$cg/cgroup.freeze" ] && echo 0 >"$cg/cgroup.freeze" 2>/dev/null
		[ -f "$cg/cgroup.procs" ] && pids+=($(cat "$cg/cgroup.procs" 2>/dev/null))
	done
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		[[ $ns =~ ^$name-[A-Za-z0-9_]+$ ]] || continue
		pids+=($(ip netns pids "$ns" 2>/dev/null))
	done
	# Containers whose root is inside the lab (one restored by crun 1.21
	# may sit in the root cgroup and in a netns of its own).
	for p in /proc/[0-9]*; do
		case "$(readlink "$p/root" 2>/dev/null)/" in
		"$LAB_VAR_BASE/$name/"*) pids+=("${p#/proc/}") ;;
		esac
	done
	if [ ${#pids[@]} -gt 0 ]; then
		_lab_kill_pids $(printf '%s\n' "${pids[@]}" | sort -un)
	fi

	# 2. Mount namespaces: unmounting the files drops the last reference, and
	#    with it every mount made inside (tmpfs, binds, FUSE, netns files).
	if [ -d "$LAB_RUN_BASE/$name/ns" ]; then
		for m in "$LAB_RUN_BASE/$name"/ns/*; do
			[ -e "$m" ] || continue
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		done
	fi

	# 3. Network namespaces (veths go with them, the bridge with the switch).
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		[[ $ns =~ ^$name-[A-Za-z0-9_]+$ ]] || continue
		ip netns del "$ns" 2>/dev/null
	done

	# 4. Cgroups, children first.  Retry briefly: a killed process may take a
	#    moment to leave.
	for i in 1 2 3 4 5 6 7 8 9 10; do
		local left=0
		for cg in $(_lab_cgroups "$name"); do
			rmdir "$cg" 2>/dev/null || left=1
		done
		[ $left = 0 ] && break
		sleep 0.2
	done

	# 5. Any mount left under the lab's directories (from the root mount
	#    namespace), then the directories themselves.
	for m in $(_lab_mounts_under "$LAB_RUN_BASE/$name") $(_lab_mounts_under "$LAB_VAR_BASE/$name"); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	if [ -n "$(_lab_mounts_under "$LAB_RUN_BASE/$name")$(_lab_mounts_under "$LAB_VAR_BASE/$name")" ]; then
		_lab_err "lab_down $name: mounts remain, leaving directories"
		return 1
	fi
	rm -rf --one-file-system "${LAB_RUN_BASE:?}/$name" "${LAB_VAR_BASE:?}/$name"
	rmdir "$LAB_RUN_BASE" "$LAB_VAR_BASE" 2>/dev/null

	local bad=0
	[ -n "$(_lab_cgroups "$name")" ] && { _lab_err "lab_down $name: cgroups remain: $(_lab_cgroups "$name" | tr '\n' ' ')"; bad=1; }
	ip netns list 2>/dev/null | awk '{print $1}' | grep -Eq "^$name-[A-Za-z0-9_]+$" &&
		{ _lab_err "lab_down $name: network namespaces remain"; bad=1; }
	return $bad
}

_lab_usage() {
	sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

_lab_main() {
	local cmd=${1:-}
	[ $# -ge 1 ] && shift
	case "$cmd" in
	up) [ $# -ge 2 ] || _lab_usage; lab_up "$@" ;;
	down) [ $# -eq 1 ] || _lab_usage; lab_down "$1" ;;
	exec) [ $# -ge 3 ] || _lab_usage; lab_exec "$@" ;;
	shape) [ $# -eq 3 ] || _lab_usage; lab_shape "$@" ;;
	ip) [ $# -eq 2 ] || _lab_usage; lab_ip "$@" ;;
	subnet) [ $# -eq 1 ] || _lab_usage; lab_subnet "$1" ;;
	hosts) [ $# -eq 1 ] || _lab_usage; lab_hosts "$1" ;;
	cgroup-parent) [ $# -eq 2 ] || _lab_usage; lab_cgroup_parent "$@" ;;
	*) _lab_usage ;;
	esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "lab: must run as root" >&2
		exit 1
	fi
	_lab_main "$@"
fi
