/* cmd_check.c - `voyager check`: ask the agent to pre-flight its host, and
 * shared plumbing for talking to the agent. */
#include <errno.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"

void cli_format_bytes(unsigned long long b, char *out, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%llu B", b);
	else
		snprintf(out, len, "%.1f %s", v, units[u]);
}

int cli_request(struct cli_globals *g, json_object *req,
		void (*on_event)(json_object *ev, void *arg), void *arg,
		json_object **result, vy_error *err)
{
	int fd;
	if (vy_control_connect(g->socket, &fd, err) < 0)
		return -1;
	int rc = vy_control_send(fd, req, err);
	struct vy_line_reader r;
	vy_line_reader_init(&r, fd);
	while (rc == 0) {
		json_object *ev;
		if (vy_control_recv(&r, &ev, err) < 0) {
			rc = -1;
			break;
		}
		if (!strcmp(vy_json_str(ev, "event", ""), "result")) {
			*result = ev;
			break;
		}
		if (on_event)
			on_event(ev, arg);
		json_object_put(ev);
	}
	vy_line_reader_free(&r);
	close(fd);
	return rc;
}

int cmd_check(struct cli_globals *g, int argc, char **argv)
{
	json_object *req = json_object_new_object(), *res = NULL;
	json_object_object_add(req, "cmd", json_object_new_string("check"));
	vy_error err;
	int rc = cli_request(g, req, NULL, NULL, &res, &err);
	json_object_put(req);
	if (rc < 0) {
		fprintf(stderr, "voyager check: %s\n", err.msg);
		return 1;
	}
	int ok = !strcmp(vy_json_str(res, "result", ""), "ok");
	if (g->json) {
		printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
	} else if (ok) {
		json_object *h = json_object_object_get(res, "host");
		printf("ok: criu %s, %s, kernel %s (%s)\n", vy_json_str(h, "criu_version", "?"),
		       vy_json_str(h, "runtime_version", "?"), vy_json_str(h, "kernel", "?"),
		       vy_json_str(h, "arch", "?"));
		json_object *sd = json_object_object_get(h, "soft_dirty");
		json_object *uf = json_object_object_get(h, "userfaultfd");
		printf("memory: soft-dirty tracking %s (pre-copy), userfaultfd %s (post-copy)\n",
		       sd && json_object_get_boolean(sd) ? "yes" : "no",
		       uf && json_object_get_boolean(uf) ? "yes" : "no");
		int64_t pipe = vy_json_int(h, "pipe_max_size", 0);
		bool cap = json_object_get_boolean(json_object_object_get(h, "cap_sys_resource"));
		if (!cap && pipe < (4 << 20))
			printf("note: fs.pipe-max-size is %lld and the agent lacks CAP_SYS_RESOURCE: "
			       "CRIU's lazy page server needs a 4 MiB pipe (sysctl -w "
			       "fs.pipe-max-size=16777216 lifts it)\n", (long long)pipe);
	} else {
		fprintf(stderr, "voyager check: %s\n", vy_json_str(res, "error", "failed"));
	}
	json_object_put(res);
	return ok ? 0 : 1;
}
