/* inode.c - voyager-fs's inode table.
 *
 * A FUSE node id is the address of a struct vyfs_inode, which holds an
 * O_PATH fd on the backing object; the root is FUSE_ROOT_ID.  Inodes are
 * found by the backing (dev, ino) so that two names of one file share one
 * node, and they live until the kernel forgets every lookup.  Holding
 * O_PATH fds (not paths) keeps every operation beneath the backing tree and
 * correct across renames.
 *
 * The kernel may cache more inodes than we may hold descriptors (a find
 * over 50 000 files, under a hard limit of 20 000 that root without
 * CAP_SYS_RESOURCE cannot raise).  So inodes hold an fd only within a
 * budget, directories first (they anchor every *at() call); past it an
 * inode keeps a file handle instead (name_to_handle_at), which is just as
 * correct across renames and costs one open_by_handle_at() per operation.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "log.h"
#include "util.h"
#include "vyfs.h"

int vyfs_table_init(struct vyfs *fs, vy_error *err)
{
	pthread_mutex_init(&fs->table_lock, NULL);
	fs->nbuckets = 1 << 16;
	fs->buckets = calloc(fs->nbuckets, sizeof(*fs->buckets));
	if (!fs->buckets)
		return vy_error_set(err, ENOMEM, "out of memory");
	struct stat st;
	if (fstat(fs->backing_fd, &st) < 0)
		return vy_error_sys(err, errno, "stat the backing root");
	struct vyfs_inode *r = &fs->root;
	r->fd = fs->backing_fd;
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	r->type = S_IFDIR;
	r->nlookup = 2;
	r->track = -1;
	r->backing_fd = -1;
	r->pin_fd = -1;
	pthread_mutex_init(&r->open_lock, NULL);
	/* Leave a quarter of the limit (at least 1024) for open files,
	 * passthrough backing files and the fetch lanes. */
	struct rlimit lim = { .rlim_cur = 1024 };
	getrlimit(RLIMIT_NOFILE, &lim);
	uint64_t spare = lim.rlim_cur / 4 > 1024 ? lim.rlim_cur / 4 : 1024;
	fs->fd_budget = lim.rlim_cur > 2 * spare ? lim.rlim_cur - spare : lim.rlim_cur / 2;
	return 0;
}

/* rc, an -errno; for EMFILE or ENFILE counted (fd_exhausted) and said
 * once a minute. */
static int fd_error(struct vyfs *fs, int rc)
{
	if (rc != -EMFILE && rc != -ENFILE)
		return rc;
	static _Atomic uint64_t last;
	uint64_t now = vy_now_ms();
	if (now - atomic_load(&last) > 60000) {
		atomic_store(&last, now);
		vy_err("out of file descriptors: lookups and other operations fail (EMFILE) "
		       "until some files are closed; raise the open-file limit "
		       "(RLIMIT_NOFILE) of voyager-fs");
	}
	atomic_fetch_add(&fs->n.fd_exhausted, 1);
	return -EMFILE;
}

int vyfs_get_fd(struct vyfs *fs, const struct vyfs_inode *in)
{
	if (!in)
		return -EBADF;
	if (in->fd >= 0)
		return in->fd;
	int fd = open_by_handle_at(fs->backing_dir_fd, in->handle, O_PATH | O_CLOEXEC);
	int e = errno;
	if (fd < 0 && e == ESTALE) {
		/* Unlinked, and still open somewhere. */
		struct vyfs_inode *m = (struct vyfs_inode *)in;
		pthread_mutex_lock(&m->open_lock);
		if (m->pin_fd >= 0 && (fd = fcntl(m->pin_fd, F_DUPFD_CLOEXEC, 0)) < 0)
			e = errno;
		pthread_mutex_unlock(&m->open_lock);
	}
	return fd < 0 ? fd_error(fs, -e) : fd;
}

