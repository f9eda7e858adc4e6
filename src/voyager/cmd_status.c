/* cmd_status.c - `voyager status` and `voyager list`: migrations past and
 * running, with their phase, read from the agent's journals. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "util.h"

static json_object *ask(struct cli_globals *g, const char *cmd, const char *id)
{
	json_object *req = json_object_new_object(), *res = NULL;
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	if (id)
		json_object_object_add(req, "id", json_object_new_string(id));
	vy_error err;
	int rc = cli_request(g, req, NULL, NULL, &res, &err);
	json_object_put(req);
	if (rc < 0) {
		fprintf(stderr, "voyager %s: %s\n", cmd, err.msg);
		return NULL;
	}
	if (strcmp(vy_json_str(res, "result", ""), "ok") != 0) {
		fprintf(stderr, "voyager %s: %s\n", cmd, vy_json_str(res, "error", "failed"));
		json_object_put(res);
		return NULL;
	}
	return res;
}

static void print_row(json_object *m)
{
	char when[32] = "-";
	time_t t = (time_t)(vy_json_int(m, "started_ms", 0) / 1000);
	struct tm tm;
	if (t && gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	printf("%-16s  %-6s  %-20s  %-22s  %-12s  %-11s  %s\n", vy_json_str(m, "id", "?"),
	       vy_json_str(m, "role", "?"), vy_json_str(m, "container", "?"),
	       vy_json_str(m, "peer", "?"), vy_json_str(m, "phase", "?"),
	       vy_json_str(m, "result", "running"), when);
}

static void print_active(json_object *act)
{
	for (size_t i = 0; i < json_object_array_length(act); i++) {
		json_object *a = json_object_array_get_idx(act, i);
		char b[32], t[32];
		cli_format_bytes((unsigned long long)vy_json_int(a, "bytes", 0), b, sizeof(b));
		cli_format_bytes((unsigned long long)vy_json_int(a, "total_bytes", 0), t, sizeof(t));
		printf("%s  %s %s %s  phase %s  %s / %s\n", vy_json_str(a, "id", ""),
		       vy_json_str(a, "role", ""), vy_json_str(a, "container", ""),
		       vy_json_str(a, "peer", ""), vy_json_str(a, "phase", ""), b, t);
		json_object *h = json_object_object_get(a, "hydration");
		if (h) {
			unsigned long long bt = (unsigned long long)vy_json_int(h, "bytes_total", 0);
			unsigned long long bp = (unsigned long long)vy_json_int(h, "bytes", 0);
			char r[32];
			cli_format_bytes((unsigned long long)vy_json_int(h, "rate_bps", 0), r, sizeof(r));
			long long eta = (long long)vy_json_int(h, "eta_s", 0);
			printf("  hydration %llu%%: %s of %s, %lld of %lld files, %s/s, eta %lld s%s\n",
			       bt ? bp * 100 / bt : 100, b, t, (long long)vy_json_int(h, "files", 0),
			       (long long)vy_json_int(h, "files_total", 0), r, eta,
			       json_object_get_boolean(json_object_object_get(h, "source_up"))
				       ? "" : "  (source unreachable: waiting)");
		}
	}
}

int cmd_status(struct cli_globals *g, int argc, char **argv)
{
	const char *id = argc > 1 ? argv[1] : NULL;
	json_object *res = ask(g, "status", id);
	if (!res)
		return 1;
	if (g->json) {
		printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
	} else if (id) {
		printf("%s\n", json_object_to_json_string_ext(json_object_object_get(res, "migration"),
							      JSON_C_TO_STRING_PRETTY));
	} else {
		json_object *act = json_object_object_get(res, "active");
		json_object *srv = json_object_object_get(res, "serving");
		size_t nsrv = srv ? json_object_array_length(srv) : 0;
		if ((!act || json_object_array_length(act) == 0) && !nsrv)
			printf("no migration in flight\n");
		else if (act)
			print_active(act);
		for (size_t i = 0; i < nsrv; i++) {
			json_object *s = json_object_array_get_idx(srv, i);
			printf("%s  source: serving %lld trees to the target until it is independent "
			       "(%lld connections open)\n", vy_json_str(s, "id", ""),
			       (long long)vy_json_int(s, "trees", 0),
			       (long long)vy_json_int(s, "connections", 0));
		}
	}
	json_object_put(res);
	return 0;
}

int cmd_list(struct cli_globals *g, int argc, char **argv)
{
	json_object *res = ask(g, "list", NULL);
	if (!res)
		return 1;
	json_object *all = json_object_object_get(res, "migrations");
	if (g->json) {
		printf("%s\n", json_object_to_json_string_ext(all, JSON_C_TO_STRING_PLAIN));
	} else {
		printf("%-16s  %-6s  %-20s  %-22s  %-12s  %-11s  %s\n", "ID", "ROLE", "CONTAINER",
		       "PEER", "PHASE", "RESULT", "STARTED (UTC)");
		for (size_t i = 0; all && i < json_object_array_length(all); i++)
			print_row(json_object_array_get_idx(all, i));
	}
	json_object_put(res);
	return 0;
}
