/* test_manifest_delta.c - unit tests for manifest deltas (manifest.h,
 * "deltas"): vy_manifest_diff() on real trees, the delta codec and its
 * rejections, vy_manifest_delta_check(), vy_manifest_delta_apply() and
 * bringing a skeleton up to date with a delta.
 *
 * Runs as root (owners, xattrs on a skeleton).  Every tree lives in
 * /tmp/vytest-XXXXXX and is removed by a cleanup handler, whatever the
 * outcome.  Times are set explicitly: base trees get an old mtime and an
 * atime in the future, so that every change moves an mtime and no scan
 * moves an atime (relatime leaves a future atime alone).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "delta.h"
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

#define OLD_MTIME 1200000000987654321ll

static struct timespec stamp_times[2];

static int stamp_one(const char *path, const struct stat *st, int flag,
		     struct FTW *ftw)
{
	return utimensat(AT_FDCWD, path, stamp_times, AT_SYMLINK_NOFOLLOW) < 0 ? -1 : 0;
}

/* Every entry of the tree: mtime OLD_MTIME, atime a day ahead. */
static int stamp_tree(const char *root)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	stamp_times[0] = (struct timespec){ now.tv_sec + 86400, 123 };
	stamp_times[1] = (struct timespec){ OLD_MTIME / 1000000000, OLD_MTIME % 1000000000 };
	return nftw(root, stamp_one, 32, FTW_PHYS);
}

/* ---- comparing manifests by path ---- */

static int by_path(const void *a, const void *b, void *arg)
{
	const struct vy_manifest *m = arg;
	return strcmp(m->entries[*(const uint32_t *)a].path,
		      m->entries[*(const uint32_t *)b].path);
}

/* Indices of m sorted by path; the caller frees. */
static uint32_t *path_order(const struct vy_manifest *m)
{
	uint32_t *order = malloc((m->count ? m->count : 1) * sizeof(*order));
	for (uint32_t i = 0; order && i < m->count; i++)
		order[i] = i;
	if (order)
		qsort_r(order, m->count, sizeof(*order), by_path, (void *)m);
	return order;
}

static int64_t lookup(const struct vy_manifest *m, const uint32_t *order, const char *path)
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

static int64_t find(const struct vy_manifest *m, const char *path)
{
	for (uint32_t i = 0; i < m->count; i++)
		if (!strcmp(m->entries[i].path, path))
			return i;
	return -1;
}

static const struct vy_xattr *find_xattr(const struct vy_entry *e, const char *name)
{
	for (uint16_t i = 0; e && i < e->nxattr; i++)
		if (!strcmp(e->xattrs[i].name, name))
			return &e->xattrs[i];
	return NULL;
}

static bool same_xattrs(const struct vy_entry *a, const struct vy_entry *b)
{
	if (a->nxattr != b->nxattr)
		return false;
	for (uint16_t i = 0; i < a->nxattr; i++) {
		const struct vy_xattr *x = find_xattr(b, a->xattrs[i].name);
		if (!x || x->len != a->xattrs[i].len || memcmp(x->value, a->xattrs[i].value, x->len))
			return false;
	}
	return true;
}

/* The same entry in two manifests, link_of compared by the first name's
 * path since indices differ. */
static bool same_entry(const struct vy_manifest *ma, const struct vy_entry *a,
		       const struct vy_manifest *mb, const struct vy_entry *b, bool atime)
{
	if (strcmp(a->path, b->path) || a->type != b->type || a->mode != b->mode ||
	    a->uid != b->uid || a->gid != b->gid || a->size != b->size || a->rdev != b->rdev ||
	    a->mtime_ns != b->mtime_ns || (atime && a->atime_ns != b->atime_ns) ||
	    !a->target != !b->target || (a->target && strcmp(a->target, b->target)) ||
	    !same_xattrs(a, b))
		return false;
	if (a->link_of == VY_NO_LINK || b->link_of == VY_NO_LINK)
		return a->link_of == b->link_of;
	return a->link_of < ma->count && b->link_of < mb->count &&
	       !strcmp(ma->entries[a->link_of].path, mb->entries[b->link_of].path);
}

/* a and b hold the same entries, in any order. */
static bool same_manifest(const struct vy_manifest *a, const struct vy_manifest *b, bool atime)
{
	if (a->count != b->count) {
		fprintf(stderr, "  %u entries, not %u\n", a->count, b->count);
		return false;
	}
	uint32_t *order = path_order(b);
	bool ok = order != NULL;
	for (uint32_t i = 0; ok && i < a->count; i++) {
		int64_t j = lookup(b, order, a->entries[i].path);
		const struct vy_entry *x = &a->entries[i], *y = j >= 0 ? &b->entries[j] : NULL;
		if (!y || !same_entry(a, x, b, y, atime)) {
			fprintf(stderr, "  '%s' differs: ", x->path);
			if (y)
				fprintf(stderr, "type %u/%u mode %o/%o size %llu/%llu mtime %lld/%lld "
					"xattrs %u/%u\n", x->type, y->type, x->mode, y->mode,
					(unsigned long long)x->size, (unsigned long long)y->size,
					(long long)x->mtime_ns, (long long)y->mtime_ns, x->nxattr,
					y->nxattr);
			else
				fprintf(stderr, "missing\n");
			ok = false;
		}
	}
	free(order);
	return ok;
}

/* ---- hand-made manifests and deltas ---- */

