/* meta.c - voyager-fs metadata operations.
 *
 * Everything here is answered from the backing tree (the skeleton made from
 * the manifest, plus every change made since) and never touches the
 * network: lookups, attributes, directories, links, renames, xattrs.  The
 * chunk map only cares about two things here: a truncate (data.c does it)
 * and the last name of a tracked file going away, which drops its state.
 * New objects get the caller's uid and gid, since the daemon runs as root.
 * The mount root also answers the status xattr (VYFS_STATUS_XATTR).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "vyfs.h"

#define FS(req) ((struct vyfs *)fuse_req_userdata(req))

static void reply_entry(fuse_req_t req, struct vyfs_inode *parent,
			const char *name)
{
	struct fuse_entry_param e;
	int rc = vyfs_lookup_entry(FS(req), parent, name, &e);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_entry(req, vyfs_inode(FS(req), parent), name);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	vyfs_forget_one(FS(req), ino, n);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		vyfs_forget_one(FS(req), f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	struct vyfs_inode *in = vyfs_inode(FS(req), ino);
	/* An open file answers from its own fd (it may have no name left). */
	if (fi && S_ISREG(in->type)) {
		if (fstat(((struct vyfs_file *)(uintptr_t)fi->fh)->fd, &st) < 0)
			fuse_reply_err(req, errno);
		else
			fuse_reply_attr(req, &st, VYFS_TIMEOUT);
		return;
	}
	VYFS_IFD(h, FS(req), in);
	if (h.fd < 0)
		fuse_reply_err(req, -h.fd);
	else if (fstatat(h.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_attr(req, &st, VYFS_TIMEOUT);
}

static int set_times(struct vyfs_inode *in, int ifd, int fd, const struct stat *attr,
		     int to_set)
{
	struct timespec tv[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		tv[0].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		tv[0] = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		tv[1].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		tv[1] = attr->st_mtim;
	if (fd >= 0)
		return futimens(fd, tv);
	if (S_ISLNK(in->type))
		return utimensat(ifd, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
	char proc[64];
	vyfs_proc_path(ifd, proc);
	return utimensat(AT_FDCWD, proc, tv, 0);
}

static int apply_setattr(struct vyfs *fs, fuse_req_t req, struct vyfs_inode *in,
			 int fd, struct stat *attr, int to_set)
{
	VYFS_IFD(h, fs, in);
	if (h.fd < 0)
		return h.fd;
	char proc[64];
	vyfs_proc_path(h.fd, proc);
	if ((to_set & FUSE_SET_ATTR_MODE) &&
	    (fd >= 0 ? fchmod(fd, attr->st_mode & 07777)
		     : fchmodat(AT_FDCWD, proc, attr->st_mode & 07777, 0)) < 0)
		return -errno;
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if (fchownat(h.fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		int rc = vyfs_truncate(fs, in, fd, attr->st_size);
		if (rc < 0)
			return rc;
		if (!(to_set & FUSE_SET_ATTR_MODE))
			vyfs_kill_suidgid(fs, req, in, fd);
	}
	if ((to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
		       FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) &&
	    set_times(in, h.fd, fd, attr, to_set) < 0)
		return -errno;
	return 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct vyfs_inode *in = vyfs_inode(FS(req), ino);
	int fd = fi ? ((struct vyfs_file *)(uintptr_t)fi->fh)->fd : -1;
	int rc = apply_setattr(FS(req), req, in, fd, attr, to_set);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		op_getattr(req, ino, fi);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	VYFS_IFD(h, FS(req), vyfs_inode(FS(req), ino));
	if (h.fd < 0) {
		fuse_reply_err(req, -h.fd);
		return;
	}
	ssize_t n = readlinkat(h.fd, "", buf, sizeof(buf));
	if (n < 0 || n > PATH_MAX) {
		fuse_reply_err(req, n < 0 ? errno : ENAMETOOLONG);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

/* A new object belongs to whoever asked for it. */
static int give_to_caller(fuse_req_t req, int dirfd, const char *name)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	if (fchownat(dirfd, name, ctx->uid, ctx->gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static void reply_made(fuse_req_t req, struct vyfs_inode *dir, int dfd,
		       const char *name, int made)
{
	if (made < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	int rc = give_to_caller(req, dfd, name);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(req, dir, name);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct vyfs_inode *dir = vyfs_inode(FS(req), parent);
	VYFS_IFD(d, FS(req), dir);
	if (d.fd < 0)
		fuse_reply_err(req, -d.fd);
	else
		reply_made(req, dir, d.fd, name, mknodat(d.fd, name, mode, rdev));
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct vyfs_inode *dir = vyfs_inode(FS(req), parent);
	VYFS_IFD(d, FS(req), dir);
	if (d.fd < 0)
		fuse_reply_err(req, -d.fd);
	else
		reply_made(req, dir, d.fd, name, mkdirat(d.fd, name, mode));
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct vyfs_inode *dir = vyfs_inode(FS(req), parent);
	VYFS_IFD(d, FS(req), dir);
	if (d.fd < 0)
		fuse_reply_err(req, -d.fd);
	else
		reply_made(req, dir, d.fd, name, symlinkat(link, d.fd, name));
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct vyfs_inode *in = vyfs_inode(FS(req), ino);
	struct vyfs_inode *dir = vyfs_inode(FS(req), newparent);
	VYFS_IFD(from, FS(req), in);
	VYFS_IFD(to, FS(req), dir);
	if (from.fd < 0 || to.fd < 0)
		fuse_reply_err(req, from.fd < 0 ? -from.fd : -to.fd);
	else if (linkat(from.fd, "", to.fd, newname, AT_EMPTY_PATH) < 0)
		fuse_reply_err(req, errno);
	else
		reply_entry(req, dir, newname);
}

int64_t vyfs_last_name(struct vyfs *fs, int parent_fd, const char *name)
{
	struct stat st;
	if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(st.st_mode) || st.st_nlink != 1)
		return -1;
	return vy_chunkmap_find_ino(fs->cm, st.st_ino);
}

void vyfs_drop_track(struct vyfs *fs, uint32_t f)
{
	vy_error err;
	struct vyfs_track *t = &fs->tracks[f];
	pthread_mutex_lock(&t->lock);
	if (vy_chunkmap_drop(fs->cm, f, &err) < 0)
		vy_warn("forgetting file %u: %s", f, err.msg);
	if (t->data_fd >= 0)
		close(t->data_fd);
	t->data_fd = -1;
	pthread_mutex_unlock(&t->lock);
}

void vyfs_forget_track(struct vyfs *fs, int64_t f)
{
	if (f < 0)
		return;
	const struct vy_entry *e = &fs->man.entries[vy_chunkmap_entry(fs->cm, (uint32_t)f)];
	vy_debug("last name of %s gone: dropping its chunk state", e->path);
	/* Still open somewhere: its reads may need the source; drop at close. */
	pthread_mutex_lock(&fs->table_lock);
	struct vyfs_inode *in = NULL;
	for (size_t b = 0; b < fs->nbuckets && !in; b++)
		for (struct vyfs_inode *i = fs->buckets[b]; i; i = i->next)
			if (vyfs_track(fs, i) == f) {
				in = i;
				break;
			}
	bool defer = false;
	if (in) {
		pthread_mutex_lock(&in->open_lock);
		defer = in->cached_opens || in->pt_opens;
		in->drop_on_close = defer;
		if (!defer)
			__atomic_store_n(&in->track, -1, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&in->open_lock);
	}
	pthread_mutex_unlock(&fs->table_lock);
	if (!defer)
		vyfs_drop_track(fs, (uint32_t)f);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct vyfs *fs = FS(req);
	struct vyfs_inode *dir = vyfs_inode(fs, parent);
	VYFS_IFD(d, fs, dir);
	if (d.fd < 0) {
		fuse_reply_err(req, -d.fd);
		return;
	}
	int64_t f = vyfs_last_name(fs, d.fd, name);
	if (unlinkat(d.fd, name, 0) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	vyfs_forget_track(fs, f);
	fuse_reply_err(req, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	VYFS_IFD(d, FS(req), vyfs_inode(FS(req), parent));
	if (d.fd < 0)
		fuse_reply_err(req, -d.fd);
	else
		fuse_reply_err(req, unlinkat(d.fd, name, AT_REMOVEDIR) < 0 ? errno : 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned flags)
{
	struct vyfs *fs = FS(req);
	VYFS_IFD(from, fs, vyfs_inode(fs, parent));
	VYFS_IFD(to, fs, vyfs_inode(fs, newparent));
	if (from.fd < 0 || to.fd < 0) {
		fuse_reply_err(req, from.fd < 0 ? -from.fd : -to.fd);
		return;
	}
	int64_t f = (flags & RENAME_EXCHANGE) ? -1 : vyfs_last_name(fs, to.fd, newname);
	/* Renaming a name onto another name of the same file replaces nothing. */
	struct stat a, b;
	if (f >= 0 && fstatat(from.fd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
	    fstatat(to.fd, newname, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino)
		f = -1;
	if (renameat2(from.fd, name, to.fd, newname, flags) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	vyfs_forget_track(fs, f);
	fuse_reply_err(req, 0);
}

/* ---- directories --------------------------------------------------------- */

struct vyfs_dir {
	DIR *dp;
	struct dirent *entry;
	off_t offset;
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vyfs_dir *d = calloc(1, sizeof(*d));
	VYFS_IFD(h, FS(req), vyfs_inode(FS(req), ino));
	if (h.fd < 0)
		errno = -h.fd;
	int fd = d && h.fd >= 0 ? openat(h.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (!d || fd < 0 || !(d->dp = fdopendir(fd))) {
		int e = d ? errno : ENOMEM;
		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, e);
		return;
	}
	fi->fh = (uintptr_t)d;
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* Add d->entry to buf: with its attributes and a lookup reference when
 * plus (READDIRPLUS: a cold `find` + `stat` then costs one request per
 * buffer of entries, not one lookup per name).  The size the entry needs,
 * which is more than room when it did not fit (then nothing was taken). */
static size_t add_entry(fuse_req_t req, struct vyfs_inode *dir, struct vyfs_dir *d,
			bool plus, char *buf, size_t room)
{
	const char *name = d->entry->d_name;
	if (!plus) {
		struct stat st = { .st_ino = d->entry->d_ino,
				   .st_mode = (mode_t)d->entry->d_type << 12 };
		return fuse_add_direntry(req, buf, room, name, &st, d->entry->d_off);
	}
	struct fuse_entry_param e = { .attr = { .st_ino = d->entry->d_ino,
						.st_mode = (mode_t)d->entry->d_type << 12 } };
	/* "." and "..", or an entry gone since readdir: a name with no node
	 * id, which the kernel takes without caching anything. */
	bool dots = !strcmp(name, ".") || !strcmp(name, "..");
	if (!dots && vyfs_lookup_entry(FS(req), dir, name, &e) < 0)
		memset(&e, 0, sizeof(e)), e.attr.st_ino = d->entry->d_ino,
			e.attr.st_mode = (mode_t)d->entry->d_type << 12;
	size_t n = fuse_add_direntry_plus(req, buf, room, name, &e, d->entry->d_off);
	if (n > room && e.ino)
		vyfs_forget_one(FS(req), e.ino, 1);
	return n;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct vyfs_dir *d = (struct vyfs_dir *)(uintptr_t)fi->fh;
	struct vyfs_inode *dir = vyfs_inode(FS(req), ino);
	cleanup_free char *buf = calloc(1, size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	size_t used = 0;
	for (;;) {
		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				if (errno && !used) {
					fuse_reply_err(req, errno);
					return;
				}
				break;
			}
		}
		size_t n = add_entry(req, dir, d, plus, buf + used, size - used);
		if (n > size - used)
			break;
		used += n;
		d->offset = d->entry->d_off;
		d->entry = NULL;
	}
	fuse_reply_buf(req, buf, used);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vyfs_dir *d = (struct vyfs_dir *)(uintptr_t)fi->fh;
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	struct vyfs_dir *d = (struct vyfs_dir *)(uintptr_t)fi->fh;
	int fd = dirfd(d->dp);
	fuse_reply_err(req, (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	if (fstatvfs(FS(req)->backing_fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

/* ---- extended attributes ------------------------------------------------- */

static void reply_status(fuse_req_t req, size_t size)
{
	cleanup_free char *json = vyfs_status_json(FS(req));
	size_t len = json ? strlen(json) : 0;
	if (!json)
		fuse_reply_err(req, ENOMEM);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, json, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	if (ino == FUSE_ROOT_ID && !strcmp(name, VYFS_STATUS_XATTR)) {
		reply_status(req, size);
		return;
	}
	char proc[64];
	VYFS_IFD(h, FS(req), vyfs_inode(FS(req), ino));
	if (h.fd < 0) {
		fuse_reply_err(req, -h.fd);
		return;
	}
	vyfs_proc_path(h.fd, proc);
	cleanup_free char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = getxattr(proc, name, buf, size);
	if (n < 0)
		fuse_reply_err(req, errno);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char proc[64];
	VYFS_IFD(h, FS(req), vyfs_inode(FS(req), ino));
	if (h.fd < 0) {
		fuse_reply_err(req, -h.fd);
		return;
	}
	vyfs_proc_path(h.fd, proc);
	cleanup_free char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = listxattr(proc, buf, size);
	if (n < 0)
		fuse_reply_err(req, errno);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void set_rate(fuse_req_t req, const char *value, size_t size)
{
	char text[32];
	char *end;
	if (size == 0 || size >= sizeof(text)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(text, value, size);
	text[size] = '\0';
	errno = 0;
	unsigned long long rate = strtoull(text, &end, 10);
	if (errno || end == text || *end || text[0] == '-') {
		fuse_reply_err(req, EINVAL);
		return;
	}
	atomic_store(&FS(req)->hydrate_rate, rate);
	vyfs_wake_background(FS(req));
	vy_info("background hydration rate: %llu bytes/s%s", rate, rate ? "" : " (no limit)");
	fuse_reply_err(req, 0);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	if (ino == FUSE_ROOT_ID && !strcmp(name, VYFS_STATUS_XATTR)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (ino == FUSE_ROOT_ID && !strcmp(name, VYFS_RATE_XATTR)) {
		set_rate(req, value, size);
		return;
	}
	if (ino == FUSE_ROOT_ID && !strcmp(name, VYFS_COLD_XATTR)) {
		vyfs_release_cold(FS(req));
		fuse_reply_err(req, 0);
		return;
	}
	char proc[64];
	VYFS_IFD(h, FS(req), vyfs_inode(FS(req), ino));
	if (h.fd < 0) {
		fuse_reply_err(req, -h.fd);
		return;
	}
	vyfs_proc_path(h.fd, proc);
	fuse_reply_err(req, setxattr(proc, name, value, size, flags) < 0 ? errno : 0);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	char proc[64];
	VYFS_IFD(h, FS(req), vyfs_inode(FS(req), ino));
	if (h.fd < 0) {
		fuse_reply_err(req, -h.fd);
		return;
	}
	vyfs_proc_path(h.fd, proc);
	fuse_reply_err(req, removexattr(proc, name) < 0 ? errno : 0);
}

void vyfs_meta_ops(struct fuse_lowlevel_ops *ops)
{
	ops->lookup = op_lookup;
	ops->forget = op_forget;
	ops->forget_multi = op_forget_multi;
	ops->getattr = op_getattr;
	ops->setattr = op_setattr;
	ops->readlink = op_readlink;
	ops->mknod = op_mknod;
	ops->mkdir = op_mkdir;
	ops->symlink = op_symlink;
	ops->link = op_link;
	ops->unlink = op_unlink;
	ops->rmdir = op_rmdir;
	ops->rename = op_rename;
	ops->opendir = op_opendir;
	ops->readdir = op_readdir;
	ops->readdirplus = op_readdirplus;
	ops->releasedir = op_releasedir;
	ops->fsyncdir = op_fsyncdir;
	ops->statfs = op_statfs;
	ops->getxattr = op_getxattr;
	ops->listxattr = op_listxattr;
	ops->setxattr = op_setxattr;
	ops->removexattr = op_removexattr;
}
