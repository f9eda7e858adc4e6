/* manifest_scan.c - building a manifest from a tree on the source.
 *
 * vy_manifest_scan() walks the tree breadth-first without crossing mount
 * points, records each entry with its xattrs, symlink target and hard
 * links, and sorts each directory's names so that manifests are
 * reproducible.  Directories are opened through open_beneath(), so a tree
 * changed under the scan cannot lead it outside the root.
 */
#include "manifest.h"
#include "manifest_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"

/* ---- scanning ---- */

struct scan {
	struct vy_manifest *m;
	int rootfd;
	dev_t dev;
	struct inode_index links;
};

static ssize_t list_names(const char *path, bool follow, char **out)
{
	for (;;) {
		ssize_t n = follow ? listxattr(path, NULL, 0)
				   : llistxattr(path, NULL, 0);
		if (n <= 0)
			return n;
		char *buf = malloc(n);
		if (!buf)
			return -1;
		ssize_t got = follow ? listxattr(path, buf, n)
				     : llistxattr(path, buf, n);
		if (got >= 0) {
			*out = buf;
			return got;
		}
		free(buf);
		if (errno != ERANGE)
			return -1;
	}
}

static int read_value(const char *path, bool follow, struct vy_xattr *x,
		      vy_error *err)
{
	for (;;) {
		ssize_t n = follow ? getxattr(path, x->name, NULL, 0)
				   : lgetxattr(path, x->name, NULL, 0);
		if (n < 0)
			return vy_error_sys(err, errno, "getxattr %s", x->name);
		if (n > VY_XATTR_VALUE_MAX)
			return vy_error_set(err, EFBIG, "xattr %s: value too large",
					    x->name);
		free(x->value);
		x->value = malloc(n ? n : 1);
		if (!x->value)
			return vy_error_sys(err, ENOMEM, "xattr");
		ssize_t got = follow ? getxattr(path, x->name, x->value, n)
				     : lgetxattr(path, x->name, x->value, n);
		if (got >= 0) {
			x->len = (uint32_t)got;
			return 0;
		}
		if (errno != ERANGE)
			return vy_error_sys(err, errno, "getxattr %s", x->name);
	}
}

static int scan_xattrs(int dirfd, const char *name, struct vy_entry *e,
		       vy_error *err)
{
	char path[64 + NAME_MAX];
	proc_path(path, sizeof(path), dirfd, name);
	bool follow = !*name;
	cleanup_free char *names = NULL;
	ssize_t len = list_names(path, follow, &names);
	if (len < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))
		return 0;
	if (len < 0)
		return vy_error_sys(err, errno, "listxattr");
	size_t count = 0;
	for (ssize_t i = 0; i < len; i += strlen(names + i) + 1)
		count++;
	if (count > VY_XATTR_COUNT_MAX)
		return vy_error_set(err, EFBIG, "%zu xattrs, limit %d", count,
				    VY_XATTR_COUNT_MAX);
	if (count == 0)
		return 0;
	e->xattrs = calloc(count, sizeof(*e->xattrs));
	if (!e->xattrs)
		return vy_error_sys(err, ENOMEM, "xattrs");
	for (ssize_t i = 0; i < len; i += strlen(names + i) + 1) {
		struct vy_xattr *x = &e->xattrs[e->nxattr++];
		if (strlen(names + i) > VY_XATTR_NAME_MAX)
			return vy_error_set(err, EFBIG, "xattr name too long");
		x->name = strdup(names + i);
		if (!x->name)
			return vy_error_sys(err, ENOMEM, "xattr");
		if (read_value(path, follow, x, err) < 0)
			return -1;
	}
	return 0;
}

static int scan_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: return VY_ENTRY_DIR;
	case S_IFREG: return VY_ENTRY_REG;
	case S_IFLNK: return VY_ENTRY_SYMLINK;
	case S_IFCHR: return VY_ENTRY_CHR;
	case S_IFBLK: return VY_ENTRY_BLK;
	case S_IFIFO: return VY_ENTRY_FIFO;
	case S_IFSOCK: return VY_ENTRY_SOCK;
	default: return -1;
	}
}

/* A regular file seen before under another name becomes a link to it, and
 * its bytes are counted once. */
static int scan_hard_link(struct scan *s, struct vy_entry *e,
			  const struct stat *st, vy_error *err)
{
	if (st->st_nlink > 1) {
		if ((s->links.used + 1) * 2 > s->links.size &&
		    inode_index_grow(&s->links) < 0)
			return vy_error_sys(err, ENOMEM, "hard links");
		struct inode_slot *slot = inode_index_slot(
			s->links.slots, s->links.size, st->st_dev, st->st_ino);
		if (slot->index) {
			e->link_of = slot->index - 1;
			e->size = s->m->entries[e->link_of].size;
			return 0;
		}
		*slot = (struct inode_slot){ st->st_dev, st->st_ino,
					     s->m->count };
		s->links.used++;
	}
	s->m->data_bytes += e->size;
	return 0;
}

