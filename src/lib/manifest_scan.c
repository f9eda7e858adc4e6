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
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"

/* ---- scanning ---- */

struct scan {
	struct vy_manifest *m;
	int rootfd;
	dev_t dev;
	struct inode_index links;
	/* Part of a tree only (vy_manifest_rescan_delta): hard links are not
	 * resolved, files with more than one name are marked in multi instead.
	 * With mark_first (vy_manifest_rescan), links are resolved, and a file
	 * that becomes the first name of a group is marked there. */
	bool mark_multi, mark_first;
	uint32_t *multi;        /* by entry: its link count when marked, else 0 */
	size_t multi_cap;
};

static int mark(struct scan *s, uint32_t i, nlink_t nlink, vy_error *err)
{
	if (i >= s->multi_cap) {
		size_t cap = (size_t)i * 2 + 64;
		uint32_t *more = realloc(s->multi, cap * sizeof(*more));
		if (!more)
			return vy_error_sys(err, ENOMEM, "hard links");
		memset(more + s->multi_cap, 0, (cap - s->multi_cap) * sizeof(*more));
		s->multi = more;
		s->multi_cap = cap;
	}
	s->multi[i] = nlink > UINT32_MAX ? UINT32_MAX : (uint32_t)nlink;
	return 0;
}

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
	if (s->mark_multi && st->st_nlink > 1) {
		if (mark(s, s->m->count - 1, st->st_nlink, err) < 0)
			return -1;
	} else if (st->st_nlink > 1) {
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
		if (s->mark_first && mark(s, s->m->count - 1, st->st_nlink, err) < 0)
			return -1;
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
	e->ctime_ns = st->st_ctim.tv_sec * 1000000000ll + st->st_ctim.tv_nsec;
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

/* ---- watching a tree, and scanning only what changed ---- */

#define WATCH_MASK (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | \
		    IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |      \
		    IN_DONT_FOLLOW | IN_ONLYDIR)

struct vy_scan_watch {
	int fd;
	char root[VY_PATH_MAX + 1];
	char **paths;          /* by watch descriptor */
	int npaths;
	json_object *watched;  /* set of directory paths with a watch */
	json_object *dirty;    /* set of directory paths that saw an event */
	json_object *moved;    /* directories renamed into or out of a path */
	bool overflow;
	/* vy_manifest_watch_index(): the shape of the scan that follows the
	 * watch, worked out before the freeze */
	const struct vy_entry *indexed;  /* that scan's entries, to know it */
	uint32_t nindexed;
	uint32_t *start, *len;   /* each directory's block of children */
	uint8_t *blink;          /* entries in hard-link groups */
};

static int watch_dir(struct vy_scan_watch *w, const char *rel, vy_error *err)
{
	char abs[2 * VY_PATH_MAX + 2];
	snprintf(abs, sizeof(abs), "%s%s%s", w->root, *rel ? "/" : "", rel);
	int wd = inotify_add_watch(w->fd, abs, WATCH_MASK);
	if (wd < 0)
		return vy_error_sys(err, errno, "inotify_add_watch '%s'%s", rel,
				    errno == ENOSPC ? " (fs.inotify.max_user_watches)" : "");
	if (wd >= w->npaths) {
		int n = wd * 2 + 64;
		char **more = realloc(w->paths, (size_t)n * sizeof(*more));
		if (!more)
			return vy_error_sys(err, ENOMEM, "watch");
		memset(more + w->npaths, 0, (size_t)(n - w->npaths) * sizeof(*more));
		w->paths = more;
		w->npaths = n;
	}
	free(w->paths[wd]);
	w->paths[wd] = strdup(rel);
	json_object_object_add(w->watched, rel, NULL);
	return w->paths[wd] ? 0 : vy_error_sys(err, ENOMEM, "watch");
}

void vy_manifest_watch_free(struct vy_scan_watch *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	for (int i = 0; i < w->npaths; i++)
		free(w->paths[i]);
	free(w->paths);
	json_object_put(w->watched);
	json_object_put(w->dirty);
	json_object_put(w->moved);
	free(w->start);
	free(w->len);
	free(w->blink);
	free(w);
}

