/* inode.c - voyager-fs's inode table.
 *
 * A FUSE node id is the address of a struct vyfs_inode, which holds an
 * O_PATH fd on the backing object; the root is FUSE_ROOT_ID.  Inodes are
 * found by the backing (dev, ino) so that two names of one file share one
 * node, and they live until the kernel forgets every lookup.  Holding
 * O_PATH fds (not paths) keeps every operation beneath the backing tree and
 * correct across renames.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	pthread_mutex_init(&r->open_lock, NULL);
	return 0;
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

static struct vyfs_inode *new_inode(struct vyfs *fs, int fd,
				    const struct stat *st)
{
	struct vyfs_inode *in = calloc(1, sizeof(*in));
	if (!in)
		return NULL;
	in->fd = fd;
	in->dev = st->st_dev;
	in->ino = st->st_ino;
	in->type = st->st_mode & S_IFMT;
	in->backing_fd = -1;
	in->track = S_ISREG(st->st_mode) ? vy_chunkmap_find_ino(fs->cm, st->st_ino) : -1;
	pthread_mutex_init(&in->open_lock, NULL);
	return in;
}

int vyfs_lookup_entry(struct vyfs *fs, struct vyfs_inode *parent,
		      const char *name, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	int fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
		/* Said once a minute, not once per lookup. */
		static _Atomic uint64_t last;
		uint64_t now = vy_now_ms();
		if (now - atomic_load(&last) > 60000) {
			atomic_store(&last, now);
			vy_err("out of file descriptors: voyager-fs holds one per inode the kernel "
			       "has cached, and lookups fail (EMFILE) until the kernel forgets some; "
			       "raise the open-file limit (RLIMIT_NOFILE) of voyager-fs");
		}
		atomic_fetch_add(&fs->n.fd_exhausted, 1);
		return -EMFILE;
	}
	if (fd < 0)
		return -errno;
	if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int saved = errno;
		close(fd);
		return -saved;
	}
	pthread_mutex_lock(&fs->table_lock);
	struct vyfs_inode *in = find_locked(fs, e->attr.st_dev, e->attr.st_ino);
	if (in) {
		close(fd);
	} else {
		in = new_inode(fs, fd, &e->attr);
		if (!in) {
			pthread_mutex_unlock(&fs->table_lock);
			close(fd);
			return -ENOMEM;
		}
		size_t b = bucket_of(fs, in->dev, in->ino);
		in->next = fs->buckets[b];
		fs->buckets[b] = in;
	}
	in->nlookup++;
	pthread_mutex_unlock(&fs->table_lock);
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
		close(in->fd);
		pthread_mutex_destroy(&in->open_lock);
		free(in);
	}
	pthread_mutex_unlock(&fs->table_lock);
}

void vyfs_proc_path(const struct vyfs_inode *in, char out[64])
{
	snprintf(out, 64, "/proc/self/fd/%d", in->fd);
}
