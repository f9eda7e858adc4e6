/* test_delta.c - what changed between two scans, and what a pre-synced
 * tree is brought to at the freeze (in place). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "delta.h"
#include "unit.h"
#include "util.h"

static char tmp[64];

static void put(const char *dir, const char *name, const char *text)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	fputs(text, f);
	fclose(f);
}

static uint32_t index_of(const struct vy_manifest *m, const char *path)
{
	for (uint32_t i = 0; i < m->count; i++)
		if (!strcmp(m->entries[i].path, path))
			return i;
	return VY_NO_LINK;
}

static void make_tree(const char *src)
{
	char p[512];
	mkdir(src, 0755);
	snprintf(p, sizeof(p), "%s/d", src);
	mkdir(p, 0755);
	put(src, "same", "unchanged content\n");
	put(src, "d/same2", "also unchanged\n");
	put(src, "grows", "short\n");
	put(src, "chmod", "mode changes\n");
	put(src, "xattr", "xattr changes\n");
	put(src, "gone", "will be deleted\n");
	put(src, "link1", "hard linked\n");
	char a[512], b[512];
	snprintf(a, sizeof(a), "%s/link1", src);
	snprintf(b, sizeof(b), "%s/link2", src);
	link(a, b);
}

static void change_tree(const char *src)
{
	char p[512];
	put(src, "grows", "much longer than before\n");
	snprintf(p, sizeof(p), "%s/chmod", src);
	chmod(p, 0600);
	snprintf(p, sizeof(p), "%s/xattr", src);
	setxattr(p, "user.vy", "1", 1, 0);
	snprintf(p, sizeof(p), "%s/gone", src);
	unlink(p);
	put(src, "new", "a new file\n");
}

static void test_unchanged_set(void)
{
	char src[128];
	snprintf(src, sizeof(src), "%s/src", tmp);
	make_tree(src);
	struct vy_manifest old = { 0 }, cur = { 0 };
	CHECK(vy_manifest_scan(src, &old, NULL) == 0);
	change_tree(src);
	CHECK(vy_manifest_scan(src, &cur, NULL) == 0);
	uint8_t *u = NULL;
	uint32_t n = 0;
	CHECK(vy_delta_unchanged(&old, &cur, &u, &n, NULL) == 0);
	if (u) {
		CHECK(u[index_of(&cur, "same")] == 1);
		CHECK(u[index_of(&cur, "d/same2")] == 1);
		CHECK(u[index_of(&cur, "grows")] == 0);
		CHECK(u[index_of(&cur, "chmod")] == 0);
		CHECK(u[index_of(&cur, "xattr")] == 0);
		CHECK(u[index_of(&cur, "new")] == 0);
		CHECK(u[index_of(&cur, "link1")] == 0); /* hard links are always resent */
		CHECK(u[index_of(&cur, "d")] == 0);     /* only regular files count */
		CHECK(n == 2);
	}
	/* a file the live pre-sync skipped never counts as unchanged */
	uint8_t *skipped = calloc(old.count, 1);
	skipped[index_of(&old, "same")] = 1;
	vy_delta_forget(&old, skipped);
	free(u);
	u = NULL;
	CHECK(vy_delta_unchanged(&old, &cur, &u, &n, NULL) == 0);
	CHECK(u && u[index_of(&cur, "same")] == 0 && n == 1);
	free(u);
	free(skipped);
	vy_manifest_free(&old);
	vy_manifest_free(&cur);
}

/* At the freeze a pre-synced tree is brought to the new manifest in place
 * (vy_manifest_update_skeleton): the data of what did not change stays,
 * what is gone goes, what is new is made, and nothing is moved. */
static void test_in_place(void)
{
	char src[128], dst[128];
	snprintf(src, sizeof(src), "%s/src2", tmp);
	snprintf(dst, sizeof(dst), "%s/dst", tmp);
	make_tree(src);
	mkdir(dst, 0700);
	struct vy_manifest old = { 0 }, cur = { 0 };
	CHECK(vy_manifest_scan(src, &old, NULL) == 0);
	int fd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(vy_manifest_materialise(&old, fd, NULL) == 0);
	/* stand-in for the pre-synced data */
	put(dst, "same", "unchanged content\n");
	put(dst, "d/same2", "also unchanged\n");
	struct stat before, after;
	char p[256], *text = NULL;
	snprintf(p, sizeof(p), "%s/d/same2", dst);
	CHECK(stat(p, &before) == 0);
	change_tree(src);
	CHECK(vy_manifest_scan(src, &cur, NULL) == 0);
	uint32_t changed = 0;
	CHECK(vy_manifest_update_skeleton(&old, &cur, fd, &changed, NULL) == 1);
	CHECK(vy_read_file(p, 4096, &text, NULL, NULL) == 0 && text &&
	      !strcmp(text, "also unchanged\n"));
	CHECK(stat(p, &after) == 0 && after.st_ino == before.st_ino);
	free(text);
	snprintf(p, sizeof(p), "%s/gone", dst);
	CHECK(access(p, F_OK) != 0); /* deleted files do not come back */
	snprintf(p, sizeof(p), "%s/new", dst);
	CHECK(access(p, F_OK) == 0);
	snprintf(p, sizeof(p), "%s/grows", dst);
	CHECK(stat(p, &after) == 0 && after.st_size == (off_t)strlen("much longer than before\n"));
	snprintf(p, sizeof(p), "%s/chmod", dst);
	CHECK(stat(p, &after) == 0 && (after.st_mode & 07777) == 0600);
	CHECK(changed >= 5 && changed < cur.count);
	close(fd);
	vy_manifest_free(&old);
	vy_manifest_free(&cur);
}

