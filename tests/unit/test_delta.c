/* test_delta.c - what changed between two scans, and moving the unchanged
 * files into a fresh skeleton (the pre-sync's delta at the freeze). */
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

static void test_adopt(void)
{
	char src[128], old_dir[128], new_dir[128];
	snprintf(src, sizeof(src), "%s/src2", tmp);
	snprintf(old_dir, sizeof(old_dir), "%s/old", tmp);
	snprintf(new_dir, sizeof(new_dir), "%s/new", tmp);
	make_tree(src);
	mkdir(old_dir, 0700);
	mkdir(new_dir, 0700);
	struct vy_manifest old = { 0 }, cur = { 0 };
	CHECK(vy_manifest_scan(src, &old, NULL) == 0);
	int ofd = open(old_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int nfd = open(new_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(vy_manifest_materialise(&old, ofd, NULL) == 0);
	/* stand-in for the pre-synced data: mark the old copies */
	put(old_dir, "same", "unchanged content\n");
	put(old_dir, "d/same2", "also unchanged\n");
	change_tree(src);
	CHECK(vy_manifest_scan(src, &cur, NULL) == 0);
	CHECK(vy_manifest_materialise(&cur, nfd, NULL) == 0);
	uint8_t *u = NULL;
	CHECK(vy_delta_unchanged(&old, &cur, &u, NULL, NULL) == 0);
	CHECK(u && vy_delta_adopt(&cur, u, ofd, nfd, NULL) == 0);
	char p[256], *text = NULL;
	snprintf(p, sizeof(p), "%s/d/same2", new_dir);
	CHECK(vy_read_file(p, 4096, &text, NULL, NULL) == 0 && text &&
	      !strcmp(text, "also unchanged\n"));
	free(text);
	snprintf(p, sizeof(p), "%s/same", old_dir);
	CHECK(access(p, F_OK) != 0); /* moved, not copied */
	snprintf(p, sizeof(p), "%s/gone", new_dir);
	CHECK(access(p, F_OK) != 0); /* deleted files do not come back */
	snprintf(p, sizeof(p), "%s/new", new_dir);
	CHECK(access(p, F_OK) == 0);
	free(u);
	close(ofd);
	close(nfd);
	vy_manifest_free(&old);
	vy_manifest_free(&cur);
}

int main(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/vytest-XXXXXX");
	if (!mkdtemp(tmp))
		return 1;
	RUN(test_unchanged_set);
	RUN(test_adopt);
	vy_rm_rf(tmp, NULL);
	return unit_summary();
}
