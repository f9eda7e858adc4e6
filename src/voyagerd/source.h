/* source.h - the state of one outgoing migration, shared by source.c (the
 * phases and the decision) and source_trees.c (sending trees and progress). */
#ifndef VY_SOURCE_H
#define VY_SOURCE_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "bundle.h"
#include "daemon.h"
#include "manifest.h"
#include "util.h"

struct migration {
	struct vy_daemon *d;
	struct vy_events *ev;
	struct vy_active *act;
	struct vy_journal *j;
	vy_channel *ch;
	char id[17];
	char container[160];
	char to[256];
	char bundle[PATH_MAX];
	char rootfs[PATH_MAX];
	char dir[PATH_MAX];    /* STATE/migrations/ID */
	char images[PATH_MAX];
	char work[PATH_MAX];
	json_object *config;
	char mode[16];         /* "jit", "presync" or "stop-copy" */
	const char *memory;    /* the memory mode chosen */
	char memory_requested[16];
	char memory_reason[256];
	struct vy_manifest pre[2 + VY_MAX_VOLUMES]; /* what the pre-sync sent, per stream */
	uint8_t pre_sha[2 + VY_MAX_VOLUMES][32];    /* SHA-256 of each pre[]'s encoding */
	bool pre_sha_ok[2 + VY_MAX_VOLUMES];        /* presync: pre_sha is known */
	/* presync: the chunk digests of each file the pre-sync sent whole
	 * (transfer.h), by entry of pre[] as it was then, and their count */
	struct vy_chunk_sums *sums[2 + VY_MAX_VOLUMES];
	uint32_t nsums[2 + VY_MAX_VOLUMES];
	struct vy_manifest stale[2 + VY_MAX_VOLUMES]; /* freed after the freeze, not in it */
	/* presync and jit, at the freeze: the inodes of the files the
	 * container has mapped shared and writable, whose copies made before
	 * the freeze are read again (frozen_shared_writable in source_trees.c) */
	struct vy_inode_set voids;
	char netns[PATH_MAX];  /* the container's network namespace, if host-made */
	json_object *net;      /* its identity (netns.h) */
	bool net_locked, net_detached;
	bool net_lo_only; /* its own network namespace, loopback only */
	int pid;          /* the container's first process, from pre-flight */
	/* Packets that reach the container while it is frozen (pkthold.h). */
	struct vy_hold *hold;  /* capturing or captured, or NULL */
	char hold_state[256];  /* the report's: "af_packet" or "off: why" */
	/* Expedited RCU grace periods while the runtime checkpoints (kparam.h):
	 * the report's words for this host and for the target. */
	char rcu_how[256], rcu_target[256];
	bool rcu_held;
	/* A CPU wake-up latency bound of 0 in the freeze, except while trees
	 * are sent (latency_bound in source.c): the fd that holds it, -1 when
	 * none; the report's words for this host and for the target. */
	int cpulat_fd;
	char cpulat_how[256], cpulat_target[256];
	int64_t replayed;      /* packets replayed into the container, -1: not known */
	const char *replayed_on; /* "target", or "source" after a rollback */
	char replay_error[512];
	struct vy_volume vols[VY_MAX_VOLUMES];
	int nvol;
	struct vy_checkpoint_opts opts;
	const char *phase;
	uint64_t t_start, t_phase, t_freeze, t_running;
	uint64_t bytes_memory, bytes_rootfs, bytes_volumes, need_bytes;
	uint64_t disk_bytes;   /* rootfs + volumes, from the pre-flight scan */
	uint64_t wire_bytes; /* of a channel that is already closed */
	json_object *phases_ms;
	json_object *warnings; /* from the target, for the report */
	struct vy_steps ck_steps;     /* the checkpoint phase, step by step */
	json_object *restore_steps; /* the target's restore, step by step */
	json_object *receive_steps; /* the target's intake of the freeze's trees */
	json_object *hot;      /* jit: paths the processes have open or mapped */
	/* jit: mapped files that no process of the container maps shared and
	 * writable or has open for writing (paths in its view), sent to the
	 * target with the skeleton; per stream, the entries of pre[] sent so */
	json_object *prefetch;
	bool no_prefetch;      /* voyager migrate --no-prefetch */
	uint32_t *pf[2 + VY_MAX_VOLUMES];
	uint32_t npf[2 + VY_MAX_VOLUMES];
	uint64_t pf_kept[2 + VY_MAX_VOLUMES]; /* their bytes still good at the freeze */
	uint32_t pf_refetch[2 + VY_MAX_VOLUMES]; /* the files of them not good then */
	uint32_t pf_files, pf_skipped;
	uint64_t pf_bytes, pf_ms;
	struct vy_scan_watch *watch[2 + VY_MAX_VOLUMES]; /* jit: changes since the skeleton */
	json_object *serve;    /* jit: the trees we serve ({stream, root, manifest}) */
	uint64_t jit_bytes;    /* jit: data left behind for the target to fetch */
	uint64_t hydrate_rate; /* jit: the target's background limit, bytes/s (0: none) */
	bool checkpointed;
	bool frozen;
	bool target_durable;
	bool progress_stop;
	pthread_mutex_t progress_lock;
	pthread_cond_t progress_cond;
	pthread_t progress_thread;
	bool progress_running;
	struct vy_pc_source *pc; /* post-copy memory (postcopy.c), or NULL */
};

/* The most bytes of mapped files a jit migration sends before the freeze
 * (smallest files first). */
#define VY_PREFETCH_MAX (256ull << 20)

/* source_trees.c */
uint64_t vy_tree_size(const char *path, bool is_dir);
/* A send failed: fetch the target's last ERROR frame, if any, into err. */
int vy_source_explain_send_failure(struct migration *m, vy_error *err);
/* Before the freeze (mode presync): rootfs and volumes, whole. */
int vy_source_presync(struct migration *m, vy_error *err);
/* Before the freeze (mode jit): the skeleton (manifest) of every tree. */
int vy_source_skeleton(struct migration *m, vy_error *err);
/* After the freeze: images, then rootfs and volumes (whole, the delta, or
 * for jit only their manifests, the data being served from here). */
int vy_source_transfer(struct migration *m, vy_error *err);
void vy_source_progress_start(struct migration *m);
void vy_source_progress_stop(struct migration *m);

#endif