static struct vy_entry *add(struct vy_manifest *m, uint8_t type, const char *path)
{
	m->entries = realloc(m->entries, (m->count + 1) * sizeof(*m->entries));
	struct vy_entry *e = &m->entries[m->count++];
	m->cap = m->count; /* as the library keeps it: apply grows from cap */
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

static struct vy_entry *put(struct vy_manifest_delta *d, uint32_t at, uint8_t type,
			    const char *path)
{
	d->at = realloc(d->at, (d->put.count + 1) * sizeof(*d->at));
	d->at[d->put.count] = at;
	return add(&d->put, type, path);
}

static void gone(struct vy_manifest_delta *d, uint32_t index)
{
	d->gone = realloc(d->gone, (d->ngone + 1) * sizeof(*d->gone));
	d->gone[d->ngone++] = index;
}

/* A small valid delta against a base of 6 entries: the root and "d"
 * changed, entries 2 and 3 gone, "d/n" and "l" new. */
static void sample_delta(struct vy_manifest_delta *d)
{
	memset(d, 0, sizeof(*d));
	memset(d->base_sha, 0xab, sizeof(d->base_sha));
	d->base_count = 6;
	gone(d, 2);
	gone(d, 3);
	put(d, 0, VY_ENTRY_DIR, "");
	put(d, 1, VY_ENTRY_DIR, "d")->mode = 0700;
	add_xattr(put(d, VY_DELTA_NEW, VY_ENTRY_REG, "d/n"), "user.a", 3);
	put(d, VY_DELTA_NEW, VY_ENTRY_SYMLINK, "l");
}

static uint8_t *encode_delta(const struct vy_manifest_delta *d, size_t *len)
{
	uint8_t *buf = NULL;
	vy_error err;
	return vy_manifest_delta_encode(d, &buf, len, &err) < 0 ? NULL : buf;
}

/* Decodes from an exact-size copy, so that the sanitizers see overreads. */
static bool delta_decodes(const uint8_t *buf, size_t len, const char *what)
{
	uint8_t *copy = malloc(len ? len : 1);
	if (len)
		memcpy(copy, buf, len);
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	int rc = vy_manifest_delta_decode(copy, len, &d, &err);
	free(copy);
	if (rc == 0) {
		vy_manifest_delta_free(&d);
		return true;
	}
	CHECK(err.msg[0] != '\0');
	if (what)
		printf("     %-28s -> %.100s\n", what, err.msg);
	return false;
}

/* Encode d as it is, expect the decoder to refuse it, free d. */
static void expect_refused(struct vy_manifest_delta *d, const char *what)
{
	size_t len;
	uint8_t *buf = encode_delta(d, &len);
	CHECK(buf != NULL);
	if (buf && delta_decodes(buf, len, what))
		fprintf(stderr, "  accepted: %s\n", what);
	free(buf);
	vy_manifest_delta_free(d);
}

/* ---- a real tree, changed ---- */

/* The base tree: one of each kind, a hard-link pair, xattrs. */
static int build_base_tree(const char *d)
{
	int rc = 0;
	rc |= mkdir(join(d, "a"), 0755) | mkdir(join(d, "a/b"), 0750);
	rc |= mkdir(join(d, "a/b/c"), 0700) | mkdir(join(d, "gone_dir"), 0755);
	rc |= mkdir(join(d, "gone_dir/sub"), 0755) | mkdir(join(d, "links"), 0755);
	rc |= mkdir(join(d, "d2f"), 0755) | mkdir(join(d, "chdir"), 0755);
	rc |= write_at(join(d, "empty"), 0, "");
	rc |= write_at(join(d, "small"), 0, "small");
	char chunk[4097];
	memset(chunk, 'm', 4096);
	chunk[4096] = '\0';
	for (int i = 0; i < 16; i++)
		rc |= write_at(join(d, "medium"), i * 4096, chunk);
	rc |= write_at(join(d, "big"), 0, "head") | truncate(join(d, "big"), 3 << 20);
	rc |= write_at(join(d, "a/b/c/deep"), 0, "deep");
	rc |= write_at(join(d, "a/b/keep"), 0, "keep");
	rc |= write_at(join(d, "gone_file"), 0, "bye");
	rc |= write_at(join(d, "gone_dir/x"), 0, "x");
	rc |= write_at(join(d, "gone_dir/sub/y"), 0, "y");
	rc |= write_at(join(d, "resize"), 0, "0123456789");
	rc |= write_at(join(d, "xattr_file"), 0, "x");
	rc |= setxattr(join(d, "xattr_file"), "user.k", "v1", 2, 0);
	rc |= setxattr(join(d, "a"), "user.dir", "dv", 2, 0);
	rc |= write_at(join(d, "f2d"), 0, "becomes a directory");
	rc |= write_at(join(d, "d2f/child"), 0, "child");
	rc |= symlink("small", join(d, "sym"));
	rc |= mkfifo(join(d, "fifo"), 0640) | chmod(join(d, "fifo"), 0640);
	rc |= write_at(join(d, "links/h1"), 0, "linked");
	rc |= link(join(d, "links/h1"), join(d, "links/h2"));
	rc |= stamp_tree(d);
	return rc ? -1 : 0;
}

/* Every kind of change a delta carries; links/ is left alone. */
static int change_tree(const char *d)
{
	int rc = 0;
	rc |= write_at(join(d, "new1"), 0, "new one");
	rc |= write_at(join(d, "a/new2"), 0, "new two");
	rc |= mkdir(join(d, "newdir"), 0751) | mkdir(join(d, "newdir/inner"), 0700);
	rc |= write_at(join(d, "newdir/f"), 0, "f");
	rc |= write_at(join(d, "newdir/inner/leaf"), 0, "leaf");
	rc |= unlink(join(d, "gone_file"));
	rc |= unlink(join(d, "gone_dir/sub/y")) | rmdir(join(d, "gone_dir/sub"));
	rc |= unlink(join(d, "gone_dir/x")) | rmdir(join(d, "gone_dir"));
	rc |= truncate(join(d, "resize"), 5000) | chmod(join(d, "resize"), 0600);
	rc |= unlink(join(d, "sym")) | symlink("medium", join(d, "sym"));
	rc |= unlink(join(d, "d2f/child")) | rmdir(join(d, "d2f"));
	rc |= write_at(join(d, "d2f"), 0, "was a directory");
	rc |= unlink(join(d, "f2d")) | mkdir(join(d, "f2d"), 0755);
	rc |= write_at(join(d, "f2d/inside"), 0, "inside");
	rc |= setxattr(join(d, "xattr_file"), "user.k", "v2-longer", 9, 0);
	rc |= setxattr(join(d, "xattr_file"), "user.k2", "", 0, 0);
	rc |= removexattr(join(d, "a"), "user.dir");
	rc |= chmod(join(d, "chdir"), 0711);
	return rc ? -1 : 0;
}

static bool in_gone(const struct vy_manifest *base, const struct vy_manifest_delta *d,
		    const char *path)
{
	for (uint32_t k = 0; k < d->ngone; k++)
		if (d->gone[k] < base->count && !strcmp(base->entries[d->gone[k]].path, path))
			return true;
	return false;
}

static bool in_put(const struct vy_manifest_delta *d, const char *path)
{
	return find(&d->put, path) >= 0;
}

/* What the diff names, and what it leaves out; a bigger tree adds
 * extra_gone and extra_put entries of its own. */
static void check_diff_contents(const struct vy_manifest *base, const struct vy_manifest_delta *d,
				uint32_t extra_gone, uint32_t extra_put)
{
	static const char *gone_paths[] = { "gone_file", "gone_dir", "gone_dir/sub",
					    "gone_dir/x", "gone_dir/sub/y", "d2f",
					    "d2f/child", "f2d", "sym" };
	static const char *put_paths[] = { "", "a", "chdir", "resize", "xattr_file", "new1",
					   "a/new2", "newdir", "newdir/inner", "newdir/f",
					   "newdir/inner/leaf", "d2f", "f2d", "f2d/inside", "sym" };
	static const char *untouched[] = { "links", "links/h1", "links/h2", "fifo", "small",
					   "medium", "big", "empty", "a/b/keep", "a/b/c/deep" };
	for (size_t i = 0; i < sizeof(gone_paths) / sizeof(*gone_paths); i++)
		CHECK(in_gone(base, d, gone_paths[i]));
	for (size_t i = 0; i < sizeof(put_paths) / sizeof(*put_paths); i++)
		CHECK(in_put(d, put_paths[i]));
	for (size_t i = 0; i < sizeof(untouched) / sizeof(*untouched); i++)
		CHECK(!in_gone(base, d, untouched[i]) && !in_put(d, untouched[i]));
	CHECK(d->ngone == sizeof(gone_paths) / sizeof(*gone_paths) + extra_gone);
	CHECK(d->put.count == sizeof(put_paths) / sizeof(*put_paths) + extra_put);
	for (uint32_t k = 0; k < d->put.count; k++) {
		int64_t b = find(base, d->put.entries[k].path);
		bool replaced = b >= 0 && !in_gone(base, d, d->put.entries[k].path);
		CHECK(d->at[k] == (replaced ? (uint32_t)b : VY_DELTA_NEW));
	}
}

/* Base entry i went to map[i]: the entry of the same path, or
 * VY_DELTA_NEW exactly when cur has no entry of that path and shape; kept
 * entries keep their order. */
static void check_map(const struct vy_manifest *old, const uint32_t *map,
		      const struct vy_manifest *now, const struct vy_manifest *cur)
{
	uint32_t last = 0;
	CHECK(map[0] == 0);
	for (uint32_t i = 1; i < old->count; i++) {
		const struct vy_entry *o = &old->entries[i];
		int64_t c = find(cur, o->path);
		bool kept = c >= 0 && cur->entries[c].type == o->type &&
			    (o->type != VY_ENTRY_SYMLINK || !strcmp(cur->entries[c].target, o->target));
		if (!kept) {
			CHECK(map[i] == VY_DELTA_NEW);
			continue;
		}
		CHECK(map[i] < now->count && !strcmp(now->entries[map[i]].path, o->path));
		CHECK(map[i] > last);
		last = map[i];
	}
}

/* Diff, encode, decode, check, update the skeleton, apply: base becomes
 * base + delta.  Returns false when a step failed. */
static bool delta_round_trip(struct vy_manifest *base, const struct vy_manifest *cur,
			     int rootfd, uint32_t **map)
{
	struct vy_manifest_delta d, back;
	vy_error err = { 0 };
	int rc = vy_manifest_diff(base, cur, &d, &err);
	CHECK(rc == 1);
	if (rc != 1)
		return false;
	static const uint8_t zero[32];
	CHECK(!memcmp(d.base_sha, zero, 32) && d.base_count == base->count);
	check_diff_contents(base, &d, 0, 0);
	memset(d.base_sha, 0x5a, sizeof(d.base_sha));
	uint8_t *buf = NULL, *again = NULL;
	size_t len = 0, len2 = 0;
	CHECK(vy_manifest_delta_encode(&d, &buf, &len, &err) == 0);
	rc = vy_manifest_delta_decode(buf, len, &back, &err);
	vy_manifest_delta_free(&d);
	CHECK(rc == 0);
	if (rc == 0) {
		CHECK(vy_manifest_delta_encode(&back, &again, &len2, &err) == 0);
		CHECK(again && len2 == len && !memcmp(again, buf, len));
		CHECK(!memcmp(back.base_sha, buf + 8, 32) && back.base_sha[0] == 0x5a);
	}
	free(buf);
	free(again);
	if (rc < 0) {
		fprintf(stderr, "  decode: %s\n", err.msg);
		return false;
	}
	CHECK(vy_manifest_delta_check(base, &back, &err) == 0);
	uint32_t changed = 0;
	rc = vy_manifest_delta_update_skeleton(base, &back, rootfd, &changed, &err);
	CHECK(rc == 0);
	if (rc < 0)
		fprintf(stderr, "  update skeleton: %s\n", err.msg);
	CHECK(changed == back.ngone + back.put.count);
	rc = vy_manifest_delta_apply(base, &back, map, &err);
	CHECK(rc == 0);
	if (rc < 0) {
		fprintf(stderr, "  apply: %s\n", err.msg);
		vy_manifest_delta_free(&back);
		return false;
	}
	CHECK(back.put.count == 0 && back.ngone == 0); /* emptied */
	return true;
}

static void test_round_trip_real_tree(void)
{
	cleanup_tree char *src = make_tmpdir();
	cleanup_tree char *dst = make_tmpdir();
	CHECK(src && dst && build_base_tree(src) == 0);
	struct vy_manifest base = { 0 }, cur = { 0 }, skel = { 0 };
	vy_error err = { 0 };
	int rootfd = dst ? open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
	CHECK(rootfd >= 0 && vy_manifest_scan(src, &base, &err) == 0);
	CHECK(vy_manifest_materialise(&base, rootfd, &err) == 0);
	CHECK(vy_manifest_finish(&base, rootfd, &err) == 0);
	CHECK(change_tree(src) == 0);
	CHECK(vy_manifest_scan(src, &cur, &err) == 0);
	/* a copy of the base as it was, to follow where its entries go */
	struct vy_manifest old = { 0 };
	uint8_t *buf = NULL;
	size_t len = 0;
	CHECK(vy_manifest_encode(&base, &buf, &len, &err) == 0);
	CHECK(buf && vy_manifest_decode(buf, len, &old, &err) == 0);
	free(buf);
	uint32_t *map = NULL;
	if (old.count && cur.count && delta_round_trip(&base, &cur, rootfd, &map)) {
		CHECK(same_manifest(&base, &cur, true)); /* applied: base is cur */
		CHECK(base.data_bytes == cur.data_bytes);
		int64_t h2 = find(&base, "links/h2"), h1 = find(&base, "links/h1");
		CHECK(h1 >= 0 && h2 >= 0 && base.entries[h2].link_of == (uint32_t)h1);
		CHECK(vy_manifest_scan(dst, &skel, &err) == 0); /* the skeleton is cur */
		CHECK(same_manifest(&skel, &cur, false));
		check_map(&old, map, &base, &cur);
	}
	free(map);
	vy_manifest_free(&old);
	if (rootfd >= 0)
		close(rootfd);
	vy_manifest_free(&base);
	vy_manifest_free(&cur);
	vy_manifest_free(&skel);
}

/* ---- nothing changed ---- */

/* Entries may differ only in atime. */
static bool only_atime(const struct vy_manifest *base, const struct vy_manifest_delta *d)
{
	for (uint32_t k = 0; k < d->put.count; k++) {
		if (d->at[k] >= base->count)
			return false;
		struct vy_entry e = d->put.entries[k];
		e.atime_ns = base->entries[d->at[k]].atime_ns;
		if (!same_entry(base, &base->entries[d->at[k]], &d->put, &e, true))
			return false;
	}
	return true;
}

static void test_no_change(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_base_tree(src) == 0);
	struct vy_manifest one = { 0 }, two = { 0 };
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	CHECK(vy_manifest_scan(src, &one, &err) == 0 && vy_manifest_scan(src, &two, &err) == 0);
	CHECK(vy_manifest_diff(&one, &one, &d, &err) == 1);
	CHECK(d.ngone == 0 && d.put.count == 0 && d.base_count == one.count);
	vy_manifest_delta_free(&d);
	CHECK(vy_manifest_diff(&one, &two, &d, &err) == 1);
	CHECK(d.ngone == 0 && only_atime(&one, &d));
	/* an empty delta round-trips and applies as the identity */
	vy_manifest_delta_free(&d);
	CHECK(vy_manifest_diff(&one, &one, &d, &err) == 1);
	uint8_t *buf = NULL;
	size_t len = 0;
	struct vy_manifest_delta back = { 0 };
	CHECK(vy_manifest_delta_encode(&d, &buf, &len, &err) == 0 && len == 52);
	CHECK(vy_manifest_delta_decode(buf, len, &back, &err) == 0);
	CHECK(vy_manifest_delta_check(&one, &back, &err) == 0);
	uint32_t *map = NULL;
	CHECK(vy_manifest_delta_apply(&one, &back, &map, &err) == 0);
	CHECK(same_manifest(&one, &two, false));
	for (uint32_t i = 0; map && i < one.count; i++)
		CHECK(map[i] == i);
	free(map);
	free(buf);
	vy_manifest_delta_free(&d);
	vy_manifest_delta_free(&back);
	vy_manifest_free(&one);
	vy_manifest_free(&two);
}

