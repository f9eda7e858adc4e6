/* manifest.c - describing a file tree, encoding it, and laying it out again.
 *
 * The source calls vy_manifest_scan() and vy_manifest_encode().  The target
 * calls vy_manifest_decode() (the one parser of manifest bytes, and a fuzz
 * target), vy_manifest_materialise() to lay out a skeleton, lets transfer.c
 * write the file data into it, and ends with vy_manifest_finish().
 *
 * Manifest bytes come from the network, so the target trusts nothing in
 * them: the decoder checks every bound and the shape of the tree, and every
 * lookup on the target goes through openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), so that neither a hostile manifest nor a tree
 * altered under us can make us touch anything outside the root.
 *
 * The work is split by concern: manifest_scan.c builds a manifest from a
 * tree, manifest_codec.c turns it into bytes and back, and manifest_apply.c
 * lays it out on the target.  This file holds what they share: the path
 * check, the path and inode hash indexes, the entry array and its memory,
 * and the lookups beneath the root (manifest_internal.h declares them).
 */
#include "manifest.h"
#include "manifest_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- paths ---- */

bool vy_path_is_safe(const char *rel, size_t len)
{
	if (len == 0)
		return true;
	if (!rel || len > VY_PATH_MAX)
		return false;
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && rel[i] == '\0')
			return false;
		if (i < len && rel[i] != '/')
			continue;
		size_t n = i - start;
		if (n == 0)
			return false;
		if (rel[start] == '.' && (n == 1 || (n == 2 && rel[start + 1] == '.')))
			return false;
		start = i + 1;
	}
	return true;
}

static uint64_t hash_bytes(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h ^ (h >> 29);
}

int path_index_init(struct path_index *t, uint32_t count)
{
	size_t size = 16;
	while (size < (size_t)count * 2)
		size <<= 1;
	t->slots = calloc(size, sizeof(*t->slots));
	t->mask = size - 1;
	return t->slots ? 0 : -1;
}

/* Returns the slot holding path, or the empty slot where it would go. */
uint32_t *path_index_slot(const struct path_index *t,
			  const struct vy_entry *entries,
			  const char *path, size_t len)
{
	size_t i = hash_bytes(path, len) & t->mask;
	for (;; i = (i + 1) & t->mask) {
		uint32_t *slot = &t->slots[i];
		if (*slot == 0)
			return slot;
		const char *p = entries[*slot - 1].path;
		if (strncmp(p, path, len) == 0 && p[len] == '\0')
			return slot;
	}
}

struct inode_slot *inode_index_slot(struct inode_slot *slots,
				    size_t size, uint64_t dev,
				    uint64_t ino)
{
	uint64_t key[2] = { dev, ino };
	size_t i = hash_bytes(key, sizeof(key)) & (size - 1);
	while (slots[i].index && (slots[i].dev != dev || slots[i].ino != ino))
		i = (i + 1) & (size - 1);
	return &slots[i];
}

int inode_index_grow(struct inode_index *t)
{
	size_t size = t->size ? t->size * 2 : 64;
	struct inode_slot *slots = calloc(size, sizeof(*slots));
	if (!slots)
		return -1;
	for (size_t i = 0; i < t->size; i++) {
		if (t->slots[i].index)
			*inode_index_slot(slots, size, t->slots[i].dev,
					  t->slots[i].ino) = t->slots[i];
	}
	free(t->slots);
	t->slots = slots;
	t->size = size;
	return 0;
}

/* ---- memory ---- */

void manifest_entry_free(struct vy_entry *e)
{
	free(e->path);
	free(e->target);
	for (uint16_t i = 0; i < e->nxattr; i++) {
		free(e->xattrs[i].name);
		free(e->xattrs[i].value);
	}
	free(e->xattrs);
}

void vy_manifest_free(struct vy_manifest *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->count; i++)
		manifest_entry_free(&m->entries[i]);
	free(m->entries);
	memset(m, 0, sizeof(*m));
}

struct vy_entry *manifest_add(struct vy_manifest *m, vy_error *err)
{
	if (m->count >= VY_MANIFEST_MAX_ENTRIES) {
		vy_error_set(err, EFBIG, "more than %u entries",
			     VY_MANIFEST_MAX_ENTRIES);
		return NULL;
	}
	if (m->count == m->cap) {
		uint32_t cap = m->cap ? m->cap * 2 : 64;
		struct vy_entry *e = realloc(m->entries, cap * sizeof(*e));
		if (!e) {
			vy_error_sys(err, ENOMEM, "manifest");
			return NULL;
		}
		m->entries = e;
		m->cap = cap;
	}
	struct vy_entry *e = &m->entries[m->count++];
	memset(e, 0, sizeof(*e));
	e->link_of = VY_NO_LINK;
	return e;
}

/* ---- naming entries beneath the root ---- */

/* The xattr calls have no *at() form on older kernels, so we name the
 * entry through its parent's fd in /proc and use the l*() calls, which do
 * not follow a final symlink.  The root (name "") is the fd itself. */
void proc_path(char *out, size_t len, int dirfd, const char *name)
{
	snprintf(out, len, "/proc/self/fd/%d%s%s", dirfd, *name ? "/" : "",
		 name);
}

int open_beneath(int rootfd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	for (int tries = 0;; tries++) {
		long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		if (fd >= 0 || errno != EAGAIN || tries == 16)
			return (int)fd;
	}
}

int vy_manifest_open_entry(int rootfd, const char *path, int flags,
			   vy_error *err)
{
	int fd = *path ? open_beneath(rootfd, path, flags)
		       : openat(rootfd, ".", flags | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return vy_error_sys(err, errno, "open '%s'", path);
	return fd;
}
