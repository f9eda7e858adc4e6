/* test_chunkmap.c - unit tests for chunkmap.c, voyager-fs's hydration state.
 *
 * A small real tree is scanned into a manifest (a multi-chunk file, a hard
 * link, an empty file, a one-chunk file, a symlink); the state is made,
 * marked, flushed, reloaded; a child process marks and "crashes" before a
 * flush to show that only flushed bits survive; shrink and drop are durable
 * at once; and every kind of damaged or foreign state file is refused.
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
	vy_manifest_free(&man);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return unit_summary();
}