/* ---- hard links ---- */

static int build_link_tree(const char *d)
{
	int rc = mkdir(join(d, "d"), 0755) | write_at(join(d, "d/h1"), 0, "linked");
	rc |= link(join(d, "d/h1"), join(d, "d/h2")) | write_at(join(d, "other"), 0, "other");
	return (rc | stamp_tree(d)) ? -1 : 0;
}

/* Any change to a hard-link group makes diff give up (0, d emptied). */
static void expect_no_delta(int (*change)(const char *), const char *what)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_link_tree(src) == 0);
	struct vy_manifest base = { 0 }, cur = { 0 };
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	CHECK(vy_manifest_scan(src, &base, &err) == 0);
	CHECK(change(src) == 0);
	CHECK(vy_manifest_scan(src, &cur, &err) == 0);
	int rc = vy_manifest_diff(&base, &cur, &d, &err);
	if (rc != 0)
		fprintf(stderr, "  %s: diff gave %d\n", what, rc);
	CHECK(rc == 0);
	CHECK(d.gone == NULL && d.put.count == 0 && d.at == NULL);
	vy_manifest_delta_free(&d);
	vy_manifest_free(&base);
	vy_manifest_free(&cur);
}

static int third_name(const char *d)
{
	return link(join(d, "d/h1"), join(d, "h3"));
}

static int one_name_less(const char *d)
{
	return unlink(join(d, "d/h2"));
}

static int one_name_less_first(const char *d)
{
	return unlink(join(d, "d/h1"));
}

static int linked_content(const char *d)
{
	return write_at(join(d, "d/h2"), 0, "linked and longer");
}

static int linked_chmod(const char *d)
{
	return chmod(join(d, "d/h1"), 0600);
}

static void test_hard_links_no_delta(void)
{
	expect_no_delta(third_name, "a third name");
	expect_no_delta(one_name_less, "second name removed");
	expect_no_delta(one_name_less_first, "first name removed");
	expect_no_delta(linked_content, "content changed");
	expect_no_delta(linked_chmod, "mode changed");
	/* a change beside the group is still a delta */
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_link_tree(src) == 0);
	struct vy_manifest base = { 0 }, cur = { 0 };
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	CHECK(vy_manifest_scan(src, &base, &err) == 0);
	CHECK(write_at(join(src, "other"), 0, "changed and longer") == 0);
	CHECK(vy_manifest_scan(src, &cur, &err) == 0);
	CHECK(vy_manifest_diff(&base, &cur, &d, &err) == 1);
	CHECK(d.ngone == 0 && d.put.count == 1 && in_put(&d, "other"));
	vy_manifest_delta_free(&d);
	vy_manifest_free(&base);
	vy_manifest_free(&cur);
}

/* ---- the decoder ---- */

static void test_decode_truncated(void)
{
	struct vy_manifest_delta d;
	sample_delta(&d);
	size_t len;
	uint8_t *buf = encode_delta(&d, &len);
	CHECK(buf && delta_decodes(buf, len, NULL));
	size_t accepted = 0;
	for (size_t n = 0; buf && n < len; n++)
		if (delta_decodes(buf, n, NULL) && !accepted++)
			fprintf(stderr, "  accepted %zu of %zu bytes\n", n, len);
	CHECK(accepted == 0);
	free(buf);
	vy_manifest_delta_free(&d);
}

/* Bytes of sample_delta with the u32 at off set to v. */
static void expect_patched_refused(size_t off, uint32_t v, const char *what)
{
	struct vy_manifest_delta d;
	sample_delta(&d);
	size_t len;
	uint8_t *buf = encode_delta(&d, &len);
	CHECK(buf && off + 4 <= len);
	if (buf && off + 4 <= len) {
		vy_put_u32(buf + off, v);
		CHECK(!delta_decodes(buf, len, what));
	}
	free(buf);
	vy_manifest_delta_free(&d);
}

static void test_decode_rejects_bytes(void)
{
	/* header: magic 0, version 4, reserved 6, sha 8, base 40, gone 44,
	 * put 48; gone indices from 52; the first put's at at 60 */
	expect_patched_refused(0, 0x56594d46, "bad magic");
	expect_patched_refused(4, 0x00020000, "bad version");
	expect_patched_refused(4, 0x00010001, "reserved set");
	expect_patched_refused(40, 0, "base count 0");
	expect_patched_refused(40, 2, "gone count >= base count");
	expect_patched_refused(44, 3, "gone count too large");
	expect_patched_refused(48, 5, "put count too large");
	expect_patched_refused(48, 3, "put count too small");
	expect_patched_refused(52, 0, "gone index 0");
	expect_patched_refused(56, 2, "gone repeated");
	expect_patched_refused(56, 1, "gone descending");
	expect_patched_refused(56, 6, "gone >= base count");
	expect_patched_refused(60, 6, "at >= base count");
	expect_patched_refused(60, 1, "root at 1");
	/* trailing garbage */
	struct vy_manifest_delta d;
	sample_delta(&d);
	size_t len;
	uint8_t *buf = encode_delta(&d, &len);
	uint8_t *more = buf ? realloc(buf, len + 1) : NULL;
	CHECK(more != NULL);
	if (more) {
		more[len] = 0;
		CHECK(!delta_decodes(more, len + 1, "trailing garbage"));
		CHECK(delta_decodes(more, len, NULL));
	}
	free(more);
	vy_manifest_delta_free(&d);
}

static void test_decode_rejects_entries(void)
{
	struct vy_manifest_delta d;
	sample_delta(&d);
	d.put.entries[2].link_of = 0;
	expect_refused(&d, "put entry with link_of");
	static const char *unsafe[] = { "../x", "/abs", "a//b", "d/./n", "d/", "." };
	for (size_t i = 0; i < sizeof(unsafe) / sizeof(*unsafe); i++) {
		sample_delta(&d);
		free(d.put.entries[2].path);
		d.put.entries[2].path = strdup(unsafe[i]);
		expect_refused(&d, unsafe[i]);
	}
	sample_delta(&d);
	free(d.put.entries[0].path);
	d.put.entries[0].path = strdup("x");
	expect_refused(&d, "at 0 with a path");
	sample_delta(&d);
	d.put.entries[0].type = VY_ENTRY_REG;
	expect_refused(&d, "at 0 not a directory");
	sample_delta(&d);
	free(d.put.entries[2].path);
	d.put.entries[2].path = strdup("");
	expect_refused(&d, "new entry, empty path");
	sample_delta(&d);
	free(d.put.entries[1].path);
	d.put.entries[1].path = strdup("");
	expect_refused(&d, "at 1, empty path");
	sample_delta(&d);
	d.at[1] = 6;
	expect_refused(&d, "at == base count");
	sample_delta(&d);
	d.at[1] = 0xfffffffe;
	expect_refused(&d, "at huge");
	sample_delta(&d);
	d.put.entries[2].mode = 010644;
	expect_refused(&d, "mode with type bits");
	/* and what is fine: the last base index, a delta with nothing */
	sample_delta(&d);
	d.at[1] = 5;
	size_t len;
	uint8_t *buf = encode_delta(&d, &len);
	CHECK(buf && delta_decodes(buf, len, NULL));
	free(buf);
	vy_manifest_delta_free(&d);
	struct vy_manifest_delta empty = { .base_count = 1 };
	buf = encode_delta(&empty, &len);
	CHECK(buf && len == 52 && delta_decodes(buf, len, NULL));
	free(buf);
}

