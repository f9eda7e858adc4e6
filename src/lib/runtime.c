/* runtime.c - see runtime.h. */
#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "log.h"
#include "preflight.h"
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
static int run_verb_env(const struct vy_runtime *rt, const char *const *rest,
			char *const *envp, const char *criu_log,
			struct vy_cmd_result *keep, vy_error *err)
{
	const char *argv[48];
	build_argv(rt, argv, 48, rest);
	struct vy_cmd_result res;
	if (vy_cmd_run_env((char *const *)argv, envp, RUNTIME_TIMEOUT_MS, &res, err) < 0)
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

static int run_verb(const struct vy_runtime *rt, const char *const *rest,
		    const char *criu_log, struct vy_cmd_result *keep,
		    vy_error *err)
{
	return run_verb_env(rt, rest, NULL, criu_log, keep, err);
}

char **vy_criu_env(const char *criu_config)
{
	extern char **environ;
	static const char key[] = "CRIU_CONFIG_FILE=";
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 2, sizeof(*env));
	if (!env)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], key, sizeof(key) - 1) != 0)
			env[k++] = environ[i];
	if (asprintf(&env[k], "%s%s", key, criu_config) < 0) {
		free(env);
		return NULL;
	}
	return env;
}

void vy_criu_env_free(char **env)
{
	if (!env)
		return;
	size_t n = 0;
	while (env[n])
		n++;
	if (n)
		free(env[n - 1]); /* ours, the last (vy_criu_env) */
	free(env);
}

int vy_criu_config_write(const char *path, bool netlock_skip, vy_error *err)
{
	/* An operator's own CRIU_CONFIG_FILE still applies: ours replaces
	 * it in the runtime's environment, so it starts with its lines. */
	cleanup_free char *theirs = NULL;
	const char *own = getenv("CRIU_CONFIG_FILE");
	if (own && own[0] && vy_read_file(own, 1 << 20, &theirs, NULL, err) < 0)
		return vy_error_wrap(err, "CRIU_CONFIG_FILE");
	cleanup_free char *text = NULL;
	if (asprintf(&text, "%s%s%s"
		     "# voyagerd: the CRIU that the runtime runs reads this file (through\n"
		     "# CRIU_CONFIG_FILE) when voyagerd checkpoints or restores.\n"
		     "#\n"
		     "# Files are checked by size only, not also by the build-id of the ELF\n"
		     "# files the processes map: voyagerd moves every file with its SHA-256\n"
		     "# and checks it, and reading build-ids on a just-in-time target reads\n"
		     "# files that are still on the source, over the network, in the freeze.\n"
		     "file-validation filesize\n"
		     "%s",
		     theirs ? "# from CRIU_CONFIG_FILE\n" : "", theirs ? theirs : "",
		     theirs ? "\n" : "",
		     netlock_skip ?
		     "#\n"
		     "# voyagerd locks the container's network itself, with an nftables\n"
		     "# table inside its namespace on both hosts.  CRIU's own lock would\n"
		     "# only repeat it, and costs tens of milliseconds of the freeze: it\n"
		     "# runs iptables-restore.\n"
		     "network-lock skip\n" : "") < 0)
		return vy_error_set(err, ENOMEM, "out of memory");
	if (vy_write_file_atomic(path, text, strlen(text), 0600, err) < 0)
		return -1;
	/* CRIU refuses a file with an option it does not know (an older
	 * one has no `network-lock skip`): then none is used. */
	char **env = vy_criu_env(path);
	if (!env)
		return vy_error_set(err, ENOMEM, "out of memory");
	char *argv[] = { "criu", "--version", NULL };
	struct vy_cmd_result res;
	int rc = vy_cmd_run_env(argv, env, 10000, &res, err);
	vy_criu_env_free(env);
	if (rc < 0)
		return -1;
	if (res.status != 0) {
		size_t n = strcspn(res.errout, "\n");
		vy_error_set(err, ENOTSUP, "criu refuses %s: %.*s", path, (int)n, res.errout);
		vy_cmd_result_free(&res);
		unlink(path);
		return -1;
	}
	vy_cmd_result_free(&res);
	return 0;
}