struct vyfs_ifd vyfs_ifd_get(struct vyfs *fs, const struct vyfs_inode *in)
{
	int fd = vyfs_get_fd(fs, in);
	return (struct vyfs_ifd){ fd, fd >= 0 && in && fd != in->fd };
}

void vyfs_ifd_release(struct vyfs_ifd *h)
{
	if (h->own) {
		int saved = errno;
		close(h->fd);
		errno = saved;
	}
}

struct vyfs_inode *vyfs_inode(struct vyfs *fs, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &fs->root;
	return (struct vyfs_inode *)(uintptr_t)ino;
}

static size_t bucket_of(const struct vyfs *fs, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev;
	return (size_t)(h >> 16) & (fs->nbuckets - 1);
}

/* Caller holds the table lock. */
static struct vyfs_inode *find_locked(struct vyfs *fs, dev_t dev, ino_t ino)
{
	if (fs->root.dev == dev && fs->root.ino == ino)
		return &fs->root;
	for (struct vyfs_inode *in = fs->buckets[bucket_of(fs, dev, ino)]; in; in = in->next)
		if (in->dev == dev && in->ino == ino)
			return in;
	return NULL;
}

struct vyfs_inode *vyfs_find_backing(struct vyfs *fs, dev_t dev, ino_t ino)
{
	pthread_mutex_lock(&fs->table_lock);
	struct vyfs_inode *in = find_locked(fs, dev, ino);
	pthread_mutex_unlock(&fs->table_lock);
	return in;
}

/* Whether a new inode of this type may keep its fd: directories within
 * the whole budget, everything else within half of it. */
static bool may_hold(const struct vyfs *fs, mode_t mode)
{
	uint64_t held = __atomic_load_n(&fs->held_fds, __ATOMIC_RELAXED);
	return held < (S_ISDIR(mode) ? fs->fd_budget : fs->fd_budget / 2);
}

/* With handle (not NULL), the inode keeps it and fd is closed. */
static struct vyfs_inode *new_inode(struct vyfs *fs, int fd, struct file_handle *handle,
				    const struct stat *st)
{
	struct vyfs_inode *in = calloc(1, sizeof(*in));
	if (!in)
		return NULL;
	if (handle) {
		if (fd >= 0)
			close(fd);
		in->fd = -1;
		in->handle = handle;
		atomic_fetch_add(&fs->n.handle_inodes, 1);
	} else {
		in->fd = fd;
		__atomic_fetch_add(&fs->held_fds, 1, __ATOMIC_RELAXED);
	}
	in->dev = st->st_dev;
	in->ino = st->st_ino;
	in->type = st->st_mode & S_IFMT;
	in->backing_fd = -1;
	in->pin_fd = -1;
	in->track = S_ISREG(st->st_mode) ? VYFS_TRACK_UNKNOWN : -1;
	pthread_mutex_init(&in->open_lock, NULL);
	return in;
}

int64_t vyfs_track(struct vyfs *fs, struct vyfs_inode *in)
{
	int64_t t = __atomic_load_n(&in->track, __ATOMIC_ACQUIRE);
	if (t != VYFS_TRACK_UNKNOWN)
		return t;
	int64_t f = vy_chunkmap_find_ino(fs->cm, (uint64_t)in->ino);
	/* Another thread may have found it, or forgotten it (-1), first. */
	if (__atomic_compare_exchange_n(&in->track, &t, f, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE))
		return f;
	return t;
}

/* The known inode for st, with one more lookup reference, or NULL. */
static struct vyfs_inode *take_known(struct vyfs *fs, const struct stat *st)
{
	pthread_mutex_lock(&fs->table_lock);
	struct vyfs_inode *in = find_locked(fs, st->st_dev, st->st_ino);
	if (in)
		in->nlookup++;
	pthread_mutex_unlock(&fs->table_lock);
	return in;
}