/* ---- the check against a base ---- */

/* 0 "", 1 d/, 2 d/f, 3 f, 4 h1, 5 h2 (link to h1), 6 s ->, 7 e/, 8 e/x */
static void check_base(struct vy_manifest *m)
{
	memset(m, 0, sizeof(*m));
	add(m, VY_ENTRY_DIR, "");
	add(m, VY_ENTRY_DIR, "d");
	add(m, VY_ENTRY_REG, "d/f");
	add(m, VY_ENTRY_REG, "f");
	add(m, VY_ENTRY_REG, "h1");
	add(m, VY_ENTRY_REG, "h2")->link_of = 4;
	add(m, VY_ENTRY_SYMLINK, "s");
	add(m, VY_ENTRY_DIR, "e");
	add(m, VY_ENTRY_REG, "e/x");
}

static void delta_for(struct vy_manifest_delta *d, const struct vy_manifest *base)
{
	memset(d, 0, sizeof(*d));
	d->base_count = base->count;
}

/* One delta against check_base(): gone indices (0-terminated, so the root
 * is never named, except by NO_ROOT), put entries (path NULL ends them). */
#define NO_ROOT 0xfffffff0u
#define NEW VY_DELTA_NEW
#define P(at, type, path) { at, VY_ENTRY_##type, path, 0 }
#define END { 0, 0, NULL, 0 }
struct check_case {
	const char *what;
	bool ok;
	uint32_t gone[3];
	struct {
		uint32_t at;
		uint8_t type;
		const char *path;
		uint32_t link_of;
	} put[4];
};

static const struct check_case check_cases[] = {
	{ "replaced twice", false, { 0 }, { P(2, REG, "d/f"), P(2, REG, "d/f") } },
	{ "replaced, other path", false, { 0 }, { P(2, REG, "d/g") } },
	{ "replaced, other type", false, { 0 }, { P(2, DIR, "d/f") } },
	{ "gone and replaced", false, { 2 }, { P(2, REG, "d/f") } },
	{ "gone twice", false, { 3, 3 }, { END } },
	{ "gone root", false, { NO_ROOT }, { END } },
	{ "gone out of range", false, { 9 }, { END } },
	{ "at out of range", false, { 0 }, { P(9, REG, "z") } },
	{ "new, no parent", false, { 0 }, { P(NEW, REG, "nope/x") } },
	{ "new, parent a file", false, { 0 }, { P(NEW, REG, "f/x") } },
	{ "new, parent a symlink", false, { 0 }, { P(NEW, REG, "s/x") } },
	{ "new, parent gone", false, { 7, 8 }, { P(NEW, REG, "e/y") } },
	{ "new, path exists", false, { 0 }, { P(NEW, REG, "d/f") } },
	{ "new, path replaced", false, { 0 }, { P(2, REG, "d/f"), P(NEW, REG, "d/f") } },
	{ "new twice", false, { 0 }, { P(NEW, DIR, "n"), P(NEW, DIR, "n") } },
	{ "new child before parent", false, { 0 }, { P(NEW, REG, "n/x"), P(NEW, DIR, "n") } },
	{ "new hard link", false, { 0 }, { { NEW, VY_ENTRY_REG, "h3", 4 } } },
	{ "gone, a later link name", false, { 5 }, { END } },
	{ "gone, a first link name", false, { 4 }, { END } },
	{ "replaced, a first link name", false, { 0 }, { P(4, REG, "h1") } },
	{ "replaced, a later link name", false, { 0 }, { P(5, REG, "h2") } },
	/* A directory goes only with everything under it: otherwise the
	 * applied manifest holds an entry without a parent directory, which
	 * no scan makes and no decoder accepts, and the skeleton's rmdir
	 * fails. */
	{ "directory gone, child kept", false, { 7 }, { END } },
	{ "dir to file, child kept", false, { 7 }, { P(NEW, REG, "e") } },
	{ "new under new", true, { 0 },
	  { P(NEW, DIR, "n"), P(NEW, DIR, "n/m"), P(NEW, REG, "n/m/x") } },
	{ "file replaced by directory", true, { 3 }, { P(NEW, DIR, "f"), P(NEW, REG, "f/x") } },
	{ "directory replaced by file", true, { 1, 2 },
	  { P(0, DIR, ""), P(NEW, REG, "d"), P(6, SYMLINK, "s") } },
	{ "changes beside links", true, { 8 },
	  { P(0, DIR, ""), P(3, REG, "f"), P(NEW, REG, "e/y") } },
};

static void delta_from_case(struct vy_manifest_delta *d, uint32_t base_count,
			    const struct check_case *c)
{
	memset(d, 0, sizeof(*d));
	d->base_count = base_count;
	for (int k = 0; k < 3 && c->gone[k]; k++)
		gone(d, c->gone[k] == NO_ROOT ? 0 : c->gone[k]);
	for (int k = 0; k < 4 && c->put[k].path; k++) {
		struct vy_entry *e = put(d, c->put[k].at, c->put[k].type, c->put[k].path);
		e->mode = 0700; /* changed metadata, which the check allows */
		if (c->put[k].link_of)
			e->link_of = c->put[k].link_of;
	}
}

/* Checks d against base, frees d, and says whether it passed. */
static bool passes(const struct vy_manifest *base, struct vy_manifest_delta *d,
		   const char *what)
{
	vy_error err = { 0 }, err2 = { 0 };
	int rc = vy_manifest_delta_check(base, d, &err);
	/* the same answer from an index of the base made beforehand */
	struct vy_manifest_paths *paths = NULL;
	CHECK(vy_manifest_paths_build(base, &paths, &err2) == 0);
	int rc2 = paths ? vy_manifest_delta_check_with(base, paths, d, &err2) : -2;
	CHECK(rc2 == rc && (rc == 0 || !strcmp(err.msg, err2.msg)));
	vy_manifest_paths_free(paths);
	vy_manifest_delta_free(d);
	if (rc < 0)
		CHECK(err.msg[0] != '\0');
	printf("     %-28s -> %.100s\n", what, rc < 0 ? err.msg : "accepted");
	return rc == 0;
}

static void test_check(void)
{
	struct vy_manifest b;
	struct vy_manifest_delta d;
	check_base(&b);
	delta_from_case(&d, b.count - 1, &(struct check_case){ "", false, { 0 }, { END } });
	CHECK(!passes(&b, &d, "base count mismatch"));
	for (size_t i = 0; i < sizeof(check_cases) / sizeof(*check_cases); i++) {
		const struct check_case *c = &check_cases[i];
		delta_from_case(&d, b.count, c);
		bool ok = passes(&b, &d, c->what);
		if (ok != c->ok)
			fprintf(stderr, "  '%s': %s\n", c->what, ok ? "accepted" : "refused");
		CHECK(ok == c->ok);
	}
	vy_manifest_free(&b);
}

/* ---- applying ---- */

static void test_apply_remaps_links(void)
{
	struct vy_manifest b;
	memset(&b, 0, sizeof(b));
	add(&b, VY_ENTRY_DIR, "");
	add(&b, VY_ENTRY_REG, "a")->size = 10;
	add(&b, VY_ENTRY_REG, "b")->size = 20;
	add(&b, VY_ENTRY_DIR, "c");
	add(&b, VY_ENTRY_REG, "h1")->size = 7;
	add(&b, VY_ENTRY_REG, "h2")->link_of = 4;
	b.entries[5].size = 7;
	add(&b, VY_ENTRY_REG, "c/h3")->link_of = 4;
	b.entries[6].size = 7;
	b.data_bytes = 10 + 20 + 7; /* as a scan or the decoder would count it */
	struct vy_manifest_delta d;
	delta_for(&d, &b);
	gone(&d, 1);
	gone(&d, 2);
	put(&d, 3, VY_ENTRY_DIR, "c")->mode = 0700;
	put(&d, VY_DELTA_NEW, VY_ENTRY_REG, "z")->size = 100;
	vy_error err = { 0 };
	CHECK(vy_manifest_delta_check(&b, &d, &err) == 0);
	uint32_t *map = NULL;
	CHECK(vy_manifest_delta_apply(&b, &d, &map, &err) == 0);
	CHECK(d.put.count == 0 && d.gone == NULL && d.at == NULL);
	static const char *paths[] = { "", "c", "h1", "h2", "c/h3", "z" };
	CHECK(b.count == 6);
	for (uint32_t i = 0; i < b.count && i < 6; i++)
		CHECK(!strcmp(b.entries[i].path, paths[i]));
	if (b.count == 6) {
		CHECK(b.entries[1].mode == 0700);
		CHECK(b.entries[2].link_of == VY_NO_LINK);
		CHECK(b.entries[3].link_of == 2 && b.entries[4].link_of == 2);
		CHECK(b.entries[5].link_of == VY_NO_LINK);
	}
	CHECK(b.data_bytes == 107);
	static const uint32_t want[] = { 0, VY_DELTA_NEW, VY_DELTA_NEW, 1, 2, 3, 4 };
	for (uint32_t i = 0; map && i < 7; i++)
		CHECK(map[i] == want[i]);
	free(map);
	/* a delta for another count is refused and leaves b as it was */
	delta_for(&d, &b);
	d.base_count = 7;
	gone(&d, 1);
	CHECK(vy_manifest_delta_apply(&b, &d, NULL, &err) < 0 && b.count == 6);
	vy_manifest_delta_free(&d);
	vy_manifest_free(&b);
}

