/* runtime.h - driving the OCI runtime (runc or crun).
 *
 * Voyager never checkpoints a process itself: the runtime knows the
 * container's mounts, cgroups and namespaces, and drives CRIU for us.  This
 * module runs the runtime's own verbs and turns a failure into an error
 * that carries the runtime's stderr and the last lines of CRIU's log.
 */
#ifndef VY_RUNTIME_H
#define VY_RUNTIME_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "error.h"

struct vy_runtime {
	char name[16];       /* "runc" or "crun" */
	char path[PATH_MAX]; /* absolute path of the binary */
	char root[PATH_MAX]; /* --root, "" for the runtime's default */
};

struct vy_container_state {
	char status[32]; /* "running", "paused", "stopped", "created" or "absent" */
	pid_t pid;
	char bundle[PATH_MAX];
};

struct vy_checkpoint_opts {
	bool tcp_established;
	bool leave_running;
	bool file_locks;
	bool ext_unix_sk;
	const char *manage_cgroups_mode; /* NULL: runtime default */
	bool lazy_pages; /* restore only: post-copy, pages from `criu lazy-pages`
			  * (the checkpoint side is lazypages.h) */
	/* A CRIU configuration file that the runtime's CRIU reads on top of
	 * its own (CRIU_CONFIG_FILE); NULL or "": none.  The agent's
	 * (vy_criu_config_write) has files checked by size, and says
	 * `network-lock skip` where it locks the container's network itself. */
	const char *criu_config;
	const char *pid_file; /* restore only: where the runtime writes the
			       * container's PID (NULL: nowhere) */
};

/* environ without CRIU_CONFIG_FILE, then CRIU_CONFIG_FILE=criu_config;
 * NULL when out of memory.  Free with vy_criu_env_free. */
char **vy_criu_env(const char *criu_config);
void vy_criu_env_free(char **env);
/* Write the agent's CRIU configuration to path (the operator's
 * CRIU_CONFIG_FILE, if set, then `file-validation filesize` and, with
 * netlock_skip, `network-lock skip`) and check that this CRIU accepts it;
 * on failure nothing is left at path. */
int vy_criu_config_write(const char *path, bool netlock_skip, vy_error *err);

/* Find the runtime binary (name "runc" or "crun"); fails with a clear
 * message if it is unknown or missing. */
int vy_runtime_open(struct vy_runtime *rt, const char *name, const char *root,
		    vy_error *err);
/* First line of `RUNTIME --version`, e.g. "runc version 1.1.15+ds1". */
int vy_runtime_version(const struct vy_runtime *rt, char *out, size_t outlen,
		       vy_error *err);
int vy_runtime_state(const struct vy_runtime *rt, const char *id,
		     struct vy_container_state *st, vy_error *err);
/* Checkpoint into image_dir (must exist), CRIU work files into work_dir. */
int vy_runtime_checkpoint(const struct vy_runtime *rt, const char *id,
			  const char *image_dir, const char *work_dir,
			  const struct vy_checkpoint_opts *opts, vy_error *err);
/* Restore detached, with stdio on /dev/null. */
int vy_runtime_restore(const struct vy_runtime *rt, const char *id,
		       const char *bundle, const char *image_dir,
		       const char *work_dir,
		       const struct vy_checkpoint_opts *opts, vy_error *err);
int vy_runtime_delete(const struct vy_runtime *rt, const char *id, bool force,
		      vy_error *err);
int vy_runtime_pause(const struct vy_runtime *rt, const char *id, vy_error *err);
/* Pause the container whose init is pid through its freezer cgroup (v1's
 * freezer hierarchy, else cgroup v2), the way the runtime's pause does,
 * without starting the runtime; runc and crun read "paused" from the same
 * cgroup, so their resume thaws it.  The cgroup must be cgroups_path (the
 * config's linux.cgroupsPath) when that is absolute, else end in a name
 * with id in it, so that a pid reused by another process is never frozen.
 * Falls back to vy_runtime_pause when the cgroup cannot be found, checked
 * or written; fails, thawed, when the freeze does not complete in 10 s. */
int vy_runtime_freeze(const struct vy_runtime *rt, const char *id, int pid,
		      const char *cgroups_path, vy_error *err);
/* The processes of container id (first process pid), from the
 * cgroup.procs of the freezer cgroup vy_runtime_freeze would use: *pids
 * (caller frees), *n of them.  Fails when that cgroup is not found. */
int vy_runtime_cgroup_procs(const char *id, int pid, const char *cgroups_path, int **pids,
			    size_t *n, vy_error *err);
/* The ids of the containers this runtime root holds, with their status:
 * a JSON array of {"id", "status"} (caller puts). */
int vy_runtime_list(const struct vy_runtime *rt, json_object **out, vy_error *err);
int vy_runtime_resume(const struct vy_runtime *rt, const char *id, vy_error *err);

#endif
