/* test_chunkmap.c - unit tests for chunkmap.c, voyager-fs's hydration state.
 *
 * A small real tree is scanned into a manifest (a multi-chunk file, a hard
 * link, an empty file, a one-chunk file, a symlink); the state is made,
 * marked, flushed, reloaded; a child process marks and "crashes" before a
 * flush to show that only flushed bits survive; shrink and drop are durable
 * at once; every kind of damaged or foreign state file is refused; and a
 * state prepared for one manifest is rebased onto what a delta made of it.
 * Everything lives in /tmp/vytest-XXXXXX and is removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chunkmap.h"
#include "manifest.h"
#include "unit.h"
#include "wire.h"

#define CS 4096u

static char dir[64], state[128];
static struct vy_manifest man;
static uint64_t inos[16];
static const uint8_t hash[32] = { 1, 2, 3 };
static uint32_t big_f, small_f; /* chunk map numbers */

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *f)
{
	remove(p);
	return 0;
}

static void put(const char *name, size_t size)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/tree/%s", dir, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (size && ftruncate(fd, (off_t)size) < 0)
		abort();
	close(fd);
}

static int setup(void)
{
	strcpy(dir, "/tmp/vytest-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	char p[256];
	snprintf(p, sizeof(p), "%s/tree", dir);
	mkdir(p, 0755);
	put("big", 10 * CS + 100); /* 11 chunks, the last short */
	put("empty", 0);
	put("small", 5);
	snprintf(p, sizeof(p), "%s/tree/big", dir);
	char q[256];
	snprintf(q, sizeof(q), "%s/tree/biglink", dir);
	if (link(p, q) < 0 || symlinkat("big", AT_FDCWD, strcat(strcpy(q, dir), "/tree/sym")))
		return -1;
	snprintf(p, sizeof(p), "%s/tree", dir);
	vy_error err;
	if (vy_manifest_scan(p, &man, &err) < 0)
		return -1;
	for (uint32_t i = 0; i < man.count && i < 16; i++)
		inos[i] = 1000 + i;
	snprintf(state, sizeof(state), "%s/state", dir);
	return 0;
}

static struct vy_chunkmap *fresh(void)
{
	struct vy_chunkmap *cm = NULL;
	vy_error err;
	unlink(state);
	if (vy_chunkmap_create(state, &man, hash, CS, inos, &cm, &err) < 0) {
		fprintf(stderr, "  create: %s\n", err.msg);
		return NULL;
	}
	for (uint32_t f = 0; f < vy_chunkmap_count(cm); f++) {
		const char *path = man.entries[vy_chunkmap_entry(cm, f)].path;
		if (!strcmp(path, "small"))
			small_f = f;
		else
			big_f = f;
	}
	return cm;
}

static struct vy_chunkmap *reload(vy_error *err)
{
	struct vy_chunkmap *cm = NULL;
	return vy_chunkmap_load(state, &man, hash, CS, &cm, err) < 0 ? NULL : cm;
}

static void test_tracks_only_data_files(void)
{
	struct vy_chunkmap *cm = fresh();
	CHECK(cm != NULL);
	if (!cm)
		return;
	CHECK(vy_chunkmap_count(cm) == 2); /* big and small; not the link, empty, sym */
	CHECK(vy_chunkmap_size(cm, big_f) == 10 * CS + 100);
	uint32_t e = vy_chunkmap_entry(cm, big_f);
	CHECK(vy_chunkmap_find_ino(cm, inos[e]) == big_f);
	CHECK(vy_chunkmap_find_ino(cm, 99999) == -1);
	struct vy_chunkmap_stats s;
	vy_chunkmap_stats(cm, &s);
	CHECK(s.chunks_total == 12 && s.chunks_present == 0);
	CHECK(s.files_total == 2 && s.files_complete == 0);
	CHECK(s.bytes_total == 10 * CS + 105);
	vy_chunkmap_close(cm, NULL);
}

static void test_mark_and_query(void)
{
	struct vy_chunkmap *cm = fresh();
	if (!cm)
		return;
	uint64_t miss = 0;
	vy_chunkmap_mark(cm, big_f, 2, 3);
	CHECK(vy_chunkmap_present(cm, big_f, 2) && vy_chunkmap_present(cm, big_f, 4));
	CHECK(!vy_chunkmap_present(cm, big_f, 1) && !vy_chunkmap_present(cm, big_f, 5));
	CHECK(vy_chunkmap_range_present(cm, big_f, 2 * CS, 3 * CS, &miss));
	CHECK(!vy_chunkmap_range_present(cm, big_f, 2 * CS + 1, 3 * CS, &miss) && miss == 5);
	CHECK(vy_chunkmap_next_missing(cm, big_f, 2) == 5);
	CHECK(vy_chunkmap_next_missing(cm, big_f, 0) == 0);
	/* Past the end: nothing is remote there, so it counts as present. */
	CHECK(vy_chunkmap_range_present(cm, big_f, 11 * CS, CS, &miss));
	vy_chunkmap_mark(cm, big_f, 0, 11);
	CHECK(vy_chunkmap_complete(cm, big_f));
	CHECK(vy_chunkmap_next_missing(cm, big_f, 0) == UINT64_MAX);
	struct vy_chunkmap_stats s;
	vy_chunkmap_stats(cm, &s);
	CHECK(s.chunks_present == 11 && s.files_complete == 1);
	CHECK(s.bytes_present == 10 * CS + 100);
	vy_chunkmap_close(cm, NULL);
}

static void test_flush_and_reload(void)
{
	struct vy_chunkmap *cm = fresh();
	if (!cm)
		return;
	vy_error err;
	vy_chunkmap_mark(cm, big_f, 7, 1);
	vy_chunkmap_mark(cm, small_f, 0, 1);
	CHECK(vy_chunkmap_close(cm, &err) == 0);
	cm = reload(&err);
	CHECK(cm != NULL);
	if (!cm)
		return;
	CHECK(vy_chunkmap_present(cm, big_f, 7) && !vy_chunkmap_present(cm, big_f, 6));
	CHECK(vy_chunkmap_complete(cm, small_f));
	vy_chunkmap_close(cm, NULL);
}

/* A child marks 0..2, flushes, marks 3, and dies without flushing. */
static void test_crash_keeps_only_flushed(void)
{
	struct vy_chunkmap *cm = fresh();
	if (!cm)
		return;
	vy_chunkmap_close(cm, NULL);
	pid_t pid = fork();
	if (pid == 0) {
		vy_error err;
		struct vy_chunkmap *c = reload(&err);
		if (!c)
			_exit(1);
		vy_chunkmap_mark(c, big_f, 0, 3);
		if (vy_chunkmap_flush(c, &err) < 0)
			_exit(1);
		vy_chunkmap_mark(c, big_f, 3, 1);
		_exit(0); /* no flush, no close: a crash */
	}
	int status = 0;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	vy_error err;
	cm = reload(&err);
	CHECK(cm != NULL);
	if (!cm)
		return;
	CHECK(vy_chunkmap_present(cm, big_f, 0) && vy_chunkmap_present(cm, big_f, 2));
	CHECK(!vy_chunkmap_present(cm, big_f, 3));
	vy_chunkmap_close(cm, NULL);
}

static void test_shrink_and_drop(void)
{
	struct vy_chunkmap *cm = fresh();
	if (!cm)
		return;
	vy_error err;
	vy_chunkmap_mark(cm, big_f, 0, 2);
	/* Shrinking to 2.5 chunks leaves chunk 2 (half remote) to fetch. */
	CHECK(vy_chunkmap_shrink(cm, big_f, 2 * CS + CS / 2, &err) == 0);
	CHECK(vy_chunkmap_remote_size(cm, big_f) == 2 * CS + CS / 2);
	CHECK(!vy_chunkmap_complete(cm, big_f));
	CHECK(vy_chunkmap_next_missing(cm, big_f, 0) == 2);
	CHECK(vy_chunkmap_shrink(cm, big_f, 5 * CS, &err) == 0); /* never grows */
	CHECK(vy_chunkmap_remote_size(cm, big_f) == 2 * CS + CS / 2);
	/* Durable without a flush: a "crash" (no close) keeps it. */
	struct vy_chunkmap *again = reload(&err);
	CHECK(again && vy_chunkmap_remote_size(again, big_f) == 2 * CS + CS / 2);
	vy_chunkmap_close(again, NULL);
	uint64_t ino = vy_chunkmap_ino(cm, big_f);
	CHECK(vy_chunkmap_drop(cm, big_f, &err) == 0);
	CHECK(vy_chunkmap_find_ino(cm, ino) == -1);
	CHECK(vy_chunkmap_complete(cm, big_f));
	again = reload(&err);
	CHECK(again && vy_chunkmap_find_ino(again, ino) == -1);
	struct vy_chunkmap_stats s;
	if (again) {
		vy_chunkmap_stats(again, &s);
		CHECK(s.files_total == 1 && s.chunks_total == 1);
	}
	vy_chunkmap_close(again, NULL);
	vy_chunkmap_close(cm, NULL);
}

static void patch(size_t off, const void *bytes, size_t len)
{
	int fd = open(state, O_WRONLY | O_CLOEXEC);
	CHECK(pwrite(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

static void test_refuses_damage(void)
{
	vy_error err;
	struct vy_chunkmap *cm = fresh(), *bad = NULL;
	if (!cm)
		return;
	vy_chunkmap_close(cm, NULL);
	uint8_t other[32] = { 9 };
	CHECK(vy_chunkmap_load(state, &man, other, CS, &bad, &err) < 0);
	CHECK(strstr(err.msg, "another manifest") != NULL);
	CHECK(vy_chunkmap_load(state, &man, hash, 2 * CS, &bad, &err) < 0);
	CHECK(strstr(err.msg, "chunk size") != NULL);
	CHECK(vy_chunkmap_load(state, &man, hash, 1000, &bad, &err) < 0);
	uint8_t b[8];
	vy_put_u32(b, 0xdeadbeef);
	patch(0, b, 4);
	CHECK(vy_chunkmap_load(state, &man, hash, CS, &bad, &err) < 0);
	vy_chunkmap_close(fresh(), NULL);
	vy_chunkmap_close(reload(&err), NULL);
	vy_put_u32(b, 77); /* first record's entry index */
	patch(VY_CHUNKMAP_HDR_LEN, b, 4);
	CHECK(vy_chunkmap_load(state, &man, hash, CS, &bad, &err) < 0);
	CHECK(strstr(err.msg, "damaged") != NULL);
	vy_chunkmap_close(fresh(), NULL);
	vy_put_u64(b, UINT64_MAX); /* first record's remote size */
	patch(VY_CHUNKMAP_HDR_LEN + 16, b, 8);
	CHECK(vy_chunkmap_load(state, &man, hash, CS, &bad, &err) < 0);
	vy_chunkmap_close(fresh(), NULL);
	CHECK(truncate(state, VY_CHUNKMAP_HDR_LEN + 3) == 0);
	CHECK(vy_chunkmap_load(state, &man, hash, CS, &bad, &err) < 0);
	CHECK(truncate(state, 0) == 0);
	CHECK(vy_chunkmap_load(state, &man, hash, CS, &bad, &err) < 0);
	unlink(state);
	CHECK(vy_chunkmap_load(state, &man, hash, CS, &bad, &err) < 0 && err.code == ENOENT);
	CHECK(bad == NULL);
}

static uint32_t index_of(const struct vy_manifest *m, const char *path)
{
	for (uint32_t i = 0; i < m->count; i++)
		if (!strcmp(m->entries[i].path, path))
			return i;
	return UINT32_MAX;
}

/* Prepared for one manifest (and written, when early: voyager-fs's way),
 * rebased onto what a delta made of it, then written: kept files keep
 * their records (moved entries followed), a file that changed size gets a
 * new record and leaves a dropped one, a gone file's record is dropped, a
 * new file gets a record; reloaded, the same. */
static void rebase_once(bool early)
{
	vy_error err;
	char st2[160];
	snprintf(st2, sizeof(st2), "%s/state2", dir);
	uint8_t *buf = NULL;
	size_t len = 0;
	struct vy_manifest fin = { 0 };
	CHECK(vy_manifest_encode(&man, &buf, &len, &err) == 0);
	CHECK(vy_manifest_decode(buf, len, &fin, &err) == 0);
	free(buf);
	uint32_t big = index_of(&man, "big"), small = index_of(&man, "small");
	uint32_t empty = index_of(&man, "empty");
	CHECK(big < man.count && small < man.count && empty < man.count);
	/* "empty" goes (it is before "small": small moves down), "small"
	 * grows to 3 chunks, "new" (2 chunks) comes */
	struct vy_manifest_delta d = { .base_count = man.count };
	d.gone = malloc(sizeof(uint32_t));
	d.gone[0] = empty;
	d.ngone = 1;
	d.at = malloc(2 * sizeof(uint32_t));
	struct vy_entry *e = calloc(2, sizeof(*e));
	d.put = (struct vy_manifest){ .entries = e, .count = 2, .cap = 2 };
	e[0] = man.entries[small];
	e[0].path = strdup("small");
	e[0].xattrs = NULL;
	e[0].nxattr = 0;
	e[0].size = 2 * CS + 1;
	d.at[0] = small;
	e[1] = e[0];
	e[1].path = strdup("new");
	e[1].size = CS + 1;
	d.at[1] = VY_DELTA_NEW;
	uint32_t *map = NULL;
	CHECK(vy_manifest_delta_check(&man, &d, &err) == 0);
	CHECK(vy_manifest_delta_apply(&fin, &d, &map, &err) == 0);
	uint32_t fsmall = index_of(&fin, "small"), fnew = index_of(&fin, "new");
	CHECK(map && map[big] == big && map[small] == fsmall && fsmall == small - 1);
	uint64_t finos[16] = { 0 };
	for (uint32_t i = 0; i < man.count && i < 16; i++)
		if (map && map[i] != VY_DELTA_NEW)
			finos[map[i]] = inos[i];
	finos[fnew] = 2000;
	struct vy_chunkmap *cm = NULL;
	static const uint8_t base_hash[32] = { 9, 9, 9 };
	unlink(st2);
	CHECK(vy_chunkmap_prepare(&man, CS, inos, &cm, &err) == 0);
	CHECK(!early || (cm && vy_chunkmap_commit(cm, st2, base_hash, &err) == 0));
	CHECK(cm && vy_chunkmap_rebase(cm, &fin, map, man.count, finos, &err) == 0);
	CHECK(cm && vy_chunkmap_commit(cm, st2, hash, &err) == 0);
	for (int pass = 0; cm && pass < 2; pass++) {
		int64_t fb = vy_chunkmap_find_ino(cm, inos[big]);
		int64_t fs = vy_chunkmap_find_ino(cm, inos[small]);
		int64_t fn = vy_chunkmap_find_ino(cm, 2000);
		CHECK(fb >= 0 && vy_chunkmap_entry(cm, (uint32_t)fb) == big);
		CHECK(fs >= 0 && vy_chunkmap_entry(cm, (uint32_t)fs) == fsmall &&
		      vy_chunkmap_size(cm, (uint32_t)fs) == 2 * CS + 1 &&
		      vy_chunkmap_remote_size(cm, (uint32_t)fs) == 2 * CS + 1);
		CHECK(fn >= 0 && vy_chunkmap_entry(cm, (uint32_t)fn) == fnew &&
		      vy_chunkmap_remote_size(cm, (uint32_t)fn) == CS + 1);
		CHECK(vy_chunkmap_count(cm) == 4); /* big, small's old, small, new */
		struct vy_chunkmap_stats s;
		vy_chunkmap_stats(cm, &s);
		CHECK(s.files_total == 3 && s.chunks_total == 11 + 3 + 2 &&
		      s.chunks_present == (uint64_t)pass);
		if (fs >= 0 && pass == 0) {
			vy_chunkmap_mark(cm, (uint32_t)fs, 1, 1);
			CHECK(vy_chunkmap_flush(cm, &err) == 0);
		}
		CHECK(fs < 0 || vy_chunkmap_present(cm, (uint32_t)fs, 1));
		CHECK(vy_chunkmap_close(cm, &err) == 0);
		cm = NULL;
		if (pass == 0)
			CHECK(vy_chunkmap_load(st2, &fin, hash, CS, &cm, &err) == 0);
	}
	/* the base manifest does not fit it */
	cm = NULL;
	CHECK(vy_chunkmap_load(st2, &man, hash, CS, &cm, &err) < 0);
	free(map);
	vy_manifest_free(&fin);
}

static void test_rebase(void)
{
	rebase_once(false);
	rebase_once(true);
}

int main(void)
{
	if (setup() < 0) {
		fprintf(stderr, "setup failed\n");
		return 1;
	}
	RUN(test_tracks_only_data_files);
	RUN(test_mark_and_query);
	RUN(test_flush_and_reload);
	RUN(test_crash_keeps_only_flushed);
	RUN(test_shrink_and_drop);
	RUN(test_refuses_damage);
	RUN(test_rebase);
	vy_manifest_free(&man);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return unit_summary();
}
