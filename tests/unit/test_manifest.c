/* test_manifest.c - unit tests for manifest.c: scanning a real tree, the
 * codec and its rejections, materialising and finishing a skeleton.
 *
 * Runs as root: it makes device nodes, odd owners, file capabilities and a
 * tmpfs mount point.  Every tree lives in /tmp/vytest-XXXXXX and is removed
 * by a cleanup handler, whatever the outcome.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "manifest.h"
#include "tmptree.h"
#include "unit.h"
#include "wire.h"

/* ---- temporary trees ---- */

static int write_at(const char *path, off_t off, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	ssize_t n = pwrite(fd, data, strlen(data), off);
	close(fd);
	return n == (ssize_t)strlen(data) ? 0 : -1;
}

static int set_times(const char *path, int64_t atime_ns, int64_t mtime_ns)
{
	struct timespec ts[2] = {
		{ atime_ns / 1000000000, atime_ns % 1000000000 },
		{ mtime_ns / 1000000000, mtime_ns % 1000000000 },
	};
	return utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
}

/* A file capability: VFS_CAP_REVISION_2 | effective, cap_net_raw (13). */
static const uint8_t cap_net_raw[20] = { 0x01, 0x00, 0x00, 0x02,
					 0x00, 0x20, 0x00, 0x00 };

#define OLD_ATIME 1000000000123456789ll
#define OLD_MTIME 1200000000987654321ll

/* Every kind of entry a container's rootfs can hold.  Returns 0 when the
 * whole tree could be built. */
static int build_tree(const char *d)
{
	int rc = 0;
	rc |= mkdir(join(d, "a"), 0755);
	rc |= mkdir(join(d, "a/b"), 0750);
	rc |= mkdir(join(d, "a/b/c"), 0700);
	rc |= mkdir(join(d, "tmp"), 0755) | chmod(join(d, "tmp"), 01777);
	rc |= write_at(join(d, "hello"), 0, "hello world\n");
	rc |= write_at(join(d, "empty"), 0, "");
	rc |= write_at(join(d, "sparse"), 0, "head");
	rc |= write_at(join(d, "sparse"), 8 << 20, "tail");
	rc |= truncate(join(d, "sparse"), 16 << 20);
	rc |= write_at(join(d, "a/h1"), 0, "linked");
	rc |= link(join(d, "a/h1"), join(d, "a/b/h2"));
	rc |= link(join(d, "a/h1"), join(d, "h3"));
	rc |= symlink("hello", join(d, "link"));
	rc |= symlink("nowhere/at/all", join(d, "dangling"));
	rc |= symlink("/etc/passwd", join(d, "a/b/c/abs"));
	rc |= mkfifo(join(d, "fifo"), 0620) | chmod(join(d, "fifo"), 0620);
	rc |= mknod(join(d, "null"), S_IFCHR | 0666, makedev(1, 3));
	rc |= chmod(join(d, "null"), 0666);
	rc |= write_at(join(d, "suid"), 0, "#!/bin/true\n");
	rc |= chmod(join(d, "suid"), 04755);
	rc |= write_at(join(d, "odd"), 0, "odd owner");
	rc |= chown(join(d, "odd"), 1234, 5678) | chmod(join(d, "odd"), 02751);
	rc |= write_at(join(d, "cap"), 0, "capable");
	rc |= setxattr(join(d, "cap"), "security.capability", cap_net_raw,
		       sizeof(cap_net_raw), 0);
	rc |= setxattr(join(d, "hello"), "user.test", "value", 5, 0);
	rc |= setxattr(join(d, "a"), "user.dir", "", 0, 0);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", join(d, "sock"));
	rc |= bind(s, (struct sockaddr *)&sa, sizeof(sa));
	close(s);
	rc |= set_times(join(d, "hello"), OLD_ATIME, OLD_MTIME);
	rc |= set_times(join(d, "link"), OLD_ATIME, OLD_MTIME + 1);
	rc |= set_times(join(d, "a/b"), OLD_ATIME, OLD_MTIME + 2);
	rc |= set_times(join(d, "a"), OLD_ATIME, OLD_MTIME + 3);
	return rc ? -1 : 0;
}

static const struct vy_entry *find(const struct vy_manifest *m,
				   const char *path, uint32_t *index)
{
	for (uint32_t i = 0; i < m->count; i++) {
		if (!strcmp(m->entries[i].path, path)) {
			if (index)
				*index = i;
			return &m->entries[i];
		}
	}
	return NULL;
}

static const struct vy_xattr *find_xattr(const struct vy_entry *e,
					 const char *name)
{
	for (uint16_t i = 0; e && i < e->nxattr; i++) {
		if (!strcmp(e->xattrs[i].name, name))
			return &e->xattrs[i];
	}
	return NULL;
}