/* The files that a manifest delta makes receive data again: new ones and
 * those of another size or mtime, or whose pre-synced copy is void; not a
 * change of mode or xattrs alone.  Indices are those of base + delta as
 * vy_manifest_delta_apply() lays it out (gone entries shift the rest). */
static void test_need(void)
{
	char src[128];
	snprintf(src, sizeof(src), "%s/src3", tmp);
	make_tree(src);
	struct vy_manifest old = { 0 }, cur = { 0 };
	struct vy_manifest_delta d;
	CHECK(vy_manifest_scan(src, &old, NULL) == 0);
	uint8_t *skipped = calloc(old.count, 1);
	skipped[index_of(&old, "d/same2")] = 1;
	vy_delta_forget(&old, skipped);
	free(skipped);
	change_tree(src);
	CHECK(vy_manifest_scan(src, &cur, NULL) == 0);
	CHECK(vy_manifest_diff(&old, &cur, &d, NULL) == 1);
	/* what names the base both sides hold: its encoding's SHA-256 */
	uint8_t s1[32], s2[32], s3[32];
	CHECK(vy_manifest_sha256(&old, s1, NULL) == 0 && vy_manifest_sha256(&old, s2, NULL) == 0 &&
	      vy_manifest_sha256(&cur, s3, NULL) == 0 && !memcmp(s1, s2, 32) && memcmp(s1, s3, 32));
	uint8_t *need = NULL;
	uint32_t files = 0, *base_of = NULL, was_grows = index_of(&old, "grows"),
		 was_same = index_of(&old, "same");
	uint64_t bytes = 0;
	CHECK(vy_delta_need(&old, &d, &need, &files, &bytes, &base_of, NULL) == 0);
	uint32_t ngone = d.ngone;
	CHECK(vy_manifest_delta_apply(&old, &d, NULL, NULL) == 0);
	CHECK(ngone == 1 && old.count == cur.count);
	if (need && old.count == cur.count) {
		CHECK(need[index_of(&old, "grows")] == 1);
		CHECK(need[index_of(&old, "new")] == 1);
		CHECK(need[index_of(&old, "d/same2")] == 1); /* its copy was void */
		CHECK(need[index_of(&old, "same")] == 0);
		CHECK(need[index_of(&old, "chmod")] == 0);
		CHECK(need[index_of(&old, "xattr")] == 0);
		CHECK(need[index_of(&old, "link1")] == 0 && need[index_of(&old, "link2")] == 0);
		CHECK(need[0] == 0); /* the root: no data */
		/* and which base entry each one was */
		CHECK(base_of && base_of[index_of(&old, "grows")] == was_grows &&
		      base_of[index_of(&old, "same")] == was_same &&
		      base_of[index_of(&old, "new")] == VY_DELTA_NEW && base_of[0] == 0);
		CHECK(files == 3);
		CHECK(bytes == strlen("much longer than before\n") + strlen("a new file\n") +
				       strlen("also unchanged\n"));
	}
	/* a delta for another manifest is refused */
	struct vy_manifest_delta other = { .base_count = old.count + 1 };
	uint8_t *none = NULL;
	CHECK(vy_delta_need(&old, &other, &none, NULL, NULL, NULL, NULL) < 0 && !none);
	free(need);
	free(base_of);
	vy_manifest_delta_free(&d);
	vy_manifest_free(&old);
	vy_manifest_free(&cur);
}

int main(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/vytest-XXXXXX");
	if (!mkdtemp(tmp))
		return 1;
	RUN(test_unchanged_set);
	RUN(test_in_place);
	RUN(test_need);
	vy_rm_rf(tmp, NULL);
	return unit_summary();
}