/* ---- the skeleton follows the tree ---- */

/* Materialises and finishes the scan of src under dst, opened as *rootfd. */
static bool make_skeleton(const char *src, const char *dst, int *rootfd,
			  struct vy_manifest *base)
{
	vy_error err = { 0 };
	memset(base, 0, sizeof(*base));
	*rootfd = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
	bool ok = *rootfd >= 0 && vy_manifest_scan(src, base, &err) == 0 &&
		  vy_manifest_materialise(base, *rootfd, &err) == 0 &&
		  vy_manifest_finish(base, *rootfd, &err) == 0;
	if (!ok)
		fprintf(stderr, "  skeleton: %s\n", err.msg);
	return ok;
}

/* The skeleton of base under rootfd, brought up to date with d, looks
 * like cur (access times aside). */
static void check_skeleton_follows(const struct vy_manifest *base, struct vy_manifest_delta *d,
				   const struct vy_manifest *cur, const char *dst, int rootfd)
{
	vy_error err = { 0 };
	struct vy_manifest skel = { 0 };
	uint32_t changed = 0;
	CHECK(vy_manifest_delta_check(base, d, &err) == 0);
	int rc = vy_manifest_delta_update_skeleton(base, d, rootfd, &changed, &err);
	if (rc < 0)
		fprintf(stderr, "  %s\n", err.msg);
	CHECK(rc == 0);
	CHECK(vy_manifest_scan(dst, &skel, &err) == 0);
	CHECK(same_manifest(&skel, cur, false));
	vy_manifest_free(&skel);
}

/* Builds a tree with build and its skeleton, changes the tree with
 * change, and brings the skeleton up to date with the diff, which must
 * have want_gone and want_put entries, the first put at first_at. */
static void skeleton_case(int (*build)(const char *), int (*change)(const char *),
			  uint32_t want_gone, uint32_t want_put, uint32_t first_at)
{
	cleanup_tree char *src = make_tmpdir();
	cleanup_tree char *dst = make_tmpdir();
	struct vy_manifest base = { 0 }, cur = { 0 };
	struct vy_manifest_delta d = { 0 };
	vy_error err = { 0 };
	int rootfd = -1;
	CHECK(src && dst && build(src) == 0 && stamp_tree(src) == 0);
	if (src && dst && make_skeleton(src, dst, &rootfd, &base)) {
		CHECK(change(src) == 0);
		CHECK(vy_manifest_scan(src, &cur, &err) == 0);
		CHECK(vy_manifest_diff(&base, &cur, &d, &err) == 1);
		CHECK(d.ngone == want_gone && d.put.count == want_put);
		CHECK(d.put.count && d.at[0] == first_at);
		check_skeleton_follows(&base, &d, &cur, dst, rootfd);
	}
	vy_manifest_delta_free(&d);
	if (rootfd >= 0)
		close(rootfd);
	vy_manifest_free(&base);
	vy_manifest_free(&cur);
}

static int dir_k(const char *d)
{
	return mkdir(join(d, "k"), 0755);
}

static int dir_k_file_f(const char *d)
{
	return mkdir(join(d, "k"), 0755) | write_at(join(d, "k/f"), 0, "f");
}

static int root_xattr(const char *d)
{
	return setxattr(d, "user.root", "r", 1, 0) | write_at(join(d, "f"), 0, "f");
}

/* What tar and rsync -t do: change what a directory holds, then set its
 * mtime back; so does a change within the clock tick of the base scan. */
static int add_in_k_keep_mtime(const char *d)
{
	return write_at(join(d, "k/g"), 0, "g") |
	       utimensat(AT_FDCWD, join(d, "k"), stamp_times, 0);
}

static int swap_in_k_keep_mtime(const char *d)
{
	/* a new file in the root puts the root first in the delta */
	return write_at(join(d, "r"), 0, "r") | unlink(join(d, "k/f")) |
	       add_in_k_keep_mtime(d);
}

static int drop_root_xattr(const char *d)
{
	return removexattr(d, "user.root");
}

/* The first entry of a delta is new when the root did not change: it is
 * made under its parent, not taken for the root. */
static void test_skeleton_first_put_new(void)
{
	skeleton_case(dir_k, add_in_k_keep_mtime, 0, 1, VY_DELTA_NEW);
}

/* A directory that is not in the delta ends with its own mtime although
 * entries came and went under it (here: only "", "r" and "k/g" put). */
static void test_skeleton_keeps_parent_times(void)
{
	skeleton_case(dir_k_file_f, swap_in_k_keep_mtime, 1, 3, 0);
}

/* An xattr removed from the root directory is removed from the skeleton's
 * root too (rootfd is an O_PATH descriptor). */
static void test_skeleton_root_xattr(void)
{
	skeleton_case(root_xattr, drop_root_xattr, 0, 1, 0);
}

/* ---- reading again only what changed: vy_manifest_rescan_delta ---- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void describe_entry(const char *what, const struct vy_entry *e)
{
	fprintf(stderr, "    %s '%s': type %u mode %o uid %u gid %u size %llu mtime %lld "
		"atime %lld target %s xattrs %u\n", what, e->path, e->type, e->mode, e->uid,
		e->gid, (unsigned long long)e->size, (long long)e->mtime_ns,
		(long long)e->atime_ns, e->target ? e->target : "-", e->nxattr);
}

/* d1 (vy_manifest_rescan_delta) names the same change as d2
 * (vy_manifest_diff): the same gone set, and the same put entries by path,
 * each with the same at and fields, atime included; put order aside. */
static bool same_delta(const struct vy_manifest *old, const struct vy_manifest_delta *d1,
		       const struct vy_manifest_delta *d2)
{
	bool ok = true;
	if (d1->base_count != d2->base_count || d1->base_count != old->count) {
		fprintf(stderr, "  base count %u, diff %u, old %u\n", d1->base_count,
			d2->base_count, old->count);
		ok = false;
	}
	/* gone, as sets */
	uint32_t *g1 = malloc((d1->ngone + 1) * sizeof(*g1));
	uint32_t *g2 = malloc((d2->ngone + 1) * sizeof(*g2));
	if (!g1 || !g2) {
		free(g1);
		free(g2);
		return false;
	}
	if (d1->ngone)
		memcpy(g1, d1->gone, d1->ngone * sizeof(*g1));
	if (d2->ngone)
		memcpy(g2, d2->gone, d2->ngone * sizeof(*g2));
	qsort(g1, d1->ngone, sizeof(*g1), cmp_u32);
	qsort(g2, d2->ngone, sizeof(*g2), cmp_u32);
	for (uint32_t a = 0, b = 0; a < d1->ngone || b < d2->ngone;) {
		if (a < d1->ngone && a && g1[a] == g1[a - 1]) {
			fprintf(stderr, "  gone %u named twice\n", g1[a]);
			ok = false;
			a++;
		} else if (b >= d2->ngone || (a < d1->ngone && g1[a] < g2[b])) {
			fprintf(stderr, "  gone only in rescan_delta: %u '%s'\n", g1[a],
				g1[a] < old->count ? old->entries[g1[a]].path : "?");
			ok = false;
			a++;
		} else if (a >= d1->ngone || g2[b] < g1[a]) {
			fprintf(stderr, "  gone only in diff: %u '%s'\n", g2[b],
				g2[b] < old->count ? old->entries[g2[b]].path : "?");
			ok = false;
			b++;
		} else {
			a++;
			b++;
		}
	}
	free(g1);
	free(g2);
	/* put, by path */
	uint32_t *o1 = path_order(&d1->put), *o2 = path_order(&d2->put);
	for (uint32_t k = 1; o1 && k < d1->put.count; k++)
		if (!strcmp(d1->put.entries[o1[k]].path, d1->put.entries[o1[k - 1]].path)) {
			fprintf(stderr, "  put twice: '%s'\n", d1->put.entries[o1[k]].path);
			ok = false;
		}
	for (uint32_t k = 0; o2 && k < d1->put.count; k++) {
		const struct vy_entry *e = &d1->put.entries[k];
		int64_t j = lookup(&d2->put, o2, e->path);
		if (j < 0) {
			fprintf(stderr, "  put only in rescan_delta (at %d):\n", (int)d1->at[k]);
			describe_entry("rescan_delta", e);
			ok = false;
		} else if (d1->at[k] != d2->at[j]) {
			fprintf(stderr, "  '%s': at %d, diff says %d\n", e->path, (int)d1->at[k],
				(int)d2->at[j]);
			ok = false;
		} else if (e->link_of != VY_NO_LINK ||
			   !same_entry(&d1->put, e, &d2->put, &d2->put.entries[j], true)) {
			fprintf(stderr, "  '%s' differs:\n", e->path);
			describe_entry("rescan_delta", e);
			describe_entry("diff        ", &d2->put.entries[j]);
			ok = false;
		}
	}
	for (uint32_t j = 0; o1 && j < d2->put.count; j++)
		if (lookup(&d1->put, o1, d2->put.entries[j].path) < 0) {
			fprintf(stderr, "  put only in diff (at %d):\n", (int)d2->at[j]);
			describe_entry("diff", &d2->put.entries[j]);
			ok = false;
		}
	if (!o1 || !o2)
		ok = false;
	free(o1);
	free(o2);
	return ok;
}