/* ---- tests ---- */

static void test_path_is_safe(void)
{
	CHECK(vy_path_is_safe("", 0));
	CHECK(vy_path_is_safe("a", 1));
	CHECK(vy_path_is_safe("a/b/c", 5));
	CHECK(vy_path_is_safe("..a/b.", 6));
	CHECK(vy_path_is_safe("...", 3));
	CHECK(!vy_path_is_safe("/a", 2));
	CHECK(!vy_path_is_safe("a/", 2));
	CHECK(!vy_path_is_safe("a//b", 4));
	CHECK(!vy_path_is_safe(".", 1));
	CHECK(!vy_path_is_safe("..", 2));
	CHECK(!vy_path_is_safe("a/../b", 6));
	CHECK(!vy_path_is_safe("a/./b", 5));
	CHECK(!vy_path_is_safe("a/..", 4));
	CHECK(!vy_path_is_safe("a\0b", 3));
	char long_path[VY_PATH_MAX + 2];
	memset(long_path, 'x', sizeof(long_path));
	CHECK(vy_path_is_safe(long_path, VY_PATH_MAX));
	CHECK(!vy_path_is_safe(long_path, VY_PATH_MAX + 1));
}

static void check_scanned_tree(const struct vy_manifest *m)
{
	CHECK(m->count == 20);
	CHECK(m->entries[0].type == VY_ENTRY_DIR && !strcmp(m->entries[0].path, ""));
	const struct vy_entry *e;
	/* three names of one inode: the first scanned owns it, two link to it */
	static const char *names[] = { "a/h1", "a/b/h2", "h3" };
	uint32_t first = VY_NO_LINK, linked = 0;
	for (int i = 0; i < 3; i++) {
		uint32_t at = 0;
		CHECK((e = find(m, names[i], &at)) && e->size == 6);
		if (e && e->link_of == VY_NO_LINK)
			first = at;
	}
	for (int i = 0; i < 3 && first != VY_NO_LINK; i++) {
		e = find(m, names[i], NULL);
		linked += e->link_of == first;
	}
	CHECK(first != VY_NO_LINK && linked == 2);
	CHECK((e = find(m, "tmp", NULL)) && e->type == VY_ENTRY_DIR && e->mode == 01777);
	CHECK((e = find(m, "suid", NULL)) && e->mode == 04755);
	CHECK((e = find(m, "odd", NULL)) && e->uid == 1234 && e->gid == 5678 &&
	      e->mode == 02751);
	CHECK((e = find(m, "sparse", NULL)) && e->size == 16 << 20);
	CHECK((e = find(m, "null", NULL)) && e->type == VY_ENTRY_CHR &&
	      e->rdev == makedev(1, 3) && e->mode == 0666);
	CHECK((e = find(m, "fifo", NULL)) && e->type == VY_ENTRY_FIFO && e->mode == 0620);
	CHECK((e = find(m, "sock", NULL)) && e->type == VY_ENTRY_SOCK);
	CHECK((e = find(m, "dangling", NULL)) && e->type == VY_ENTRY_SYMLINK &&
	      !strcmp(e->target, "nowhere/at/all") && e->size == 14);
	CHECK((e = find(m, "a/b/c/abs", NULL)) && !strcmp(e->target, "/etc/passwd"));
	CHECK((e = find(m, "link", NULL)) && e->mtime_ns == OLD_MTIME + 1);
	CHECK((e = find(m, "hello", NULL)) && e->mtime_ns == OLD_MTIME &&
	      e->atime_ns == OLD_ATIME);
	const struct vy_xattr *x = find_xattr(e, "user.test");
	CHECK(x && x->len == 5 && !memcmp(x->value, "value", 5));
	x = find_xattr(find(m, "a", NULL), "user.dir");
	CHECK(x && x->len == 0);
	x = find_xattr(find(m, "cap", NULL), "security.capability");
	CHECK(x && x->len == sizeof(cap_net_raw));
	/* hello 12 + sparse 16M + h1 6 + suid 12 + odd 9 + cap 7, links once */
	CHECK(m->data_bytes == 12 + (16u << 20) + 6 + 12 + 9 + 7);
	for (uint32_t i = 1; i < m->count; i++) {
		const char *slash = strrchr(m->entries[i].path, '/');
		if (!slash)
			continue;
		char parent[VY_PATH_MAX + 1];
		snprintf(parent, sizeof(parent), "%.*s",
			 (int)(slash - m->entries[i].path), m->entries[i].path);
		uint32_t pi = VY_NO_LINK;
		CHECK(find(m, parent, &pi) && pi < i);
	}
}

