/* delta.h - what changed in a tree between two scans.
 *
 * Used when the tree was copied while the container still ran (pre-sync):
 * at the freeze the source scans again, and only files that changed since
 * the first scan carry data.  Both sides compute the same answer from the
 * same manifests.  Where the change can be a manifest delta (manifest.h),
 * that goes, and vy_delta_need() says which files it makes carry data.
 * Else the whole manifest goes, and with vy_delta_unchanged() a regular
 * file counts as unchanged when the old scan had the same path with the
 * same type, size, mtime, mode, owner and xattrs, and neither scan sees it
 * as part of a hard-link group (those are always sent again).
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

/* Entries whose copy is void (skipped while the tree was live) never count
 * as unchanged. */
void vy_delta_forget(struct vy_manifest *m, const uint8_t *skipped);

/* A pre-synced tree brought up to date with a manifest delta (manifest.h)
 * d against base (the pre-sync's manifest, after vy_delta_forget): which
 * entries of base + d, as vy_manifest_delta_apply() lays it out, must
 * receive data.  Those are the put entries that are regular files and new,
 * or of another size or mtime than the base entry they replace (a void
 * copy has mtime INT64_MIN, so it always does).  A change of mode, owner
 * or xattrs alone moves no data; a delta never touches a hard link.  Call
 * before applying d (which empties it).  *need gets one byte per entry of
 * base + d; *files and *bytes, when not NULL, what it adds up to; *base_of,
 * when not NULL, for each entry of base + d the base entry it replaces, or
 * VY_DELTA_NEW.  Both sides work it out from the same base and delta. */
int vy_delta_need(const struct vy_manifest *base, const struct vy_manifest_delta *d,
		  uint8_t **need, uint32_t *files, uint64_t *bytes, uint32_t **base_of,
		  vy_error *err);

#endif
