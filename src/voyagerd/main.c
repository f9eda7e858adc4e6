/* main.c - voyagerd, the host agent: flags, start-up checks, recovery, and
 * then the server loop (server.c). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "daemon.h"
#include "lazypages.h"
#include "kparam.h"
#include "log.h"
#include "preflight.h"
#include "util.h"

volatile sig_atomic_t vy_stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	vy_stop_requested = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: voyagerd [OPTIONS]\n"
		"The Voyager host agent: sends and receives container migrations.\n\n"
		"  -l, --listen ADDR:PORT     peer (TLS) address (default 0.0.0.0:%d)\n"
		"  -d, --state-dir DIR        journals, checkpoints, received bundles\n"
		"                             (default %s)\n"
		"  -k, --key FILE             cluster secret (default %s)\n"
		"  -r, --runtime runc|crun    OCI runtime (default runc)\n"
		"  -R, --runtime-root DIR     the runtime's --root (default: its own)\n"
		"  -s, --socket PATH          control socket, mode 0600 (default %s)\n"
		"  -c, --cgroup-parent NAME   restore received containers under cgroup\n"
		"                             /NAME/<container> (default: keep the source's path)\n"
		"  -t, --peer-timeout SEC     give up on a silent peer after SEC (default 30)\n"
		"  -p, --pid-file PATH        write the agent's PID there once it listens\n"
		"  -n, --netns-dir DIR        where container network namespaces are held\n"
		"                             (default STATE-DIR/netns)\n"
		"  -b, --bridge NAME          attach received containers to this bridge\n"
		"                             (default: a bridge of the same name as on the source)\n"
		"  -S, --shared-path DIR      storage that every host mounts at the same path\n"
		"                             (repeatable): volumes there are re-mounted on the\n"
		"                             target, not copied; NFS, CIFS/SMB, Ceph, 9p, AFS,\n"
		"                             GFS2, OCFS2 and Lustre are recognised by themselves\n"
		"  -v, --verbose              debug logging\n"
		"  -h, --help                 this help\n"
		"  -V, --version              print the version\n",
		VY_DEFAULT_PORT, VY_DEFAULT_STATE_DIR, VY_DEFAULT_KEY, VY_DEFAULT_SOCKET);
}

static int parse_args(struct vy_daemon *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, 0, 'l' },
		{ "state-dir", required_argument, 0, 'd' },
		{ "key", required_argument, 0, 'k' },
		{ "runtime", required_argument, 0, 'r' },
		{ "runtime-root", required_argument, 0, 'R' },
		{ "socket", required_argument, 0, 's' },
		{ "cgroup-parent", required_argument, 0, 'c' },
		{ "peer-timeout", required_argument, 0, 't' },
		{ "pid-file", required_argument, 0, 'p' },
		{ "netns-dir", required_argument, 0, 'n' },
		{ "bridge", required_argument, 0, 'b' },
		{ "shared-path", required_argument, 0, 'S' },
		{ "verbose", no_argument, 0, 'v' },
		{ "help", no_argument, 0, 'h' },
		{ "version", no_argument, 0, 'V' },
		{ 0, 0, 0, 0 },
	};
	const char *runtime = "runc", *root = "";
	snprintf(d->listen, sizeof(d->listen), "0.0.0.0:%d", VY_DEFAULT_PORT);
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", VY_DEFAULT_STATE_DIR);
	snprintf(d->key_path, sizeof(d->key_path), "%s", VY_DEFAULT_KEY);
	snprintf(d->socket_path, sizeof(d->socket_path), "%s", VY_DEFAULT_SOCKET);
	d->peer_timeout_ms = 30000;
	int c;
	while ((c = getopt_long(argc, argv, "l:d:k:r:R:s:c:t:p:n:b:S:vhV", opts, NULL)) != -1) {
		switch (c) {
		case 'l': snprintf(d->listen, sizeof(d->listen), "%s", optarg); break;
		case 'd': snprintf(d->state_dir, sizeof(d->state_dir), "%s", optarg); break;
		case 'k': snprintf(d->key_path, sizeof(d->key_path), "%s", optarg); break;
		case 'r': runtime = optarg; break;
		case 'R': root = optarg; break;
		case 's': snprintf(d->socket_path, sizeof(d->socket_path), "%s", optarg); break;
		case 'c':
			if (!vy_name_is_safe(optarg)) {
				fprintf(stderr, "voyagerd: invalid --cgroup-parent '%s'\n", optarg);
				return 2;
			}
			snprintf(d->cgroup_parent, sizeof(d->cgroup_parent), "%s", optarg);
			break;
		case 't': d->peer_timeout_ms = atoi(optarg) * 1000; break;
		case 'p': snprintf(d->pid_file, sizeof(d->pid_file), "%s", optarg); break;
		case 'n': snprintf(d->netns_dir, sizeof(d->netns_dir), "%s", optarg); break;
		case 'b': snprintf(d->bridge, sizeof(d->bridge), "%s", optarg); break;
		case 'S':
			if (optarg[0] != '/' || d->nshared == VY_MAX_SHARED) {
				fprintf(stderr, "voyagerd: --shared-path wants an absolute path (at "
						"most %d of them)\n", VY_MAX_SHARED);
				return 2;
			}
			snprintf(d->shared[d->nshared++], PATH_MAX, "%s", optarg);
			break;
		case 'v': vy_log_set_level(VY_LOG_DEBUG); break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("voyagerd %s\n", VOYAGER_VERSION); exit(0);
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "voyagerd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (d->peer_timeout_ms <= 0)
		d->peer_timeout_ms = 30000;
	if (!d->netns_dir[0])
		snprintf(d->netns_dir, sizeof(d->netns_dir), "%s/netns", d->state_dir);
	vy_error err;
	if (vy_runtime_open(&d->rt, runtime, root, &err) < 0) {
		if (err.code != ENOENT) {
			fprintf(stderr, "voyagerd: %s\n", err.msg);
			return 2;
		}
		/* Keep running: peers get a clear pre-flight error instead. */
		vy_warn("%s", err.msg);
		snprintf(d->rt.name, sizeof(d->rt.name), "%s", runtime);
		snprintf(d->rt.root, sizeof(d->rt.root), "%s", root);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct vy_daemon d = { 0 };
	vy_log_set_tag("voyagerd");
	int rc = parse_args(&d, argc, argv);
	if (rc)
		return rc;
	vy_error err;
	if (vy_key_load(d.key_path, d.key, &err) < 0) {
		fprintf(stderr, "voyagerd: cluster key: %s (create one with `voyager keygen`)\n",
			err.msg);
		return 1;
	}
	if (d.rt.path[0] && vy_preflight_host(&d.rt, &d.facts, &err) < 0) {
		fprintf(stderr, "voyagerd: %s\n", err.msg);
		return 1;
	}
	int maj, min, pat;
	if (!d.rt.path[0] && vy_criu_version(&maj, &min, &pat, &err) < 0) {
		fprintf(stderr, "voyagerd: %s\n", err.msg);
		return 1;
	}
	if (!d.facts)
		d.facts = json_object_new_object();
	d.soft_dirty = vy_criu_has_feature("mem_dirty_track");
	d.uffd = vy_criu_has_feature("uffd-noncoop");
	json_object_object_add(d.facts, "soft_dirty", json_object_new_boolean(d.soft_dirty));
	json_object_object_add(d.facts, "userfaultfd", json_object_new_boolean(d.uffd));
	if (vy_mkdir_p(d.state_dir, 0700, &err) < 0 || vy_mkdir_p(d.netns_dir, 0700, &err) < 0) {
		fprintf(stderr, "voyagerd: state dir: %s\n", err.msg);
		return 1;
	}
	snprintf(d.criu_conf, sizeof(d.criu_conf), "%s/criu.conf", d.state_dir);
	snprintf(d.criu_conf_netlock, sizeof(d.criu_conf_netlock), "%s/criu-netlock.conf",
		 d.state_dir);
	/* What an agent that died on this kernel left set for a migration
	 * (kparam.h) goes back before anything else. */
	vy_pipe_size_sweep();
	vy_rcu_expedite_sweep();
	if (vy_criu_config_write(d.criu_conf, false, &err) < 0) {
		vy_warn("CRIU runs with its own settings only (it reads the build-id of "
			"every mapped file, which slows a jit restore): %s; fix or unset "
			"CRIU_CONFIG_FILE, or use CRIU 3.17 or newer", err.msg);
		d.criu_conf[0] = '\0';
	}
	if (vy_criu_config_write(d.criu_conf_netlock, true, &err) < 0) {
		vy_warn("CRIU will lock the network itself as well (iptables, inside the "
			"freeze): %s", err.msg);
		snprintf(d.criu_conf_netlock, sizeof(d.criu_conf_netlock), "%s", d.criu_conf);
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	vy_info("voyagerd %s: runtime %s, state %s, criu %s", VOYAGER_VERSION, d.rt.name,
		d.state_dir, vy_json_str(d.facts, "criu_version", "?"));
	vy_recover(&d);
	if (vy_server_run(&d, &err) < 0) {
		fprintf(stderr, "voyagerd: %s\n", err.msg);
		return 1;
	}
	json_object_put(d.facts);
	return 0;
}