static void test_scan(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_tree(src) == 0);
	struct vy_manifest m;
	vy_error err = { 0 };
	int rc = vy_manifest_scan(src, &m, &err);
	CHECK(rc == 0);
	if (rc < 0) {
		fprintf(stderr, "  %s\n", err.msg);
		return;
	}
	check_scanned_tree(&m);
	vy_manifest_free(&m);
}

static void test_scan_refuses_symlink_root(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && mkdir(join(src, "real"), 0755) == 0);
	CHECK(symlink("real", join(src, "root")) == 0);
	struct vy_manifest m;
	vy_error err = { 0 };
	CHECK(vy_manifest_scan(join(src, "root"), &m, &err) < 0);
	CHECK(strstr(err.msg, "root") != NULL);
}

/* A mount point is recorded as a directory, but its contents are not. */
static void test_scan_stops_at_mount(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && mkdir(join(src, "mnt"), 0755) == 0);
	CHECK(write_at(join(src, "outside"), 0, "x") == 0);
	if (mount("tmpfs", join(src, "mnt"), "tmpfs", 0, "size=64k") < 0) {
		fprintf(stderr, "  cannot mount tmpfs: %s\n", strerror(errno));
		CHECK(!"mount tmpfs");
		return;
	}
	CHECK(write_at(join(src, "mnt/inside"), 0, "y") == 0);
	struct vy_manifest m;
	vy_error err = { 0 };
	CHECK(vy_manifest_scan(src, &m, &err) == 0);
	const struct vy_entry *e = find(&m, "mnt", NULL);
	CHECK(e && e->type == VY_ENTRY_DIR);
	CHECK(find(&m, "outside", NULL) != NULL);
	CHECK(find(&m, "mnt/inside", NULL) == NULL);
	CHECK(m.count == 3);
	vy_manifest_free(&m);
}

static bool same_entry(const struct vy_entry *a, const struct vy_entry *b)
{
	if (strcmp(a->path, b->path) || a->type != b->type || a->mode != b->mode ||
	    a->uid != b->uid || a->gid != b->gid || a->size != b->size ||
	    a->rdev != b->rdev || a->atime_ns != b->atime_ns ||
	    a->mtime_ns != b->mtime_ns || a->link_of != b->link_of ||
	    !a->target != !b->target || (a->target && strcmp(a->target, b->target)) ||
	    a->nxattr != b->nxattr)
		return false;
	for (uint16_t i = 0; i < a->nxattr; i++) {
		const struct vy_xattr *x = &a->xattrs[i], *y = &b->xattrs[i];
		if (strcmp(x->name, y->name) || x->len != y->len ||
		    memcmp(x->value, y->value, x->len))
			return false;
	}
	return true;
}