int vy_manifest_watch(const char *root, struct vy_scan_watch **out, vy_error *err)
{
	struct vy_scan_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return vy_error_sys(err, ENOMEM, "watch");
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	w->watched = json_object_new_object();
	w->dirty = json_object_new_object();
	w->moved = json_object_new_object();
	snprintf(w->root, sizeof(w->root), "%s", root);
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	int rc = w->fd < 0 ? vy_error_sys(err, errno, "inotify_init1") : 0;
	if (rc == 0 && (rootfd < 0 || fstat(rootfd, &st) < 0))
		rc = vy_error_sys(err, errno, "watch '%s'", root);
	/* Breadth-first over directories only (d_type saves a stat per file). */
	size_t cap = 64, n = 0;
	char **queue = rc == 0 ? malloc(cap * sizeof(*queue)) : NULL;
	if (rc == 0 && (!queue || !(queue[n++] = strdup(""))))
		rc = vy_error_sys(err, ENOMEM, "watch");
	for (size_t q = 0; rc == 0 && q < n; q++) {
		const char *rel = queue[q];
		int fd = *rel ? open_beneath(rootfd, rel, O_RDONLY | O_DIRECTORY)
			      : openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct stat ds;
		if (fd < 0 || fstat(fd, &ds) < 0 || ds.st_dev != st.st_dev) {
			if (fd >= 0)
				close(fd);
			continue; /* gone, or a mount point: the scan does not enter it */
		}
		rc = watch_dir(w, rel, err);
		DIR *d = rc == 0 ? fdopendir(fd) : NULL;
		if (!d) {
			close(fd);
			continue;
		}
		struct dirent *de;
		while (rc == 0 && (de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			bool dir = de->d_type == DT_DIR;
			if (de->d_type == DT_UNKNOWN) {
				struct stat cs;
				dir = fstatat(dirfd(d), de->d_name, &cs, AT_SYMLINK_NOFOLLOW) == 0 &&
				      S_ISDIR(cs.st_mode);
			}
			if (!dir)
				continue;
			if (n == cap) {
				char **more = realloc(queue, (cap *= 2) * sizeof(*queue));
				if (!more) {
					rc = vy_error_sys(err, ENOMEM, "watch");
					break;
				}
				queue = more;
			}
			size_t len = strlen(rel) + 1 + strlen(de->d_name) + 1;
			if (len > VY_PATH_MAX || !(queue[n] = malloc(len))) {
				rc = vy_error_set(err, ENAMETOOLONG, "watch: path too long");
				break;
			}
			snprintf(queue[n++], len, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		}
		closedir(d);
	}
	for (size_t i = 0; queue && i < n; i++)
		free(queue[i]);
	free(queue);
	if (rc < 0) {
		vy_manifest_watch_free(w);
		return -1;
	}
	*out = w;
	return 0;
}

void vy_manifest_watch_mark(struct vy_scan_watch *w, const char *dir)
{
	if (w)
		json_object_object_add(w->dirty, dir, NULL);
}

int vy_inode_set_add(struct vy_inode_set *s, uint64_t dev, uint64_t ino, vy_error *err)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct vy_inode_id *ids = realloc(s->ids, cap * sizeof(*ids));
		if (!ids)
			return vy_error_set(err, ENOMEM, "out of memory");
		s->ids = ids;
		s->cap = cap;
	}
	s->ids[s->n++] = (struct vy_inode_id){ dev, ino };
	return 0;
}

