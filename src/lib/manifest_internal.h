/* manifest_internal.h - what the manifest files share, and nothing else.
 *
 * The manifest is split by concern into manifest.c (the shared pieces
 * declared here), manifest_scan.c, manifest_codec.c and manifest_apply.c.
 * This header is private to those four files; the library's interface is
 * manifest.h.
 */
#ifndef VY_MANIFEST_INTERNAL_H
#define VY_MANIFEST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manifest.h"

/* Open-addressing set of entry indices keyed by path, so the decoder finds
 * parents and duplicates in constant time however large the manifest. */
struct path_index {
	uint32_t *slots; /* entry index + 1; 0 = empty */
	size_t mask;
};

int path_index_init(struct path_index *t, uint32_t count);
uint32_t *path_index_slot(const struct path_index *t,
			  const struct vy_entry *entries,
			  const char *path, size_t len);

/* (dev, ino) -> first entry index, for hard-link detection while scanning. */
struct inode_slot {
	uint64_t dev, ino;
	uint32_t index; /* entry index + 1; 0 = empty */
};

struct inode_index {
	struct inode_slot *slots;
	size_t size, used;
};

struct inode_slot *inode_index_slot(struct inode_slot *slots,
				    size_t size, uint64_t dev,
				    uint64_t ino);
int inode_index_grow(struct inode_index *t);

/* Appends a zeroed entry (link_of = VY_NO_LINK) to m. */
struct vy_entry *manifest_add(struct vy_manifest *m, vy_error *err);
/* Appends a deep copy of src to m. */
int manifest_copy_entry(struct vy_manifest *m, const struct vy_entry *src, vy_error *err);
/* Frees what e holds (not e). */
void manifest_entry_free(struct vy_entry *e);
/* Same path and type, symlink target and device number (links aside). */
bool manifest_same_shape(const struct vy_entry *a, const struct vy_entry *b);
/* Same mode, owner, size, times and xattrs. */
bool manifest_same_meta(const struct vy_entry *a, const struct vy_entry *b);
bool manifest_same_meta_but_atime(const struct vy_entry *a, const struct vy_entry *b);

/* Names entry name of directory dirfd as a /proc/self/fd path. */
void proc_path(char *out, size_t len, int dirfd, const char *name);
/* openat2() confined to rootfd, following no symlinks; -1 and errno. */
int open_beneath(int rootfd, const char *path, int flags);

#endif