static int64_t ns(struct timespec ts)
{
	return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Compare what is on disk under root with what the manifest says. */
static void check_materialised(const struct vy_manifest *m, const char *root)
{
	for (uint32_t i = 0; i < m->count; i++) {
		const struct vy_entry *e = &m->entries[i];
		const char *path = *e->path ? join(root, e->path) : root;
		struct stat st;
		CHECK(lstat(path, &st) == 0);
		CHECK((st.st_mode & 07777) == e->mode || e->type == VY_ENTRY_SYMLINK);
		CHECK(st.st_uid == e->uid && st.st_gid == e->gid);
		CHECK(ns(st.st_mtim) == e->mtime_ns);
		CHECK(ns(st.st_atim) == e->atime_ns);
		static const mode_t kinds[] = { 0, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR,
						S_IFBLK, S_IFIFO, S_IFSOCK };
		CHECK((st.st_mode & S_IFMT) == kinds[e->type]);
		if (e->type == VY_ENTRY_REG)
			CHECK((uint64_t)st.st_size == e->size);
		if (e->type == VY_ENTRY_CHR)
			CHECK(st.st_rdev == e->rdev);
		if (e->type == VY_ENTRY_SYMLINK) {
			char target[VY_PATH_MAX + 1] = { 0 };
			CHECK(readlink(path, target, VY_PATH_MAX) == (ssize_t)e->size);
			CHECK(!strcmp(target, e->target));
		}
		if (e->link_of != VY_NO_LINK) {
			struct stat first;
			CHECK(lstat(join(root, m->entries[e->link_of].path), &first) == 0);
			CHECK(first.st_ino == st.st_ino && st.st_nlink == 3);
		}
		CHECK(llistxattr(path, NULL, 0) >= 0);
		for (uint16_t k = 0; k < e->nxattr; k++) {
			uint8_t value[VY_XATTR_VALUE_MAX];
			ssize_t n = lgetxattr(path, e->xattrs[k].name, value, sizeof(value));
			CHECK(n == (ssize_t)e->xattrs[k].len &&
			      !memcmp(value, e->xattrs[k].value, e->xattrs[k].len));
		}
	}
}

static void test_roundtrip_materialise(void)
{
	cleanup_tree char *src = make_tmpdir();
	cleanup_tree char *dst = make_tmpdir();
	CHECK(src && dst && build_tree(src) == 0);
	struct vy_manifest m, back;
	vy_error err = { 0 };
	uint8_t *buf = NULL;
	size_t len = 0;
	CHECK(vy_manifest_scan(src, &m, &err) == 0);
	CHECK(vy_manifest_encode(&m, &buf, &len, &err) == 0);
	int rc = vy_manifest_decode(buf, len, &back, &err);
	CHECK(rc == 0);
	free(buf);
	if (rc < 0) {
		fprintf(stderr, "  %s\n", err.msg);
		vy_manifest_free(&m);
		return;
	}
	CHECK(back.count == m.count && back.data_bytes == m.data_bytes);
	for (uint32_t i = 0; i < m.count && i < back.count; i++)
		CHECK(same_entry(&m.entries[i], &back.entries[i]));
	int rootfd = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
	rc = vy_manifest_materialise(&back, rootfd, &err);
	CHECK(rc == 0);
	if (rc == 0)
		CHECK(vy_manifest_finish(&back, rootfd, &err) == 0);
	if (err.code)
		fprintf(stderr, "  %s\n", err.msg);
	struct stat st;
	CHECK(stat(join(dst, "sparse"), &st) == 0 && st.st_blocks == 0);
	check_materialised(&back, dst);
	close(rootfd);
	vy_manifest_free(&m);
	vy_manifest_free(&back);
}

/* Hostile layout on the target: a symlink where a directory should be.
 * Nothing may be created through it. */
static void test_materialise_refuses_symlinked_parent(void)
{
	cleanup_tree char *dst = make_tmpdir();
	cleanup_tree char *outside = make_tmpdir();
	CHECK(dst && outside && symlink(outside, join(dst, "evil")) == 0);
	struct vy_entry entries[2] = {
		{ .path = "", .type = VY_ENTRY_DIR, .mode = 0755, .link_of = VY_NO_LINK },
		{ .path = "evil/x", .type = VY_ENTRY_REG, .mode = 0644, .link_of = VY_NO_LINK },
	};
	struct vy_manifest m = { .entries = entries, .count = 2 };
	int rootfd = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
	vy_error err = { 0 };
	CHECK(vy_manifest_materialise(&m, rootfd, &err) < 0);
	CHECK(strstr(err.msg, "evil/x") != NULL);
	CHECK(access(join(outside, "x"), F_OK) < 0);
	CHECK(vy_manifest_open_entry(rootfd, "evil", O_RDONLY, &err) < 0);
	CHECK(vy_manifest_open_entry(rootfd, "evil/x", O_RDONLY, &err) < 0);
	int fd = vy_manifest_open_entry(rootfd, "", O_RDONLY | O_DIRECTORY, &err);
	CHECK(fd >= 0);
	close(fd);
	close(rootfd);
}

/* ---- decoder rejections ---- */

static struct vy_entry *add(struct vy_manifest *m, uint8_t type, const char *path)
{
	m->entries = realloc(m->entries, (m->count + 1) * sizeof(*m->entries));
	struct vy_entry *e = &m->entries[m->count++];
	memset(e, 0, sizeof(*e));
	e->path = strdup(path);
	e->type = type;
	e->mode = type == VY_ENTRY_DIR ? 0755 : 0644;
	e->link_of = VY_NO_LINK;
	if (type == VY_ENTRY_SYMLINK) {
		e->target = strdup("t");
		e->size = 1;
	}
	return e;
}

static void add_xattr(struct vy_entry *e, const char *name, uint32_t len)
{
	e->xattrs = realloc(e->xattrs, (e->nxattr + 1) * sizeof(*e->xattrs));
	struct vy_xattr *x = &e->xattrs[e->nxattr++];
	x->name = strdup(name);
	x->value = calloc(1, len ? len : 1);
	x->len = len;
}

/* A small valid manifest: root, dir "d", file "d/f", symlink "s". */
static void sample(struct vy_manifest *m)
{
	memset(m, 0, sizeof(*m));
	add(m, VY_ENTRY_DIR, "");
	add(m, VY_ENTRY_DIR, "d");
	add_xattr(add(m, VY_ENTRY_REG, "d/f"), "user.a", 3);
	add(m, VY_ENTRY_SYMLINK, "s");
}

static uint8_t *encode(struct vy_manifest *m, size_t *len)
{
	uint8_t *buf = NULL;
	vy_error err;
	if (vy_manifest_encode(m, &buf, len, &err) < 0)
		return NULL;
	return buf;
}

static bool decodes(const uint8_t *buf, size_t len, const char *what)
{
	struct vy_manifest m;
	vy_error err = { 0 };
	if (vy_manifest_decode(buf, len, &m, &err) == 0) {
		vy_manifest_free(&m);
		return true;
	}
	CHECK(err.msg[0] != '\0');
	if (what)
		printf("     %-24s -> %.100s\n", what, err.msg);
	return false;
}

/* Encode m as it is and expect the decoder to refuse it. */
static void expect_refused(struct vy_manifest *m, const char *what)
{
	size_t len;
	uint8_t *buf = encode(m, &len);
	CHECK(buf != NULL);
	if (buf)
		CHECK(!decodes(buf, len, what));
	free(buf);
	vy_manifest_free(m);
}

static void test_decode_truncated(void)
{
	struct vy_manifest m;
	sample(&m);
	size_t len;
	uint8_t *buf = encode(&m, &len);
	CHECK(buf && decodes(buf, len, NULL));
	int accepted = 0;
	for (size_t n = 0; buf && n < len; n++) {
		uint8_t *copy = malloc(n ? n : 1); /* exact size, for ASan */
		memcpy(copy, buf, n);
		accepted += decodes(copy, n, NULL);
		free(copy);
	}
	CHECK(accepted == 0);
	free(buf);
	vy_manifest_free(&m);
}

static void test_decode_rejects_paths(void)
{
	static const char *bad[] = { "..", ".", "/abs", "d/../x", "d/./x",
				     "d//x", "d/", "x/.." };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vy_manifest m;
		sample(&m);
		free(m.entries[3].path);
		m.entries[3].path = strdup(bad[i]);
		expect_refused(&m, bad[i]);
	}
	struct vy_manifest m;
	sample(&m);
	char *long_path = malloc(VY_PATH_MAX + 2);
	memset(long_path, 'x', VY_PATH_MAX + 1);
	long_path[VY_PATH_MAX + 1] = '\0';
	free(m.entries[3].path);
	m.entries[3].path = long_path;
	expect_refused(&m, "path too long");
	/* A NUL inside a path: patch the encoded bytes of "d" to "\0". */
	sample(&m);
	size_t len;
	uint8_t *buf = encode(&m, &len);
	CHECK(buf && buf[12 + 56 + 4] == 'd');
	buf[12 + 56 + 4] = '\0';
	CHECK(!decodes(buf, len, "NUL in path"));
	free(buf);
	vy_manifest_free(&m);
}

