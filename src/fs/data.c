/* data.c - voyager-fs file data: open, read, write, truncate, release.
 *
 * Two ways to open a file:
 *   - passthrough: the file is complete (or was never remote), so the
 *     kernel does its reads, writes and mmap on the backing file directly
 *     (FUSE_CAP_PASSTHROUGH) and we never see them;
 *   - cached: the file still misses chunks, so its reads and writes come
 *     here.  A read first makes the chunks it covers local (vyfs_ensure(),
 *     with a chunk of read-ahead); a write first fetches the missing chunks
 *     it covers only partly, writes, and marks the missing chunks it
 *     covered whole as present once the bytes are durable.
 * The kernel refuses to mix the two ways on one inode (the open fails with
 * EIO), so an inode that has cached opens keeps opening cached until they
 * are all closed, and one with passthrough opens shares their backing file.
 *
 * Setuid and setgid.  We told the kernel that we clear those bits on write
 * and truncate (FUSE_CAP_HANDLE_KILLPRIV_V2), which lets it skip a
 * security.capability lookup through us before every write.  So a file
 * with those bits never opens passthrough (a passthrough write, done with
 * our credentials, would keep them), and a write or truncate by a caller
 * without CAP_FSETID clears them here, as the kernel does natively.
 * security.capability goes by itself: the backing filesystem drops it when
 * we write or truncate the backing file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/capability.h>

#include "log.h"
#include "vyfs.h"

#define FS(req) ((struct vyfs *)fuse_req_userdata(req))
#define FILE_OF(fi) ((struct vyfs_file *)(uintptr_t)(fi)->fh)

static bool incomplete(struct vyfs *fs, struct vyfs_inode *in)
{
	int64_t f = vyfs_track(fs, in);
	return f >= 0 && !vy_chunkmap_complete(fs->cm, (uint32_t)f);
}

bool vyfs_is_sxid(mode_t mode)
{
	return (mode & S_ISUID) || (mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP);
}

/* Whether the thread behind req holds CAP_FSETID; when /proc cannot say,
 * uid 0 is taken to. */
static bool caller_has_fsetid(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	char path[64], line[256];
	bool has = ctx->uid == 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
	FILE *fp = ctx->pid > 0 ? fopen(path, "re") : NULL;
	if (!fp)
		return has;
	while (fgets(line, sizeof(line), fp))
		if (!strncmp(line, "CapEff:", 7)) {
			has = (strtoull(line + 7, NULL, 16) >> CAP_FSETID) & 1;
			break;
		}
	fclose(fp);
	return has;
}

bool vyfs_kill_suidgid(struct vyfs *fs, fuse_req_t req, struct vyfs_inode *in, int fd)
{
	struct stat st;
	if (!fs->killpriv || !S_ISREG(in->type))
		return false;
	VYFS_IFD(h, fs, fd >= 0 ? NULL : in);
	if (fd < 0)
		fd = h.fd;
	if (fd < 0 || fstat(fd, &st) < 0 || !vyfs_is_sxid(st.st_mode) || caller_has_fsetid(req))
		return false;
	mode_t mode = st.st_mode & 07777;
	mode &= ~(mode_t)S_ISUID;
	if (mode & S_IXGRP)
		mode &= ~(mode_t)S_ISGID;
	char proc[64];
	vyfs_proc_path(fd, proc);
	if (fchmodat(AT_FDCWD, proc, mode, 0) < 0) {
		vy_warn("clearing setuid/setgid of inode %ju: %s", (uintmax_t)in->ino,
			strerror(errno));
		return false;
	}
	return true;
}

/* Caller holds in->open_lock (so no vyfs_get_fd() here: it may take it);
 * fd is the new open file's.  True when the open may go passthrough. */