static int by_inode(const void *a, const void *b)
{
	const struct vy_inode_id *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

void vy_inode_set_sort(struct vy_inode_set *s)
{
	if (s->n < 2)
		return;
	qsort(s->ids, s->n, sizeof(*s->ids), by_inode);
	size_t w = 1;
	for (size_t i = 1; i < s->n; i++)
		if (by_inode(&s->ids[i], &s->ids[w - 1]))
			s->ids[w++] = s->ids[i];
	s->n = w;
}

bool vy_inode_set_has(const struct vy_inode_set *s, uint64_t dev, uint64_t ino)
{
	struct vy_inode_id key = { dev, ino };
	return s && s->n && bsearch(&key, s->ids, s->n, sizeof(*s->ids), by_inode);
}

void vy_inode_set_free(struct vy_inode_set *s)
{
	free(s->ids);
	*s = (struct vy_inode_set){ 0 };
}

/* One thread's share of vy_manifest_watch_verify(): entries [from, to). */
struct verify_part {
	struct vy_manifest *old;
	const struct vy_inode_set *voids;
	int rootfd;
	uint32_t from, to;
	uint32_t *hits; /* entries that mark */
	uint32_t nhits;
};

static void *verify_range(void *arg)
{
	struct verify_part *v = arg;
	/* entries of one directory come together (scan order): one fd each */
	char parent[VY_PATH_MAX + 1] = "";
	int pfd = -1;
	bool parent_gone = false;
	for (uint32_t i = v->from; i < v->to; i++) {
		struct vy_entry *e = &v->old->entries[i];
		const char *slash = strrchr(e->path, '/');
		size_t plen = slash ? (size_t)(slash - e->path) : 0;
		struct stat st;
		int rc;
		if (!*e->path) {
			rc = fstat(v->rootfd, &st);
		} else {
			if (pfd < 0 || strlen(parent) != plen || memcmp(parent, e->path, plen)) {
				if (pfd >= 0)
					close(pfd);
				snprintf(parent, sizeof(parent), "%.*s", (int)plen, e->path);
				pfd = *parent ? open_beneath(v->rootfd, parent, O_PATH | O_DIRECTORY)
					      : openat(v->rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
				parent_gone = pfd < 0;
			}
			if (parent_gone) /* its removal was an event of the parent's parent */
				continue;
			rc = fstatat(pfd, slash ? slash + 1 : e->path, &st, AT_SYMLINK_NOFOLLOW);
		}
		/* each thread writes only the entries of its own range */
		if (rc == 0 && S_ISREG(st.st_mode) && e->type == VY_ENTRY_REG &&
		    vy_inode_set_has(v->voids, st.st_dev, st.st_ino))
			e->mtime_ns = INT64_MIN;
		if (rc == 0 && scan_type(st.st_mode) == (int)e->type &&
		    st.st_ctim.tv_sec * 1000000000ll + st.st_ctim.tv_nsec == e->ctime_ns &&
		    e->mtime_ns != INT64_MIN)
			continue;
		v->hits[v->nhits++] = i;
	}
	if (pfd >= 0)
		close(pfd);
	return NULL;
}

#define VERIFY_THREADS 4
#define VERIFY_PER_THREAD 8192 /* fewer entries than this: fewer threads */

int vy_manifest_watch_verify(struct vy_scan_watch *w, const char *root, struct vy_manifest *old,
			     const struct vy_inode_set *voids, uint32_t *marked, vy_error *err)
{
	*marked = 0;
	if ((!w && (!voids || !voids->n)) || !old->count)
		return 0;
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rootfd < 0)
		return vy_error_sys(err, errno, "verify '%s'", root);
	cleanup_free uint32_t *hits = malloc((size_t)old->count * sizeof(*hits));
	if (!hits)
		return vy_error_sys(err, ENOMEM, "verify");
	/* The container is frozen: its CPUs are ours.  Each thread takes a
	 * contiguous share of the entries. */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t n = old->count / VERIFY_PER_THREAD + 1;
	if (n > VERIFY_THREADS)
		n = VERIFY_THREADS;
	if (cpus > 0 && n > (uint32_t)cpus)
		n = (uint32_t)cpus;
	struct verify_part parts[VERIFY_THREADS];
	pthread_t tids[VERIFY_THREADS];
	bool started[VERIFY_THREADS] = { false };
	for (uint32_t t = 0; t < n; t++) {
		uint64_t from = (uint64_t)old->count * t / n, to = (uint64_t)old->count * (t + 1) / n;
		parts[t] = (struct verify_part){ .old = old, .voids = voids, .rootfd = rootfd,
						 .from = (uint32_t)from, .to = (uint32_t)to,
						 .hits = hits + from };
		started[t] = t > 0 && pthread_create(&tids[t], NULL, verify_range, &parts[t]) == 0;
	}
	for (uint32_t t = 0; t < n; t++)
		if (!started[t])
			verify_range(&parts[t]);
	for (uint32_t t = 1; t < n; t++)
		if (started[t])
			pthread_join(tids[t], NULL);
	for (uint32_t t = 0; t < n; t++) {
		for (uint32_t k = 0; k < parts[t].nhits; k++) {
			const struct vy_entry *e = &old->entries[parts[t].hits[k]];
			const char *slash = strrchr(e->path, '/');
			char dir[VY_PATH_MAX + 1];
			snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - e->path) : 0, e->path);
			vy_manifest_watch_mark(w, dir);
			if (e->type == VY_ENTRY_DIR)
				vy_manifest_watch_mark(w, e->path);
		}
		*marked += parts[t].nhits;
	}
	return 0;
}

/* Read the queued events into the dirty set. */
static void drain_events(struct vy_scan_watch *w)
{
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof(buf));
		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (ev->mask & IN_Q_OVERFLOW)
				w->overflow = true;
			else if (ev->wd >= 0 && ev->wd < w->npaths && w->paths[ev->wd] &&
				 !(ev->mask & IN_IGNORED)) {
				json_object_object_add(w->dirty, w->paths[ev->wd], NULL);
				/* watches follow inodes: below a path a directory was
				 * renamed to or from, no watch path can be trusted */
				if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_MOVED_FROM | IN_MOVED_TO)) &&
				    ev->len) {
					const char *dp = w->paths[ev->wd];
					size_t l = strlen(dp) + 1 + strlen(ev->name) + 1;
					char *q = malloc(l);
					if (q) {
						snprintf(q, l, "%s%s%s", dp, *dp ? "/" : "", ev->name);
						json_object_object_add(w->moved, q, NULL);
						free(q);
					} else {
						w->overflow = true;
					}
				}
			}
			p += sizeof(*ev) + ev->len;
		}
	}
}