/* Record one entry; path is taken over (freed on failure). */
static int scan_entry(struct scan *s, char *path, int dirfd, const char *name,
		      const struct stat *st, vy_error *err)
{
	int type = scan_type(st->st_mode);
	if (type < 0) {
		free(path);
		return vy_error_set(err, EINVAL, "unknown file type");
	}
	struct vy_entry *e = manifest_add(s->m, err);
	if (!e) {
		free(path);
		return -1;
	}
	e->path = path;
	e->type = (uint8_t)type;
	e->mode = st->st_mode & 07777;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	e->atime_ns = st->st_atim.tv_sec * 1000000000ll + st->st_atim.tv_nsec;
	e->mtime_ns = st->st_mtim.tv_sec * 1000000000ll + st->st_mtim.tv_nsec;
	if (type == VY_ENTRY_CHR || type == VY_ENTRY_BLK)
		e->rdev = st->st_rdev;
	if (type == VY_ENTRY_REG) {
		e->size = st->st_size;
		if (scan_hard_link(s, e, st, err) < 0)
			return -1;
	}
	if (type == VY_ENTRY_SYMLINK) {
		char target[VY_PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target));
		if (n < 0)
			return vy_error_sys(err, errno, "readlinkat");
		if (n == 0 || n > VY_PATH_MAX)
			return vy_error_set(err, EINVAL, "bad symlink target length");
		e->target = strndup(target, n);
		if (!e->target)
			return vy_error_sys(err, ENOMEM, "symlink");
		e->size = (uint64_t)n;
	}
	return scan_xattrs(dirfd, name, e, err);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read a directory's names, sorted so that manifests are reproducible. */
static int read_names(DIR *d, char ***out, size_t *count, vy_error *err)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **more = realloc(names, cap * sizeof(*names));
			if (!more)
				goto oom;
			names = more;
		}
		if (!(names[n] = strdup(de->d_name)))
			goto oom;
		n++;
	}
	if (errno) {
		int saved = errno;
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return vy_error_sys(err, saved, "readdir");
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), compare_names);
	*out = names;
	*count = n;
	return 0;
oom:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return vy_error_sys(err, ENOMEM, "readdir");
}

/* List directory entry dir_index and append its children.  A directory on
 * another device is a mount point: it is recorded but not entered. */
static int scan_directory(struct scan *s, uint32_t dir_index, vy_error *err)
{
	const char *dpath = s->m->entries[dir_index].path; /* stable string */
	int fd = *dpath ? open_beneath(s->rootfd, dpath, O_RDONLY | O_DIRECTORY)
			: openat(s->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': open directory", dpath);
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_dev != s->dev) {
		close(fd);
		return 0;
	}
	cleanup_closedir DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return vy_error_sys(err, errno, "'%s': fdopendir", dpath);
	}
	char **names = NULL;
	size_t count = 0;
	if (read_names(d, &names, &count, err) < 0)
		return vy_error_wrap(err, "'%s'", dpath);
	int rc = 0;
	size_t dlen = strlen(dpath);
	for (size_t i = 0; i < count && rc == 0; i++) {
		size_t plen = dlen + !!dlen + strlen(names[i]);
		if (plen > VY_PATH_MAX) {
			rc = vy_error_set(err, ENAMETOOLONG, "'%s/%s': path too long",
					  dpath, names[i]);
			break;
		}
		if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* removed while we looked */
			rc = vy_error_sys(err, errno, "'%s/%s': fstatat", dpath,
					  names[i]);
			break;
		}
		char *path = malloc(plen + 1);
		if (!path) {
			rc = vy_error_sys(err, ENOMEM, "scan");
			break;
		}
		snprintf(path, plen + 1, "%s%s%s", dpath, dlen ? "/" : "",
			 names[i]);
		if ((rc = scan_entry(s, path, dirfd(d), names[i], &st, err)) < 0)
			vy_error_wrap(err, "'%s%s%s'", dpath, dlen ? "/" : "",
				      names[i]);
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return rc;
}

int vy_manifest_scan(const char *root, struct vy_manifest *m, vy_error *err)
{
	memset(m, 0, sizeof(*m));
	cleanup_close int rootfd =
		open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rootfd < 0)
		return vy_error_sys(err, errno, "scan '%s': open", root);
	struct stat st;
	if (fstat(rootfd, &st) < 0)
		return vy_error_sys(err, errno, "scan '%s': fstat", root);
	struct scan s = { .m = m, .rootfd = rootfd, .dev = st.st_dev };
	char *rootpath = strdup("");
	int rc = rootpath ? scan_entry(&s, rootpath, rootfd, "", &st, err)
			  : vy_error_sys(err, ENOMEM, "scan");
	for (uint32_t i = 0; rc == 0 && i < m->count; i++) {
		if (m->entries[i].type == VY_ENTRY_DIR)
			rc = scan_directory(&s, i, err);
	}
	free(s.links.slots);
	if (rc < 0) {
		vy_manifest_free(m);
		return vy_error_wrap(err, "scan '%s'", root);
	}
	return 0;
}
