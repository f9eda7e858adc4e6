/* cmd_drain.c - `voyager drain --to ADDR`: empty this host.  Every running
 * container under the agent's runtime root migrates to ADDR, one after the
 * other, each with the same guarantees as `voyager migrate`.  Exits 0 only
 * when every one of them runs on the target. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "util.h"

static json_object *running_containers(struct cli_globals *g, vy_error *err)
{
	json_object *req = json_object_new_object(), *res = NULL;
	json_object_object_add(req, "cmd", json_object_new_string("containers"));
	int rc = cli_request(g, req, NULL, NULL, &res, err);
	json_object_put(req);
	if (rc < 0)
		return NULL;
	if (strcmp(vy_json_str(res, "result", ""), "ok") != 0) {
		vy_error_set(err, EIO, "%s", vy_json_str(res, "error", "cannot list containers"));
		json_object_put(res);
		return NULL;
	}
	json_object *out = json_object_new_array();
	json_object *all = json_object_object_get(res, "containers");
	for (size_t i = 0; all && i < json_object_array_length(all); i++) {
		json_object *c = json_object_array_get_idx(all, i);
		if (!strcmp(vy_json_str(c, "status", ""), "running"))
			json_object_array_add(out, json_object_new_string(vy_json_str(c, "id", "")));
	}
	json_object_put(res);
	return out;
}

static json_object *migrate_one(struct cli_globals *g, const char *id, const char *to,
				const char *mode)
{
	json_object *req = json_object_new_object(), *res = NULL;
	json_object_object_add(req, "cmd", json_object_new_string("migrate"));
	json_object_object_add(req, "container", json_object_new_string(id));
	json_object_object_add(req, "to", json_object_new_string(to));
	json_object_object_add(req, "mode", json_object_new_string(mode));
	vy_error err;
	if (cli_request(g, req, NULL, NULL, &res, &err) < 0) {
		res = json_object_new_object();
		json_object_object_add(res, "result", json_object_new_string("failed"));
		json_object *e = json_object_new_object();
		json_object_object_add(e, "phase", json_object_new_string("request"));
		json_object_object_add(e, "message", json_object_new_string(err.msg));
		json_object_object_add(res, "error", e);
	}
	json_object_put(req);
	json_object_object_del(res, "event");
	json_object_object_add(res, "container", json_object_new_string(id));
	return res;
}

int cmd_drain(struct cli_globals *g, int argc, char **argv)
{
	static const struct option opts[] = { { "to", required_argument, 0, 't' },
					      { "mode", required_argument, 0, 'm' },
					      { "json", no_argument, 0, 'j' },
					      { "help", no_argument, 0, 'h' },
					      { 0, 0, 0, 0 } };
	const char *to = NULL, *mode = "jit";
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "t:m:jh", opts, NULL)) != -1) {
		switch (c) {
		case 't': to = optarg; break;
		case 'm': mode = optarg; break;
		case 'j': g->json = 1; break;
		case 'h':
			printf("Usage: voyager drain --to ADDR[:PORT] [--mode jit|presync|stop-copy] [--json]\n"
			       "Migrate every running container of this agent to ADDR, one by one.\n");
			return 0;
		default: return 2;
		}
	}
	if (!to || optind != argc) {
		fprintf(stderr, "Usage: voyager drain --to ADDR[:PORT] [--mode jit|presync|stop-copy] [--json]\n");
		return 2;
	}
	vy_error err;
	json_object *ids = running_containers(g, &err);
	if (!ids) {
		fprintf(stderr, "voyager drain: %s\n", err.msg);
		return 1;
	}
	json_object *reports = json_object_new_array();
	size_t n = json_object_array_length(ids), ok = 0;
	for (size_t i = 0; i < n; i++) {
		const char *id = json_object_get_string(json_object_array_get_idx(ids, i));
		if (!g->json)
			printf("[%zu/%zu] %s -> %s ... ", i + 1, n, id, to), fflush(stdout);
		json_object *r = migrate_one(g, id, to, mode);
		bool migrated = !strcmp(vy_json_str(r, "result", ""), "migrated");
		ok += migrated;
		if (!g->json)
			printf("%s%s%s\n", vy_json_str(r, "result", "failed"), migrated ? "" : ": ",
			       migrated ? "" : vy_json_str(json_object_object_get(r, "error"), "message", ""));
		json_object_array_add(reports, r);
	}
	if (g->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "to", json_object_new_string(to));
		json_object_object_add(o, "migrated", json_object_new_int64((int64_t)ok));
		json_object_object_add(o, "total", json_object_new_int64((int64_t)n));
		json_object_object_add(o, "reports", reports);
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
								      JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(o);
	} else {
		printf("%zu of %zu containers migrated to %s\n", ok, n, to);
		json_object_put(reports);
	}
	json_object_put(ids);
	return ok == n ? 0 : 1;
}
