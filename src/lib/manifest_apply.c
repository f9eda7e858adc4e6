/* manifest_apply.c - laying out a decoded manifest on the target.
 *
 * vy_manifest_materialise() creates the skeleton (directories, empty files
 * of the right size, symlinks, nodes, hard links) with owners and xattrs;
 * transfer.c then writes the file data, and vy_manifest_finish() applies
 * what writing would disturb: times, directory modes and file
 * capabilities.  Every lookup goes through openat2(RESOLVE_BENEATH).
 */
#include "manifest.h"
#include "manifest_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"

/* The file capability xattr: the kernel drops it whenever the file is
 * chowned or written, so it is applied again once the data is in. */
#define CAPABILITY_XATTR "security.capability"

/* ---- laying out the tree on the target ---- */

/* Consecutive entries usually share a parent, so its fd is kept. */
struct parent_cache {
	int fd;
	const char *path; /* the entry path whose first len bytes name it */
	size_t len;
};

static int parent_fd(struct parent_cache *pc, int rootfd, const char *path,
		     const char **name, vy_error *err)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash ? (size_t)(slash - path) : 0;
	*name = slash ? slash + 1 : path;
	if (pc->fd >= 0 && pc->len == len && !memcmp(pc->path, path, len))
		return pc->fd;
	if (pc->fd >= 0)
		close(pc->fd);
	pc->fd = -1;
	char *dir = strndup(path, len);
	if (!dir)
		return vy_error_sys(err, ENOMEM, "'%s'", path);
	pc->fd = vy_manifest_open_entry(rootfd, dir, O_PATH | O_DIRECTORY, err);
	free(dir);
	pc->path = path;
	pc->len = len;
	return pc->fd < 0 ? vy_error_wrap(err, "parent of '%s'", path) : pc->fd;
}

static int set_xattrs_fd(int fd, const struct vy_entry *e, vy_error *err)
{
	for (uint16_t i = 0; i < e->nxattr; i++) {
		const struct vy_xattr *x = &e->xattrs[i];
		if (fsetxattr(fd, x->name, x->value, x->len, 0) < 0)
			return vy_error_sys(err, errno, "'%s': fsetxattr %s",
					    e->path, x->name);
	}
	return 0;
}

/* chown first: it clears setuid/setgid and file capabilities, which the
 * chmod and xattrs then put back. */
static int apply_meta_fd(int fd, const struct vy_entry *e, uint32_t mode,
			 vy_error *err)
{
	if (fchown(fd, e->uid, e->gid) < 0)
		return vy_error_sys(err, errno, "'%s': fchown", e->path);
	if (fchmod(fd, mode) < 0)
		return vy_error_sys(err, errno, "'%s': fchmod", e->path);
	return set_xattrs_fd(fd, e, err);
}

