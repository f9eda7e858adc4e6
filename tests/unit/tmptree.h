/* tmptree.h - temporary trees for the unit tests that touch a filesystem.
 *
 *   cleanup_tree char *dir = make_tmpdir();   a fresh /tmp/vytest-XXXXXX,
 *                                              removed when dir goes out of
 *                                              scope, whatever the outcome
 *   join(dir, "a/b")                           "dir/a/b" (static buffers,
 *                                              four in rotation)
 *
 * The removal first detaches what a test may have mounted at the tree or
 * at its "mnt" (a tmpfs for a full disk, a mount point to stop a scan),
 * then removes everything below, best effort.
 */
#ifndef VY_TMPTREE_H
#define VY_TMPTREE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

static int tmptree_remove_one(const char *path, const struct stat *st, int flag,
			      struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path); /* best effort: keep going */
	return 0;
}

static void remove_tree(char **dir)
{
	if (!*dir)
		return;
	char mnt[256];
	snprintf(mnt, sizeof(mnt), "%s/mnt", *dir);
	umount2(mnt, MNT_DETACH); /* harmless when nothing is mounted */
	umount2(*dir, MNT_DETACH);
	nftw(*dir, tmptree_remove_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	free(*dir);
}

#define cleanup_tree __attribute__((cleanup(remove_tree)))

static inline char *make_tmpdir(void)
{
	char tmpl[] = "/tmp/vytest-XXXXXX";
	return mkdtemp(tmpl) ? strdup(tmpl) : NULL;
}

static inline char *join(const char *dir, const char *rel)
{
	static char buf[4][512];
	static int n;
	char *out = buf[n++ & 3];
	snprintf(out, 512, "%s/%s", dir, rel);
	return out;
}

#endif
