/* jit.h - just-in-time migration: the parts of the federation that live in
 * the agent.
 *
 * Source side: once a tree is frozen, its manifest and an open directory fd
 * are registered under (migration id, stream).  A target's voyager-fs
 * connects, names the tree with FETCH_OPEN and is answered by
 * vy_chunk_serve() until it hangs up.  The trees stay served after the
 * commit, until the target says RELEASE (every chunk local and durable
 * there); only then does the source delete its copy.  The manifests are
 * kept in the migration's directory so that a restarted agent serves the
 * same trees again (vy_serve_recover).
 *
 * Target side: one voyager-fs process per tree, started in its own session
 * so that it outlives voyagerd, mounted over the container's rootfs and
 * volume directories; its status is the xattr user.voyager.status on the
 * mount root.
 */
#ifndef VY_JIT_H
#define VY_JIT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "channel.h"
#include "daemon.h"
#include "error.h"
#include "manifest.h"

/* ---- source ---- */

/* Serve the tree at root_path (opened here) described by man, as stream
 * `stream` of migration id.  man is taken over (zeroed) on success and on
 * failure. */
int vy_serve_add(const char *id, uint32_t stream, const char *root_path,
		 struct vy_manifest *man, vy_error *err);
/* Where a served tree's manifest is kept: DIR/serve-STREAM.manifest. */
void vy_serve_manifest_path(const char *dir, uint32_t stream, char *out, size_t len);
/* Write the manifests of id's trees there (after the freeze window, before
 * the commit), so that vy_serve_recover() can serve them after a restart. */
int vy_serve_persist(const char *id, const char *dir, vy_error *err);
/* Stop serving every tree of id (open connections finish their request). */
void vy_serve_drop(const char *id);
/* The migrations whose trees we serve: [{"id", "trees", "connections",
 * "bytes_served"}] (bytes of connections that have ended). */
json_object *vy_serve_list(void);
/* Bytes served for id so far (all trees, all connections). */
uint64_t vy_serve_bytes(const char *id);
/* FETCH_OPEN on a new peer channel: answer until the peer hangs up. */
void vy_serve_session(struct vy_daemon *d, vy_channel *ch, json_object *body);
/* RELEASE: the target holds everything; drop the frozen copy. */
void vy_serve_release(struct vy_daemon *d, vy_channel *ch, json_object *body);
/* After a restart: serve again the trees of a committed, unreleased jit
 * migration whose journal is j. */
int vy_serve_recover(struct vy_daemon *d, json_object *j, vy_error *err);
/* Delete the data a released migration left here: its directory, and the
 * container's received bundle if it was ours (voyager-fs mounts below it
 * are unmounted first).  Both sides use it. */
void vy_jit_delete_ours(struct vy_daemon *d, const char *container,
			const char *bundle, const char *mig_dir);

/* ---- target ---- */

struct vy_fs_mount {
	uint32_t stream;
	pid_t pid;
	char mountpoint[PATH_MAX];
	char backing[PATH_MAX];
	char state[PATH_MAX];
	char manifest[PATH_MAX];
	char delta[PATH_MAX];    /* "" for none: the manifest is the whole tree */
	char priority[PATH_MAX]; /* "" for none */
	char present[PATH_MAX];  /* files whole before the freeze; "" for none */
	char log[PATH_MAX];
	/* Started before the freeze and waiting for the go (vy_fs_prestart);
	 * ctl is our end of its control socket (-1 for none). */
	bool staged;
	int ctl;
	bool going; /* told to go, not yet seen mounted (vy_fs_go_send) */
	uint64_t t_go; /* when (vy_now_ms) */
};

/* Where the voyager-fs binary is: $VOYAGER_FS, next to voyagerd, in the
 * build tree's src/fs, or in PATH.  "" if none. */
int vy_fs_binary(char *out, size_t len, vy_error *err);
/* Start voyager-fs for fm (paths filled in) in its own session and wait
 * until the mount answers. */
int vy_fs_start(struct vy_daemon *d, const char *id, const char *source,
		uint64_t hydrate_rate, struct vy_fs_mount *fm, vy_error *err);
/* Before the freeze: start voyager-fs for fm with --delta and --wait-fd,
 * and wait until it has done what grows with the tree (it says "ready"). */
int vy_fs_prestart(struct vy_daemon *d, const char *id, const char *source,
		   uint64_t hydrate_rate, struct vy_fs_mount *fm, vy_error *err);
/* At the freeze, the delta written: say go (it then applies the delta and
 * mounts while the caller goes on), and later wait until the mount answers
 * (0 at once for a mount not told to go). */
int vy_fs_go_send(struct vy_fs_mount *fm, vy_error *err);
int vy_fs_wait_gone(struct vy_fs_mount *fm, const char *id, vy_error *err);
/* The container runs: let its voyager-fs hydrate every file (it starts
 * with --hold-cold: only what the container has open or mapped). */
void vy_fs_release_cold(const struct vy_fs_mount *fm);
/* Parsed user.voyager.status of a mount, or NULL. */
json_object *vy_fs_status(const char *mountpoint);
/* Unmount (lazily) and stop the process if it is still voyager-fs. */
void vy_fs_stop(struct vy_fs_mount *fm);
/* Unmount every voyager-fs mount at or below prefix (this mount namespace). */
void vy_fs_unmount_under(const char *prefix);
/* Target, after the commit: follow the mounts until every tree is
 * independent (progress in act, which may be NULL), record it in j, then
 * tell the source at `source` to let go, retrying until it answers. */
void vy_jit_hydrate(struct vy_daemon *d, struct vy_journal *j, struct vy_active *act,
		    const char *id, const char *source, struct vy_fs_mount *fs, int nfs);
json_object *vy_fs_to_json(const struct vy_fs_mount *fm);
int vy_fs_from_json(json_object *o, struct vy_fs_mount *fm, vy_error *err);

#endif
