#!/bin/bash
# Install everything Voyager needs on a fresh Debian 12 or 13 host, as root.
# Safe to run twice.
#
# CRIU older than 4.2 cannot checkpoint TCP sockets on kernels >= 6.16
# (getsockopt SO_PASSCRED on TCP now fails), so criu comes from Debian's
# testing suite (forky).  crun with CRIU support and libfuse >= 3.16 come
# from trixie when the host is older.  Pinning keeps everything else on the
# host's own release: those suites get priority 1, and only the packages
# listed below (and what they pull in) are raised.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: must run as root" >&2
	exit 1
fi

. /etc/os-release
codename=${VERSION_CODENAME:-}
case "$codename" in
bookworm | trixie) ;;
*) echo "install-deps: warning: untested release '$codename', continuing" >&2 ;;
esac

stamp=/var/lib/voyager-deps.stamp
want_version=3
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_version" ] && [ -z "${VOYAGER_FORCE_DEPS:-}" ]; then
	exit 0
fi

src=/etc/apt/sources.list.d/voyager-suites.sources
pref=/etc/apt/preferences.d/voyager-pins
suites="forky"
[ "$codename" = bookworm ] && suites="trixie forky"

cat >"$src.tmp" <<SRC
# Added by Voyager's scripts/install-deps.sh; pinned in $pref
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suites
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
mv "$src.tmp" "$src"

# Only these come from the newer suites.  Their libraries come along when
# the host's versions are too old.
from_trixie="crun libfuse3-4 libfuse3-dev fuse3 libc6 libc6-dev libc-bin libc-dev-bin libc-l10n locales libyajl2 libprotobuf-c1 libnet1 libnftables1 libnftnl11 libnl-3-200 libgnutls30t64 libcap2 libseccomp2 libsystemd0 libzstd1 libgcc-s1 libstdc++6 gcc-14-base libidn2-0 libp11-kit0 libtasn1-6 libunistring5 libhogweed6t64 libnettle8t64 libgmp10 libffi8 libjansson4 libxtables12 libmnl0 libbsd0 libmd0 libuuid1 libblkid1 libmount1 libselinux1 libpcre2-8-0 libcrypt1 liblzma5 libbz2-1.0 zlib1g libelf1t64 libdw1t64 libkmod2 libaudit1 libaudit-common libcap-ng0 libcriu2 libgpgme11t64 libassuan9 libgpg-error0 libgcrypt20"
from_forky="criu libcriu2 python3-criu python3-pycriu"

{
	echo "# Added by Voyager's scripts/install-deps.sh"
	for s in trixie forky; do
		printf 'Package: *\nPin: release n=%s\nPin-Priority: 1\n\n' "$s"
	done
	if [ "$codename" = bookworm ]; then
		printf 'Package: %s\nPin: release n=trixie\nPin-Priority: 600\n\n' "$from_trixie"
	fi
	printf 'Package: %s\nPin: release n=forky\nPin-Priority: 700\n\n' "$from_forky"
} >"$pref.tmp"
mv "$pref.tmp" "$pref"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q

pkgs=(
	build-essential meson ninja-build pkg-config
	libssl-dev libjson-c-dev libzstd-dev libfuse3-dev fuse3
	runc crun criu libcriu2 iptables nftables iproute2 procps
	busybox-static redis-server redis-tools
	util-linux attr acl kmod psmisc
	python3 fio iperf3 gnuplot-nox
)
apt-get install -y -q --no-install-recommends "${pkgs[@]}"

# The federation and the tests need these at the versions we checked.
criu_v=$(criu --version | sed -n 's/^Version: *//p')
case "$criu_v" in
4.[2-9]* | 4.[1-9][0-9]* | [5-9].*) ;;
*) echo "install-deps: criu $criu_v installed, Voyager needs >= 4.2" >&2; exit 1 ;;
esac

echo "$want_version" >"$stamp"
echo "install-deps: done (criu $criu_v, $(runc --version | head -1), $(crun --version | head -1))"
