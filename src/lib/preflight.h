/* preflight.h - what must hold before a migration touches anything.
 *
 * Each host checks itself (CRIU present and new enough, kernel features,
 * runtime present) and describes itself in a JSON "facts" object that the
 * peer checks too.  CPU compatibility uses CRIU's own cpuinfo images.
 */
#ifndef VY_PREFLIGHT_H
#define VY_PREFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "error.h"
#include "runtime.h"

#define VY_CRIU_MIN_MAJOR 4
#define VY_CRIU_MIN_MINOR 2

/* Parse "Version: 4.2.1" style output into numbers. */
int vy_parse_criu_version(const char *text, int *major, int *minor, int *patch);
int vy_criu_version(int *major, int *minor, int *patch, vy_error *err);

/* Check this host; on success *facts describes it (caller puts). */
int vy_preflight_host(const struct vy_runtime *rt, json_object **facts,
		      vy_error *err);

/* Run `criu cpuinfo dump` into dir, and `criu cpuinfo check` against it. */
int vy_criu_cpuinfo_dump(const char *dir, vy_error *err);
int vy_criu_cpuinfo_check(const char *dir, vy_error *err);

/* Walk the processes that share PID's pid namespace (the container's):
 * the first non-root uid among them (0 if none) and their summed RSS. */
int vy_container_processes(int pid, int *nonroot_uid, uint64_t *rss_bytes);
/* Whether pid's network namespace has no interface but loopback (then
 * no packet from outside can reach it); false when it cannot tell. */
bool vy_netns_loopback_only(int pid);

/* Does `criu check --feature NAME` pass on this host? */
bool vy_criu_has_feature(const char *name);

/* What this host offers the memory modes. */
struct vy_memory_caps {
	bool soft_dirty;   /* criu check --feature mem_dirty_track (pre-copy) */
	bool uffd;         /* criu check --feature uffd-noncoop (post-copy) */
	bool lazy_pages;   /* the runtime's checkpoint has --lazy-pages */
	const char *runtime; /* "runc" or "crun", for messages */
	uint64_t memory_bytes; /* the container's resident memory, 0 if unknown */
};

/* Below this much memory, auto keeps stop-copy: the image moves in a
 * moment, and the container is spared page faults over the network (each
 * a round trip through the tunnel) after it resumes. */
#define VY_POSTCOPY_MIN_BYTES (64ull << 20)

/* The memory mode to use for a requested one ("auto", "stop-copy",
 * "pre-copy", "post-copy"), given what this host supports and what this
 * version implements.  Fills chosen and a reason for the report; fails
 * with a clear message when an explicit request cannot be honoured. */
int vy_memory_mode_choose(const char *requested, const struct vy_memory_caps *caps,
			  const char **chosen, char *reason, size_t len, vy_error *err);

/* The cgroup path of pid in the freezer v1 hierarchy, or in the unified
 * hierarchy when there is no v1 freezer ("" if unknown).  */
int vy_process_freezer_cgroup(int pid, char *out, size_t len, bool *v2);

#endif