/* Every new entry of d comes after its parent in put order, or its parent
 * is a directory of old that d does not remove. */
static bool parents_first(const struct vy_manifest *old, const struct vy_manifest_delta *d)
{
	bool ok = true;
	for (uint32_t k = 0; k < d->put.count; k++) {
		if (d->at[k] != VY_DELTA_NEW)
			continue;
		const char *path = d->put.entries[k].path, *slash = strrchr(path, '/');
		char parent[VY_PATH_MAX + 1];
		snprintf(parent, sizeof(parent), "%.*s", slash ? (int)(slash - path) : 0, path);
		bool found = false;
		for (uint32_t j = 0; !found && j < k; j++)
			found = d->put.entries[j].type == VY_ENTRY_DIR &&
				!strcmp(d->put.entries[j].path, parent);
		int64_t o = found ? -1 : find(old, parent);
		if (o >= 0)
			found = old->entries[o].type == VY_ENTRY_DIR && !in_gone(old, d, parent);
		if (!found) {
			fprintf(stderr, "  new '%s' (put %u) before its parent '%s'\n", path, k,
				parent);
			ok = false;
		}
	}
	return ok;
}

static uint32_t count_dirs(const struct vy_manifest *m)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < m->count; i++)
		n += m->entries[i].type == VY_ENTRY_DIR;
	return n;
}

/* Watch src, scan it (old), change it, and take the change both ways:
 * rescan_delta (d1) and a full scan (cur) diffed against old (d2). */
struct rescan_run {
	struct vy_manifest old, cur;
	struct vy_manifest_delta d1, d2;
	uint32_t dirs_read;
	int rc1, rc2;
};

static void rescan_run(const char *src, int (*change)(const char *), struct rescan_run *r)
{
	struct vy_scan_watch *w = NULL;
	vy_error err = { 0 };
	memset(r, 0, sizeof(*r));
	r->rc1 = r->rc2 = -2;
	CHECK(vy_manifest_watch(src, &w, &err) == 0 && w != NULL);
	CHECK(vy_manifest_scan(src, &r->old, &err) == 0);
	CHECK(change(src) == 0);
	r->dirs_read = 0xdeadbeef;
	r->rc1 = vy_manifest_rescan_delta(w, src, &r->old, &r->d1, &r->dirs_read, &err);
	if (r->rc1 < 0)
		fprintf(stderr, "  rescan_delta: %s\n", err.msg);
	CHECK(vy_manifest_scan(src, &r->cur, &err) == 0);
	r->rc2 = vy_manifest_diff(&r->old, &r->cur, &r->d2, &err);
	vy_manifest_watch_free(w);
}

static void rescan_run_free(struct rescan_run *r)
{
	vy_manifest_delta_free(&r->d1);
	vy_manifest_delta_free(&r->d2);
	vy_manifest_free(&r->old);
	vy_manifest_free(&r->cur);
}

/* Both ways give a delta, and the same one. */
static void expect_same_delta(struct rescan_run *r, const char *what)
{
	if (r->rc1 != 1 || r->rc2 != 1)
		fprintf(stderr, "  %s: rescan_delta gave %d, diff %d\n", what, r->rc1, r->rc2);
	CHECK(r->rc1 == 1 && r->rc2 == 1);
	if (r->rc1 == 1 && r->rc2 == 1) {
		bool same = same_delta(&r->old, &r->d1, &r->d2);
		if (!same)
			fprintf(stderr, "  %s: the deltas differ\n", what);
		CHECK(same);
		CHECK(parents_first(&r->old, &r->d1));
	}
}

/* A new directory or symlink read for the first time (readdir, readlink)
 * gets its atime moved (relatime: its atime is not after its mtime), by
 * whichever way reads it first.  A future atime, set last, keeps both
 * ways' atimes the same. */
static int future_atime(const char *path)
{
	struct timespec t[2] = { stamp_times[0], { 0, UTIME_OMIT } };
	return utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW);
}

/* The base tree, and beside it: a second hard-link pair, a directory of
 * 300 files, 60 directories nothing touches, and directories that see one
 * change each, deep down. */
static int build_rescan_tree(const char *d)
{
	int rc = build_base_tree(d);
	rc |= mkdir(join(d, "links2"), 0755) | write_at(join(d, "links2/h1"), 0, "pair");
	rc |= link(join(d, "links2/h1"), join(d, "links2/h2"));
	rc |= mkdir(join(d, "many"), 0755);
	for (int i = 0; i < 300; i++) {
		char name[32];
		snprintf(name, sizeof(name), "many/f%03d", i);
		rc |= write_at(join(d, name), 0, name);
	}
	rc |= mkdir(join(d, "t"), 0755);
	for (int i = 0; i < 20; i++) {
		char name[32];
		snprintf(name, sizeof(name), "t/d%02d", i);
		rc |= mkdir(join(d, name), 0755);
		snprintf(name, sizeof(name), "t/d%02d/e", i);
		rc |= mkdir(join(d, name), 0755);
		snprintf(name, sizeof(name), "t/d%02d/e/f", i);
		rc |= mkdir(join(d, name), 0755);
		snprintf(name, sizeof(name), "t/d%02d/e/file", i);
		rc |= write_at(join(d, name), 0, "untouched");
	}
	rc |= mkdir(join(d, "quiet"), 0755) | mkdir(join(d, "quiet/sub"), 0755);
	rc |= write_at(join(d, "quiet/sub/file"), 0, "quiet");
	rc |= write_at(join(d, "quiet/other"), 0, "other");
	rc |= mkdir(join(d, "deep1"), 0755) | mkdir(join(d, "deep1/deep2"), 0755);
	rc |= mkdir(join(d, "deep1/deep2/chdir2"), 0755);
	rc |= write_at(join(d, "deep1/deep2/chdir2/f"), 0, "f");
	rc |= mkdir(join(d, "deep1/xdir"), 0755) | write_at(join(d, "deep1/xdir/child"), 0, "c");
	rc |= setxattr(join(d, "deep1/xdir"), "user.x", "one", 3, 0);
	rc |= stamp_tree(d);
	return rc ? -1 : 0;
}

static int change_rescan_tree(const char *d)
{
	int rc = change_tree(d);
	/* the root itself: an xattr, a mode (its mtime moves anyway) */
	rc |= setxattr(d, "user.root", "r", 1, 0) | chmod(d, 0751);
	/* a directory's own xattr, a directory's mode, each alone */
	rc |= setxattr(join(d, "deep1/xdir"), "user.x", "two!", 4, 0);
	rc |= chmod(join(d, "deep1/deep2/chdir2"), 0700);
	/* a write in a directory where nothing else changes */
	rc |= write_at(join(d, "quiet/sub/file"), 5, ", longer now");
	/* beside an unchanged hard-link pair */
	rc |= write_at(join(d, "links2/beside"), 0, "beside");
	/* in the big directory: one resized, one gone, one new */
	rc |= truncate(join(d, "many/f150"), 1000) | unlink(join(d, "many/f007"));
	rc |= write_at(join(d, "many/f300"), 0, "f300");
	rc |= future_atime(join(d, "newdir")) | future_atime(join(d, "newdir/inner"));
	rc |= future_atime(join(d, "f2d")) | future_atime(join(d, "sym"));
	return rc ? -1 : 0;
}

static void test_rescan_delta_matches_diff(void)
{
	cleanup_tree char *src = make_tmpdir();
	cleanup_tree char *dst = make_tmpdir();
	CHECK(src && dst && build_rescan_tree(src) == 0);
	if (!src || !dst)
		return;
	struct rescan_run r;
	rescan_run(src, change_rescan_tree, &r);
	expect_same_delta(&r, "many changes");
	uint32_t ndirs = count_dirs(&r.cur);
	printf("     %u of %u directories read, %u gone, %u put\n", r.dirs_read, ndirs,
	       r.d1.ngone, r.d1.put.count);
	/* read: "", a, links2, many, quiet/sub, deep1/xdir, deep1/deep2/chdir2,
	 * chdir, deep1 and deep1/deep2 (a child directory's IN_ATTRIB reaches
	 * its parent's watch too), and the new newdir and f2d (one each, with
	 * what is under them): 12; not t/ and its 60, not links, not quiet */
	CHECK(r.dirs_read >= 10 && r.dirs_read <= 14 && r.dirs_read * 4 < ndirs);
	vy_error err = { 0 };
	if (r.rc1 == 1) {
		/* what the round trip names, and: gone many/f007; put deep1/xdir,
		 * deep1/deep2/chdir2, quiet/sub/file, links2, links2/beside, many,
		 * many/f150, many/f300 */
		check_diff_contents(&r.old, &r.d1, 1, 8);
		CHECK(in_gone(&r.old, &r.d1, "many/f007") && in_put(&r.d1, "many/f300"));
		CHECK(in_put(&r.d1, "deep1/xdir") && in_put(&r.d1, "deep1/deep2/chdir2") &&
		      in_put(&r.d1, "quiet/sub/file") && in_put(&r.d1, "many/f150"));
		CHECK(!in_put(&r.d1, "quiet/sub") && !in_put(&r.d1, "deep1") &&
		      !in_put(&r.d1, "links2/h1") && !in_put(&r.d1, "links2/h2"));
		CHECK(vy_manifest_delta_check(&r.old, &r.d1, &err) == 0);
		/* a skeleton of old, brought up to date with d1, is cur */
		int rootfd = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
		CHECK(rootfd >= 0 && vy_manifest_materialise(&r.old, rootfd, &err) == 0 &&
		      vy_manifest_finish(&r.old, rootfd, &err) == 0);
		if (rootfd >= 0)
			check_skeleton_follows(&r.old, &r.d1, &r.cur, dst, rootfd);
		if (rootfd >= 0)
			close(rootfd);
		/* old + d1, applied to a copy of old, is cur */
		struct vy_manifest copy = { 0 };
		uint8_t *buf = NULL;
		size_t len = 0;
		CHECK(vy_manifest_encode(&r.old, &buf, &len, &err) == 0);
		CHECK(buf && vy_manifest_decode(buf, len, &copy, &err) == 0);
		free(buf);
		int rc = vy_manifest_delta_apply(&copy, &r.d1, NULL, &err);
		if (rc < 0)
			fprintf(stderr, "  apply: %s\n", err.msg);
		CHECK(rc == 0);
		CHECK(same_manifest(&copy, &r.cur, true));
		CHECK(copy.data_bytes == r.cur.data_bytes);
		vy_manifest_free(&copy);
	}
	rescan_run_free(&r);
}

