/* ptfloor.c - the least a FUSE passthrough file system can be, for
 * bench/fuse-floor.sh: what the kernel's passthrough costs by itself,
 * with no voyager-fs in the way.
 *
 *   ptfloor DIR MOUNTPOINT
 *
 * Serves DIR read-write at MOUNTPOINT (foreground; SIGTERM or fusermount3
 * -u ends it).  It answers only what opening and using an existing file
 * needs: lookup, forget, getattr, statfs, open and release.  Every open
 * goes passthrough to a file of DIR, so reads and writes never reach this
 * process; a kernel that refuses passthrough makes the open fail (EIO)
 * rather than be served some slower way.  It asks the kernel for what
 * voyager-fs asks for on that path: passthrough, setuid/setgid cleared by
 * the file system (HANDLE_KILLPRIV_V2: no security.capability lookup
 * before each write) and no writeback cache; entries and attributes are
 * cached for a day.  No readdir, no creating, renaming or removing:
 * bench/fuse-floor.sh needs none.  Not part of Voyager.
 */
#define FUSE_USE_VERSION 317
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define TIMEOUT 86400.0

struct node {
	struct node *next;
	int fd; /* O_PATH */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;
};

/* An open file: its own descriptor, and the backing id the kernel gave
 * it (the release request does not carry that). */
struct open_file {
	int fd;
	int backing_id;
};

static struct node root = { .fd = -1 };
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static struct node *node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &root : (struct node *)(uintptr_t)ino;
}

static void op_init(void *u, struct fuse_conn_info *conn)
{
	(void)u;
	if (!fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH))
		fprintf(stderr, "ptfloor: the kernel offers no passthrough; every open will fail\n");
	conn->max_backing_stack_depth = 1;
	fuse_set_feature_flag(conn, FUSE_CAP_HANDLE_KILLPRIV_V2);
	fuse_unset_feature_flag(conn, FUSE_CAP_WRITEBACK_CACHE);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT };
	int fd = openat(node_of(parent)->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstatat(fd, "", &e.attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int er = errno;
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, er);
		return;
	}
	pthread_mutex_lock(&lock);
	struct node *n = root.next;
	while (n && !(n->dev == e.attr.st_dev && n->ino == e.attr.st_ino))
		n = n->next;
	if (n) {
		close(fd);
	} else if ((n = calloc(1, sizeof(*n)))) {
		n->fd = fd, n->dev = e.attr.st_dev, n->ino = e.attr.st_ino;
		n->next = root.next;
		root.next = n;
	}
	if (n)
		n->nlookup++;
	pthread_mutex_unlock(&lock);
	if (!n) {
		close(fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	e.ino = (fuse_ino_t)(uintptr_t)n;
	fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct node *n = node_of(ino);
	pthread_mutex_lock(&lock);
	if (n != &root && (n->nlookup -= nlookup) == 0) {
		struct node **p = &root.next;
		while (*p != n)
			p = &(*p)->next;
		*p = n->next;
		close(n->fd);
		free(n);
	}
	pthread_mutex_unlock(&lock);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct stat st;
	if (fstatat(node_of(ino)->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	if (fstatvfs(node_of(ino)->fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", node_of(ino)->fd);
	struct open_file *of = malloc(sizeof(*of));
	if (!of) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	of->fd = open(path, (fi->flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY)) | O_CLOEXEC);
	if (of->fd < 0) {
		fuse_reply_err(req, errno);
		free(of);
		return;
	}
	of->backing_id = fuse_passthrough_open(req, of->fd);
	if (of->backing_id <= 0) {
		fprintf(stderr, "ptfloor: the kernel refused passthrough for inode %ju (%s); "
			"the open fails with EIO\n", (uintmax_t)node_of(ino)->ino, strerror(errno));
		close(of->fd);
		free(of);
		fuse_reply_err(req, EIO);
		return;
	}
	fi->backing_id = of->backing_id;
	fi->fh = (uint64_t)(uintptr_t)of;
	if (fuse_reply_open(req, fi) != 0) {
		fuse_passthrough_close(req, of->backing_id);
		close(of->fd);
		free(of);
	}
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	fuse_passthrough_close(req, of->backing_id);
	close(of->fd);
	free(of);
	fuse_reply_err(req, 0);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: ptfloor DIR MOUNTPOINT\n");
		return 2;
	}
	root.fd = open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root.fd < 0) {
		fprintf(stderr, "ptfloor: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	static const struct fuse_lowlevel_ops ops = {
		.init = op_init,
		.lookup = op_lookup,
		.forget = op_forget,
		.getattr = op_getattr,
		.statfs = op_statfs,
		.open = op_open,
		.release = op_release,
	};
	char *fargv[] = { "ptfloor", "-o", "fsname=ptfloor,default_permissions", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		return 1;
	int rc = 1;
	if (fuse_set_signal_handlers(se) == 0) {
		if (fuse_session_mount(se, argv[2]) == 0) {
			rc = fuse_session_loop(se) != 0;
			fuse_session_unmount(se);
		}
		fuse_remove_signal_handlers(se);
	}
	fuse_session_destroy(se);
	return rc;
}
