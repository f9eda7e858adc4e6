/* vyfs.h - the parts of voyager-fs and what they share.
 *
 *   main.c      arguments, loading the manifest and the chunk state,
 *               finding the tracked files, mounting, the session loop
 *   inode.c     the inode table: FUSE node ids <-> backing O_PATH fds,
 *               or file handles once too many fds are held
 *   meta.c      metadata operations, served from the backing tree only
 *   data.c      open/read/write/release: demand fetches, passthrough
 *   hydrate.c   the two fetch lanes (demand, background), committing
 *               fetched chunks, the state flusher, counters and status
 *
 * Concurrency: the FUSE loop is multi-threaded.  The inode table has one
 * mutex; each tracked file has its own (struct vyfs_track.lock), held while
 * its chunk map and backing bytes change together; the chunk map has its
 * own inside.  Lock order: track lock, then chunk map.  The inode table lock
 * is never held across I/O.
 */
#ifndef VYFS_H
#define VYFS_H

#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 17)

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "channel.h"
#include "chunkmap.h"
#include "error.h"
#include "manifest.h"

#define VYFS_STATUS_XATTR "user.voyager.status"
#define VYFS_RATE_XATTR "user.voyager.hydrate_rate" /* set: bytes/s, 0 = no limit */
#define VYFS_COLD_XATTR "user.voyager.hydrate_cold" /* set: end --hold-cold now */
#define VYFS_TIMEOUT 86400.0 /* attr/entry cache: every change passes us */

struct vyfs_inode {
	/* O_PATH | O_NOFOLLOW on the backing object while we may hold that
	 * many descriptors; past that (-1), a file handle to open one from
	 * for each operation: see vyfs_get_fd(). */
	int fd;
	struct file_handle *handle;
	dev_t dev;
	ino_t ino;
	mode_t type;            /* S_IFMT bits */
	uint64_t nlookup;       /* guarded by the table lock */
	/* Chunk map file number, or -1; VYFS_TRACK_UNKNOWN until first
	 * asked (vyfs_track): a lookup does not pay the chunk map's index
	 * for a name that is only stat'ed. */
	int64_t track;
	/* Open modes, guarded by open_lock: the kernel refuses to mix cached
	 * and passthrough opens of one inode. */
	pthread_mutex_t open_lock;
	uint32_t cached_opens, pt_opens;
	int backing_id, backing_fd;
	/* A handle inode while open: a dup of an open file's fd, for what
	 * comes without a file (fstat, fchmod) once its last name is gone
	 * and its handle no longer opens (ESTALE).  -1 otherwise. */
	int pin_fd;
	bool drop_on_close;     /* last name unlinked while open */
	struct vyfs_inode *next;
};

/* An open file or directory (fuse_file_info.fh). */
struct vyfs_file {
	int fd;                 /* our own fd on the backing file */
	bool passthrough;       /* the kernel does its I/O directly */
};

#define VYFS_TRACK_UNKNOWN INT64_MIN

/* Per tracked file (chunk map file number f). */
struct vyfs_track {
	pthread_mutex_t lock;
	struct file_handle *handle; /* to reopen the backing file, renamed or not */
	int data_fd;                /* O_RDWR, open while fetches land */
	atomic_bool hot;            /* opened: hydrate it next */
};

struct vyfs_lane {
	const char *name;
	pthread_mutex_t lock;
	vy_channel *ch;
	uint8_t *buf;           /* VY_FETCH_MAX bytes */
};

struct vyfs_counters {
	_Atomic uint64_t demand_bytes, demand_fetches;
	_Atomic uint64_t background_bytes, background_fetches;
	_Atomic uint64_t fetch_errors, demand_failures;
	_Atomic uint64_t passthrough_opens, cached_opens;
	_Atomic uint64_t refused_passthrough;
	_Atomic uint64_t local_write_bytes;
	_Atomic uint64_t fd_exhausted;  /* lookups refused for want of a descriptor */
	_Atomic uint64_t handle_inodes; /* inodes made with a handle, not an fd */
};

struct vyfs {
	/* configuration */
	const char *source;
	const char *migration;      /* voyagerd's id: sent in FETCH_OPEN, or NULL */
	uint8_t key[VY_KEY_LEN];
	uint32_t stream;
	uint32_t chunk_size;
	int fetch_timeout_ms;
	int backing_fd;             /* O_PATH of the backing root */
	int backing_dir_fd;         /* O_RDONLY|O_DIRECTORY, for handles */
	struct vy_manifest man;
	struct vy_chunkmap *cm;
	struct vyfs_track *tracks;  /* [vy_chunkmap_count(cm)] */
	uint32_t *priority;         /* chunk map file numbers, hydrated first */
	uint32_t npriority;
	bool passthrough;           /* the kernel granted FUSE_CAP_PASSTHROUGH */
	bool killpriv;              /* ... and FUSE_CAP_HANDLE_KILLPRIV_V2 */
	struct fuse_session *se;    /* for invalidations we send the kernel */
	bool stat_inos;             /* readdir's d_ino is not trusted (overlayfs) */
	const char *backing_path;
	pthread_mutex_t resolve_lock; /* tracks' handles, the renamed-file walk */
	uint64_t resumed_chunks;    /* present when this run started */
	uint64_t resumed_bytes;

	/* inode table */
	pthread_mutex_t table_lock;
	uint64_t held_fds;          /* inodes' own fds (atomic: read without the lock) */
	uint64_t fd_budget;         /* how many they may hold */
	struct vyfs_inode root;
	struct vyfs_inode **buckets;
	size_t nbuckets;

