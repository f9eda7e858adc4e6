#!/bin/bash
# Install everything Voyager needs on a fresh Debian 12 or 13 host, as root.
# Safe to run twice: when everything is already at the right version it
# returns at once.
#
# Why the extra suites:
#  - CRIU older than 4.2 cannot checkpoint any TCP socket on kernels >= 6.16
#    (getsockopt SO_PASSCRED on TCP now fails), so criu comes from Debian's
#    testing suite (forky), with the few libraries it needs from there.
#  - crun with CRIU support and libfuse >= 3.16 come from trixie when the
#    host is Debian 12.
# Pinning keeps the host on its own release: trixie gets priority 100 on a
# Debian 12 host (never an automatic upgrade) and forky priority 1, except
# for the packages named in forky_pkgs below (and the rest of libnl-*, which
# must match libnl-3-200 exactly), pinned to forky at 995 so that they win
# over "-t trixie" and follow forky from then on.  (Not "criu/forky": apt
# then also takes criu's dependencies from forky wherever forky has them,
# e.g. libnftables1 1.1.7, which trixie's nftables cannot use, and gnutls.)
# On Debian 12 criu 4.2 needs glibc >= 2.38, so libc6 (and with it
# base-files, which then says "trixie" in /etc/os-release) and most of the
# packages below come from trixie.
#
# Environment:
#   VOYAGER_FORCE_DEPS=1     run the install even when everything is present.
#   VOYAGER_DEPS_SIMULATE=1  dry run: still writes the apt sources and pins
#                            below and runs apt-get update, but the install is
#                            "apt-get -s" (prints what it would install, from
#                            which suite, and fails if it cannot resolve) and
#                            the post-install check is skipped.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: must run as root" >&2
	exit 1
fi

. /etc/os-release
codename=${VERSION_CODENAME:-}
case "$codename" in
bookworm | trixie) ;;
*) echo "install-deps: warning: untested release '${codename:-unknown}', trying anyway" >&2 ;;
esac

# Everything from Debian: build tools, libraries, runtimes, lab tools.
pkgs=(
	build-essential meson ninja-build pkg-config
	libssl-dev libjson-c-dev libzstd-dev libfuse3-dev fuse3 libnftables-dev
	runc crun iptables nftables iproute2 procps
	busybox-static redis-server redis-tools
	util-linux attr acl kmod psmisc python3 openssl git
	fio iperf3 gnuplot-nox
)
# From forky, by name (pinned below): criu and what it needs newer than
# trixie has (libnet9 is only in forky; libnl >= 3.11).
forky_pkgs=(criu libcriu2 libcompel1 libnet9 libnl-3-200 libnl-route-3-200)

have_all() {
	command -v criu >/dev/null && command -v runc >/dev/null && command -v crun >/dev/null &&
		command -v meson >/dev/null && command -v redis-server >/dev/null || return 1
	local v
	v=$(criu --version 2>/dev/null | sed -n 's/^Version: *//p')
	case "$v" in 4.[2-9]* | 4.[1-9][0-9]* | [5-9].*) ;; *) return 1 ;; esac
	# dpkg-query fails for a package it has never heard of.
	local st
	st=$(dpkg-query -W -f='${Status}\n' "${pkgs[@]}" "${forky_pkgs[@]}" 2>/dev/null) || return 1
	grep -vq "install ok installed" <<<"$st" && return 1
	return 0
}

if [ -z "${VOYAGER_FORCE_DEPS:-}" ] && have_all; then
	exit 0
fi

# Does the host itself follow trixie?  (Not os-release: on Debian 12 the
# trixie libc upgrade brings trixie's base-files, which then says trixie.)
host_has_trixie() {
	grep -rqsE '^[^#]*\btrixie\b' /etc/apt/sources.list \
		$(ls /etc/apt/sources.list.d/* 2>/dev/null | grep -v voyager-suites) 2>/dev/null
}
suites="forky"
add_trixie=""
if ! host_has_trixie; then
	suites="trixie forky"
	add_trixie=1
fi
cat >/etc/apt/sources.list.d/voyager-suites.sources <<SRC
# Added by Voyager's scripts/install-deps.sh; pinned in
# /etc/apt/preferences.d/voyager-pins
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suites
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

{
	echo "# Added by Voyager's scripts/install-deps.sh"
	if [ -n "$add_trixie" ]; then
		printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n\n'
	fi
	printf 'Package: %s libnl-*\nPin: release n=forky\nPin-Priority: 995\n\n' "${forky_pkgs[*]}"
	printf 'Package: *\nPin: release n=forky\nPin-Priority: 1\n'
} >/etc/apt/preferences.d/voyager-pins

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# "-t trixie": on Debian 12 every package below and what it pulls in comes
# from trixie (about 260 packages on a minimal system, libc6 among them);
# on Debian 13 that is the host's own release.
simulate=()
[ -n "${VOYAGER_DEPS_SIMULATE:-}" ] && simulate=(-s)
apt-get install "${simulate[@]}" -y -q --no-install-recommends -t trixie "${pkgs[@]}" "${forky_pkgs[@]}"
if [ -n "${VOYAGER_DEPS_SIMULATE:-}" ]; then
	echo "install-deps: simulation only (VOYAGER_DEPS_SIMULATE), nothing installed"
	exit 0
fi

if ! have_all; then
	echo "install-deps: something is still missing after installing; see above" >&2
	exit 1
fi
echo "install-deps: done ($(criu --version | head -1), $(runc --version | head -1), $(crun --version | head -1))"
