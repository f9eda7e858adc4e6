/* chunkserve.h - byte ranges of a frozen tree, on request.
 *
 * The federation's data path.  The target's voyager-fs asks the source for
 * a byte range of one manifest entry; the source reads it from the frozen
 * tree and answers with the bytes and their SHA-256:
 *
 *   -> FETCH        {"stream", "entry", "offset", "length"}
 *   <- FETCH_REPLY  {"stream", "entry", "offset", "length", "sha256"}
 *   <- DATA ...     the bytes, in order, in frames of at most
 *                   VY_FETCH_FRAME bytes (wire.h's DATA layout)
 *
 * or, for a request the source refuses or cannot answer,
 *
 *   <- FETCH_REPLY  {"stream", "entry", "offset", "length", "error"}
 *
 * and the channel stays usable.  A request names a regular file by its
 * first name (link_of == VY_NO_LINK), a length of 1..VY_FETCH_MAX bytes, and
 * a range that lies inside the manifest's size.  Requests are answered in
 * the order they arrive, so a client may pipeline them.
 *
 * vy_fetch_parse_request() and vy_fetch_parse_reply() are the only parsers
 * of these two messages; they check every member and bound.
 */
#ifndef VY_CHUNKSERVE_H
#define VY_CHUNKSERVE_H

#include <stdint.h>

#include <json-c/json.h>

#include "channel.h"
#include "error.h"
#include "manifest.h"

#define VY_FETCH_MAX (4u * 1024 * 1024) /* largest range one FETCH may ask */
#define VY_FETCH_FRAME (1u * 1024 * 1024) /* DATA frame size in a reply */

struct vy_fetch_req {
	uint32_t stream;
	uint32_t entry;
	uint64_t offset;
	uint32_t length;
};

struct vy_fetch_reply {
	struct vy_fetch_req req;
	char sha256[65];   /* lower-case hex; "" when error is set */
	char error[512];   /* the source's refusal, or "" */
};

/* Parse a FETCH object: every member present, integral and in range
 * (length 1..VY_FETCH_MAX, offset + length representable as off_t). */
int vy_fetch_parse_request(json_object *obj, struct vy_fetch_req *out,
			   vy_error *err);
/* Check a parsed request against the tree: stream, entry index, entry type
 * and first name, and that the range lies inside the entry's size. */
int vy_fetch_check(const struct vy_fetch_req *req, uint32_t stream,
		   const struct vy_manifest *m, vy_error *err);
/* Parse a FETCH_REPLY object; a reply with "error" parses fine and carries
 * it in out->error. */
int vy_fetch_parse_reply(json_object *obj, struct vy_fetch_reply *out,
			 vy_error *err);

/* Source side: answer FETCH requests for the tree at rootfd (described by
 * m, streamed as stream) until the peer closes the channel, which returns
 * 0.  A bad request gets an error reply; only a broken channel or a
 * message that is not FETCH ends the loop with -1.  bytes_served, when not
 * NULL, counts the file bytes sent. */
int vy_chunk_serve(vy_channel *ch, uint32_t stream, int rootfd,
		   const struct vy_manifest *m, uint64_t *bytes_served,
		   vy_error *err);

/* Target side: fetch [offset, offset+length) of entry over ch into buf
 * (length bytes), checking that the reply matches the request, that
 * exactly length bytes came, and their SHA-256.  A refusal from the source
 * is an error with code EREMOTEIO; the channel stays usable after it. */
int vy_chunk_fetch(vy_channel *ch, const struct vy_fetch_req *req,
		   uint8_t *buf, vy_error *err);
/* vy_chunk_fetch() in two halves, so that a client can pipeline: send
 * several requests, then receive their replies in the same order.  After
 * an EREMOTEIO (the source refused that one) the next reply can still be
 * received; after any other error the channel is out of step. */
int vy_chunk_fetch_send(vy_channel *ch, const struct vy_fetch_req *req, vy_error *err);
int vy_chunk_fetch_recv(vy_channel *ch, const struct vy_fetch_req *req, uint8_t *buf,
			vy_error *err);

#endif
