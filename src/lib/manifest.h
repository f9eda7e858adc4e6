/* manifest.h - the description of a file tree, and its codec.
 *
 * The source walks a tree (rootfs, a volume, the CRIU image directory) and
 * builds a manifest: every entry's type, mode, owner, size, times, xattrs,
 * symlink target and hard links.  The target decodes it, checks every path,
 * and materialises a skeleton: directories, empty sparse files of the right
 * size, symlinks, device nodes, fifos, hard links.  File data follows
 * separately (transfer.h) and the final metadata (times, modes of
 * directories) is applied last.
 *
 * Encoding (all integers big-endian):
 *   u32 magic "VYMF" (0x56594d46), u16 version (1), u16 reserved (0),
 *   u32 entry count, then per entry:
 *     u8 type, u8 reserved(0), u16 path_len, path bytes
 *     u32 mode, u32 uid, u32 gid, u64 size, u64 rdev,
 *     i64 atime_ns, i64 mtime_ns,
 *     u32 link_of (entry index of the first name of a hard link, or
 *                  VY_NO_LINK),
 *     u16 target_len, target bytes (symlinks only),
 *     u16 xattr_count, then per xattr: u16 name_len, name, u32 value_len,
 *     value
 *
 * Entry 0 is the root directory itself, with path "".  Every other path is
 * relative: components separated by '/', none empty, none "." or "..", no
 * NUL, no leading '/', at most VY_PATH_MAX bytes.  A parent comes before its
 * children.  vy_manifest_decode() is the only parser of these bytes; it
 * rejects truncated input, oversized fields and any path that could escape
 * the root, and it is also a fuzz target.
 */
#ifndef VY_MANIFEST_H
#define VY_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define VY_MANIFEST_MAGIC 0x56594d46u
#define VY_MANIFEST_VERSION 1
#define VY_PATH_MAX 4095
#define VY_XATTR_NAME_MAX 255
#define VY_XATTR_VALUE_MAX 65536
#define VY_XATTR_COUNT_MAX 256
#define VY_MANIFEST_MAX_ENTRIES (16u * 1024 * 1024)
#define VY_NO_LINK 0xffffffffu

enum vy_entry_type {
	VY_ENTRY_DIR = 1,
	VY_ENTRY_REG = 2,
	VY_ENTRY_SYMLINK = 3,
	VY_ENTRY_CHR = 4,
	VY_ENTRY_BLK = 5,
	VY_ENTRY_FIFO = 6,
	VY_ENTRY_SOCK = 7,
};

struct vy_xattr {
	char *name;
	uint8_t *value;
	uint32_t len;
};

struct vy_entry {
	char *path;          /* relative; "" for the root */
	uint8_t type;        /* enum vy_entry_type */
	uint32_t mode;       /* permission bits incl. suid/sgid/sticky (no S_IFMT) */
	uint32_t uid, gid;
	uint64_t size;       /* regular files: bytes; symlinks: target length */
	uint64_t rdev;       /* devices */
	int64_t atime_ns, mtime_ns;
	int64_t ctime_ns;    /* as the scan saw it (not encoded: 0 once decoded) */
	uint32_t link_of;    /* VY_NO_LINK, or index of first name (type REG) */
	char *target;        /* symlinks */
	uint16_t nxattr;
	struct vy_xattr *xattrs;
};

struct vy_manifest {
	struct vy_entry *entries;
	uint32_t count;
	uint32_t cap;
	uint64_t data_bytes; /* sum of sizes of regular files, counted once per inode */
};

/* Walk the tree at root (a directory, not followed if a symlink) without
 * following symlinks and without crossing into other mounts.  Sockets are
 * recorded but carry no data. */
int vy_manifest_scan(const char *root, struct vy_manifest *m, vy_error *err);

int vy_manifest_encode(const struct vy_manifest *m, uint8_t **buf,
		       size_t *len, vy_error *err);
/* The SHA-256 of m's encoding: what names a manifest both sides hold (a
 * delta's base_sha). */
int vy_manifest_sha256(const struct vy_manifest *m, uint8_t sha[32], vy_error *err);
int vy_manifest_decode(const uint8_t *buf, size_t len, struct vy_manifest *m,
		       vy_error *err);

/* true when rel is a safe relative path as described above ("" allowed). */
bool vy_path_is_safe(const char *rel, size_t len);

/* Watching a tree so that a later scan reads again only the directories
 * that changed (inotify on every directory; set it up BEFORE the scan whose
 * result is passed to vy_manifest_rescan as old, so that no change between
 * that scan and the watch can be missed).  Fails when the tree has more
 * directories than fs.inotify.max_user_watches allows: then scan fully. */
struct vy_scan_watch;
int vy_manifest_watch(const char *root, struct vy_scan_watch **out, vy_error *err);
void vy_manifest_watch_free(struct vy_scan_watch *w);
/* Treat directory dir (relative, "" for the root) as if it saw an event: a
 * change the kernel does not report (a write through a shared mapping)
 * that the caller found another way. */
