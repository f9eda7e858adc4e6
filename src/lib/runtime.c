/* runtime.c - see runtime.h. */
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "util.h"

#define RUNTIME_TIMEOUT_MS (10 * 60 * 1000)

int vy_runtime_open(struct vy_runtime *rt, const char *name, const char *root,
		    vy_error *err)
{
	memset(rt, 0, sizeof(*rt));
	if (strcmp(name, "runc") != 0 && strcmp(name, "crun") != 0)
		return vy_error_set(err, EINVAL,
				    "unknown runtime '%s' (supported: runc, crun)", name);
	snprintf(rt->name, sizeof(rt->name), "%s", name);
	if (vy_find_executable(name, rt->path, sizeof(rt->path)) < 0)
		return vy_error_set(err, ENOENT,
				    "runtime %s not found in PATH; install it (scripts/install-deps.sh)",
				    name);
	snprintf(rt->root, sizeof(rt->root), "%s", root ? root : "");
	return 0;
}

/* argv = runtime [--root R] verb args... ; fills at most max slots. */
static int build_argv(const struct vy_runtime *rt, const char **argv, int max,
		      const char *const *rest)
{
	int n = 0;
	argv[n++] = rt->path;
	if (rt->root[0]) {
		argv[n++] = "--root";
		argv[n++] = rt->root;
	}
	for (int i = 0; rest[i] && n < max - 1; i++)
		argv[n++] = rest[i];
	argv[n] = NULL;
	return n;
}

/* Run and fail with stderr (and the CRIU log tail, if given) on non-zero. */
static int run_verb(const struct vy_runtime *rt, const char *const *rest,
		    const char *criu_log, struct vy_cmd_result *keep,
		    vy_error *err)
{
	const char *argv[48];
	build_argv(rt, argv, 48, rest);
	struct vy_cmd_result res;
	if (vy_cmd_run((char *const *)argv, RUNTIME_TIMEOUT_MS, &res, err) < 0)
		return -1;
	if (res.status != 0) {
		cleanup_free char *tail = criu_log ? vy_file_tail(criu_log, 6) : NULL;
		/* runc's warnings (a cgroup it could not remove yet, ...) would
		 * crowd the real error and CRIU's words out of the message. */
		char *w = res.errout;
		for (char *line = res.errout; *line;) {
			char *nl = strchr(line, '\n');
			size_t len = nl ? (size_t)(nl - line + 1) : strlen(line);
			if (!strstr(line, "level=warning") || (nl && strstr(line, "level=warning") > nl)) {
				memmove(w, line, len);
				w += len;
			}
			line += len;
		}
		*w = '\0';
		size_t el = strlen(res.errout);
		while (el && (res.errout[el - 1] == '\n' || res.errout[el - 1] == ' '))
			res.errout[--el] = '\0';
		vy_error_set(err, EIO, "%s %s: exit %d: %s%s%s", rt->name, rest[0],
			     res.status, res.errout[0] ? res.errout : "(no output)",
			     tail && tail[0] ? "; last lines of CRIU log: " : "",
			     tail ? tail : "");
		vy_cmd_result_free(&res);
		return -1;
	}
	if (keep)
		*keep = res;
	else
		vy_cmd_result_free(&res);
	return 0;
}

int vy_runtime_version(const struct vy_runtime *rt, char *out, size_t outlen,
		       vy_error *err)
{
	const char *argv[] = { rt->path, "--version", NULL };
	struct vy_cmd_result res;
	if (vy_cmd_run((char *const *)argv, 10000, &res, err) < 0)
		return -1;
	if (res.status != 0) {
		vy_cmd_result_free(&res);
		return vy_error_set(err, EIO, "%s --version failed", rt->name);
	}
	size_t n = strcspn(res.out, "\n");
	snprintf(out, outlen, "%.*s", (int)n, res.out);
	vy_cmd_result_free(&res);
	return 0;
}

int vy_runtime_state(const struct vy_runtime *rt, const char *id,
		     struct vy_container_state *st, vy_error *err)
{
	memset(st, 0, sizeof(*st));
	const char *rest[] = { "state", id, NULL };
	const char *argv[8];
	build_argv(rt, argv, 8, rest);
	struct vy_cmd_result res;
	if (vy_cmd_run((char *const *)argv, 30000, &res, err) < 0)
		return -1;
	if (res.status != 0) {
		bool absent = strstr(res.errout, "does not exist") ||
			      strstr(res.errout, "not exist") ||
			      strstr(res.errout, "No such file");
		if (absent) {
			snprintf(st->status, sizeof(st->status), "absent");
			vy_cmd_result_free(&res);
			return 0;
		}
		vy_error_set(err, EIO, "%s state %s: %s", rt->name, id, res.errout);
		vy_cmd_result_free(&res);
		return -1;
	}
	json_object *o = json_tokener_parse(res.out);
	vy_cmd_result_free(&res);
	if (!o)
		return vy_error_set(err, EIO, "%s state %s: unparsable output", rt->name, id);
	snprintf(st->status, sizeof(st->status), "%s", vy_json_str(o, "status", "unknown"));
	snprintf(st->bundle, sizeof(st->bundle), "%s", vy_json_str(o, "bundle", ""));
	st->pid = (pid_t)vy_json_int(o, "pid", 0);
	json_object_put(o);
	return 0;
}

