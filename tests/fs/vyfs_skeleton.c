/* vyfs_skeleton.c - test driver: the target's half of "metadata first".
 *
 *   vyfs_skeleton MANIFEST DIR
 *
 * Decodes an encoded manifest and materialises its skeleton (directories,
 * sparse files of the right size, symlinks, xattrs, owners) into the empty
 * directory DIR, as the agent does before it mounts voyager-fs over it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "manifest.h"
#include "util.h"

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: vyfs_skeleton MANIFEST DIR\n");
		return 2;
	}
	vy_log_set_tag("vyfs-skeleton");
	vy_error err;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	struct vy_manifest m = { 0 };
	cleanup_close int fd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		vy_err("open %s: %m", argv[2]);
		return 1;
	}
	if (vy_read_file(argv[1], (size_t)1 << 30, &buf, &len, &err) < 0 ||
	    vy_manifest_decode((const uint8_t *)buf, len, &m, &err) < 0 ||
	    vy_manifest_materialise(&m, fd, &err) < 0) {
		vy_err("%s", err.msg);
		return 1;
	}
	vy_manifest_free(&m);
	return 0;
}