/* The verb under opts->criu_config, when there is one. */
static int run_criu_verb(const struct vy_runtime *rt, const char *const *rest,
			 const struct vy_checkpoint_opts *o, const char *log,
			 vy_error *err)
{
	char **env = NULL;
	if (o && o->criu_config && o->criu_config[0] && !(env = vy_criu_env(o->criu_config)))
		return vy_error_set(err, ENOMEM, "out of memory");
	int rc = run_verb_env(rt, rest, env, log, NULL, err);
	vy_criu_env_free(env);
	return rc;
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
	if (o->pid_file && restore) {
		rest[n++] = "--pid-file";
		rest[n++] = o->pid_file;
	}
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
	if (run_criu_verb(rt, rest, opts, log, err) < 0)
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
	if (run_criu_verb(rt, rest, opts, log, err) < 0)
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

/* The directory of pid's freezer cgroup: in v1's freezer hierarchy when
 * the process is in one (*v2 false), else in the cgroup v2 hierarchy. */
static int freezer_dir(int pid, const char *id, const char *want, char *dir, size_t len,
		       bool *v2)
{
	char rel[4096];
	if (vy_process_freezer_cgroup(pid, rel, sizeof(rel), v2) < 0 || rel[0] != '/')
		return -1;
	const char *last = strrchr(rel, '/') + 1;
	if (want && want[0] == '/' ? strcmp(rel, want) != 0 : !strstr(last, id))
		return -1;
	/* Where that hierarchy is mounted whole (root "/"): mountinfo's
	 * fields 4 (root) and 5 (mount point), then after " - " the type
	 * and the super options. */
	cleanup_fclose FILE *m = fopen("/proc/self/mountinfo", "re");
	if (!m)
		return -1;
	char *buf = NULL;
	size_t cap = 0;
	int rc = -1;
	while (rc < 0 && getline(&buf, &cap, m) > 0) {
		char root[4096], mnt[4096], type[64], opts[4096];
		char *dash = strstr(buf, " - ");
		if (!dash || sscanf(buf, "%*s %*s %*s %4095s %4095s", root, mnt) != 2 ||
		    sscanf(dash + 3, "%63s %*s %4095s", type, opts) != 2 || strcmp(root, "/") != 0 ||
		    strchr(mnt, '\\'))
			continue;
		bool match = false;
		if (*v2)
			match = !strcmp(type, "cgroup2");
		else if (!strcmp(type, "cgroup"))
			for (char *save = NULL, *o = strtok_r(opts, ",", &save); o && !match;
			     o = strtok_r(NULL, ",", &save))
				match = !strcmp(o, "freezer");
		if (match && (size_t)snprintf(dir, len, "%s%s", mnt, rel) < len)
			rc = 0;
	}
	free(buf);
	return rc;
}

/* Write text to dir/name (vy_write_text). */
static int write_at(const char *dir, const char *name, const char *text)
{
	char p[PATH_MAX + 32];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return vy_write_text(p, text, NULL);
}

/* Whether v1's freezer.state says FROZEN, or v2's cgroup.events "frozen 1". */
static bool frozen(const char *dir, bool v2)
{
	char p[PATH_MAX + 32];
	cleanup_free char *text = NULL;
	snprintf(p, sizeof(p), "%s/%s", dir, v2 ? "cgroup.events" : "freezer.state");
	if (vy_read_file(p, 4096, &text, NULL, NULL) < 0)
		return false;
	return v2 ? strstr(text, "frozen 1\n") != NULL : !strcmp(text, "FROZEN\n");
}

int vy_runtime_freeze(const struct vy_runtime *rt, const char *id, int pid,
		      const char *cgroups_path, vy_error *err)
{
	char dir[PATH_MAX];
	bool v2 = false;
	if (pid <= 0 || !id[0] || freezer_dir(pid, id, cgroups_path, dir, sizeof(dir), &v2) < 0 ||
	    write_at(dir, v2 ? "cgroup.freeze" : "freezer.state", v2 ? "1" : "FROZEN") < 0) {
		vy_info("%s: its freezer cgroup was not found or not writable here: frozen "
			"with `%s pause` instead", id, rt->name);
		return vy_runtime_pause(rt, id, err);
	}
	/* A task in an uninterruptible sleep holds v1's freezer in FREEZING
	 * until it wakes; writing FROZEN again retries the ones not frozen. */
	uint64_t t0 = vy_now_ms();
	for (unsigned i = 0;; i++) {
		if (frozen(dir, v2))
			return 0;
		if (vy_now_ms() - t0 > 10000)
			break;
		struct timespec ts = { 0, i < 20 ? 50000 : 1000000 };
		nanosleep(&ts, NULL);
		if (!v2 && i % 10 == 9)
			write_at(dir, "freezer.state", "FROZEN");
	}
	write_at(dir, v2 ? "cgroup.freeze" : "freezer.state", v2 ? "0" : "THAWED");
	return vy_error_set(err, ETIMEDOUT, "%s did not freeze within 10 s (%s): a process of "
			    "it is stuck in the kernel (state D in ps); it was thawed and runs "
			    "here; migrate it again once that process is out", id, dir);
}

/* The pids in dir/cgroup.procs and in those of its descendants (a
 * container may make cgroups of its own below its own), appended to
 * *pids. */
static int read_procs(const char *dir, int depth, int **pids, size_t *n, size_t *cap,
		      vy_error *err)
{
	char p[PATH_MAX + 16];
	snprintf(p, sizeof(p), "%s/cgroup.procs", dir);
	cleanup_fclose FILE *f = fopen(p, "re");
	if (!f)
		return vy_error_sys(err, errno, "open %s", p);
	long v;
	while (fscanf(f, "%ld", &v) == 1) {
		if (v <= 0 || v > INT32_MAX)
			continue;
		if (*n == *cap) {
			size_t c = *cap ? 2 * *cap : 16;
			int *q = realloc(*pids, c * sizeof(**pids));
			if (!q)
				return vy_error_set(err, ENOMEM, "out of memory");
			*pids = q;
			*cap = c;
		}
		(*pids)[(*n)++] = (int)v;
	}
	if (depth >= 16)
		return 0;
	cleanup_closedir DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		char sub[PATH_MAX];
		if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) >= sizeof(sub))
			continue;
		if (read_procs(sub, depth + 1, pids, n, cap, err) < 0 && err->code == ENOMEM)
			return -1; /* a cgroup gone meanwhile is no error */
	}
	return 0;
}

int vy_runtime_cgroup_procs(const char *id, int pid, const char *cgroups_path, int **pids,
			    size_t *n, vy_error *err)
{
	char dir[PATH_MAX];
	bool v2 = false;
	size_t cap = 0;
	*pids = NULL;
	*n = 0;
	if (pid <= 0 || !id[0] || freezer_dir(pid, id, cgroups_path, dir, sizeof(dir), &v2) < 0)
		return vy_error_set(err, ENOENT, "%s: its freezer cgroup was not found", id);
	if (read_procs(dir, 0, pids, n, &cap, err) < 0) {
		free(*pids);
		*pids = NULL;
		*n = 0;
		return -1;
	}
	return 0;
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