static bool want_passthrough(struct vyfs *fs, fuse_req_t req, struct vyfs_inode *in, int fd)
{
	if (!fs->passthrough)
		return false;
	if (in->pt_opens)
		return true;
	if (in->cached_opens || incomplete(fs, in))
		return false;
	struct stat st;
	if (fs->killpriv && (fstat(fd, &st) < 0 || vyfs_is_sxid(st.st_mode)))
		return false;
	char proc[64];
	vyfs_proc_path(fd, proc);
	/* One backing file per inode, shared by all its passthrough opens,
	 * so it must allow every kind of access. */
	int bfd = open(proc, O_RDWR | O_CLOEXEC);
	if (bfd < 0)
		bfd = open(proc, O_RDONLY | O_CLOEXEC);
	if (bfd < 0)
		return false;
	int id = fuse_passthrough_open(req, bfd);
	if (id <= 0) {
		atomic_fetch_add(&fs->n.refused_passthrough, 1);
		vy_warn("passthrough refused for inode %ju (%d); serving it ourselves",
			(uintmax_t)in->ino, id);
		close(bfd);
		return false;
	}
	in->backing_fd = bfd;
	in->backing_id = id;
	return true;
}

static void choose_mode(struct vyfs *fs, fuse_req_t req, struct vyfs_inode *in,
			struct fuse_file_info *fi, struct vyfs_file *file)
{
	pthread_mutex_lock(&in->open_lock);
	if (in->fd < 0 && in->pin_fd < 0)
		in->pin_fd = fcntl(file->fd, F_DUPFD_CLOEXEC, 0);
	if (want_passthrough(fs, req, in, file->fd)) {
		in->pt_opens++;
		fi->backing_id = in->backing_id;
		file->passthrough = true;
		atomic_fetch_add(&fs->n.passthrough_opens, 1);
	} else {
		in->cached_opens++;
		fi->keep_cache = 0; /* a passthrough writer may have changed it */
		atomic_fetch_add(&fs->n.cached_opens, 1);
		if (incomplete(fs, in)) {
			if (!atomic_exchange(&fs->tracks[vyfs_track(fs, in)].hot, true))
				atomic_fetch_add(&fs->nhot, 1);
			vyfs_wake_background(fs);
		}
	}
	pthread_mutex_unlock(&in->open_lock);
}

