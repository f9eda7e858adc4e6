#!/bin/bash
# Make OCI bundles for tests, benchmarks and the demo.
#
#   bundle.sh create DEST TEMPLATE [OPTIONS] [--] ARGS...
#       DEST/config.json from "runc spec", edited; DEST/rootfs copied from
#       TEMPLATE (a mkrootfs.sh template name such as busybox or redis, or
#       a directory).  ARGS are the process args.  Options (anywhere before
#       "--"):
#         --cgroup-parent P    linux.cgroupsPath = "/P/ID"
#         --id ID              container id for cgroupsPath (default: the
#                              basename of DEST)
#         --netns PATH         join this network namespace (default: a
#                              fresh, empty one)
#         --volume HOST:CTR    bind mount (rbind,rw); repeatable
#         --env K=V            extra environment; repeatable
#         --hostname NAME      (default: the id)
#   bundle.sh set-cgroup DEST PARENT [ID]   rewrite cgroupsPath (for restore
#                                           on another lab host)
#   bundle.sh set-netns DEST PATH           rewrite the netns path
#   bundle.sh set-volume DEST CTR HOST      rewrite a bind mount's source
#
# Defaults kept from "runc spec": namespaces, masked and readonly paths,
# capabilities, rlimits.  Changed: terminal false, uid/gid 0, cwd /,
# rootfs read-write.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "bundle: $*" >&2; exit 1; }

# edit CONFIG  -- runs the python snippet on stdin with c = the config
edit() {
	local cfg=$1
	shift
	python3 - "$cfg" "$@" <<'PY'
import json, os, sys
cfg, op, args = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(cfg) as f:
    c = json.load(f)
lin = c.setdefault("linux", {})

def set_netns(path):
    nss = lin.setdefault("namespaces", [])
    for ns in nss:
        if ns["type"] == "network":
            if path:
                ns["path"] = path
            else:
                ns.pop("path", None)
            break
    else:
        nss.append({"type": "network", "path": path} if path else {"type": "network"})

if op == "create":
    opts = json.loads(args[0])
    p = c["process"]
    p["terminal"] = False
    p["args"] = opts["args"]
    p["user"] = {"uid": 0, "gid": 0}
    p["cwd"] = "/"
    p["env"] = p.get("env", []) + opts["env"]
    c["root"] = {"path": "rootfs", "readonly": False}
    c["hostname"] = opts["hostname"]
    if opts["cgroup_parent"]:
        lin["cgroupsPath"] = "/%s/%s" % (opts["cgroup_parent"], opts["id"])
    set_netns(opts["netns"])
    for v in opts["volumes"]:
        src, dst = v.split(":", 1)
        c["mounts"].append({"destination": dst, "type": "bind", "source": src,
                            "options": ["rbind", "rw"]})
elif op == "set-cgroup":
    parent, cid = args
    lin["cgroupsPath"] = "/%s/%s" % (parent, cid)
elif op == "set-netns":
    set_netns(args[0])
elif op == "set-volume":
    dst, src = args
    for m in c["mounts"]:
        if m.get("destination") == dst and m.get("type") == "bind":
            m["source"] = src
            break
    else:
        sys.exit("bundle: no bind mount at %s" % dst)
else:
    sys.exit("bundle: bad op " + op)
tmp = cfg + ".tmp"
with open(tmp, "w") as f:
    json.dump(c, f, indent=2)
os.rename(tmp, cfg)
PY
}

create() {
	[ $# -ge 3 ] || die "usage: bundle.sh create DEST TEMPLATE [OPTIONS] [--] ARGS..."
	local dest=$1 tmpl=$2
	shift 2
	local cgp="" id="" netns="" hostname="" args=() vols=() envs=()
	while [ $# -gt 0 ]; do
		case $1 in
		--cgroup-parent) cgp=$2; shift 2 ;;
		--id) id=$2; shift 2 ;;
		--netns) netns=$2; shift 2 ;;
		--volume) [[ $2 == /*:/* ]] || die "--volume wants HOSTDIR:CTRPATH"; vols+=("$2"); shift 2 ;;
		--env) envs+=("$2"); shift 2 ;;
		--hostname) hostname=$2; shift 2 ;;
		--) shift; args+=("$@"); break ;;
		*) args+=("$1"); shift ;;
		esac
	done
	[ ${#args[@]} -gt 0 ] || die "no process args"
	[ -n "$id" ] || id=$(basename "$dest")
	[ -n "$hostname" ] || hostname=$id
	if [ -e "$dest/config.json" ] || [ -e "$dest/rootfs" ]; then
		die "$dest already holds a bundle"
	fi
	mkdir -p "$dest"
	if [ -d "$tmpl" ]; then
		mkdir "$dest/rootfs"
		cp -a "$tmpl/." "$dest/rootfs/"
	else
		"$here/mkrootfs.sh" copy "$tmpl" "$dest/rootfs"
	fi
	if command -v runc >/dev/null; then
		runc spec --bundle "$dest"
	else
		(cd "$dest" && crun spec)
	fi
	local opts
	opts=$(python3 -c 'import json,sys; a=sys.argv[1:]; i=a.index("--SEP1"); j=a.index("--SEP2"); k=a.index("--SEP3")
print(json.dumps({"cgroup_parent": a[0], "id": a[1], "netns": a[2], "hostname": a[3],
  "args": a[i+1:j], "volumes": a[j+1:k], "env": a[k+1:]}))' \
		"$cgp" "$id" "$netns" "$hostname" --SEP1 "${args[@]}" --SEP2 "${vols[@]}" --SEP3 "${envs[@]}")
	edit "$dest/config.json" create "$opts"
}

cmd=${1:-}
[ $# -ge 1 ] && shift
case $cmd in
create) create "$@" ;;
set-cgroup)
	[ $# -ge 2 ] || die "usage: bundle.sh set-cgroup DEST PARENT [ID]"
	edit "$1/config.json" set-cgroup "$2" "${3:-$(basename "$1")}"
	;;
set-netns)
	[ $# -eq 2 ] || die "usage: bundle.sh set-netns DEST PATH"
	edit "$1/config.json" set-netns "$2"
	;;
set-volume)
	[ $# -eq 3 ] || die "usage: bundle.sh set-volume DEST CTRPATH HOSTDIR"
	edit "$1/config.json" set-volume "$2" "$3"
	;;
*)
	sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
	;;
esac