static void test_decode_rejects_structure(void)
{
	struct vy_manifest m;
	sample(&m);
	add(&m, VY_ENTRY_REG, "x/y");
	expect_refused(&m, "no parent");
	sample(&m);
	add(&m, VY_ENTRY_REG, "d/f/y");
	expect_refused(&m, "parent not a dir");
	memset(&m, 0, sizeof(m));
	add(&m, VY_ENTRY_DIR, "");
	add(&m, VY_ENTRY_REG, "d/f");
	add(&m, VY_ENTRY_DIR, "d");
	expect_refused(&m, "child before parent");
	sample(&m);
	add(&m, VY_ENTRY_REG, "d/f");
	expect_refused(&m, "duplicate");
	sample(&m);
	add(&m, VY_ENTRY_DIR, "");
	expect_refused(&m, "second root");
	memset(&m, 0, sizeof(m));
	add(&m, VY_ENTRY_REG, "");
	expect_refused(&m, "root not a dir");
	memset(&m, 0, sizeof(m));
	add(&m, VY_ENTRY_DIR, "d");
	expect_refused(&m, "root with a path");
	memset(&m, 0, sizeof(m));
	expect_refused(&m, "no entries");
	sample(&m);
	m.entries[1].mode = 0100755;
	expect_refused(&m, "mode with type bits");
}

static void test_decode_rejects_links(void)
{
	struct vy_manifest m;
	sample(&m);
	add(&m, VY_ENTRY_REG, "d/g")->link_of = 5;
	expect_refused(&m, "link_of forward");
	sample(&m);
	add(&m, VY_ENTRY_REG, "d/g")->link_of = 4;
	expect_refused(&m, "link_of self");
	sample(&m);
	add(&m, VY_ENTRY_REG, "d/g")->link_of = 1;
	expect_refused(&m, "link_of a dir");
	sample(&m);
	add(&m, VY_ENTRY_REG, "d/g")->link_of = 2;
	add(&m, VY_ENTRY_REG, "d/h")->link_of = 4;
	expect_refused(&m, "link_of a link");
	sample(&m);
	add(&m, VY_ENTRY_FIFO, "d/p")->link_of = 2;
	expect_refused(&m, "link_of on a fifo");
	sample(&m);
	add(&m, VY_ENTRY_REG, "d/g")->link_of = 2;
	size_t len;
	uint8_t *buf = encode(&m, &len);
	CHECK(buf && decodes(buf, len, NULL)); /* the control case */
	free(buf);
	vy_manifest_free(&m);
}