int manifest_copy_entry(struct vy_manifest *m, const struct vy_entry *src, vy_error *err)
{
	struct vy_entry *e = manifest_add(m, err);
	if (!e)
		return -1;
	*e = *src;
	e->path = strdup(src->path);
	e->target = src->target ? strdup(src->target) : NULL;
	e->xattrs = src->nxattr ? calloc(src->nxattr, sizeof(*e->xattrs)) : NULL;
	bool ok = e->path && (!src->target || e->target) && (!src->nxattr || e->xattrs);
	for (uint16_t i = 0; ok && i < src->nxattr; i++) {
		e->xattrs[i].len = src->xattrs[i].len;
		e->xattrs[i].name = strdup(src->xattrs[i].name);
		e->xattrs[i].value = malloc(src->xattrs[i].len ? src->xattrs[i].len : 1);
		ok = e->xattrs[i].name && e->xattrs[i].value;
		if (ok)
			memcpy(e->xattrs[i].value, src->xattrs[i].value, src->xattrs[i].len);
	}
	if (!ok) {
		e->nxattr = 0; /* the partly made copy is freed with m */
		return vy_error_sys(err, ENOMEM, "copy entry");
	}
	return 0;
}

/* path, or a directory above it, had a directory renamed to or from it. */
static bool under_moved(struct vy_scan_watch *w, const char *path)
{
	if (!json_object_object_length(w->moved))
		return false;
	char buf[VY_PATH_MAX + 1];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + strlen(buf);;) {
		if (json_object_object_get_ex(w->moved, buf, NULL))
			return true;
		while (p > buf && *p != '/')
			p--;
		if (p == buf)
			return false;
		*p = '\0';
	}
}

static bool is_child_of(const char *path, const char *dir)
{
	size_t dl = strlen(dir);
	const char *slash = strrchr(path, '/');
	size_t pl = slash ? (size_t)(slash - path) : 0;
	return *path && pl == dl && !memcmp(path, dir, dl);
}

