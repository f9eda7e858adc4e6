/* cmd_migrate.c - `voyager migrate CONTAINER --to ADDR[:PORT]`.
 *
 * Asks the local agent to migrate, shows a progress bar on a terminal, and
 * prints the report (or, with --json, one JSON object).  Exits 0 only when
 * the container runs on the target.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"

struct view {
	int tty;
	int drawn;
};

static void draw(json_object *ev, void *arg)
{
	struct view *v = arg;
	if (!v->tty)
		return;
	const char *kind = vy_json_str(ev, "event", "");
	const char *phase = vy_json_str(ev, "phase", "");
	if (!strcmp(kind, "phase")) {
		fprintf(stderr, "%s[%s]\033[K", v->drawn ? "\r" : "", phase);
		v->drawn = 1;
	} else if (!strcmp(kind, "progress")) {
		unsigned long long b = (unsigned long long)vy_json_int(ev, "bytes", 0);
		unsigned long long t = (unsigned long long)vy_json_int(ev, "total", 0);
		unsigned long long r = (unsigned long long)vy_json_int(ev, "rate_bps", 0);
		char bs[32], ts[32], rs[32], bar[31];
		int fill = t ? (int)(b * 30 / (t ? t : 1)) : 0;
		if (fill > 30)
			fill = 30;
		memset(bar, '#', (size_t)fill);
		memset(bar + fill, '.', (size_t)(30 - fill));
		bar[30] = '\0';
		cli_format_bytes(b, bs, sizeof(bs));
		cli_format_bytes(t, ts, sizeof(ts));
		cli_format_bytes(r, rs, sizeof(rs));
		fprintf(stderr, "\r[%-10s] %s %3d%%  %s / %s  %s/s\033[K", phase, bar,
			t ? (int)(b * 100 / t) : 0, bs, ts, rs);
		v->drawn = 1;
	}
	fflush(stderr);
}

static void print_report(json_object *r)
{
	const char *result = vy_json_str(r, "result", "failed");
	char mem[32], root[32], vols[32], wire[32];
	json_object *b = json_object_object_get(r, "bytes");
	cli_format_bytes((unsigned long long)vy_json_int(b, "memory", 0), mem, sizeof(mem));
	cli_format_bytes((unsigned long long)vy_json_int(b, "rootfs", 0), root, sizeof(root));
	cli_format_bytes((unsigned long long)vy_json_int(b, "volumes", 0), vols, sizeof(vols));
	cli_format_bytes((unsigned long long)vy_json_int(b, "wire", 0), wire, sizeof(wire));
	printf("%s: %s -> %s  (migration %s, %s)\n", result, vy_json_str(r, "container", "?"),
	       vy_json_str(r, "to", "?"), vy_json_str(r, "id", "-"), vy_json_str(r, "mode", "?"));
	if (json_object_object_get(r, "downtime_ms"))
		printf("  downtime  %lld ms\n", (long long)vy_json_int(r, "downtime_ms", 0));
	printf("  total     %lld ms\n", (long long)vy_json_int(r, "total_ms", 0));
	json_object *mm = json_object_object_get(r, "memory");
	if (mm)
		printf("  memory    %s (%s)\n", vy_json_str(mm, "mode", "?"),
		       vy_json_str(mm, "reason", ""));
	printf("  bytes     memory %s, rootfs %s, volumes %s; on the wire %s\n", mem, root, vols,
	       wire);
	json_object *pf = json_object_object_get(r, "prefetch");
	if (pf && vy_json_int(pf, "files", 0)) {
		char pb[32];
		cli_format_bytes((unsigned long long)vy_json_int(pf, "bytes", 0), pb, sizeof(pb));
		printf("  prefetch  %lld mapped files (%s) before the freeze, in %lld ms; "
		       "%lld fetched again\n", (long long)vy_json_int(pf, "files", 0), pb,
		       (long long)vy_json_int(pf, "ms", 0), (long long)vy_json_int(pf, "refetched", 0));
	}
	json_object *pc = json_object_object_get(r, "post_copy");
	if (pc && json_object_object_get(pc, "exposed_ms"))
		printf("  pages     %s; last page %lld ms after the freeze; exposed %lld ms\n",
		       vy_json_str(pc, "pages", "?"), (long long)vy_json_int(pc, "all_pages_ms", -1),
		       (long long)vy_json_int(pc, "exposed_ms", 0));
	json_object *net = json_object_object_get(r, "network");
	if (net) {
		printf("  network   hold %s; held %lld packets (%lld bytes, %lld not held)",
		       vy_json_str(net, "hold", "?"), (long long)vy_json_int(net, "held_packets", 0),
		       (long long)vy_json_int(net, "held_bytes", 0),
		       (long long)vy_json_int(net, "held_dropped", 0));
		if (json_object_object_get(net, "replayed"))
			printf(", replayed %lld on the %s", (long long)vy_json_int(net, "replayed", 0),
			       vy_json_str(net, "replayed_on", "?"));
		printf("\n");
		if (json_object_object_get(net, "replay_error"))
			fprintf(stderr, "warning: replay: %s\n", vy_json_str(net, "replay_error", ""));
	}
	json_object *rcu = json_object_object_get(r, "rcu_expedited");
	if (rcu)
		printf("  rcu       expedited grace periods in the freeze: source %s, target %s\n",
		       vy_json_str(rcu, "source", "-"), vy_json_str(rcu, "target", "-"));
	json_object *lat = json_object_object_get(r, "cpu_latency");
	if (lat)
		printf("  wake-up   CPU latency bound 0 in the freeze: source %s, target %s\n",
		       vy_json_str(lat, "source", "-"), vy_json_str(lat, "target", "-"));
	json_object *ph = json_object_object_get(r, "phases_ms");
	if (ph) {
		printf("  phases   ");
		json_object_object_foreach(ph, k, val)
			printf(" %s %lld ms;", k, (long long)json_object_get_int64(val));
		printf("\n");
	}
	json_object *steps = json_object_object_get(r, "steps_ms");
	if (steps) {
		json_object_object_foreach(steps, phase, st) {
			printf("  %-9s", phase);
			json_object_object_foreach(st, k, val)
				printf(" %s %.1f;", k, json_object_get_double(val));
			printf(" (ms)\n");
		}
	}
	json_object *h = json_object_object_get(r, "hydration");
	if (h) {
		char left[32];
		cli_format_bytes((unsigned long long)vy_json_int(h, "bytes_left", 0), left, sizeof(left));
		printf("  files     %s to hydrate in the background; `voyager status` on the "
		       "target shows progress\n", left);
	}
	json_object *w = json_object_object_get(r, "warnings");
	for (size_t i = 0; w && i < json_object_array_length(w); i++)
		fprintf(stderr, "warning: %s\n", json_object_get_string(json_object_array_get_idx(w, i)));
	json_object *e = json_object_object_get(r, "error");
	if (e)
		fprintf(stderr, "error in %s: %s\n", vy_json_str(e, "phase", "?"),
			vy_json_str(e, "message", "?"));
}

int cmd_migrate(struct cli_globals *g, int argc, char **argv)
{
	static const struct option opts[] = { { "to", required_argument, 0, 't' },
					      { "mode", required_argument, 0, 'm' },
					      { "memory", required_argument, 0, 'M' },
					      { "hydrate-rate", required_argument, 0, 'r' },
					      { "no-hold", no_argument, 0, 'H' },
					      { "no-prefetch", no_argument, 0, 'P' },
					      { "json", no_argument, 0, 'j' },
					      { "help", no_argument, 0, 'h' },
					      { 0, 0, 0, 0 } };
	const char *to = NULL, *mode = "jit", *memory = "auto";
	long long rate = 0;
	int c, no_hold = 0, no_prefetch = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "t:m:M:r:jh", opts, NULL)) != -1) {
		switch (c) {
		case 't': to = optarg; break;
		case 'm': mode = optarg; break;
		case 'M': memory = optarg; break;
		case 'r': {
			char *end;
			rate = strtoll(optarg, &end, 10);
			long long unit = !*end ? 1 : (*end == 'k' || *end == 'K') ? 1000
				       : (*end == 'm' || *end == 'M') ? 1000000
				       : (*end == 'g' || *end == 'G') ? 1000000000 : -1;
			if (rate < 0 || end == optarg || unit < 0 || (*end && end[1])) {
				fprintf(stderr, "voyager migrate: --hydrate-rate wants bytes per "
						"second, e.g. 50M\n");
				return 2;
			}
			rate *= unit;
			break;
		}
		case 'H': no_hold = 1; break;
		case 'P': no_prefetch = 1; break;
		case 'j': g->json = 1; break;
		case 'h':
			printf("Usage: voyager migrate CONTAINER --to ADDR[:PORT] [--mode jit|presync|stop-copy]\n"
			       "                       [--memory MODE] [--hydrate-rate BYTES/S] [--no-hold]\n"
			       "                       [--no-prefetch] [--json]\n"
			       "  jit (default): send the file tree's metadata while the container runs;\n"
			       "                 at the freeze only memory and what changed in the metadata;\n"
			       "                 the container resumes on voyager-fs at once, files arrive\n"
			       "                 on demand and in the background, and the source serves\n"
			       "                 them until the target holds every byte (independent);\n"
			       "                 the files the container maps (binaries, libraries)\n"
			       "                 go with the metadata, so that the restore does not\n"
			       "                 wait for them (up to 256 MiB; not those mapped shared\n"
			       "                 and writable or open for writing)\n"
			       "  presync:       copy rootfs and volumes while the container runs,\n"
			       "                 then at the freeze only what changed\n"
			       "  stop-copy:     freeze, then copy everything (the baseline)\n"
			       "  --no-prefetch  jit: send no file data before the freeze\n"
			       "  --hydrate-rate limit jit's background stream (bytes/s; K, M, G suffixes;\n"
			       "                 default: link speed)\n"
			       "  --memory auto|stop-copy|pre-copy|post-copy (default auto)\n"
			       "    post-copy: resume on the target at once, pages follow (CRIU lazy\n"
			       "               pages over TLS; runc only, needs userfaultfd)\n"
			       "    stop-copy: the whole memory image after the freeze\n"
			       "    pre-copy:  not implemented (refused)\n"
			       "    auto:      post-copy where possible, else stop-copy; the report\n"
			       "               says which and why\n"
			       "  --no-hold      for a container with a network identity: do not hold the\n"
			       "                 packets that reach it while it is frozen (by default they\n"
			       "                 are copied on this host and replayed into it on the target\n"
			       "                 once it runs, so a client need not wait for its TCP\n"
			       "                 retransmission; the report's network section says how many)\n");
			return 0;
		default: return 2;
		}
	}
	if (optind + 1 != argc || !to) {
		fprintf(stderr, "Usage: voyager migrate CONTAINER --to ADDR[:PORT] [--json]\n");
		return 2;
	}
	json_object *req = json_object_new_object(), *res = NULL;
	json_object_object_add(req, "cmd", json_object_new_string("migrate"));
	json_object_object_add(req, "container", json_object_new_string(argv[optind]));
	json_object_object_add(req, "to", json_object_new_string(to));
	json_object_object_add(req, "mode", json_object_new_string(mode));
	json_object_object_add(req, "memory", json_object_new_string(memory));
	if (rate)
		json_object_object_add(req, "hydrate_rate", json_object_new_int64(rate));
	if (no_hold)
		json_object_object_add(req, "no_hold", json_object_new_boolean(1));
	if (no_prefetch)
		json_object_object_add(req, "no_prefetch", json_object_new_boolean(1));
	struct view v = { .tty = !g->json && isatty(STDERR_FILENO) };
	vy_error err;
	int rc = cli_request(g, req, draw, &v, &res, &err);
	json_object_put(req);
	if (v.drawn)
		fprintf(stderr, "\r\033[K");
	if (rc < 0) {
		fprintf(stderr, "voyager migrate: %s\n", err.msg);
		return 1;
	}
	json_object_object_del(res, "event");
	if (g->json)
		printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN |
								    JSON_C_TO_STRING_NOSLASHESCAPE));
	else
		print_report(res);
	int ok = !strcmp(vy_json_str(res, "result", ""), "migrated");
	json_object_put(res);
	return ok ? 0 : 1;
}