static void test_decode_rejects_fields(void)
{
	struct vy_manifest m;
	sample(&m);
	free(m.entries[3].target);
	m.entries[3].target = NULL;
	m.entries[3].size = 0;
	expect_refused(&m, "symlink without target");
	sample(&m);
	free(m.entries[3].target);
	m.entries[3].target = malloc(VY_PATH_MAX + 2);
	memset(m.entries[3].target, 't', VY_PATH_MAX + 1);
	m.entries[3].target[VY_PATH_MAX + 1] = '\0';
	m.entries[3].size = VY_PATH_MAX + 1;
	expect_refused(&m, "target too long");
	sample(&m);
	m.entries[2].target = strdup("t");
	expect_refused(&m, "target on a file");
	sample(&m);
	add_xattr(&m.entries[2], "user.big", VY_XATTR_VALUE_MAX + 1);
	expect_refused(&m, "xattr value too large");
	sample(&m);
	char name[VY_XATTR_NAME_MAX + 2];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	add_xattr(&m.entries[2], name, 1);
	expect_refused(&m, "xattr name too long");
	sample(&m);
	add_xattr(&m.entries[2], "", 1);
	expect_refused(&m, "empty xattr name");
	sample(&m);
	for (int i = 0; i <= VY_XATTR_COUNT_MAX; i++)
		add_xattr(&m.entries[1], "user.n", 0);
	expect_refused(&m, "too many xattrs");
}

static void test_decode_rejects_bytes(void)
{
	struct vy_manifest m;
	sample(&m);
	size_t len;
	uint8_t *good = encode(&m, &len);
	uint8_t *buf = malloc(len + 1);
	CHECK(good && buf);
	/* entry 2 ("d/f") starts after root (56) and "d" (57); its xattr name
	 * sits after its fixed fields and the path "d/f". */
	size_t e2 = 12 + 56 + 57, xname = e2 + 4 + 3 + 48 + 2 + 2 + 2;
	struct { size_t at; uint8_t value; const char *what; } patches[] = {
		{ 0, 'X', "bad magic" },        { 5, 2, "bad version" },
		{ 7, 1, "header reserved" },    { 13, 1, "entry reserved" },
		{ 12, 0, "type 0" },            { e2, 8, "type 8" },
		{ xname + 2, 0, "NUL in xattr name" },
	};
	CHECK(good && memcmp(good + xname, "user.a", 6) == 0);
	for (size_t i = 0; good && i < sizeof(patches) / sizeof(patches[0]); i++) {
		memcpy(buf, good, len);
		buf[patches[i].at] = patches[i].value;
		CHECK(!decodes(buf, len, patches[i].what));
	}
	uint32_t counts[] = { m.count + 1, (uint32_t)(len - 12) / 56 + 1,
			      VY_MANIFEST_MAX_ENTRIES + 1, 0xffffffffu, 0 };
	for (size_t i = 0; good && i < sizeof(counts) / sizeof(counts[0]); i++) {
		memcpy(buf, good, len);
		vy_put_u32(buf + 8, counts[i]);
		CHECK(!decodes(buf, len, "bad count"));
	}
	if (good) {
		memcpy(buf, good, len);
		buf[len] = 0;
		CHECK(!decodes(buf, len + 1, "trailing garbage"));
		CHECK(decodes(good, len, NULL));
	}
	free(good);
	free(buf);
	vy_manifest_free(&m);
}

/* Random corruption must never crash the decoder or leak (ASan). */
static void test_decode_survives_corruption(void)
{
	struct vy_manifest m;
	sample(&m);
	size_t len;
	uint8_t *good = encode(&m, &len);
	uint8_t *buf = malloc(len);
	unsigned seed = 12345;
	int accepted = 0;
	for (int round = 0; good && buf && round < 20000; round++) {
		memcpy(buf, good, len);
		for (int k = 0; k < 1 + round % 4; k++)
			buf[rand_r(&seed) % len] = (uint8_t)rand_r(&seed);
		accepted += decodes(buf, len, NULL);
	}
	CHECK(accepted < 20000); /* most corruptions are caught */
	free(good);
	free(buf);
	vy_manifest_free(&m);
}

