/* wire.h - Voyager's agent-to-agent wire protocol.
 *
 * Every message is a frame: a 12-byte header, then a payload.
 *
 *   offset 0  u32  magic   "VYG1" (0x56594731), big-endian
 *   offset 4  u16  type    enum vy_msg_type
 *   offset 6  u16  flags   reserved, must be 0
 *   offset 8  u32  length  payload bytes, <= VY_WIRE_MAX_PAYLOAD
 *
 * Control messages carry a JSON object as payload (VY_MSG_* below that say
 * "JSON").  Bulk file data uses VY_MSG_DATA, a binary payload:
 *
 *   u32 stream   which tree/stream (sender-defined, e.g. tree index)
 *   u32 entry    manifest entry index within that tree
 *   u64 offset   byte offset in the file
 *   ...          data bytes (payload length - 16)
 *
 * All integers are big-endian.  vy_wire_parse_header() and
 * vy_wire_parse_data() are the only parsers of these bytes; they check
 * every bound and are also the fuzz targets.
 */
#ifndef VY_WIRE_H
#define VY_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define VY_WIRE_MAGIC 0x56594731u
#define VY_WIRE_HDR_LEN 12
#define VY_WIRE_MAX_PAYLOAD (16u * 1024 * 1024)
#define VY_WIRE_DATA_HDR_LEN 16
#define VY_PROTOCOL_VERSION 1

enum vy_msg_type {
	VY_MSG_HELLO = 1,        /* JSON: {"version", "host", "role"} */
	VY_MSG_ERROR = 2,        /* JSON: {"phase", "error"} */
	VY_MSG_PREFLIGHT = 3,    /* JSON: what the source needs of the target */
	VY_MSG_PREFLIGHT_OK = 4, /* JSON: target's facts */
	VY_MSG_BEGIN = 5,        /* JSON: migration id, container, config */
	VY_MSG_TREE = 6,         /* JSON: {"stream", "kind", "name", "manifest_bytes"} */
	VY_MSG_MANIFEST = 7,     /* raw manifest bytes (one or more frames) */
	VY_MSG_DATA = 8,         /* binary, see above */
	VY_MSG_FILE_END = 9,     /* JSON: {"stream", "entry", "sha256"} */
	VY_MSG_TREE_END = 10,    /* JSON: {"stream"} */
	VY_MSG_RESTORE = 11,     /* JSON: restore request */
	VY_MSG_RESTORED = 12,    /* JSON: {"restore_ms"} */
	VY_MSG_COMMIT = 13,      /* JSON: {"id"} */
	VY_MSG_COMMIT_ACK = 14,  /* JSON: {"id"} */
	VY_MSG_ABORT = 15,       /* JSON: {"id", "reason"} */
	VY_MSG_ABORT_ACK = 16,   /* JSON: {"id"} */
	VY_MSG_QUERY = 17,       /* JSON: {"id"}: what did the source decide? */
	VY_MSG_DECISION = 18,    /* JSON: {"id", "decision": "committed"|"rolled-back"|"unknown"} */
	VY_MSG_ACK = 19,         /* JSON: generic acknowledgement */
	VY_MSG_FETCH = 20,       /* JSON: {"stream", "entry", "offset", "length"}: send me these bytes (chunkserve.h) */
	VY_MSG_FETCH_REPLY = 21, /* JSON: {"stream", "entry", "offset", "length", "sha256"} then DATA frames, or {"error"} */
	VY_MSG_TUNNEL_DATA = 22, /* raw bytes of a tunnelled TCP stream (tunnel.h) */
	VY_MSG_TUNNEL_EOF = 23,  /* empty: that stream's sender has no more bytes */
	VY_MSG_FETCH_OPEN = 24,  /* JSON: {"migration", "stream"}: voyager-fs asks to fetch from this tree; ACK or ERROR */
	VY_MSG_RELEASE = 25,     /* JSON: {"id"}: every chunk is local and durable on the target; ACK once the source let go */
	VY_MSG_TYPE_MAX = 25,
};

struct vy_frame_header {
	uint16_t type;
	uint16_t flags;
	uint32_t length;
};

struct vy_data_chunk {
	uint32_t stream;
	uint32_t entry;
	uint64_t offset;
	const uint8_t *data; /* points into the payload passed in */
	size_t len;
};

const char *vy_msg_type_name(uint16_t type);

/* Encode a header into out[VY_WIRE_HDR_LEN]. */
void vy_wire_encode_header(uint8_t out[VY_WIRE_HDR_LEN], uint16_t type,
			   uint32_t length);

/* Parse exactly VY_WIRE_HDR_LEN bytes.  Rejects a bad magic, an unknown
 * type, non-zero flags and a length over VY_WIRE_MAX_PAYLOAD. */
int vy_wire_parse_header(const uint8_t *buf, size_t len,
			 struct vy_frame_header *out, vy_error *err);

/* Encode the 16-byte DATA prefix. */
void vy_wire_encode_data_header(uint8_t out[VY_WIRE_DATA_HDR_LEN],
				uint32_t stream, uint32_t entry,
				uint64_t offset);

/* Parse a DATA payload.  Rejects short payloads and offset+len overflow. */
int vy_wire_parse_data(const uint8_t *payload, size_t len,
		       struct vy_data_chunk *out, vy_error *err);

/* Big-endian helpers shared by the manifest codec. */
static inline void vy_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void vy_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void vy_put_u64(uint8_t *p, uint64_t v)
{
	vy_put_u32(p, (uint32_t)(v >> 32));
	vy_put_u32(p + 4, (uint32_t)v);
}
static inline uint16_t vy_get_u16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t vy_get_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t vy_get_u64(const uint8_t *p)
{
	return ((uint64_t)vy_get_u32(p) << 32) | vy_get_u32(p + 4);
}

#endif