/* Re-read one entry (a directory whose own metadata changed) into m. */
static int rescan_one(struct scan *s, const char *path, vy_error *err)
{
	struct stat st;
	if (!*path) {
		char *p = strdup("");
		if (!p || fstat(s->rootfd, &st) < 0) {
			free(p);
			return vy_error_sys(err, p ? errno : ENOMEM, "rescan the root");
		}
		return scan_entry(s, p, s->rootfd, "", &st, err);
	}
	const char *slash = strrchr(path, '/');
	char *dir = strndup(path, slash ? (size_t)(slash - path) : 0);
	const char *name = slash ? slash + 1 : path;
	if (!dir)
		return vy_error_sys(err, ENOMEM, "rescan");
	int fd = *dir ? open_beneath(s->rootfd, dir, O_RDONLY | O_DIRECTORY)
		      : openat(s->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	int rc = fd < 0 || fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0
		 ? vy_error_sys(err, errno, "'%s': rescan", path) : 0;
	char *p = rc == 0 ? strdup(path) : NULL;
	if (rc == 0)
		rc = p ? scan_entry(s, p, fd, name, &st, err) : vy_error_sys(err, ENOMEM, "rescan");
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The index of the first name of path's inode seen so far, or -1. */
static int64_t find_link(struct scan *s, const char *path)
{
	struct stat st;
	int fd = open_beneath(s->rootfd, path, O_PATH);
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	if (!s->links.size)
		return -1;
	struct inode_slot *slot = inode_index_slot(s->links.slots, s->links.size, st.st_dev,
						   st.st_ino);
	return slot->index ? (int64_t)slot->index - 1 : -1;
}

/* A hard link's first name, copied: its inode goes in the index so that a
 * name of it read again links to it. */
static int register_link(struct scan *s, const char *path, uint32_t at, vy_error *err)
{
	struct stat st;
	int fd = open_beneath(s->rootfd, path, O_PATH);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return vy_error_sys(err, e, "'%s': stat", path);
	}
	close(fd);
	if ((s->links.used + 1) * 2 > s->links.size && inode_index_grow(&s->links) < 0)
		return vy_error_sys(err, ENOMEM, "hard links");
	struct inode_slot *slot = inode_index_slot(s->links.slots, s->links.size, st.st_dev,
						   st.st_ino);
	if (!slot->index) {
		*slot = (struct inode_slot){ st.st_dev, st.st_ino, at + 1 };
		s->links.used++;
	}
	return 0;
}

/* The entry of old directory od's block (sorted by name) at path, or -1. */
static int64_t old_child(const struct vy_manifest *old, uint32_t b0, uint32_t n,
			 const char *path)
{
	const char *name = strrchr(path, '/');
	name = name ? name + 1 : path;
	uint32_t lo = b0, hi = b0 + n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const char *on = strrchr(old->entries[mid].path, '/');
		on = on ? on + 1 : old->entries[mid].path;
		int c = strcmp(on, name);
		if (c == 0)
			return mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Each directory's block of children (breadth-first, so contiguous) and
 * hard-link membership, for old. */
static int index_blocks(const struct vy_manifest *old, uint32_t **startp, uint32_t **lenp,
			uint8_t **blinkp)
{
	uint32_t n = old->count;
	uint32_t *start = calloc(n ? n : 1, sizeof(uint32_t));
	uint32_t *len = calloc(n ? n : 1, sizeof(uint32_t));
	uint8_t *blink = calloc(n ? n : 1, 1);
	if (!start || !len || !blink) {
		free(start);
		free(len);
		free(blink);
		return -1;
	}
	for (uint32_t i = 0, p = 1; i < n; i++) {
		uint32_t f = old->entries[i].link_of;
		if (f != VY_NO_LINK) {
			blink[i] = 1;
			if (f < n)
				blink[f] = 1;
		}
		if (old->entries[i].type != VY_ENTRY_DIR)
			continue;
		start[i] = p;
		while (p < n && is_child_of(old->entries[p].path, old->entries[i].path))
			p++;
		len[i] = p - start[i];
	}
	*startp = start;
	*lenp = len;
	*blinkp = blink;
	return 0;
}

/* Build out from old, reading again only the directories that saw events
 * (and those created since): 1 when done, 0 when a full scan is needed
 * instead (a hard link among the changes, an event queue overflow). */
static int rescan_changed(struct vy_scan_watch *w, const struct vy_manifest *old,
			  struct scan *s, uint32_t *dirs_read, vy_error *err)
{
	struct vy_manifest *m = s->m;
	uint32_t n = old->count;
	cleanup_free uint32_t *start = NULL, *len = NULL;
	cleanup_free uint8_t *linked = NULL;
	cleanup_free int64_t *newidx = malloc((n ? n : 1) * sizeof(int64_t));
	cleanup_free int64_t *oldof = NULL; /* for out's entries: old index, or -1 */
	cleanup_free uint8_t *first_name = calloc(n ? n : 1, 1); /* of a hard-link group */
	size_t oldof_cap = (size_t)n + 64;
	oldof = malloc(oldof_cap * sizeof(int64_t));
	if (!newidx || !oldof || !first_name || index_blocks(old, &start, &len, &linked) < 0)
		return vy_error_sys(err, ENOMEM, "rescan");
	for (uint32_t i = 0; i < n; i++)
		if (old->entries[i].link_of != VY_NO_LINK && old->entries[i].link_of < n)
			first_name[old->entries[i].link_of] = 1;
	if (!n || old->entries[0].type != VY_ENTRY_DIR || *old->entries[0].path)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		newidx[i] = -1;
	bool root_dirty = json_object_object_get_ex(w->dirty, "", NULL);
	int rc = root_dirty ? rescan_one(s, "", err) : manifest_copy_entry(m, &old->entries[0], err);
	oldof[0] = 0;
	newidx[0] = 0;
	for (uint32_t i = 0; rc == 0 && i < m->count; i++) {
		if (m->entries[i].type != VY_ENTRY_DIR)
			continue;
		int64_t od = oldof[i];
		const char *path = m->entries[i].path;
		bool dirty = od < 0 || json_object_object_get_ex(w->dirty, path, NULL) ||
			     under_moved(w, path) ||
			     !json_object_object_get_ex(w->watched, path, NULL);
		uint32_t first = m->count;
		if (dirty) {
			(*dirs_read)++;
			rc = scan_directory(s, i, err);
			/* A file read again that heads a hard-link group, and did
			 * not head it before: its other names may sit in
			 * directories copied as they were, which do not link to
			 * it; checked once all is read (below). */
			for (uint32_t k = first; rc == 0 && k < m->count; k++) {
				if (k >= s->multi_cap || !s->multi[k])
					continue;
				int64_t c = od < 0 ? -1 : old_child(old, start[od], len[od],
								    m->entries[k].path);
				if (c >= 0 && first_name[c])
					s->multi[k] = 0;
			}
		} else {
			for (uint32_t c = start[od]; rc == 0 && c < start[od] + len[od]; c++) {
				const struct vy_entry *oe = &old->entries[c];
				bool redo = oe->type == VY_ENTRY_DIR &&
					    json_object_object_get_ex(w->dirty, oe->path, NULL);
				uint32_t at = m->count;
				rc = redo ? rescan_one(s, oe->path, err) : manifest_copy_entry(m, oe, err);
				if (rc < 0)
					break;
				if (!redo && oe->link_of != VY_NO_LINK) {
					/* Link to whatever now holds its inode first. */
					int64_t first = find_link(s, oe->path);
					if (first < 0 || first >= at)
						return 0;
					m->entries[at].link_of = (uint32_t)first;
					m->entries[at].size = m->entries[first].size;
				}
				if (m->entries[at].type != oe->type)
					return 0;
				newidx[c] = at;
				/* Names of its inode read again later must find it. */
				if (!redo && first_name[c] && register_link(s, oe->path, at, err) < 0)
					return -1;
			}
		}
		if (rc < 0)
			break;
		/* Where each new child came from, for the directories among them. */
		for (uint32_t k = first; k < m->count; k++) {
			if (k >= oldof_cap) {
				oldof_cap = oldof_cap * 2 + m->count;
				int64_t *more = realloc(oldof, oldof_cap * sizeof(int64_t));
				if (!more)
					return vy_error_sys(err, ENOMEM, "rescan");
				oldof = more;
			}
			oldof[k] = -1;
			if (od < 0 || m->entries[k].type != VY_ENTRY_DIR)
				continue;
			/* the old block is sorted by name, as scan_directory sorts */
			const char *name = strrchr(m->entries[k].path, '/');
			name = name ? name + 1 : m->entries[k].path;
			uint32_t lo = start[od], hi = start[od] + len[od];
			while (lo < hi) {
				uint32_t mid = lo + (hi - lo) / 2;
				const char *on = strrchr(old->entries[mid].path, '/');
				on = on ? on + 1 : old->entries[mid].path;
				int c = strcmp(on, name);
				if (c == 0) {
					lo = mid;
					break;
				}
				if (c < 0)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo < start[od] + len[od] && old->entries[lo].type == VY_ENTRY_DIR &&
			    !strcmp(old->entries[lo].path, m->entries[k].path))
				oldof[k] = lo;
		}
	}
	if (rc < 0)
		return -1;
	/* A new group is whole when every name of its inode was found here
	 * (else some may be copied entries that do not link to it, or lie
	 * outside the tree: a full scan tells). */
	cleanup_free uint32_t *names = calloc(m->count ? m->count : 1, sizeof(uint32_t));
	if (!names)
		return vy_error_sys(err, ENOMEM, "rescan");
	for (uint32_t i = 0; i < m->count; i++)
		if (m->entries[i].link_of != VY_NO_LINK && m->entries[i].link_of < m->count)
			names[m->entries[i].link_of]++;
	for (uint32_t k = 0; k < m->count && k < s->multi_cap; k++)
		if (s->multi[k] && names[k] + 1 != s->multi[k])
			return 0;
	m->data_bytes = 0;
	for (uint32_t i = 0; i < m->count; i++)
		if (m->entries[i].type == VY_ENTRY_REG && m->entries[i].link_of == VY_NO_LINK)
			m->data_bytes += m->entries[i].size;
	return 1;
}

int vy_manifest_rescan(struct vy_scan_watch *w, const char *root, const struct vy_manifest *old,
		       struct vy_manifest *out, int64_t *dirs_read, vy_error *err)
{
	*dirs_read = -1;
	if (!w || !old->count)
		return vy_manifest_scan(root, out, err);
	drain_events(w);
	if (w->overflow)
		return vy_manifest_scan(root, out, err);
	memset(out, 0, sizeof(*out));
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (rootfd < 0 || fstat(rootfd, &st) < 0)
		return vy_error_sys(err, errno, "rescan '%s'", root);
	struct scan s = { .m = out, .rootfd = rootfd, .dev = st.st_dev, .mark_first = true };
	uint32_t read = 0;
	int rc = rescan_changed(w, old, &s, &read, err);
	free(s.links.slots);
	free(s.multi);
	if (rc == 1) {
		*dirs_read = read;
		return 0;
	}
	vy_manifest_free(out);
	if (rc < 0)
		return vy_error_wrap(err, "rescan '%s'", root);
	return vy_manifest_scan(root, out, err);
}

/* ---- the change since an earlier scan, as a delta ---- */

struct rdelta {
	struct vy_scan_watch *w;
	const struct vy_manifest *old;
	struct vy_manifest_delta *d;
	uint32_t *start, *len;   /* each old directory's block of children */
	uint8_t *blink;          /* old entries in hard-link groups */
	uint32_t gone_cap;
	int rootfd;
	dev_t dev;
	uint32_t dirs_read;
};

static bool has_multi(const struct scan *s, uint32_t i)
{
	return i < s->multi_cap && s->multi[i];
}

/* Move e into the delta's put list (e is left empty). */
static int delta_take(struct rdelta *r, struct vy_entry *e, uint32_t at, vy_error *err)
{
	struct vy_manifest_delta *d = r->d;
	uint32_t cap = d->put.cap;
	struct vy_entry *slot = manifest_add(&d->put, err);
	if (!slot)
		return -1;
	if (d->put.cap != cap || !d->at) {
		uint32_t *more = realloc(d->at, d->put.cap * sizeof(*more));
		if (!more) {
			d->put.count--;
			return vy_error_sys(err, ENOMEM, "rescan");
		}
		d->at = more;
	}
	*slot = *e;
	memset(e, 0, sizeof(*e));
	e->link_of = VY_NO_LINK;
	slot->link_of = VY_NO_LINK;
	d->at[d->put.count - 1] = at;
	return 0;
}

/* Old entry c and, for a directory, everything below it: gone.  0 when
 * that touches a hard link (no delta), 1 when done. */
static int delta_gone(struct rdelta *r, uint32_t c, vy_error *err)
{
	if (r->blink[c])
		return 0;
	struct vy_manifest_delta *d = r->d;
	if (d->ngone == r->gone_cap) {
		r->gone_cap = r->gone_cap * 2 + 256;
		uint32_t *more = realloc(d->gone, r->gone_cap * sizeof(*more));
		if (!more)
			return vy_error_sys(err, ENOMEM, "rescan");
		d->gone = more;
	}
	d->gone[d->ngone++] = c;
	if (r->old->entries[c].type != VY_ENTRY_DIR)
		return 1;
	for (uint32_t k = r->start[c]; k < r->start[c] + r->len[c]; k++) {
		int rc = delta_gone(r, k, err);
		if (rc <= 0)
			return rc;
	}
	return 1;
}

/* A new entry (in s, index i) and, for a directory, everything below it,
 * scanned now.  0 when it has a second name (it may link to a file the
 * base knows: no delta), 1 when done. */
static int delta_new(struct rdelta *r, struct scan *s, uint32_t i, vy_error *err)
{
	if (has_multi(s, i))
		return 0;
	if (s->m->entries[i].type != VY_ENTRY_DIR)
		return delta_take(r, &s->m->entries[i], VY_DELTA_NEW, err) < 0 ? -1 : 1;
	struct vy_manifest sub = { 0 };
	struct scan t = { .m = &sub, .rootfd = r->rootfd, .dev = r->dev, .mark_multi = true };
	int rc = manifest_copy_entry(&sub, &s->m->entries[i], err) < 0 ? -1 : 1;
	for (uint32_t k = 0; rc == 1 && k < sub.count; k++)
		if (sub.entries[k].type == VY_ENTRY_DIR && scan_directory(&t, k, err) < 0)
			rc = -1;
	for (uint32_t k = 0; rc == 1 && k < sub.count; k++) {
		if (has_multi(&t, k))
			rc = 0;
		else if (delta_take(r, &sub.entries[k], VY_DELTA_NEW, err) < 0)
			rc = -1;
	}
	r->dirs_read++;
	free(t.multi);
	vy_manifest_free(&sub);
	return rc;
}

/* An entry read again (s, index i) against old entry c at the same path. */
static int delta_compare(struct rdelta *r, struct scan *s, uint32_t i, uint32_t c,
			 vy_error *err)
{
	struct vy_entry *e = &s->m->entries[i];
	const struct vy_entry *o = &r->old->entries[c];
	if (!manifest_same_shape(o, e)) {
		int rc = delta_gone(r, c, err);
		return rc <= 0 ? rc : delta_new(r, s, i, err);
	}
	/* as vy_manifest_diff: a linked file's access time is left out */
	if (r->blink[c] ? manifest_same_meta_but_atime(o, e) : manifest_same_meta(o, e))
		return 1;
	if (r->blink[c])
		return 0;
	return delta_take(r, e, c, err) < 0 ? -1 : 1;
}

static bool dirty(struct rdelta *r, const char *path)
{
	return json_object_object_get_ex(r->w->dirty, path, NULL) || under_moved(r->w, path) ||
	       !json_object_object_get_ex(r->w->watched, path, NULL);
}

/* Old directory od, which is still a directory: its children. */
static int delta_dir(struct rdelta *r, uint32_t od, vy_error *err)
{
	const struct vy_manifest *old = r->old;
	uint32_t b0 = r->start[od], b1 = r->start[od] + r->len[od];
	struct vy_manifest tmp = { 0 };
	struct scan s = { .m = &tmp, .rootfd = r->rootfd, .dev = r->dev, .mark_multi = true };
	int rc = 1;
	if (!dirty(r, old->entries[od].path)) {
		/* Same names as before; a directory among them may have
		 * changed itself (its own events name it), and is visited. */
		for (uint32_t c = b0; rc == 1 && c < b1; c++) {
			if (old->entries[c].type != VY_ENTRY_DIR)
				continue;
			bool still_dir = true;
			if (json_object_object_get_ex(r->w->dirty, old->entries[c].path, NULL)) {
				vy_manifest_free(&tmp);
				rc = rescan_one(&s, old->entries[c].path, err) < 0 ? -1 : 1;
				still_dir = rc == 1 && tmp.entries[0].type == VY_ENTRY_DIR;
				if (rc == 1)
					rc = delta_compare(r, &s, 0, c, err);
			}
			if (rc == 1 && still_dir)
				rc = delta_dir(r, c, err);
			vy_manifest_free(&tmp);
		}
		free(s.multi);
		return rc;
	}
	r->dirs_read++;
	if (manifest_copy_entry(&tmp, &old->entries[od], err) < 0 ||
	    scan_directory(&s, 0, err) < 0)
		rc = -1;
	/* Both blocks are sorted by name, and share the parent's prefix. */
	uint32_t c = b0, i = 1;
	while (rc == 1 && (c < b1 || i < tmp.count)) {
		int cmp = c >= b1 ? 1 : i >= tmp.count ? -1
			  : strcmp(old->entries[c].path, tmp.entries[i].path);
		if (cmp < 0) {
			rc = delta_gone(r, c++, err);
		} else if (cmp > 0) {
			rc = delta_new(r, &s, i++, err);
		} else {
			bool was_dir = old->entries[c].type == VY_ENTRY_DIR &&
				       tmp.entries[i].type == VY_ENTRY_DIR;
			rc = delta_compare(r, &s, i, c, err);
			if (rc == 1 && was_dir)
				rc = delta_dir(r, c, err);
			c++;
			i++;
		}
	}
	free(s.multi);
	vy_manifest_free(&tmp);
	return rc;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int vy_manifest_watch_index(struct vy_scan_watch *w, const struct vy_manifest *old,
			    vy_error *err)
{
	free(w->start);
	free(w->len);
	free(w->blink);
	w->start = w->len = NULL;
	w->blink = NULL;
	w->indexed = NULL;
	if (index_blocks(old, &w->start, &w->len, &w->blink) < 0)
		return vy_error_sys(err, ENOMEM, "index a manifest");
	w->indexed = old->entries;
	w->nindexed = old->count;
	return 0;
}

int vy_manifest_rescan_delta(struct vy_scan_watch *w, const char *root,
			     const struct vy_manifest *old, struct vy_manifest_delta *d,
			     uint32_t *dirs_read, vy_error *err)
{
	memset(d, 0, sizeof(*d));
	*dirs_read = 0;
	uint32_t n = old->count;
	if (!w || !n || old->entries[0].type != VY_ENTRY_DIR || *old->entries[0].path)
		return 0;
	drain_events(w);
	if (w->overflow)
		return 0;
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (rootfd < 0 || fstat(rootfd, &st) < 0)
		return vy_error_sys(err, errno, "rescan '%s'", root);
	cleanup_free uint32_t *own_start = NULL, *own_len = NULL;
	cleanup_free uint8_t *own_blink = NULL;
	uint32_t *start = w->start, *len = w->len;
	uint8_t *blink = w->blink;
	if (w->indexed != old->entries || w->nindexed != n) {
		if (index_blocks(old, &own_start, &own_len, &own_blink) < 0)
			return vy_error_sys(err, ENOMEM, "rescan");
		start = own_start;
		len = own_len;
		blink = own_blink;
	}
	struct rdelta r = { .w = w, .old = old, .d = d, .start = start, .len = len,
			    .blink = blink, .rootfd = rootfd, .dev = st.st_dev };
	d->base_count = n;
	struct vy_manifest tmp = { 0 };
	struct scan s = { .m = &tmp, .rootfd = rootfd, .dev = st.st_dev, .mark_multi = true };
	int rc = 1;
	if (json_object_object_get_ex(w->dirty, "", NULL))
		rc = rescan_one(&s, "", err) < 0 ? -1 : delta_compare(&r, &s, 0, 0, err);
	free(s.multi);
	vy_manifest_free(&tmp);
	if (rc == 1)
		rc = delta_dir(&r, 0, err);
	if (rc == 1 && d->ngone > 1)
		qsort(d->gone, d->ngone, sizeof(*d->gone), cmp_u32);
	*dirs_read = r.dirs_read;
	if (rc != 1)
		vy_manifest_delta_free(d);
	return rc < 0 ? vy_error_wrap(err, "rescan '%s'", root) : rc;
}