/* An incremental rescan gives exactly what a full scan gives. */
static bool same_as_full(const char *root, struct vy_scan_watch *w, const struct vy_manifest *old,
			 int64_t *dirs_read)
{
	struct vy_manifest inc = { 0 }, full = { 0 };
	vy_error err = { 0 };
	uint8_t *a = NULL, *b = NULL;
	size_t la = 0, lb = 0;
	bool ok = vy_manifest_rescan(w, root, old, &inc, dirs_read, &err) == 0 &&
		  vy_manifest_scan(root, &full, &err) == 0;
	/* Reading is not a change: access times are not followed (our own
	 * scans move directories' atimes). */
	for (uint32_t i = 0; ok && i < inc.count && i < full.count; i++)
		inc.entries[i].atime_ns = full.entries[i].atime_ns = 0;
	ok = ok && vy_manifest_encode(&inc, &a, &la, &err) == 0 &&
		  vy_manifest_encode(&full, &b, &lb, &err) == 0 && la == lb && !memcmp(a, b, la) &&
		  inc.data_bytes == full.data_bytes;
	if (!ok)
		fprintf(stderr, "  rescan differs (%u vs %u entries): %s\n", inc.count, full.count,
			err.msg);
	free(a);
	free(b);
	vy_manifest_free(&inc);
	vy_manifest_free(&full);
	return ok;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static void test_rescan_reads_only_changes(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_tree(src) == 0);
	char p[600];
	for (int d = 0; d < 20; d++) {
		snprintf(p, sizeof(p), "%s/many%02d", src, d);
		mkdir(p, 0755);
		for (int f = 0; f < 20; f++) {
			snprintf(p, sizeof(p), "%s/many%02d/f%02d", src, d, f);
			write_text(p, "x");
		}
	}
	struct vy_scan_watch *w = NULL;
	vy_error err = { 0 };
	struct vy_manifest old = { 0 };
	int64_t dirs = 0;
	CHECK(vy_manifest_watch(src, &w, &err) == 0);
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	/* nothing changed: nothing is read again */
	CHECK(same_as_full(src, w, &old, &dirs));
	CHECK(dirs == 0);
	/* contents, size, mode, an xattr; a file and a directory created, a
	 * file removed, a directory renamed */
	snprintf(p, sizeof(p), "%s/many03/f07", src);
	write_text(p, "longer now");
	snprintf(p, sizeof(p), "%s/many04/f01", src);
	chmod(p, 0600);
	snprintf(p, sizeof(p), "%s/many05/f02", src);
	CHECK(setxattr(p, "user.vytest.new", "v", 1, 0) == 0);
	snprintf(p, sizeof(p), "%s/many06/new", src);
	write_text(p, "new");
	snprintf(p, sizeof(p), "%s/many07/sub", src);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/many07/sub/deep", src);
	write_text(p, "deep");
	snprintf(p, sizeof(p), "%s/many08/f00", src);
	unlink(p);
	char q[600];
	snprintf(p, sizeof(p), "%s/many09", src);
	snprintf(q, sizeof(q), "%s/many99", src);
	CHECK(rename(p, q) == 0);
	CHECK(same_as_full(src, w, &old, &dirs));
	if (!(dirs > 0 && dirs < 15))
		fprintf(stderr, "  %lld directories read again\n", (long long)dirs);
	CHECK(dirs > 0 && dirs < 15);
	vy_manifest_free(&old);
	vy_manifest_watch_free(w);
}

static void test_rescan_hard_links_and_no_watch(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_tree(src) == 0);
	struct vy_scan_watch *w = NULL;
	vy_error err = { 0 };
	struct vy_manifest old = { 0 };
	int64_t dirs = 0;
	CHECK(vy_manifest_watch(src, &w, &err) == 0);
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	/* hard links among the changes: a new one, and a new name of an old
	 * one (whose first name, "h3", is in the root, read again) */
	char p[600], q[600];
	snprintf(p, sizeof(p), "%s/linked-a", src);
	snprintf(q, sizeof(q), "%s/a/b/linked-b", src);
	write_text(p, "linked");
	CHECK(link(p, q) == 0);
	snprintf(p, sizeof(p), "%s/h3", src);
	snprintf(q, sizeof(q), "%s/a/b/c/h4", src);
	CHECK(link(p, q) == 0);
	CHECK(same_as_full(src, w, &old, &dirs));
	CHECK(dirs >= 0);
	vy_manifest_free(&old);
	vy_manifest_watch_free(w);
	/* a second name, in a directory read again, for a file whose only
	 * name was in a directory that saw nothing ("hello" in the root, now
	 * also "a/b/c/hello2"): the copied root entry does not link to it,
	 * so the rescan must not be used */
	CHECK(vy_manifest_watch(src, &w, &err) == 0);
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	snprintf(p, sizeof(p), "%s/hello", src);
	snprintf(q, sizeof(q), "%s/a/b/c/hello2", src);
	CHECK(link(p, q) == 0);
	CHECK(same_as_full(src, w, &old, &dirs));
	/* no watch at all: a full scan */
	CHECK(same_as_full(src, NULL, &old, &dirs));
	CHECK(dirs == -1);
	vy_manifest_free(&old);
	vy_manifest_watch_free(w);
}