	/* fetching */
	/* Two background lanes, each with one request in flight: while one
	 * waits for its reply, the other's bytes land and are synced.  Each
	 * claims the run it fetches, so they never fetch the same chunks. */
#define VYFS_BG_LANES 2
	struct vyfs_lane demand, background[VYFS_BG_LANES];
	pthread_mutex_t claim_lock;
	/* what each background lane is fetching: chunks [c, c+n) of file f,
	 * or, when end > f, every file of [f, end) (a batch of small files) */
	struct { int64_t f; uint64_t c, n; int64_t end; } claim[VYFS_BG_LANES];
	atomic_bool becoming_independent;
	struct vyfs_counters n;
	_Atomic uint64_t hydrate_rate; /* background bytes/s, 0 = link speed */
	/* --hold-cold: until then (vy_now_ms()), the background lanes fetch
	 * only hot and priority files; 0 once over */
	_Atomic uint64_t cold_until_ms;
	_Atomic uint32_t nhot;      /* tracks with hot set */
	atomic_bool source_up;
	atomic_bool demand_gave_up; /* a demand fetch timed out; no success since */
	atomic_bool stopping;
	atomic_bool independent;
	pthread_t background_thread[VYFS_BG_LANES], flush_thread;
	pthread_mutex_t wake_lock;
	pthread_cond_t wake;
};

/* inode.c */
int vyfs_table_init(struct vyfs *fs, vy_error *err);
struct vyfs_inode *vyfs_inode(struct vyfs *fs, fuse_ino_t ino);
/* Look name up beneath parent and fill e (taking a lookup reference). */
int vyfs_lookup_entry(struct vyfs *fs, struct vyfs_inode *parent,
		      const char *name, struct fuse_entry_param *e);
void vyfs_forget_one(struct vyfs *fs, fuse_ino_t ino, uint64_t n);
struct vyfs_inode *vyfs_find_backing(struct vyfs *fs, dev_t dev, ino_t ino);
/* An O_PATH fd on in's backing object for one operation: its own, or one
 * opened from its handle.  -errno when none can be had.  Declare it with
 * VYFS_IFD, which closes it at the end of the scope if it was opened for
 * this operation.  A NULL inode gives -EBADF. */
int vyfs_get_fd(struct vyfs *fs, const struct vyfs_inode *in);
/* The fd and whether it is ours to close, decided when it is got: the
 * release runs at the end of the scope, after the reply, when the kernel
 * may already have forgotten the inode and another thread freed it (an
 * ASan run caught exactly that), so it must not look at the inode. */
struct vyfs_ifd {
	int fd;
	bool own;
};
struct vyfs_ifd vyfs_ifd_get(struct vyfs *fs, const struct vyfs_inode *in);
void vyfs_ifd_release(struct vyfs_ifd *h);
#define VYFS_IFD(name, fs, inode) \
	__attribute__((cleanup(vyfs_ifd_release))) struct vyfs_ifd name = \
		vyfs_ifd_get((fs), (inode))
/* "/proc/self/fd/N" of an fd. */
void vyfs_proc_path(int fd, char out[64]);

/* meta.c */
void vyfs_meta_ops(struct fuse_lowlevel_ops *ops);
/* in's chunk map file number (-1: not tracked), found on first use. */
int64_t vyfs_track(struct vyfs *fs, struct vyfs_inode *in);
/* Forget the chunk state of a tracked file whose last name just went. */
/* The tracked file that name (beneath parent_fd) is the last name of, or
 * -1; after the name is gone, vyfs_forget_track() drops its chunk state
 * (at the last close, if it is still open). */
int64_t vyfs_last_name(struct vyfs *fs, int parent_fd, const char *name);
void vyfs_forget_track(struct vyfs *fs, int64_t f);
void vyfs_drop_track(struct vyfs *fs, uint32_t f);

/* data.c */
void vyfs_data_ops(struct fuse_lowlevel_ops *ops);
/* Truncate an inode's backing file to size, keeping the chunk map right. */
int vyfs_truncate(struct vyfs *fs, struct vyfs_inode *in, int fd, off_t size);
/* After a write or truncate by req's caller: clear setuid (and setgid, if
 * group-executable) unless the caller holds CAP_FSETID.  True when bits
 * were cleared. */
bool vyfs_kill_suidgid(struct vyfs *fs, fuse_req_t req, struct vyfs_inode *in, int fd);
/* Setuid, or setgid and group-executable: writes must clear those bits. */
bool vyfs_is_sxid(mode_t mode);

/* hydrate.c */
int vyfs_hydrate_start(struct vyfs *fs, vy_error *err);
/* End --hold-cold: the background lanes take every file. */
void vyfs_release_cold(struct vyfs *fs);
void vyfs_hydrate_stop(struct vyfs *fs);
/* Make [off, off+len) of tracked file f local; readahead extra chunks.
 * 0, or -errno (EIO once the source stayed away for the fetch timeout). */
int vyfs_ensure(struct vyfs *fs, uint32_t f, uint64_t off, uint64_t len,
		uint32_t readahead);
/* main.c: make sure tracked file f has a handle (0, or -ENOENT). */
int vyfs_resolve_track(struct vyfs *fs, uint32_t f);
/* Open the backing file of tracked file f for writing fetched bytes. */
int vyfs_track_fd(struct vyfs *fs, uint32_t f);
void vyfs_wake_background(struct vyfs *fs);
/* Status as JSON text (malloc'd). */
char *vyfs_status_json(struct vyfs *fs);

#endif