static int add_ckpt_flags(const char **rest, int n,
			  const struct vy_checkpoint_opts *o, bool restore)
{
	if (!o)
		return n;
	if (o->tcp_established)
		rest[n++] = "--tcp-established";
	if (o->file_locks)
		rest[n++] = "--file-locks";
	if (o->ext_unix_sk)
		rest[n++] = "--ext-unix-sk";
	if (o->leave_running && !restore)
		rest[n++] = "--leave-running";
	if (o->lazy_pages && restore)
		rest[n++] = "--lazy-pages";
	if (o->manage_cgroups_mode) {
		rest[n++] = "--manage-cgroups-mode";
		rest[n++] = o->manage_cgroups_mode;
	}
	return n;
}

int vy_runtime_checkpoint(const struct vy_runtime *rt, const char *id,
			  const char *image_dir, const char *work_dir,
			  const struct vy_checkpoint_opts *opts, vy_error *err)
{
	const char *rest[24];
	int n = 0;
	rest[n++] = "checkpoint";
	rest[n++] = "--image-path";
	rest[n++] = image_dir;
	rest[n++] = "--work-path";
	rest[n++] = work_dir;
	n = add_ckpt_flags(rest, n, opts, false);
	rest[n++] = id;
	rest[n] = NULL;
	char log[PATH_MAX];
	snprintf(log, sizeof(log), "%s/dump.log", work_dir);
	if (run_verb(rt, rest, log, NULL, err) < 0)
		return vy_error_wrap(err, "checkpoint %s", id);
	return 0;
}

int vy_runtime_restore(const struct vy_runtime *rt, const char *id,
		       const char *bundle, const char *image_dir,
		       const char *work_dir,
		       const struct vy_checkpoint_opts *opts, vy_error *err)
{
	const char *rest[24];
	int n = 0;
	rest[n++] = "restore";
	rest[n++] = "--detach";
	rest[n++] = "--image-path";
	rest[n++] = image_dir;
	rest[n++] = "--work-path";
	rest[n++] = work_dir;
	rest[n++] = "--bundle";
	rest[n++] = bundle;
	n = add_ckpt_flags(rest, n, opts, true);
	rest[n++] = id;
	rest[n] = NULL;
	char log[PATH_MAX];
	snprintf(log, sizeof(log), "%s/restore.log", work_dir);
	if (run_verb(rt, rest, log, NULL, err) < 0)
		return vy_error_wrap(err, "restore %s", id);
	return 0;
}

int vy_runtime_delete(const struct vy_runtime *rt, const char *id, bool force,
		      vy_error *err)
{
	const char *rest[] = { "delete", force ? "--force" : id, force ? id : NULL, NULL };
	return run_verb(rt, rest, NULL, NULL, err);
}

int vy_runtime_pause(const struct vy_runtime *rt, const char *id, vy_error *err)
{
	const char *rest[] = { "pause", id, NULL };
	return run_verb(rt, rest, NULL, NULL, err);
}

int vy_runtime_resume(const struct vy_runtime *rt, const char *id, vy_error *err)
{
	const char *rest[] = { "resume", id, NULL };
	return run_verb(rt, rest, NULL, NULL, err);
}

int vy_runtime_list(const struct vy_runtime *rt, json_object **out, vy_error *err)
{
	const char *rest[] = { "list", "--format", "json", NULL };
	struct vy_cmd_result res;
	if (run_verb(rt, rest, NULL, &res, err) < 0)
		return vy_error_wrap(err, "list containers");
	json_object *all = json_tokener_parse(res.out);
	vy_cmd_result_free(&res);
	json_object *list = json_object_new_array();
	/* An empty root prints "null". */
	for (size_t i = 0; all && json_object_is_type(all, json_type_array) &&
			   i < json_object_array_length(all); i++) {
		json_object *c = json_object_array_get_idx(all, i);
		json_object *o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(vy_json_str(c, "id", "")));
		json_object_object_add(o, "status", json_object_new_string(vy_json_str(c, "status", "")));
		json_object_array_add(list, o);
	}
	json_object_put(all);
	*out = list;
	return 0;
}
