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
 * VY_MSG_HELD_PACKETS carries the IP packets that reached the container
 * while it was frozen, for the target to replay into it:
 *
 *   u32 count    packets that follow, <= VY_HELD_MAX_PACKETS
 *   u32 dropped  packets the source saw but did not hold (over a bound)
 *   count times: u16 len, then len bytes of one IPv4 or IPv6 packet
 *
 * Each packet is whole and unfragmented, its own length field says len,
 * it carries TCP or UDP (IPv6: no extension headers) and its transport
 * header fits.  The packets fill the payload exactly, and together they
 * hold at most VY_HELD_MAX_BYTES.
 *
 * All integers are big-endian.  vy_wire_parse_header(), vy_wire_parse_data()
 * and vy_wire_parse_held() are the only parsers of these bytes; they check
 * every bound and are also the fuzz targets.
 */
#ifndef VY_WIRE_H
#define VY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define VY_WIRE_MAGIC 0x56594731u
#define VY_WIRE_HDR_LEN 12
#define VY_WIRE_MAX_PAYLOAD (16u * 1024 * 1024)
#define VY_WIRE_DATA_HDR_LEN 16
/* 2: presync's ACK after each pre-synced tree, its "presync-delta" trees
 * and FILE_END's "patch"; 3: a presync TREE's "resend" list (files the
 * container maps shared and writable, sent again at the freeze) */
#define VY_PROTOCOL_VERSION 3

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
	VY_MSG_HELD_PACKETS = 26, /* binary, see below: packets held during the freeze (pkthold.h) */
	VY_MSG_TYPE_MAX = 26,
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

#define VY_HELD_HDR_LEN 8
#define VY_HELD_MAX_PACKETS 4096u
#define VY_HELD_MAX_BYTES (4u << 20) /* IP bytes, without the u16 lengths */

/* A HELD_PACKETS payload that vy_wire_parse_held() accepted. */
struct vy_held {
	uint32_t count;
	uint32_t dropped;
	const uint8_t *packets; /* the count records, inside the payload */
	size_t len;
};

/* One packet of it, as vy_wire_held_next() walks them. */
struct vy_held_packet {
	const uint8_t *data; /* the IP header */
	uint16_t len;
	uint8_t family;      /* 4 or 6 */
	uint8_t proto;       /* IPPROTO_TCP or IPPROTO_UDP */
	const uint8_t *dst;  /* destination address in data (4 or 16 bytes) */
};

/* Is data[0..len) one packet as HELD_PACKETS allows (see above)?  Fills p
 * when it is; err says what is wrong when it is not. */
int vy_wire_check_ip_packet(const uint8_t *data, size_t len,
			    struct vy_held_packet *p, vy_error *err);

/* Encode the 8-byte HELD_PACKETS prefix. */
void vy_wire_encode_held_header(uint8_t out[VY_HELD_HDR_LEN], uint32_t count,
				uint32_t dropped);

/* Parse and check a whole HELD_PACKETS payload, every packet included;
 * nothing of a payload it rejects may be used. */
int vy_wire_parse_held(const uint8_t *payload, size_t len, struct vy_held *out,
		       vy_error *err);

/* The next packet of an accepted payload: *pos starts at 0; returns false
 * after the last. */
bool vy_wire_held_next(const struct vy_held *h, size_t *pos,
		       struct vy_held_packet *p);

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