void vy_manifest_watch_mark(struct vy_scan_watch *w, const char *dir);
/* A set of inodes (st_dev, st_ino): add, then sort once, then look up. */
struct vy_inode_id {
	uint64_t dev, ino;
};
struct vy_inode_set {
	struct vy_inode_id *ids;
	size_t n, cap;
};
int vy_inode_set_add(struct vy_inode_set *s, uint64_t dev, uint64_t ino, vy_error *err);
void vy_inode_set_sort(struct vy_inode_set *s); /* and drops duplicates */
bool vy_inode_set_has(const struct vy_inode_set *s, uint64_t dev, uint64_t ino);
void vy_inode_set_free(struct vy_inode_set *s);
/* Look at every entry of old (the scan made after vy_manifest_watch, with
 * its ctimes) again, one fstatat each, and mark the directory of each one
 * whose inode changed since (its ctime, or its type), and of each one
 * whose copy is void (vy_delta_forget): changes the watch need not have
 * seen, a write through a shared mapping or through a hard link from
 * outside the tree among them.  A directory that changed is marked
 * itself too.  Far cheaper than a scan (no directory read, no xattr),
 * and spread over up to four threads (as many as there are CPUs) for a
 * big tree.  *marked: the entries that marked.
 * A regular file whose inode is in voids (NULL: none) has its copy voided
 * here (mtime_ns INT64_MIN, as vy_delta_forget), so that any later
 * comparison with old finds its data changed: a file mapped shared and
 * writable can have been written without its times moving at all (tmpfs;
 * a page already dirty and writable).  w may be NULL: then only that. */
int vy_manifest_watch_verify(struct vy_scan_watch *w, const char *root, struct vy_manifest *old,
			     const struct vy_inode_set *voids, uint32_t *marked, vy_error *err);
/* The same result as vy_manifest_scan(root), built from old (a scan made
 * after vy_manifest_watch) by reading again only directories that saw an
 * event or were not watched, and the entries of directories that changed
 * themselves.  *dirs_read: how many directories were read again, or -1 for
 * a full scan (w NULL, an event queue overflow, or a hard link among the
 * changes).  Not followed: access times (reading is no event; entries that
 * did not change keep the atime of the first scan), and a write through a
 * shared mapping, which the kernel does not report either. */
int vy_manifest_rescan(struct vy_scan_watch *w, const char *root,
		       const struct vy_manifest *old, struct vy_manifest *out,
		       int64_t *dirs_read, vy_error *err);

/* Create the skeleton under rootfd (an O_PATH or O_DIRECTORY fd of an
 * existing, empty directory).  All lookups stay beneath rootfd and never
 * follow a symlink (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS).  Regular
 * files are created empty and truncated to their size (sparse).  Owners,
 * modes and xattrs are applied; times are applied by vy_manifest_finish(). */
int vy_manifest_materialise(const struct vy_manifest *m, int rootfd,
			    vy_error *err);

/* Bring the skeleton of old (materialised and finished under rootfd) to cur
 * in place, touching only entries that differ: entries gone are removed,
 * new ones made, retyped, relinked or retargeted ones made again, and
 * changed metadata applied.  1 when done (*changed counts the entries
 * touched), 0 when the roots are not both directories (rebuild instead),
 * -1 on error.  File data is not touched: sizes change by truncation,
 * which is all a skeleton holds. */
int vy_manifest_update_skeleton(const struct vy_manifest *old,
				const struct vy_manifest *cur, int rootfd,
				uint32_t *changed, vy_error *err);

/* After file data is written: apply times to every entry (symlinks too,
 * with AT_SYMLINK_NOFOLLOW) and the final mode of directories. */
int vy_manifest_finish(const struct vy_manifest *m, int rootfd, vy_error *err);
/* The same for the entries with which[i] set only (all of them: NULL). */
int vy_manifest_finish_some(const struct vy_manifest *m, int rootfd, const uint8_t *which,
			    vy_error *err);

/* Open entry's path beneath rootfd (no symlinks followed), flags as open(2);
 * always adds O_CLOEXEC|O_NOFOLLOW. */
int vy_manifest_open_entry(int rootfd, const char *path, int flags,
			   vy_error *err);

void vy_manifest_free(struct vy_manifest *m);

