#!/bin/bash
# Build and cache rootfs templates for tests, benchmarks and the demo.
#
#   mkrootfs.sh build [busybox|redis|all]   build (if stale) the templates
#   mkrootfs.sh path TEMPLATE               print the template's directory
#                                            (building it first if stale)
#   mkrootfs.sh copy TEMPLATE DEST          cp -a the template to DEST
#                                            (DEST must not exist or be empty)
#
# Cache: /var/cache/vylab-rootfs/TEMPLATE, rebuilt when this script, the C
# workloads or the host binaries it copies change (a sha256 stamp).
#
# busybox: busybox-static as /bin/busybox with every applet symlinked in
#          /bin, /sbin/counter, /sbin/memhog, /sbin/udpecho and /sbin/maphold
#          (static, from counter.c, memhog.c, udpecho.c and maphold.c), /data,
#          /tmp, /etc/passwd and /etc/group with root.
# redis:   the host's redis-server and redis-cli with exactly the shared
#          libraries ldd names (plus the dynamic loader), busybox, minimal
#          /etc, /tmp, /data and /etc/redis.conf (bind 0.0.0.0 and, where
#          the namespace has IPv6, ::, port 6379,
#          protected-mode no, no persistence, dir /data).  Run it as
#          "redis-server /etc/redis.conf".
set -euo pipefail

CACHE=${VYLAB_ROOTFS_CACHE:-/var/cache/vylab-rootfs}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
BUSYBOX=${BUSYBOX:-/bin/busybox}

die() { echo "mkrootfs: $*" >&2; exit 1; }

stamp_of() { # TEMPLATE -> hash of everything that goes into it
	local t=$1
	{
		sha256sum "$self"
		sha256sum "$(readlink -f "$BUSYBOX")"
		case $t in
		busybox) sha256sum "$here/counter.c" "$here/memhog.c" "$here/udpecho.c" "$here/maphold.c" ;;
		redis)
			local b
			for b in /usr/bin/redis-server /usr/bin/redis-cli; do
				sha256sum "$(readlink -f "$b")"
				ldd "$b" | awk '/=>/ {print $3} /^\t\// {print $1}' |
					xargs -r readlink -f | xargs -r sha256sum
			done
			;;
		esac
	} | sha256sum | cut -d' ' -f1
}

base_tree() { # ROOT: directories, /etc, busybox
	local r=$1 a
	mkdir -p "$r"/{bin,sbin,etc,data,tmp,root,proc,sys,dev,run,var/tmp}
	chmod 1777 "$r/tmp" "$r/var/tmp"
	chmod 700 "$r/root"
	cp "$(readlink -f "$BUSYBOX")" "$r/bin/busybox"
	for a in $("$BUSYBOX" --list); do
		[ "$a" = busybox ] && continue
		[ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\n' >"$r/etc/group"
	printf 'passwd: files\ngroup: files\nhosts: files\n' >"$r/etc/nsswitch.conf"
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$r/etc/hosts"
	: >"$r/etc/resolv.conf"
}

copy_with_libs() { # ROOT BINARY [NAME]
	local r=$1 b=$2 name=${3:-$(basename "$2")} lib
	cp -L "$b" "$r/usr/bin/$name"
	for lib in $(ldd "$b" | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\// {print $1}'); do
		mkdir -p "$r$(dirname "$lib")"
		[ -e "$r$lib" ] || cp -L "$lib" "$r$lib"
	done
}

build_busybox() { # ROOT
	local r=$1
	base_tree "$r"
	gcc -static -O2 -Wall -o "$r/sbin/counter" "$here/counter.c"
	gcc -static -O2 -Wall -o "$r/sbin/memhog" "$here/memhog.c"
	gcc -static -O2 -Wall -o "$r/sbin/udpecho" "$here/udpecho.c"
	gcc -static -O2 -Wall -o "$r/sbin/maphold" "$here/maphold.c"
	strip "$r/sbin/counter" "$r/sbin/memhog" "$r/sbin/udpecho" "$r/sbin/maphold"
}

build_redis() { # ROOT
	local r=$1
	base_tree "$r"
	mkdir -p "$r/usr/bin"
	# redis-server is a link to redis-check-rdb; the binary picks its mode
	# from argv[0], so it must be installed under the name redis-server.
	copy_with_libs "$r" /usr/bin/redis-server redis-server
	copy_with_libs "$r" /usr/bin/redis-cli redis-cli
	cat >"$r/etc/redis.conf" <<'CONF'
bind 0.0.0.0 -::
port 6379
protected-mode no
save ""
appendonly no
daemonize no
dir /data
CONF
}

build() { # TEMPLATE
	local t=$1 dst="$CACHE/$1" want tmp
	case $t in busybox | redis) ;; *) die "unknown template '$t'" ;; esac
	want=$(stamp_of "$t")
	if [ -f "$dst/.vylab-stamp" ] && [ "$(cat "$dst/.vylab-stamp")" = "$want" ]; then
		return 0
	fi
	tmp=$(mktemp -d "$CACHE/.vybuild-$t.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	"build_$t" "$tmp/root"
	echo "$want" >"$tmp/root/.vylab-stamp"
	rm -rf "$dst"
	mv "$tmp/root" "$dst"
	rm -rf "$tmp"
	trap - EXIT
}

locked() { # CMD... under the cache lock
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	flock 9
	"$@"
	exec 9>&-
}

cmd=${1:-}
case $cmd in
build)
	t=${2:-all}
	if [ "$t" = all ]; then
		locked build busybox
		locked build redis
	else
		locked build "$t"
	fi
	;;
path)
	[ $# -eq 2 ] || die "usage: mkrootfs.sh path TEMPLATE"
	locked build "$2"
	echo "$CACHE/$2"
	;;
copy)
	[ $# -eq 3 ] || die "usage: mkrootfs.sh copy TEMPLATE DEST"
	locked build "$2"
	dest=$3
	if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
		die "$dest exists and is not empty"
	fi
	mkdir -p "$dest"
	cp -a "$CACHE/$2/." "$dest/"
	rm -f "$dest/.vylab-stamp"
	;;
*)
	sed -n '2,/^$/s/^# \{0,1\}//p' "$self" >&2
	exit 2
	;;
esac