static void finish_open(fuse_req_t req, struct vyfs_inode *in, int fd,
			struct fuse_file_info *fi, const struct fuse_entry_param *e)
{
	struct vyfs_file *file = calloc(1, sizeof(*file));
	if (!file) {
		close(fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	file->fd = fd;
	fi->fh = (uintptr_t)file;
	choose_mode(FS(req), req, in, fi, file);
	if (e)
		fuse_reply_create(req, e, fi);
	else
		fuse_reply_open(req, fi);
}

/* The kernel computes O_APPEND offsets itself; a backing fd with O_APPEND
 * would make pwrite ignore them.  O_TRUNC goes through vyfs_truncate().
 * The caller's O_NOFOLLOW was honoured by the kernel's own lookup; kept, it
 * would make our reopen through a /proc/self/fd magic link fail (ELOOP). */
static int backing_flags(int flags)
{
	return (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NOFOLLOW)) |
	       O_CLOEXEC;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vyfs_inode *in = vyfs_inode(FS(req), ino);
	char proc[64];
	VYFS_IFD(h, FS(req), in);
	if (h.fd < 0) {
		fuse_reply_err(req, -h.fd);
		return;
	}
	vyfs_proc_path(h.fd, proc);
	int fd = open(proc, backing_flags(fi->flags));
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if (fi->flags & O_TRUNC) {
		int rc = vyfs_truncate(FS(req), in, fd, 0);
		if (rc < 0) {
			close(fd);
			fuse_reply_err(req, -rc);
			return;
		}
	}
	finish_open(req, in, fd, fi, NULL);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct vyfs *fs = FS(req);
	struct vyfs_inode *dir = vyfs_inode(fs, parent);
	int flags = backing_flags(fi->flags) | O_NOFOLLOW;
	VYFS_IFD(d, fs, dir);
	if (d.fd < 0) {
		fuse_reply_err(req, -d.fd);
		return;
	}
	int fd = openat(d.fd, name, flags | O_CREAT | O_EXCL, mode);
	bool made = fd >= 0;
	if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL))
		fd = openat(d.fd, name, flags);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e;
	int rc = made && fchown(fd, ctx->uid, ctx->gid) < 0 ? -errno : 0;
	if (rc == 0)
		rc = vyfs_lookup_entry(fs, dir, name, &e);
	struct vyfs_inode *in = rc == 0 ? vyfs_inode(fs, e.ino) : NULL;
	if (rc == 0 && !made && (fi->flags & O_TRUNC))
		rc = vyfs_truncate(fs, in, fd, 0);
	if (rc == 0 && !made && (fi->flags & O_TRUNC))
		rc = fstat(fd, &e.attr) < 0 ? -errno : 0;
	if (rc < 0) {
		close(fd);
		fuse_reply_err(req, -rc);
		return;
	}
	finish_open(req, in, fd, fi, &e);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct vyfs *fs = FS(req);
	struct vyfs_inode *in = vyfs_inode(fs, ino);
	int64_t f = vyfs_track(fs, in);
	if (f >= 0 && !vy_chunkmap_complete(fs->cm, (uint32_t)f)) {
		int rc = vyfs_ensure(fs, (uint32_t)f, (uint64_t)off, size, 1);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = FILE_OF(fi)->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/* Chunk c of file f is missing and [off, off+len) covers only part of its
 * remote bytes. */
static bool partly_covered_missing(struct vyfs *fs, uint32_t f, uint64_t c,
				   uint64_t off, uint64_t len, uint64_t remote)
{
	uint64_t cs = fs->chunk_size, start = c * cs;
	if (start >= remote || vy_chunkmap_present(fs->cm, f, c))
		return false;
	uint64_t end = start + cs < remote ? start + cs : remote;
	return !(off <= start && off + len >= end);
}

/* Write into a tracked file that still misses chunks. */
static ssize_t write_tracked(struct vyfs *fs, uint32_t f, int fd, const char *buf,
			     size_t size, uint64_t off)
{
	struct vyfs_track *t = &fs->tracks[f];
	uint64_t cs = fs->chunk_size;
	uint64_t first = off / cs, last = (off + size - 1) / cs;
	for (;;) {
		pthread_mutex_lock(&t->lock);
		uint64_t remote = vy_chunkmap_remote_size(fs->cm, f);
		uint64_t fetch = UINT64_MAX;
		if (partly_covered_missing(fs, f, first, off, size, remote))
			fetch = first;
		else if (partly_covered_missing(fs, f, last, off, size, remote))
			fetch = last;
		if (fetch != UINT64_MAX) {
			pthread_mutex_unlock(&t->lock);
			int rc = vyfs_ensure(fs, f, fetch * cs, 1, 0);
			if (rc < 0)
				return rc;
			continue;
		}
		ssize_t n = pwrite(fd, buf, size, (off_t)off);
		int saved = errno;
		/* Missing chunks this write covered whole are now local. */
		uint64_t c0 = (off + cs - 1) / cs, marked = 0;
		for (uint64_t c = c0; n > 0 && c * cs < remote; c++) {
			uint64_t end = (c + 1) * cs < remote ? (c + 1) * cs : remote;
			if (end > off + (uint64_t)n)
				break;
			if (!vy_chunkmap_present(fs->cm, f, c)) {
				if (!marked++ && fdatasync(fd) < 0) {
					saved = errno;
					n = -1;
					break;
				}
				vy_chunkmap_mark(fs->cm, f, c, 1);
			}
		}
		pthread_mutex_unlock(&t->lock);
		errno = saved;
		return n < 0 ? -saved : n;
	}
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct vyfs *fs = FS(req);
	struct vyfs_inode *in = vyfs_inode(fs, ino);
	int fd = FILE_OF(fi)->fd;
	int64_t f = vyfs_track(fs, in);
	ssize_t n;
	if (size == 0) {
		fuse_reply_write(req, 0);
		return;
	}
	if (f >= 0 && !vy_chunkmap_complete(fs->cm, (uint32_t)f))
		n = write_tracked(fs, (uint32_t)f, fd, buf, size, (uint64_t)off);
	else if ((n = pwrite(fd, buf, size, off)) < 0)
		n = -errno;
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	atomic_fetch_add(&fs->n.local_write_bytes, (uint64_t)n);
	/* The kernel still caches the old mode: tell it to ask again. */
	if (vyfs_kill_suidgid(fs, req, in, fd))
		fuse_lowlevel_notify_inval_inode(fs->se, ino, -1, 0);
	fuse_reply_write(req, (size_t)n);
}

int vyfs_truncate(struct vyfs *fs, struct vyfs_inode *in, int fd, off_t size)
{
	char proc[64];
	VYFS_IFD(h, fs, fd >= 0 ? NULL : in);
	if (fd < 0 && h.fd < 0)
		return h.fd;
	vyfs_proc_path(h.fd, proc);
	int64_t f = vyfs_track(fs, in);
	if (f < 0 || size < 0)
		return (fd >= 0 ? ftruncate(fd, size) : truncate(proc, size)) < 0 ? -errno : 0;
	struct vyfs_track *t = &fs->tracks[f];
	uint64_t cs = fs->chunk_size;
	for (;;) {
		pthread_mutex_lock(&t->lock);
		uint64_t remote = vy_chunkmap_remote_size(fs->cm, (uint32_t)f);
		uint64_t c = (uint64_t)size / cs;
		/* The chunk the new end cuts through keeps source bytes. */
		if ((uint64_t)size < remote && size % cs &&
		    !vy_chunkmap_present(fs->cm, (uint32_t)f, c)) {
			pthread_mutex_unlock(&t->lock);
			int rc = vyfs_ensure(fs, (uint32_t)f, c * cs, 1, 0);
			if (rc < 0)
				return rc;
			continue;
		}
		vy_error err;
		int rc = 0;
		if ((uint64_t)size < remote &&
		    vy_chunkmap_shrink(fs->cm, (uint32_t)f, (uint64_t)size, &err) < 0) {
			vy_err("truncate: %s", err.msg);
			rc = -EIO;
		}
		if (rc == 0 && (fd >= 0 ? ftruncate(fd, size) : truncate(proc, size)) < 0)
			rc = -errno;
		pthread_mutex_unlock(&t->lock);
		return rc;
	}
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	int fd = FILE_OF(fi)->fd;
	fuse_reply_err(req, (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vyfs *fs = FS(req);
	struct vyfs_inode *in = vyfs_inode(fs, ino);
	struct vyfs_file *file = FILE_OF(fi);
	pthread_mutex_lock(&in->open_lock);
	if (file->passthrough) {
		if (--in->pt_opens == 0) {
			fuse_passthrough_close(req, in->backing_id);
			close(in->backing_fd);
			in->backing_fd = -1;
			in->backing_id = 0;
		}
	} else {
		in->cached_opens--;
	}
	if (!in->pt_opens && !in->cached_opens && in->pin_fd >= 0) {
		close(in->pin_fd);
		in->pin_fd = -1;
	}
	int64_t drop = -1;
	if (in->drop_on_close && !in->pt_opens && !in->cached_opens) {
		drop = vyfs_track(fs, in);
		__atomic_store_n(&in->track, -1, __ATOMIC_RELEASE);
		in->drop_on_close = false;
	}
	pthread_mutex_unlock(&in->open_lock);
	close(file->fd);
	free(file);
	if (drop >= 0)
		vyfs_drop_track(fs, (uint32_t)drop);
	fuse_reply_err(req, 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			 off_t len, struct fuse_file_info *fi)
{
	struct vyfs *fs = FS(req);
	struct vyfs_inode *in = vyfs_inode(fs, ino);
	int64_t f = vyfs_track(fs, in);
	/* Hydration would fill a punched hole again: make the range local
	 * first, so the change sticks. */
	if (f >= 0 && !vy_chunkmap_complete(fs->cm, (uint32_t)f)) {
		int rc = vyfs_ensure(fs, (uint32_t)f, (uint64_t)off, (uint64_t)len, 0);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	fuse_reply_err(req, fallocate(FILE_OF(fi)->fd, mode, off, len) < 0 ? errno : 0);
}

void vyfs_data_ops(struct fuse_lowlevel_ops *ops)
{
	ops->open = op_open;
	ops->create = op_create;
	ops->read = op_read;
	ops->write = op_write;
	ops->flush = op_flush;
	ops->fsync = op_fsync;
	ops->release = op_release;
	ops->fallocate = op_fallocate;
}
