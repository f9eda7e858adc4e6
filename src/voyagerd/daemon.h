/* daemon.h - voyagerd's shared state and the entry points of its parts.
 *
 * server.c accepts peers (TLS) and local clients (control socket) and hands
 * each connection to a thread: source.c runs a migration out of this host,
 * target.c receives one, recover.c finishes or undoes migrations that an
 * earlier run of the agent left half-done.
 */
#ifndef VY_DAEMON_H
#define VY_DAEMON_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "channel.h"
#include "error.h"
#include "journal.h"
#include "runtime.h"
#include "transfer.h"

#define VY_DEFAULT_STATE_DIR "/var/lib/voyager"
#define VY_DEFAULT_KEY "/etc/voyager/cluster.key"
#define VY_MAX_ACTIVE 64
#define VY_MAX_SHARED 8

struct vy_daemon {
	char listen[256];
	char state_dir[PATH_MAX];
	char key_path[PATH_MAX];
	char socket_path[PATH_MAX];
	char cgroup_parent[128];
	char pid_file[PATH_MAX];
	char netns_dir[PATH_MAX]; /* network namespaces this agent holds */
	char bridge[64];          /* attach received containers here ("" = as on the source) */
	/* Storage every host mounts at the same path (--shared-path): a
	 * volume there is re-mounted on the target, never copied. */
	char shared[VY_MAX_SHARED][PATH_MAX];
	int nshared;
	uint8_t key[VY_KEY_LEN];
	struct vy_runtime rt;
	json_object *facts; /* this host's pre-flight facts */
	int peer_timeout_ms;
	bool soft_dirty;   /* criu check --feature mem_dirty_track */
	bool uffd;         /* criu check --feature uffd-noncoop */
	int commit_timeout_ms;
	/* CRIU configuration for every checkpoint and restore (files checked
	 * by size), and for containers whose network we lock ourselves (the
	 * same and `network-lock skip`); "" where this CRIU refuses it. */
	char criu_conf[PATH_MAX];
	char criu_conf_netlock[PATH_MAX];
};

/* A migration in flight, for `voyager status`. */
struct vy_active {
	bool used;
	char id[17];
	char container[160];
	char role[8];
	char phase[32];
	char peer[256];
	uint64_t started_ms;
	uint64_t total_bytes;
	struct vy_progress progress;
	/* jit target: hydration, from voyager-fs's counters */
	bool hydrating;
	uint64_t files_total, files_done, rate_bps, eta_s;
	bool source_up;
};

struct vy_active *vy_active_add(const char *id, const char *container,
				const char *role, const char *peer);
void vy_active_phase(struct vy_active *a, const char *phase);
void vy_active_remove(struct vy_active *a);
/* JSON array of active migrations with live byte counts. */
json_object *vy_active_list(void);
/* Is migration id in flight on this agent (either role)? */
bool vy_active_has_id(const char *id);
/* Is container being migrated right now (either role)? */
bool vy_active_has_container(const char *container);

/* Where events for the CLI go; a CLI that went away does not stop us. */
struct vy_events {
	int fd;
	pthread_mutex_t lock;
	bool broken;
};
void vy_events_send(struct vy_events *ev, json_object *obj);

/* net.c: the control verbs behind `voyager net`. */
json_object *vy_net_control(struct vy_daemon *d, const char *cmd, json_object *req);

/* server.c */
int vy_server_run(struct vy_daemon *d, vy_error *err);
/* source.c: runs a migration requested by the CLI; returns the report. */
json_object *vy_source_migrate(struct vy_daemon *d, json_object *req,
			       struct vy_events *ev);
/* source.c: answer a target's QUERY for a migration id. */
const char *vy_source_decision(struct vy_daemon *d, const char *id);
/* target.c: serve one incoming migration whose first message was msg. */
void vy_target_session(struct vy_daemon *d, vy_channel *ch,
		       struct vy_message *first);
/* target.c: the source tells us to drop migration id (new connection). */
int vy_target_abort(struct vy_daemon *d, const char *id, vy_error *err);
/* target.c: ask the source at addr what it decided about id. */
const char *vy_target_ask_source(struct vy_daemon *d, const char *addr,
				 const char *id);
/* recover.c: finish or undo what a previous run left half-done. */
void vy_recover(struct vy_daemon *d);

#endif
