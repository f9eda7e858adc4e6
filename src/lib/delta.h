/* delta.h - what changed in a tree between two scans.
 *
 * Used when the tree was copied while the container still ran (pre-sync):
 * at the freeze the source scans again, and only files that changed since
 * the first scan carry data.  Both sides compute the same answer from the
 * same two manifests.  A regular file counts as unchanged when the old scan
 * had the same path with the same type, size, mtime, mode, owner and
 * xattrs, and neither scan sees it as part of a hard-link group (those are
 * always sent again, so that link structure is rebuilt exactly).
 */
#ifndef VY_DELTA_H
#define VY_DELTA_H

#include <stdint.h>

#include "error.h"
#include "manifest.h"

/* *unchanged gets one byte per entry of cur: 1 when the entry's data can
 * be taken from the old tree.  Caller frees. */
int vy_delta_unchanged(const struct vy_manifest *old, const struct vy_manifest *cur,
		       uint8_t **unchanged, uint32_t *count, vy_error *err);

/* Move each unchanged file of cur from old_rootfd into new_rootfd, where
 * vy_manifest_materialise() has just made cur's skeleton. */
int vy_delta_adopt(const struct vy_manifest *cur, const uint8_t *unchanged,
		   int old_rootfd, int new_rootfd, vy_error *err);

/* Entries whose copy is void (skipped while the tree was live) never count
 * as unchanged. */
void vy_delta_forget(struct vy_manifest *m, const uint8_t *skipped);

#endif