/* Two scans agree, access times aside (reading moves them). */
static bool same_scans(const char *a, const char *b)
{
	struct vy_manifest x = { 0 }, y = { 0 };
	vy_error err = { 0 };
	uint8_t *ea = NULL, *eb = NULL;
	size_t la = 0, lb = 0;
	bool ok = vy_manifest_scan(a, &x, &err) == 0 && vy_manifest_scan(b, &y, &err) == 0;
	for (uint32_t i = 0; ok && i < x.count && i < y.count; i++)
		x.entries[i].atime_ns = y.entries[i].atime_ns = 0;
	ok = ok && vy_manifest_encode(&x, &ea, &la, &err) == 0 &&
	     vy_manifest_encode(&y, &eb, &lb, &err) == 0 && la == lb && !memcmp(ea, eb, la);
	if (!ok)
		fprintf(stderr, "  scans differ (%u vs %u entries) %s\n", x.count, y.count, err.msg);
	free(ea);
	free(eb);
	vy_manifest_free(&x);
	vy_manifest_free(&y);
	return ok;
}

/* A skeleton brought up to date in place looks exactly like the tree it
 * follows: entries added, removed, retyped, relinked, changed. */
static void test_update_skeleton_in_place(void)
{
	cleanup_tree char *src = make_tmpdir();
	cleanup_tree char *dst = make_tmpdir();
	CHECK(src && dst && build_tree(src) == 0);
	struct vy_manifest old = { 0 }, cur = { 0 };
	vy_error err = { 0 };
	uint32_t changed = 0;
	int rootfd = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	CHECK(vy_manifest_materialise(&old, rootfd, &err) == 0);
	CHECK(vy_manifest_finish(&old, rootfd, &err) == 0);
	/* nothing changed: nothing touched */
	CHECK(vy_manifest_update_skeleton(&old, &old, rootfd, &changed, &err) == 1);
	CHECK(changed == 0);
	char p[600], q[600];
	snprintf(p, sizeof(p), "%s/new-dir", src);
	CHECK(mkdir(p, 0751) == 0);
	snprintf(p, sizeof(p), "%s/new-dir/new-file", src);
	write_text(p, "fresh");
	snprintf(p, sizeof(p), "%s/link", src); /* a symlink becomes a directory */
	CHECK(unlink(p) == 0 && mkdir(p, 0700) == 0);
	snprintf(p, sizeof(p), "%s/a/b/h2", src); /* a hard link becomes a file */
	CHECK(unlink(p) == 0);
	write_text(p, "alone now");
	snprintf(p, sizeof(p), "%s/h3", src); /* and another name joins the group */
	snprintf(q, sizeof(q), "%s/new-dir/h5", src);
	CHECK(link(p, q) == 0);
	snprintf(p, sizeof(p), "%s/dangling", src);
	CHECK(unlink(p) == 0);
	snprintf(p, sizeof(p), "%s/a/b/c/abs", src); /* retargeted */
	CHECK(unlink(p) == 0 && symlink("/elsewhere", p) == 0);
	snprintf(p, sizeof(p), "%s/sparse", src);
	CHECK(truncate(p, 12345) == 0 && chmod(p, 0604) == 0);
	CHECK(vy_manifest_scan(src, &cur, &err) == 0);
	int rc = vy_manifest_update_skeleton(&old, &cur, rootfd, &changed, &err);
	CHECK(rc == 1);
	if (rc < 0)
		fprintf(stderr, "  %s\n", err.msg);
	CHECK(changed > 0 && changed < cur.count);
	CHECK(same_scans(src, dst));
	close(rootfd);
	vy_manifest_free(&old);
	vy_manifest_free(&cur);
}

int main(void)
{
	RUN(test_path_is_safe);
	RUN(test_scan);
	RUN(test_scan_refuses_symlink_root);
	RUN(test_scan_stops_at_mount);
	RUN(test_rescan_reads_only_changes);
	RUN(test_rescan_hard_links_and_no_watch);
	RUN(test_roundtrip_materialise);
	RUN(test_update_skeleton_in_place);
	RUN(test_materialise_refuses_symlinked_parent);
	RUN(test_decode_truncated);
	RUN(test_decode_rejects_paths);
	RUN(test_decode_rejects_structure);
	RUN(test_decode_rejects_links);
	RUN(test_decode_rejects_fields);
	RUN(test_decode_rejects_bytes);
	RUN(test_decode_survives_corruption);
	return unit_summary();
}