static int no_change(const char *d)
{
	return 0;
}

static void test_rescan_delta_no_change(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_rescan_tree(src) == 0);
	if (!src)
		return;
	struct rescan_run r;
	rescan_run(src, no_change, &r);
	CHECK(r.rc1 == 1 && r.d1.ngone == 0 && r.d1.put.count == 0 && r.dirs_read == 0);
	CHECK(r.d1.base_count == r.old.count);
	CHECK(r.rc2 == 1 && r.d2.ngone == 0 && r.d2.put.count == 0);
	rescan_run_free(&r);
}

/* ---- hard links: no delta from rescan_delta either ---- */

static int link_tree_with_e(const char *d)
{
	return build_link_tree(d) | mkdir(join(d, "e"), 0755) | stamp_tree(d);
}

static int name_in_other_dir(const char *d)
{
	return link(join(d, "d/h1"), join(d, "e/h3"));
}

static int plain_file_second_name(const char *d)
{
	return link(join(d, "other"), join(d, "e/other2"));
}

static int new_file_two_names(const char *d)
{
	return write_at(join(d, "e/n1"), 0, "new") | link(join(d, "e/n1"), join(d, "e/n2"));
}

static int new_file_two_dirs(const char *d)
{
	return write_at(join(d, "e/n1"), 0, "new") | link(join(d, "e/n1"), join(d, "n2"));
}

static int new_dir_two_names(const char *d)
{
	return mkdir(join(d, "e/nd"), 0755) | write_at(join(d, "e/nd/n1"), 0, "new") |
	       link(join(d, "e/nd/n1"), join(d, "e/nd/n2"));
}

static int other_changed(const char *d)
{
	return write_at(join(d, "other"), 0, "changed and longer") |
	       write_at(join(d, "e/new"), 0, "new");
}

static void expect_no_rescan_delta(int (*change)(const char *), const char *what)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && link_tree_with_e(src) == 0);
	if (!src)
		return;
	struct rescan_run r;
	rescan_run(src, change, &r);
	if (r.rc1 != 0 || r.rc2 != 0)
		fprintf(stderr, "  %s: rescan_delta gave %d, diff %d\n", what, r.rc1, r.rc2);
	CHECK(r.rc1 == 0 && r.rc2 == 0);
	CHECK(r.d1.gone == NULL && r.d1.ngone == 0 && r.d1.put.count == 0 && r.d1.at == NULL);
	rescan_run_free(&r);
}

static void test_rescan_delta_hard_links(void)
{
	expect_no_rescan_delta(name_in_other_dir, "a third name, another directory");
	expect_no_rescan_delta(plain_file_second_name, "a second name for a plain file");
	expect_no_rescan_delta(one_name_less, "second name removed");
	expect_no_rescan_delta(one_name_less_first, "first name removed");
	expect_no_rescan_delta(linked_content, "content changed");
	expect_no_rescan_delta(new_file_two_names, "a new file with two names");
	expect_no_rescan_delta(new_file_two_dirs, "a new file, names in two directories");
	expect_no_rescan_delta(new_dir_two_names, "a new directory, a file with two names");
	/* beside the group, a delta as usual */
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && link_tree_with_e(src) == 0);
	if (!src)
		return;
	struct rescan_run r;
	rescan_run(src, other_changed, &r);
	expect_same_delta(&r, "beside a hard-link group");
	CHECK(r.d1.put.count == 3 && in_put(&r.d1, "other") && in_put(&r.d1, "e/new"));
	rescan_run_free(&r);
}

static void test_rescan_delta_no_watch(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && link_tree_with_e(src) == 0);
	if (!src)
		return;
	struct vy_manifest old = { 0 };
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	uint32_t dirs_read = 7;
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	CHECK(write_at(join(src, "other"), 0, "changed and longer") == 0);
	CHECK(vy_manifest_rescan_delta(NULL, src, &old, &d, &dirs_read, &err) == 0);
	CHECK(d.ngone == 0 && d.put.count == 0 && d.gone == NULL && d.at == NULL);
	CHECK(dirs_read == 0);
	vy_manifest_delta_free(&d);
	vy_manifest_free(&old);
}

/* More events than the queue holds (fs.inotify.max_queued_events): the
 * kernel drops them and says so, and there is no delta to be had. */
static void test_rescan_delta_overflow(void)
{
	long max = 0;
	FILE *f = fopen("/proc/sys/fs/inotify/max_queued_events", "r");
	if (f) {
		if (fscanf(f, "%ld", &max) != 1)
			max = 0;
		fclose(f);
	}
	if (max <= 0 || max > 100000) {
		printf("     skipped: max_queued_events %ld\n", max);
		return;
	}
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && link_tree_with_e(src) == 0);
	if (!src)
		return;
	struct vy_scan_watch *w = NULL;
	struct vy_manifest old = { 0 };
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	uint32_t dirs_read;
	CHECK(vy_manifest_watch(src, &w, &err) == 0);
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	/* each file: IN_CREATE and IN_CLOSE_WRITE */
	for (long i = 0; i < max / 2 + 100; i++) {
		char name[32];
		snprintf(name, sizeof(name), "e/%06ld", i);
		int fd = open(join(src, name), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		CHECK(fd >= 0);
		if (fd < 0)
			break;
		close(fd);
	}
	CHECK(vy_manifest_rescan_delta(w, src, &old, &d, &dirs_read, &err) == 0);
	CHECK(d.ngone == 0 && d.put.count == 0 && d.gone == NULL && d.at == NULL);
	vy_manifest_delta_free(&d);
	vy_manifest_watch_free(w);
	vy_manifest_free(&old);
}

/* ---- directories moved: watches follow inodes, not paths ---- */

/* live/c/f and stage/c/{f,g}: a release staged beside the live one. */
static int build_swap_tree(const char *d)
{
	int rc = mkdir(join(d, "live"), 0755) | mkdir(join(d, "live/c"), 0755);
	rc |= write_at(join(d, "live/c/f"), 0, "old release");
	rc |= mkdir(join(d, "stage"), 0755) | mkdir(join(d, "stage/c"), 0750);
	rc |= write_at(join(d, "stage/c/f"), 0, "new release, longer");
	rc |= write_at(join(d, "stage/c/g"), 0, "new file");
	rc |= mkdir(join(d, "a"), 0755) | mkdir(join(d, "a/b"), 0755);
	rc |= mkdir(join(d, "a/b/c"), 0755) | write_at(join(d, "a/b/c/file"), 0, "file");
	return (rc | stamp_tree(d)) ? -1 : 0;
}

/* The live directory swapped for the staged one, by rename. */
static int swap_release(const char *d)
{
	char live[512], prev[512];
	snprintf(live, sizeof(live), "%s", join(d, "live"));
	snprintf(prev, sizeof(prev), "%s", join(d, "prev"));
	return rename(live, prev) | rename(join(d, "stage"), live);
}

/* a/b moved away, and a/b/c made again, empty. */
static int move_and_remake(const char *d)
{
	char from[512], to[512];
	snprintf(from, sizeof(from), "%s", join(d, "a/b"));
	snprintf(to, sizeof(to), "%s", join(d, "moved"));
	int rc = rename(from, to) | mkdir(from, 0755) | mkdir(join(d, "a/b/c"), 0755);
	return rc | future_atime(join(d, "a/b")) | future_atime(join(d, "a/b/c"));
}

/* a moved away and a/b made again; then a change in what was a/b/c,
 * now moved/b/c, whose watch still names it a/b/c. */
static int move_grandparent(const char *d)
{
	char from[512], to[512];
	snprintf(from, sizeof(from), "%s", join(d, "a"));
	snprintf(to, sizeof(to), "%s", join(d, "moved"));
	int rc = rename(from, to) | mkdir(from, 0755) | mkdir(join(d, "a/b"), 0755);
	rc |= write_at(join(d, "moved/b/c/new"), 0, "n");
	return rc | future_atime(join(d, "a")) | future_atime(join(d, "a/b"));
}

static void moved_case(int (*change)(const char *), const char *what)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && build_swap_tree(src) == 0);
	if (!src)
		return;
	struct rescan_run r;
	rescan_run(src, change, &r);
	expect_same_delta(&r, what);
	rescan_run_free(&r);
}

static void test_rescan_delta_moved_dirs(void)
{
	moved_case(swap_release, "staged directory renamed into place");
	moved_case(move_and_remake, "directory moved, made again");
	moved_case(move_grandparent, "grandparent moved, made again");
}

