/* fuzz_manifest.c - libFuzzer target for vy_manifest_decode(), the one
 * parser of manifest bytes received from a peer.  Any input must either
 * decode into a manifest whose every path is safe, or be refused; it must
 * never crash, read out of bounds or leak.  Built with -Dfuzz=true (clang).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vy_manifest m;
	vy_error err;
	if (vy_manifest_decode(data, size, &m, &err) < 0)
		return 0;
	/* What the decoder accepts, the target will materialise: hold it to
	 * the promises of manifest.h. */
	if (m.count == 0 || m.entries[0].type != VY_ENTRY_DIR ||
	    m.entries[0].path[0] != '\0')
		abort();
	for (uint32_t i = 0; i < m.count; i++) {
		const struct vy_entry *e = &m.entries[i];
		if (!vy_path_is_safe(e->path, strlen(e->path)) ||
		    (i > 0 && e->path[0] == '\0'))
			abort();
		if (e->link_of != VY_NO_LINK && e->link_of >= i)
			abort();
	}
	uint8_t *again = NULL;
	size_t len = 0;
	if (vy_manifest_encode(&m, &again, &len, &err) < 0 || len != size ||
	    memcmp(again, data, size) != 0)
		abort(); /* decode and encode are inverse on valid input */
	free(again);
	vy_manifest_free(&m);
	return 0;
}
