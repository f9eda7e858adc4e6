/* fuzz_delta.c - libFuzzer target for vy_manifest_delta_decode(), the one
 * parser of manifest delta bytes received from a peer at the freeze.  Any
 * input must either decode into a delta that keeps the promises of
 * manifest.h ("deltas"), or be refused; it must never crash, read out of
 * bounds or leak.  Built with -Dfuzz=true (clang).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the decoder promises without the base: vy_manifest_delta_check()
 * relies on it. */
static void check_decoded(const struct vy_manifest_delta *d)
{
	if (d->base_count == 0 || d->base_count > VY_MANIFEST_MAX_ENTRIES)
		abort();
	if (d->ngone >= d->base_count)
		abort();
	for (uint32_t k = 0; k < d->ngone; k++) {
		uint32_t g = d->gone[k];
		if (g == 0 || g >= d->base_count || (k > 0 && g <= d->gone[k - 1]))
			abort();
	}
	for (uint32_t k = 0; k < d->put.count; k++) {
		const struct vy_entry *e = &d->put.entries[k];
		uint32_t at = d->at[k];
		if (at != VY_DELTA_NEW && at >= d->base_count)
			abort();
		if (!vy_path_is_safe(e->path, strlen(e->path)))
			abort();
		/* only the root has the empty path, and it is a directory */
		if ((at == 0) != (e->path[0] == '\0') ||
		    (at == 0 && e->type != VY_ENTRY_DIR))
			abort();
		if (e->link_of != VY_NO_LINK)
			abort();
		if (e->type < VY_ENTRY_DIR || e->type > VY_ENTRY_SOCK || (e->mode & ~07777u))
			abort();
		if ((e->type == VY_ENTRY_SYMLINK) != (e->target != NULL))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vy_manifest_delta d;
	vy_error err;
	if (vy_manifest_delta_decode(data, size, &d, &err) < 0)
		return 0;
	check_decoded(&d);
	uint8_t *again = NULL;
	size_t len = 0;
	if (vy_manifest_delta_encode(&d, &again, &len, &err) < 0 || len != size ||
	    memcmp(again, data, size) != 0)
		abort(); /* decode and encode are inverse on valid input */
	free(again);
	vy_manifest_delta_free(&d);
	return 0;
}
