/* util.h - small helpers shared by the agent, the CLI and the tests:
 * running a command and capturing its output, clocks, ids, files. */
#ifndef VY_UTIL_H
#define VY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "error.h"

/* Output of a finished command. */
struct vy_cmd_result {
	int status;   /* exit code, or 128+signal */
	char *out;    /* stdout, NUL-terminated (malloc'd) */
	char *errout; /* stderr, NUL-terminated (malloc'd) */
};

/* Run argv[0] (searched in PATH) with stdin from /dev/null, capturing
 * stdout and stderr (each kept up to 1 MiB).  Returns -1 only when the
 * command could not be run at all; a non-zero exit is reported in
 * res->status.  timeout_ms 0 means no limit; past it the child is killed. */
int vy_cmd_run(char *const argv[], int timeout_ms, struct vy_cmd_result *res,
	       vy_error *err);
/* The same with envp as the command's whole environment (NULL: ours). */
int vy_cmd_run_env(char *const argv[], char *const envp[], int timeout_ms,
		   struct vy_cmd_result *res, vy_error *err);
void vy_cmd_result_free(struct vy_cmd_result *res);
/* "argv0 arg1 ..." for messages (static buffer per thread). */
const char *vy_cmd_string(char *const argv[]);

/* Find an executable in PATH; writes its absolute path to out. */
int vy_find_executable(const char *name, char *out, size_t outlen);

/* Where a phase's time goes: vy_steps_mark(st, "name") adds the time
 * since the previous mark (or the start) to name; vy_steps_json gives
 * {"name": ms, ...} in the order first marked. */
#define VY_STEPS_MAX 16
struct vy_steps {
	uint64_t last_us;
	int n;
	const char *name[VY_STEPS_MAX];
	uint64_t us[VY_STEPS_MAX];
};
void vy_steps_start(struct vy_steps *st);
void vy_steps_mark(struct vy_steps *st, const char *name);
json_object *vy_steps_json(const struct vy_steps *st);

uint64_t vy_now_ms(void);      /* CLOCK_MONOTONIC */
uint64_t vy_wall_ms(void);     /* CLOCK_REALTIME */
void vy_random_id(char out[17]);

int vy_mkdir_p(const char *path, unsigned mode, vy_error *err);
/* Remove a tree without following symlinks or crossing mounts. */
int vy_rm_rf(const char *path, vy_error *err);
/* Write data to path via a temporary file, fsync, rename, fsync dir. */
int vy_write_file_atomic(const char *path, const void *data, size_t len,
			 unsigned mode, vy_error *err);
/* The same without the fsyncs: readers never see a partial file, but a
 * power loss may lose it.  For state that only has to outlive a process,
 * such as the leases under /run (kparam.h). */
int vy_write_file_replace(const char *path, const void *data, size_t len,
			  unsigned mode, vy_error *err);
int vy_read_file(const char *path, size_t max, char **out, size_t *len,
		 vy_error *err);
/* Write text to an existing file in one write(2), in place: for the
 * kernel's files (/proc/sys, /sys, cgroupfs), which take a value so. */
int vy_write_text(const char *path, const char *text, vy_error *err);
/* The last n lines of a text file, or "" (malloc'd). */
char *vy_file_tail(const char *path, int lines);
/* Free bytes available to root on the filesystem holding path. */
int vy_free_bytes(const char *path, uint64_t *out, vy_error *err);

/* Is path inside dir (dir itself excluded)?  Textual: both are ours. */
bool vy_path_is_under(const char *path, const char *dir);

/* Crash on purpose at a named point when VOYAGER_FAILPOINT names it: the
 * end-to-end tests use this to kill an agent between two protocol steps
 * that no outside signal could separate reliably. */
void vy_failpoint(const char *name);
/* Wait at a named point when VOYAGER_WAITPOINT is "NAME:FILE": create
 * FILE.reached, then wait until FILE exists (at most 60 s).  The tests use
 * this to change a tree between two steps of a migration. */
void vy_waitpoint(const char *name);

/* A container name as runc accepts it, also safe as a path component. */
bool vy_name_is_safe(const char *name);

/* json helpers: return the member or a default when missing/wrong type */
const char *vy_json_str(json_object *o, const char *key, const char *def);
int64_t vy_json_int(json_object *o, const char *key, int64_t def);

#endif