static struct file_handle *handle_at(int dirfd, const char *name)
{
	/* Into a buffer of the largest size, then one allocation of the
	 * size it took (ext4: 8 bytes): a cold scan makes one per file. */
	union {
		struct file_handle h;
		unsigned char bytes[sizeof(struct file_handle) + MAX_HANDLE_SZ];
	} buf;
	int mount_id;
	buf.h.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(dirfd, name, &buf.h, &mount_id, 0) < 0)
		return NULL;
	size_t len = sizeof(buf.h) + buf.h.handle_bytes;
	struct file_handle *h = malloc(len);
	if (h)
		memcpy(h, &buf, len);
	return h;
}

/* A new node for name: an O_PATH fd within the budget, else a handle (an
 * fd after all where the backing filesystem has no handles).  The name
 * cannot change between the caller's stat and this: names in a directory
 * change only through us, and the kernel holds the directory's lock
 * shared across a lookup or readdir and exclusively across a change. */
static int make_node(struct vyfs *fs, int dirfd, const char *name, struct stat *st,
		     struct vyfs_inode **out)
{
	int fd = -1;
	struct file_handle *handle = may_hold(fs, st->st_mode) ? NULL : handle_at(dirfd, name);
	if (!handle) {
		fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return fd_error(fs, -errno);
		if (fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
			int saved = errno;
			close(fd);
			return -saved;
		}
	}
	pthread_mutex_lock(&fs->table_lock);
	struct vyfs_inode *in = find_locked(fs, st->st_dev, st->st_ino);
	if (in) {
		if (fd >= 0)
			close(fd);
		free(handle);
	} else {
		in = new_inode(fs, fd, handle, st);
		if (!in) {
			pthread_mutex_unlock(&fs->table_lock);
			if (fd >= 0)
				close(fd);
			free(handle);
			return -ENOMEM;
		}
		size_t b = bucket_of(fs, in->dev, in->ino);
		in->next = fs->buckets[b];
		fs->buckets[b] = in;
	}
	in->nlookup++;
	pthread_mutex_unlock(&fs->table_lock);
	*out = in;
	return 0;
}

int vyfs_lookup_entry(struct vyfs *fs, struct vyfs_inode *parent,
		      const char *name, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	VYFS_IFD(dir, fs, parent);
	if (dir.fd < 0)
		return dir.fd;
	if (fstatat(dir.fd, name, &e->attr, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	/* A node we still hold (a name the kernel forgot, a hard link) costs
	 * that one stat; a new one a handle or an fd. */
	struct vyfs_inode *in = take_known(fs, &e->attr);
	if (!in) {
		int rc = make_node(fs, dir.fd, name, &e->attr, &in);
		if (rc < 0)
			return rc;
	}
	e->ino = in == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)in;
	e->attr_timeout = VYFS_TIMEOUT;
	e->entry_timeout = VYFS_TIMEOUT;
	return 0;
}

void vyfs_forget_one(struct vyfs *fs, fuse_ino_t ino, uint64_t n)
{
	struct vyfs_inode *in = vyfs_inode(fs, ino);
	if (in == &fs->root)
		return;
	pthread_mutex_lock(&fs->table_lock);
	in->nlookup = n > in->nlookup ? 0 : in->nlookup - n;
	if (in->nlookup == 0) {
		struct vyfs_inode **pp = &fs->buckets[bucket_of(fs, in->dev, in->ino)];
		while (*pp && *pp != in)
			pp = &(*pp)->next;
		if (*pp)
			*pp = in->next;
		if (in->fd >= 0) {
			close(in->fd);
			__atomic_fetch_sub(&fs->held_fds, 1, __ATOMIC_RELAXED);
		}
		free(in->handle);
		pthread_mutex_destroy(&in->open_lock);
		free(in);
	}
	pthread_mutex_unlock(&fs->table_lock);
}

void vyfs_proc_path(int fd, char out[64])
{
	snprintf(out, 64, "/proc/self/fd/%d", fd);
}
