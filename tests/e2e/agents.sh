# agents.sh - run voyagerd on lab hosts and drive it with the CLI (sourced
# by end-to-end tests, benchmarks and the demo after lab/lab.sh).
#
#   vy_key_init DIR                 make a cluster key at DIR/cluster.key
#   vy_agent_start LAB HOST [RUNTIME] [voyagerd args...]
#                                   (VY_AGENT_KEY: another key file;
#                                    VY_AGENT_ENV: one VAR=value for it)
#   vy_agent_stop LAB HOST          SIGTERM, wait
#   vy_agent_kill LAB HOST          SIGKILL (a crash)
#   vy_agent_pid LAB HOST
#   vy_cli LAB HOST ARGS...         voyager CLI against HOST's agent
#   vy_json_get JSON KEY.PATH       one field of a JSON document

: "${VY_BUILD:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}"
VY_KEY=""

vy_key_init() {
	local dir=$1
	mkdir -p "$dir"
	rm -f "$dir/cluster.key"
	"$VY_BUILD/voyager" keygen --key "$dir/cluster.key" >/dev/null || return 1
	VY_KEY=$dir/cluster.key
}

vy_agent_pid() {
	cat "$(lab_dir "$1" "$2")/voyagerd.pid" 2>/dev/null
}

# Start voyagerd inside HOST: listens on the host's lab IP, keeps its state,
# socket, runtime root and log in the host's own directory, and restores
# received containers under the host's own cgroup parent.
vy_agent_start() {
	local lab=$1 host=$2 runtime=${3:-runc}
	shift 3 2>/dev/null || shift $#
	local dir key
	dir=$(lab_dir "$lab" "$host")
	key=${VY_AGENT_KEY:-$VY_KEY}
	install -m 600 "$key" "$dir/cluster.key"
	rm -f "$dir/run/voyagerd.sock" "$dir/voyagerd.pid"
	lab_exec "$lab" "$host" setsid ${VY_AGENT_ENV:+env "$VY_AGENT_ENV"} "$VY_BUILD/voyagerd" \
		--listen "$(lab_ip "$lab" "$host"):7600" \
		--state-dir "$dir/state" --key "$dir/cluster.key" \
		--runtime "$runtime" --runtime-root "$dir/runtime/$runtime" \
		--socket "$dir/run/voyagerd.sock" --pid-file "$dir/voyagerd.pid" \
		--cgroup-parent "$(lab_cgroup_parent "$lab" "$host")" "$@" \
		>>"$dir/voyagerd.log" 2>&1 </dev/null &
	local launcher=$! i
	for i in $(seq 1 100); do
		[ -S "$dir/run/voyagerd.sock" ] && [ -s "$dir/voyagerd.pid" ] && return 0
		kill -0 "$launcher" 2>/dev/null || [ -s "$dir/voyagerd.pid" ] || break
		sleep 0.05
	done
	echo "voyagerd on $host did not start; log:" >&2
	tail -5 "$dir/voyagerd.log" >&2
	return 1
}

vy_agent_stop() {
	local pid
	pid=$(vy_agent_pid "$1" "$2") || return 0
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null || return 0
	local i
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
	kill -9 "$pid" 2>/dev/null
	return 0
}

vy_agent_kill() {
	local pid
	pid=$(vy_agent_pid "$1" "$2")
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	sleep 0.1
	return 0
}

vy_cli() {
	local lab=$1 host=$2
	shift 2
	lab_exec "$lab" "$host" "$VY_BUILD/voyager" \
		--socket "$(lab_dir "$lab" "$host")/run/voyagerd.sock" "$@"
}

vy_json_get() {
	python3 -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))
' "$1" "$2"
}

# vy_wait_independent LAB HOST MID SECS: until the target HOST's journal of
# jit migration MID says "migrated" (every byte local and durable there,
# and the source told to let go).
vy_wait_independent() {
	local i st
	for ((i = 0; i < $4 * 2; i++)); do
		st=$(vy_cli "$1" "$2" --json status "$3" 2>/dev/null)
		[ "$(vy_json_get "$st" migration.result 2>/dev/null)" = migrated ] && return 0
		sleep 0.5
	done
	return 1
}