/* For entries we cannot open (symlinks, devices, fifos, sockets). */
static int apply_meta_at(int pfd, const char *name, const struct vy_entry *e,
			 vy_error *err)
{
	if (fchownat(pfd, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': fchownat", e->path);
	if (e->type != VY_ENTRY_SYMLINK &&
	    fchmodat(pfd, name, e->mode, AT_SYMLINK_NOFOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': fchmodat", e->path);
	char path[64 + NAME_MAX];
	proc_path(path, sizeof(path), pfd, name);
	for (uint16_t i = 0; i < e->nxattr; i++) {
		const struct vy_xattr *x = &e->xattrs[i];
		if (lsetxattr(path, x->name, x->value, x->len, 0) < 0)
			return vy_error_sys(err, errno, "'%s': lsetxattr %s",
					    e->path, x->name);
	}
	return 0;
}

/* Directories stay writable by us until vy_manifest_finish(). */
static int make_dir(int rootfd, int pfd, const char *name,
		    const struct vy_entry *e, vy_error *err)
{
	if (*e->path && mkdirat(pfd, name, 0700) < 0)
		return vy_error_sys(err, errno, "'%s': mkdirat", e->path);
	cleanup_close int fd =
		*e->path ? openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
			 : openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': open directory", e->path);
	return apply_meta_fd(fd, e, e->mode | S_IRWXU, err);
}

static int make_file(int pfd, const char *name, const struct vy_entry *e,
		     vy_error *err)
{
	cleanup_close int fd = openat(
		pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': openat O_CREAT", e->path);
	if (e->size > INT64_MAX)
		return vy_error_set(err, EFBIG, "'%s': size too large", e->path);
	if (ftruncate(fd, (off_t)e->size) < 0)
		return vy_error_sys(err, errno, "'%s': ftruncate to %llu", e->path,
				    (unsigned long long)e->size);
	return apply_meta_fd(fd, e, e->mode, err);
}

static int make_hard_link(const struct vy_manifest *m, int rootfd, int pfd,
			  const char *name, const struct vy_entry *e,
			  vy_error *err)
{
	const struct vy_entry *first = &m->entries[e->link_of];
	cleanup_close int fd =
		vy_manifest_open_entry(rootfd, first->path, O_PATH, err);
	if (fd < 0)
		return vy_error_wrap(err, "'%s': hard link", e->path);
	char proc[64];
	proc_path(proc, sizeof(proc), fd, "");
	if (linkat(AT_FDCWD, proc, pfd, name, AT_SYMLINK_FOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': linkat to '%s'", e->path,
				    first->path);
	return 0;
}

static int make_node(int pfd, const char *name, const struct vy_entry *e,
		     vy_error *err)
{
	if (e->type == VY_ENTRY_SYMLINK) {
		if (symlinkat(e->target, pfd, name) < 0)
			return vy_error_sys(err, errno, "'%s': symlinkat", e->path);
	} else {
		static const mode_t kinds[] = {
			[VY_ENTRY_CHR] = S_IFCHR, [VY_ENTRY_BLK] = S_IFBLK,
			[VY_ENTRY_FIFO] = S_IFIFO, [VY_ENTRY_SOCK] = S_IFSOCK,
		};
		dev_t rdev = (e->type == VY_ENTRY_CHR || e->type == VY_ENTRY_BLK)
				     ? (dev_t)e->rdev : 0;
		if (mknodat(pfd, name, kinds[e->type] | 0600, rdev) < 0)
			return vy_error_sys(err, errno, "'%s': mknodat", e->path);
	}
	return apply_meta_at(pfd, name, e, err);
}

static int make_entry(const struct vy_manifest *m, uint32_t i, int rootfd,
		      struct parent_cache *pc, vy_error *err)
{
	const struct vy_entry *e = &m->entries[i];
	const char *name = "";
	int pfd = -1;
	if (*e->path && (pfd = parent_fd(pc, rootfd, e->path, &name, err)) < 0)
		return -1;
	switch (e->type) {
	case VY_ENTRY_DIR:
		return make_dir(rootfd, pfd, name, e, err);
	case VY_ENTRY_REG:
		if (e->link_of != VY_NO_LINK)
			return make_hard_link(m, rootfd, pfd, name, e, err);
		return make_file(pfd, name, e, err);
	case VY_ENTRY_SYMLINK:
	case VY_ENTRY_CHR:
	case VY_ENTRY_BLK:
	case VY_ENTRY_FIFO:
	case VY_ENTRY_SOCK:
		return make_node(pfd, name, e, err);
	default:
		return vy_error_set(err, EINVAL, "'%s': unknown type %u", e->path,
				    e->type);
	}
}

int vy_manifest_materialise(const struct vy_manifest *m, int rootfd,
			    vy_error *err)
{
	if (m->count == 0 || m->entries[0].type != VY_ENTRY_DIR ||
	    *m->entries[0].path)
		return vy_error_set(err, EINVAL,
				    "materialise: manifest has no root directory");
	struct parent_cache pc = { .fd = -1 };
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i < m->count; i++)
		rc = make_entry(m, i, rootfd, &pc, err);
	if (pc.fd >= 0)
		close(pc.fd);
	return rc < 0 ? vy_error_wrap(err, "materialise") : 0;
}

/* ---- final metadata ---- */

static struct timespec ns_to_timespec(int64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

static const struct vy_xattr *find_xattr(const struct vy_entry *e,
					 const char *name)
{
	for (uint16_t i = 0; i < e->nxattr; i++) {
		if (!strcmp(e->xattrs[i].name, name))
			return &e->xattrs[i];
	}
	return NULL;
}

/* Writing the data dropped any file capability; put it back. */
static int restore_capability(int pfd, const char *name,
			      const struct vy_entry *e, const struct timespec *ts,
			      vy_error *err)
{
	const struct vy_xattr *cap = find_xattr(e, CAPABILITY_XATTR);
	cleanup_close int fd = openat(pfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': open", e->path);
	if (fsetxattr(fd, cap->name, cap->value, cap->len, 0) < 0)
		return vy_error_sys(err, errno, "'%s': fsetxattr %s", e->path,
				    cap->name);
	if (fchmod(fd, e->mode) < 0)
		return vy_error_sys(err, errno, "'%s': fchmod", e->path);
	if (futimens(fd, ts) < 0)
		return vy_error_sys(err, errno, "'%s': futimens", e->path);
	return 0;
}

static int finish_entry(const struct vy_entry *e, int rootfd,
			struct parent_cache *pc, vy_error *err)
{
	struct timespec ts[2] = { ns_to_timespec(e->atime_ns),
				  ns_to_timespec(e->mtime_ns) };
	const char *name = "";
	int pfd = -1;
	if (*e->path && (pfd = parent_fd(pc, rootfd, e->path, &name, err)) < 0)
		return -1;
	if (e->type == VY_ENTRY_DIR) {
		cleanup_close int fd =
			*e->path ? openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
				 : openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return vy_error_sys(err, errno, "'%s': open directory", e->path);
		if (fchmod(fd, e->mode) < 0)
			return vy_error_sys(err, errno, "'%s': fchmod", e->path);
		if (futimens(fd, ts) < 0)
			return vy_error_sys(err, errno, "'%s': futimens", e->path);
		return 0;
	}
	if (e->type == VY_ENTRY_REG && e->link_of != VY_NO_LINK)
		return 0; /* the first name carries the inode's times */
	if (e->type == VY_ENTRY_REG && find_xattr(e, CAPABILITY_XATTR))
		return restore_capability(pfd, name, e, ts, err);
	if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': utimensat", e->path);
	return 0;
}

/* Children before parents (the reverse of manifest order), so that setting
 * a child's metadata never disturbs a parent already finished. */
int vy_manifest_finish(const struct vy_manifest *m, int rootfd, vy_error *err)
{
	return vy_manifest_finish_some(m, rootfd, NULL, err);
}

int vy_manifest_finish_some(const struct vy_manifest *m, int rootfd, const uint8_t *which,
			    vy_error *err)
{
	struct parent_cache pc = { .fd = -1 };
	int rc = 0;
	for (uint32_t i = m->count; rc == 0 && i-- > 0;)
		if (!which || which[i])
			rc = finish_entry(&m->entries[i], rootfd, &pc, err);
	if (pc.fd >= 0)
		close(pc.fd);
	return rc < 0 ? vy_error_wrap(err, "finish metadata") : 0;
}

/* ---- bringing a skeleton up to date ---- */

/* Entries come and go in directories whose own metadata may not change
 * (their times were set back, or the change fell in the same clock tick):
 * their times are read before and put back after. */
struct parent_times {
	const char *path;   /* an entry's path, whose first len bytes name it */
	size_t len;
	struct timespec ts[2];
};

struct parents {
	struct parent_times *v;
	uint32_t n, cap;
};

static int note_parent(struct parents *ps, int rootfd, const char *path, vy_error *err)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash ? (size_t)(slash - path) : 0;
	/* consecutive entries mostly share a parent */
	if (ps->n && ps->v[ps->n - 1].len == len && !memcmp(ps->v[ps->n - 1].path, path, len))
		return 0;
	char dir[VY_PATH_MAX + 1];
	snprintf(dir, sizeof(dir), "%.*s", (int)len, path);
	vy_error ignore; /* a parent that is new itself is made later */
	cleanup_close int fd = vy_manifest_open_entry(rootfd, dir, O_PATH | O_DIRECTORY, &ignore);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return 0;
	if (ps->n == ps->cap) {
		uint32_t cap = ps->cap * 2 + 16;
		struct parent_times *more = realloc(ps->v, cap * sizeof(*more));
		if (!more)
			return vy_error_sys(err, ENOMEM, "update the skeleton");
		ps->v = more;
		ps->cap = cap;
	}
	ps->v[ps->n++] = (struct parent_times){ path, len, { st.st_atim, st.st_mtim } };
	return 0;
}

/* Put the noted times back (a parent that is gone is skipped); entries
 * that are themselves in the change get theirs after this. */
static int restore_parents(struct parents *ps, int rootfd, vy_error *err)
{
	int rc = 0;
	for (uint32_t k = 0; rc == 0 && k < ps->n; k++) {
		char dir[VY_PATH_MAX + 1];
		snprintf(dir, sizeof(dir), "%.*s", (int)ps->v[k].len, ps->v[k].path);
		vy_error ignore;
		cleanup_close int fd = vy_manifest_open_entry(rootfd, dir, O_RDONLY | O_DIRECTORY,
							      &ignore);
		if (fd >= 0 && futimens(fd, ps->v[k].ts) < 0)
			rc = vy_error_sys(err, errno, "'%s': futimens", dir);
	}
	free(ps->v);
	*ps = (struct parents){ 0 };
	return rc;
}

bool manifest_same_shape(const struct vy_entry *a, const struct vy_entry *b)
{
	if (a->type != b->type || strcmp(a->path, b->path))
		return false;
	if (a->type == VY_ENTRY_SYMLINK)
		return !strcmp(a->target ? a->target : "", b->target ? b->target : "");
	if (a->type == VY_ENTRY_CHR || a->type == VY_ENTRY_BLK)
		return a->rdev == b->rdev;
	return true;
}

static bool same_xattr_set(const struct vy_entry *a, const struct vy_entry *b)
{
	if (a->nxattr != b->nxattr)
		return false;
	for (uint16_t i = 0; i < a->nxattr; i++) {
		const struct vy_xattr *x = find_xattr(b, a->xattrs[i].name);
		if (!x || x->len != a->xattrs[i].len ||
		    memcmp(x->value, a->xattrs[i].value, x->len))
			return false;
	}
	return true;
}

bool manifest_same_meta_but_atime(const struct vy_entry *a, const struct vy_entry *b)
{
	return a->mode == b->mode && a->uid == b->uid && a->gid == b->gid &&
	       a->size == b->size && a->mtime_ns == b->mtime_ns && same_xattr_set(a, b);
}

bool manifest_same_meta(const struct vy_entry *a, const struct vy_entry *b)
{
	return a->atime_ns == b->atime_ns && manifest_same_meta_but_atime(a, b);
}

/* New metadata on an entry that exists with the right type. */
static int update_entry(const struct vy_entry *old, const struct vy_entry *e, int rootfd,
			struct parent_cache *pc, vy_error *err)
{
	const char *name = "";
	int pfd = -1;
	if (*e->path && (pfd = parent_fd(pc, rootfd, e->path, &name, err)) < 0)
		return -1;
	/* xattrs that are gone go first (the root is its fd's /proc link:
	 * followed, not acted on as a link) */
	char path[64 + NAME_MAX];
	proc_path(path, sizeof(path), *e->path ? pfd : rootfd, *e->path ? name : "");
	for (uint16_t i = 0; i < old->nxattr; i++)
		if (!find_xattr(e, old->xattrs[i].name) &&
		    (*e->path ? lremovexattr(path, old->xattrs[i].name)
			      : removexattr(path, old->xattrs[i].name)) < 0 && errno != ENODATA)
			return vy_error_sys(err, errno, "'%s': lremovexattr %s", e->path,
					    old->xattrs[i].name);
	if (e->type == VY_ENTRY_DIR) {
		cleanup_close int fd =
			*e->path ? openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
				 : openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return vy_error_sys(err, errno, "'%s': open directory", e->path);
		return apply_meta_fd(fd, e, e->mode | S_IRWXU, err);
	}
	if (e->type == VY_ENTRY_REG) {
		cleanup_close int fd = openat(pfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return vy_error_sys(err, errno, "'%s': open", e->path);
		if (e->size > INT64_MAX || ftruncate(fd, (off_t)e->size) < 0)
			return vy_error_sys(err, e->size > INT64_MAX ? EFBIG : errno,
					    "'%s': ftruncate to %llu", e->path,
					    (unsigned long long)e->size);
		return apply_meta_fd(fd, e, e->mode, err);
	}
	return apply_meta_at(pfd, name, e, err);
}

static int by_path_index(const void *a, const void *b, void *arg)
{
	const struct vy_manifest *m = arg;
	return strcmp(m->entries[*(const uint32_t *)a].path, m->entries[*(const uint32_t *)b].path);
}

/* The index of path in m, whose indices order sorts by path; or -1. */
static int64_t find_path(const struct vy_manifest *m, const uint32_t *order, const char *path)
{
	uint32_t lo = 0, hi = m->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->entries[order[mid]].path, path);
		if (!c)
			return order[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int vy_manifest_update_skeleton(const struct vy_manifest *old, const struct vy_manifest *cur,
				int rootfd, uint32_t *changed, vy_error *err)
{
	*changed = 0;
	if (!old->count || !cur->count || old->entries[0].type != VY_ENTRY_DIR ||
	    cur->entries[0].type != VY_ENTRY_DIR || *old->entries[0].path || *cur->entries[0].path)
		return 0;
	cleanup_free uint32_t *order = malloc(old->count * sizeof(*order));
	cleanup_free int64_t *match = malloc(cur->count * sizeof(*match)); /* cur -> old, or -1 */
	cleanup_free uint8_t *kept = calloc(old->count, 1);
	if (!order || !match || !kept)
		return vy_error_set(err, ENOMEM, "out of memory");
	for (uint32_t i = 0; i < old->count; i++)
		order[i] = i;
	qsort_r(order, old->count, sizeof(*order), by_path_index, (void *)old);
	/* An entry is kept when the old skeleton has it at the same path with
	 * the same shape; a hard link only if its first name was kept too
	 * (first names come first, in both manifests). */
	for (uint32_t i = 0; i < cur->count; i++) {
		const struct vy_entry *e = &cur->entries[i];
		int64_t o = find_path(old, order, e->path);
		bool same = o >= 0 && manifest_same_shape(&old->entries[o], e);
		if (same && (e->link_of != VY_NO_LINK || old->entries[o].link_of != VY_NO_LINK))
			same = e->link_of != VY_NO_LINK && old->entries[o].link_of != VY_NO_LINK &&
			       e->link_of < i && match[e->link_of] == (int64_t)old->entries[o].link_of;
		match[i] = same ? o : -1;
		if (same)
			kept[o] = 1;
	}
	if (match[0] != 0)
		return 0;
	struct parents ps = { 0 };
	int rc = 0;
	for (uint32_t j = 1; rc == 0 && j < old->count; j++)
		if (!kept[j])
			rc = note_parent(&ps, rootfd, old->entries[j].path, err);
	for (uint32_t i = 1; rc == 0 && i < cur->count; i++)
		if (match[i] < 0)
			rc = note_parent(&ps, rootfd, cur->entries[i].path, err);
	if (rc < 0) {
		free(ps.v);
		return -1;
	}
	struct parent_cache pc = { .fd = -1 };
	/* What is gone, children before their parents. */
	for (uint32_t j = old->count; rc == 0 && j-- > 1;) {
		if (kept[j])
			continue;
		const char *name;
		int pfd = parent_fd(&pc, rootfd, old->entries[j].path, &name, err);
		int flags = old->entries[j].type == VY_ENTRY_DIR ? AT_REMOVEDIR : 0;
		if (pfd < 0)
			rc = -1;
		else if (unlinkat(pfd, name, flags) < 0 && errno != ENOENT)
			rc = vy_error_sys(err, errno, "'%s': remove", old->entries[j].path);
		(*changed)++;
	}
	if (pc.fd >= 0)
		close(pc.fd);
	pc = (struct parent_cache){ .fd = -1 };
	/* What is new, parents before their children; then what changed. */
	for (uint32_t i = 0; rc == 0 && i < cur->count; i++) {
		if (match[i] < 0) {
			rc = make_entry(cur, i, rootfd, &pc, err);
			(*changed)++;
		} else if (!manifest_same_meta(&old->entries[match[i]], &cur->entries[i])) {
			/* a later name of a hard link shares the first name's inode */
			if (cur->entries[i].link_of == VY_NO_LINK)
				rc = update_entry(&old->entries[match[i]], &cur->entries[i], rootfd,
						  &pc, err);
			(*changed)++;
		}
	}
	vy_error later;
	int back = restore_parents(&ps, rootfd, rc == 0 ? err : &later);
	if (rc == 0)
		rc = back;
	for (uint32_t i = cur->count; rc == 0 && i-- > 0;)
		if (match[i] < 0 || !manifest_same_meta(&old->entries[match[i]], &cur->entries[i]))
			rc = finish_entry(&cur->entries[i], rootfd, &pc, err);
	if (pc.fd >= 0)
		close(pc.fd);
	return rc < 0 ? vy_error_wrap(err, "update the skeleton") : 1;
}

/* ---- bringing a skeleton up to date with a delta ---- */

int vy_manifest_delta_update_skeleton(const struct vy_manifest *base,
				      const struct vy_manifest_delta *d, int rootfd,
				      uint32_t *changed, vy_error *err)
{
	*changed = 0;
	if (d->base_count != base->count)
		return vy_error_set(err, EINVAL, "the delta is not for this skeleton");
	struct parents ps = { 0 };
	int rc = 0;
	for (uint32_t k = 0; rc == 0 && k < d->ngone; k++)
		rc = note_parent(&ps, rootfd, base->entries[d->gone[k]].path, err);
	for (uint32_t k = 0; rc == 0 && k < d->put.count; k++)
		if (d->at[k] == VY_DELTA_NEW)
			rc = note_parent(&ps, rootfd, d->put.entries[k].path, err);
	if (rc < 0) {
		free(ps.v);
		return -1;
	}
	struct parent_cache pc = { .fd = -1 };
	/* What is gone, children before their parents (base order reversed). */
	for (uint32_t k = d->ngone; rc == 0 && k-- > 0;) {
		const struct vy_entry *e = &base->entries[d->gone[k]];
		const char *name;
		int pfd = parent_fd(&pc, rootfd, e->path, &name, err);
		if (pfd < 0)
			rc = -1;
		else if (unlinkat(pfd, name, e->type == VY_ENTRY_DIR ? AT_REMOVEDIR : 0) < 0 &&
			 errno != ENOENT)
			rc = vy_error_sys(err, errno, "'%s': remove", e->path);
		(*changed)++;
	}
	if (pc.fd >= 0)
		close(pc.fd);
	pc = (struct parent_cache){ .fd = -1 };
	/* What is new or changed, parents before their children. */
	for (uint32_t k = 0; rc == 0 && k < d->put.count; k++) {
		rc = d->at[k] == VY_DELTA_NEW
		     ? make_entry(&d->put, k, rootfd, &pc, err)
		     : update_entry(&base->entries[d->at[k]], &d->put.entries[k], rootfd, &pc, err);
		(*changed)++;
	}
	vy_error later;
	int back = restore_parents(&ps, rootfd, rc == 0 ? err : &later);
	if (rc == 0)
		rc = back;
	for (uint32_t k = d->put.count; rc == 0 && k-- > 0;)
		rc = finish_entry(&d->put.entries[k], rootfd, &pc, err);
	if (pc.fd >= 0)
		close(pc.fd);
	return rc < 0 ? vy_error_wrap(err, "update the skeleton") : 0;
}
