/* fuzz_fetch.c - libFuzzer target for the FETCH and FETCH_REPLY parsers
 * (chunkserve.c), fed the way a peer's frame reaches them: the payload is
 * parsed as JSON (bounded, as vy_message_json does), then handed to both
 * parsers.  An accepted request must keep the promises chunkserve.h makes
 * (length 1..VY_FETCH_MAX, offset + length representable as off_t); an
 * accepted reply must carry a NUL-terminated hash and error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "chunkserve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_tokener *tok = json_tokener_new();
	json_object *obj = json_tokener_parse_ex(tok, (const char *)data, (int)size);
	json_tokener_free(tok);
	if (!obj)
		return 0;
	struct vy_fetch_req req;
	vy_error err;
	if (vy_fetch_parse_request(obj, &req, &err) == 0) {
		if (req.length == 0 || req.length > VY_FETCH_MAX ||
		    req.offset > (uint64_t)INT64_MAX - req.length)
			abort();
	} else if (!memchr(err.msg, '\0', sizeof(err.msg))) {
		abort();
	}
	struct vy_fetch_reply rep;
	if (vy_fetch_parse_reply(obj, &rep, &err) == 0) {
		if (!memchr(rep.sha256, '\0', sizeof(rep.sha256)) ||
		    !memchr(rep.error, '\0', sizeof(rep.error)))
			abort();
	}
	json_object_put(obj);
	return 0;
}