/* Map path's first byte shared and write 'y' through the mapping, which
 * stays (with *fd): no inotify event, not even the close's.  NULL when
 * that fails. */
static char *write_mapped(const char *path, int *fd)
{
	*fd = open(path, O_RDWR | O_CLOEXEC);
	char *p = *fd >= 0 ? mmap(NULL, 1, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0) : MAP_FAILED;
	if (p == MAP_FAILED) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return NULL;
	}
	p[0] = 'y';
	return p;
}

static void unmap(char *p, int fd)
{
	if (p)
		munmap(p, 1);
	if (fd >= 0)
		close(fd);
}

/* A write through a shared mapping is no inotify event: the watch alone
 * misses it.  vy_manifest_watch_verify() finds the inode changed (its
 * ctime) and marks its directory, and then the delta has the file; a file
 * whose copy is void (vy_delta_forget) is marked too. */
static void test_watch_verify(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && mkdir(join(src, "d"), 0755) == 0 && mkdir(join(src, "e"), 0755) == 0 &&
	      write_at(join(src, "d/mapped"), 0, "0123456789") == 0 &&
	      write_at(join(src, "e/void"), 0, "abc") == 0 && write_at(join(src, "plain"), 0, "x") == 0);
	if (!src)
		return;
	struct vy_scan_watch *w = NULL;
	struct vy_manifest old = { 0 };
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	uint32_t dirs = 0, marked = 0;
	CHECK(vy_manifest_watch(src, &w, &err) == 0);
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	CHECK(vy_manifest_watch_index(w, &old, &err) == 0);
	/* nothing changed: nothing marked */
	CHECK(vy_manifest_watch_verify(w, src, &old, NULL, &marked, &err) == 0 && marked == 0);
	usleep(20000);
	int fd;
	char *p = write_mapped(join(src, "d/mapped"), &fd);
	CHECK(p != NULL);
	/* still mapped and open: the kernel has said nothing */
	CHECK(vy_manifest_rescan_delta(w, src, &old, &d, &dirs, &err) == 1);
	CHECK(!in_put(&d, "d/mapped") && dirs == 0);
	vy_manifest_delta_free(&d);
	old.entries[find(&old, "e/void")].mtime_ns = INT64_MIN; /* as vy_delta_forget does */
	CHECK(vy_manifest_watch_verify(w, src, &old, NULL, &marked, &err) == 0 && marked == 2);
	CHECK(vy_manifest_rescan_delta(w, src, &old, &d, &dirs, &err) == 1);
	CHECK(in_put(&d, "d/mapped") && in_put(&d, "e/void") && !in_put(&d, "plain") && dirs == 2);
	vy_manifest_delta_free(&d);
	unmap(p, fd);
	vy_manifest_watch_free(w);
	vy_manifest_free(&old);
}

/* The same over more entries than one thread takes (8192 each): changes
 * at both ends of the manifest are found, and nothing else. */
static void test_watch_verify_threads(void)
{
	cleanup_tree char *src = make_tmpdir();
	int ok = src ? 0 : -1;
	for (int d = 0; ok == 0 && d < 20; d++) {
		char dir[32];
		snprintf(dir, sizeof(dir), "d%02d", d);
		ok = mkdir(join(src, dir), 0755);
		for (int f = 0; ok == 0 && f < 1000; f++) {
			char name[48];
			snprintf(name, sizeof(name), "d%02d/f%04d", d, f);
			ok = write_at(join(src, name), 0, "x");
		}
	}
	CHECK(ok == 0);
	if (ok)
		return;
	struct vy_scan_watch *w = NULL;
	struct vy_manifest old = { 0 };
	struct vy_manifest_delta d;
	vy_error err = { 0 };
	uint32_t dirs = 0, marked = 0;
	CHECK(vy_manifest_watch(src, &w, &err) == 0);
	CHECK(vy_manifest_scan(src, &old, &err) == 0 && old.count == 20021);
	CHECK(vy_manifest_watch_index(w, &old, &err) == 0);
	usleep(20000);
	char *maps[2];
	int fds[2];
	const char *names[2] = { "d00/f0000", "d19/f0999" };
	for (int k = 0; k < 2; k++)
		CHECK((maps[k] = write_mapped(join(src, names[k]), &fds[k])) != NULL);
	CHECK(vy_manifest_watch_verify(w, src, &old, NULL, &marked, &err) == 0 && marked == 2);
	CHECK(vy_manifest_rescan_delta(w, src, &old, &d, &dirs, &err) == 1);
	CHECK(d.put.count == 2 && in_put(&d, names[0]) && in_put(&d, names[1]) && dirs == 2);
	vy_manifest_delta_free(&d);
	for (int k = 0; k < 2; k++)
		unmap(maps[k], fds[k]);
	vy_manifest_watch_free(w);
	vy_manifest_free(&old);
}

/* Files in voids (mapped shared and writable at the freeze: written,
 * perhaps, with no trace in their times) are marked and their copies
 * voided even though nothing about their inodes changed, so the delta
 * has them and vy_delta_need asks for their data; with no watch (w NULL)
 * only the voiding is done, and a diff against a new scan has them. */
static void test_watch_verify_voids(void)
{
	cleanup_tree char *src = make_tmpdir();
	CHECK(src && mkdir(join(src, "d"), 0755) == 0 &&
	      write_at(join(src, "d/shm"), 0, "0123456789") == 0 &&
	      write_at(join(src, "plain"), 0, "x") == 0 && symlink("plain", join(src, "ln")) == 0);
	if (!src)
		return;
	struct vy_inode_set set = { 0 };
	struct stat st, lst;
	vy_error err = { 0 };
	CHECK(stat(join(src, "d/shm"), &st) == 0 && lstat(join(src, "ln"), &lst) == 0);
	/* added twice, and a symlink's inode (never voided: not a file) */
	CHECK(vy_inode_set_add(&set, st.st_dev, st.st_ino, &err) == 0 &&
	      vy_inode_set_add(&set, lst.st_dev, lst.st_ino, &err) == 0 &&
	      vy_inode_set_add(&set, st.st_dev, st.st_ino, &err) == 0);
	vy_inode_set_sort(&set);
	CHECK(set.n == 2 && vy_inode_set_has(&set, st.st_dev, st.st_ino) &&
	      !vy_inode_set_has(&set, st.st_dev, st.st_ino + 1) && !vy_inode_set_has(NULL, 1, 1));

	struct vy_scan_watch *w = NULL;
	struct vy_manifest old = { 0 }, cur = { 0 };
	struct vy_manifest_delta d;
	uint32_t dirs = 0, marked = 0, files = 0;
	uint64_t bytes = 0;
	uint8_t *need = NULL;
	CHECK(vy_manifest_watch(src, &w, &err) == 0);
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	CHECK(vy_manifest_watch_index(w, &old, &err) == 0);
	CHECK(vy_manifest_watch_verify(w, src, &old, NULL, &marked, &err) == 0 && marked == 0);
	CHECK(vy_manifest_watch_verify(w, src, &old, &set, &marked, &err) == 0 && marked == 1);
	CHECK(old.entries[find(&old, "d/shm")].mtime_ns == INT64_MIN &&
	      old.entries[find(&old, "ln")].mtime_ns != INT64_MIN);
	CHECK(vy_manifest_rescan_delta(w, src, &old, &d, &dirs, &err) == 1);
	CHECK(d.put.count == 1 && in_put(&d, "d/shm") && dirs == 1);
	CHECK(vy_delta_need(&old, &d, &need, &files, &bytes, NULL, &err) == 0 && files == 1 &&
	      bytes == 10);
	free(need);
	vy_manifest_delta_free(&d);
	vy_manifest_watch_free(w);
	vy_manifest_free(&old);

	/* no watch: voided all the same, and nothing to mark */
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	CHECK(vy_manifest_watch_verify(NULL, src, &old, &set, &marked, &err) == 0 && marked == 1);
	CHECK(old.entries[find(&old, "d/shm")].mtime_ns == INT64_MIN);
	CHECK(vy_manifest_scan(src, &cur, &err) == 0);
	CHECK(vy_manifest_diff(&old, &cur, &d, &err) == 1 && d.put.count == 1 && in_put(&d, "d/shm"));
	vy_manifest_delta_free(&d);
	vy_manifest_free(&cur);
	vy_manifest_free(&old);
	/* and without voids nor watch, nothing at all */
	CHECK(vy_manifest_scan(src, &old, &err) == 0);
	CHECK(vy_manifest_watch_verify(NULL, src, &old, NULL, &marked, &err) == 0 && marked == 0);
	vy_manifest_free(&old);
	vy_inode_set_free(&set);
	CHECK(set.n == 0 && set.ids == NULL);
}

int main(void)
{
	RUN(test_round_trip_real_tree);
	RUN(test_no_change);
	RUN(test_hard_links_no_delta);
	RUN(test_decode_truncated);
	RUN(test_decode_rejects_bytes);
	RUN(test_decode_rejects_entries);
	RUN(test_check);
	RUN(test_apply_remaps_links);
	RUN(test_skeleton_first_put_new);
	RUN(test_skeleton_keeps_parent_times);
	RUN(test_skeleton_root_xattr);
	RUN(test_rescan_delta_matches_diff);
	RUN(test_rescan_delta_no_change);
	RUN(test_rescan_delta_hard_links);
	RUN(test_rescan_delta_no_watch);
	RUN(test_rescan_delta_overflow);
	RUN(test_rescan_delta_moved_dirs);
	RUN(test_watch_verify);
	RUN(test_watch_verify_threads);
	RUN(test_watch_verify_voids);
	return unit_summary();
}