/* ---- deltas: what turns one manifest into another ----
 *
 * A jit migration sends the tree's manifest before the freeze and, at the
 * freeze, only a delta against it, so that the freeze does not grow with
 * the number of files.  A delta names base entries by index (both sides
 * hold the same base, checked by base_sha, the SHA-256 of its encoding):
 *   gone    base entries that are no more (ascending, never the root);
 *   put     entries new or changed, in the new manifest's order (parents
 *           before children); at[k] is the base entry that put entry k
 *           replaces, with the same path and type, or VY_DELTA_NEW.
 * Applied, base becomes: changed entries in place, gone ones removed (the
 * later ones move down, and link_of follows them), new ones appended.
 * Hard links never change through a delta: when a change touches an entry
 * that is part of a hard-link group (in either manifest), there is no
 * delta, and the whole manifest is sent instead.  One change is left out
 * instead: the access time of a file in a hard-link group (reading such a
 * file must not cost the whole manifest).
 *
 * Encoding (integers big-endian): u32 magic "VYMD" (0x56594d44), u16
 * version (1), u16 reserved (0), u8[32] base_sha, u32 base count, u32 gone
 * count, u32 put count; then each gone index as a u32; then per put entry
 * a u32 at and the entry as a manifest encodes it (link_of VY_NO_LINK). */
#define VY_DELTA_MAGIC 0x56594d44u
#define VY_DELTA_VERSION 1
#define VY_DELTA_NEW 0xffffffffu

struct vy_manifest_delta {
	uint8_t base_sha[32];
	uint32_t base_count;
	uint32_t *gone;
	uint32_t ngone;
	uint32_t *at;              /* [put.count] */
	struct vy_manifest put;    /* entries only: no root, no placement rule */
};

/* The delta from base to cur (both as vy_manifest_scan makes them): 1 with
 * *d filled (base_sha left zero for the caller), 0 when the change cannot
 * be a delta (hard links among it, a root that is not a directory), -1 on
 * error. */
int vy_manifest_diff(const struct vy_manifest *base, const struct vy_manifest *cur,
		     struct vy_manifest_delta *d, vy_error *err);
/* Work out the shape of old (the scan that followed w) now, before the
 * freeze, for vy_manifest_rescan_delta(w, ..., old, ...); old must not
 * change in between. */
int vy_manifest_watch_index(struct vy_scan_watch *w, const struct vy_manifest *old,
			    vy_error *err);
/* The same delta as vy_manifest_diff(old, vy_manifest_rescan(...)) would
 * give, without building the new manifest: only directories that saw an
 * event are read again (w was set up before the scan that made old), and
 * the rest of old is not copied, compared or hashed.  1 with *d, 0 when
 * there can be no delta (as vy_manifest_diff, or an event queue overflow:
 * scan and diff instead), -1 on error.  *dirs_read: directories read. */
int vy_manifest_rescan_delta(struct vy_scan_watch *w, const char *root,
			     const struct vy_manifest *old, struct vy_manifest_delta *d,
			     uint32_t *dirs_read, vy_error *err);
int vy_manifest_delta_encode(const struct vy_manifest_delta *d, uint8_t **buf,
			     size_t *len, vy_error *err);
/* The one parser of delta bytes: bounds, safe paths, ascending gone
 * indices, no hard links.  What it cannot know without the base is
 * checked by vy_manifest_delta_check(). */
int vy_manifest_delta_decode(const uint8_t *buf, size_t len,
			     struct vy_manifest_delta *d, vy_error *err);
/* Whether d applies to base: counts, each base entry named at most once,
 * replaced entries with the same path and type, no hard link touched, each
 * new entry under a directory that exists by then and at a path that does
 * not.  Untrusted deltas pass here before anything is done with them. */
int vy_manifest_delta_check(const struct vy_manifest *base,
			    const struct vy_manifest_delta *d, vy_error *err);
/* The same with the base's paths indexed beforehand (before the freeze),
 * so that the check costs the change, not the tree.  paths must have been
 * built for base as it is (else one is built here, as above). */
struct vy_manifest_paths;
int vy_manifest_paths_build(const struct vy_manifest *m, struct vy_manifest_paths **out,
			    vy_error *err);
void vy_manifest_paths_free(struct vy_manifest_paths *p);
int vy_manifest_delta_check_with(const struct vy_manifest *base,
				 const struct vy_manifest_paths *paths,
				 const struct vy_manifest_delta *d, vy_error *err);
/* Bring base to base + d in place, moving d's entries (d is emptied).  With
 * map, *map[i] is where base entry i went (VY_DELTA_NEW: gone); the caller
 * frees it.  Indices are checked, the rest is vy_manifest_delta_check's.
 * base's data_bytes is brought up to date by the change alone, so it must
 * be right to begin with (as scans and the decoder make it).  Without gone
 * entries nothing moves: the work is the change's, not the tree's. */
int vy_manifest_delta_apply(struct vy_manifest *base, struct vy_manifest_delta *d,
			    uint32_t **map, vy_error *err);
/* Bring the skeleton of base (materialised and finished under rootfd) to
 * base + d, touching only what d names.  *changed counts those entries. */
int vy_manifest_delta_update_skeleton(const struct vy_manifest *base,
				      const struct vy_manifest_delta *d, int rootfd,
				      uint32_t *changed, vy_error *err);
void vy_manifest_delta_free(struct vy_manifest_delta *d);

#endif
