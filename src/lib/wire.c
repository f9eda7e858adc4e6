/* wire.c - the one encoder and the one parser of Voyager's frame bytes.
 *
 * Everything that arrives from a peer passes through vy_wire_parse_header()
 * and, for bulk data, vy_wire_parse_data() before any other code looks at
 * it.  Both check every bound and never read past the length they are
 * given; they are also the fuzz targets (tests/fuzz/fuzz_wire.c).  The
 * layout is documented in wire.h.
 */
#include "wire.h"

#include <errno.h>

static const char *const msg_type_names[VY_MSG_TYPE_MAX + 1] = {
	[VY_MSG_HELLO] = "HELLO",
	[VY_MSG_ERROR] = "ERROR",
	[VY_MSG_PREFLIGHT] = "PREFLIGHT",
	[VY_MSG_PREFLIGHT_OK] = "PREFLIGHT_OK",
	[VY_MSG_BEGIN] = "BEGIN",
	[VY_MSG_TREE] = "TREE",
	[VY_MSG_MANIFEST] = "MANIFEST",
	[VY_MSG_DATA] = "DATA",
	[VY_MSG_FILE_END] = "FILE_END",
	[VY_MSG_TREE_END] = "TREE_END",
	[VY_MSG_RESTORE] = "RESTORE",
	[VY_MSG_RESTORED] = "RESTORED",
	[VY_MSG_COMMIT] = "COMMIT",
	[VY_MSG_COMMIT_ACK] = "COMMIT_ACK",
	[VY_MSG_ABORT] = "ABORT",
	[VY_MSG_ABORT_ACK] = "ABORT_ACK",
	[VY_MSG_QUERY] = "QUERY",
	[VY_MSG_DECISION] = "DECISION",
	[VY_MSG_ACK] = "ACK",
	[VY_MSG_FETCH] = "FETCH",
	[VY_MSG_FETCH_REPLY] = "FETCH_REPLY",
	[VY_MSG_TUNNEL_DATA] = "TUNNEL_DATA",
	[VY_MSG_TUNNEL_EOF] = "TUNNEL_EOF",
	[VY_MSG_FETCH_OPEN] = "FETCH_OPEN",
	[VY_MSG_RELEASE] = "RELEASE",
};

const char *vy_msg_type_name(uint16_t type)
{
	if (type == 0 || type > VY_MSG_TYPE_MAX || !msg_type_names[type])
		return "UNKNOWN";
	return msg_type_names[type];
}

void vy_wire_encode_header(uint8_t out[VY_WIRE_HDR_LEN], uint16_t type,
			   uint32_t length)
{
	vy_put_u32(out, VY_WIRE_MAGIC);
	vy_put_u16(out + 4, type);
	vy_put_u16(out + 6, 0);
	vy_put_u32(out + 8, length);
}

int vy_wire_parse_header(const uint8_t *buf, size_t len,
			 struct vy_frame_header *out, vy_error *err)
{
	if (!buf || len < VY_WIRE_HDR_LEN)
		return vy_error_set(err, EPROTO,
				   "frame header truncated: %zu of %d bytes",
				   buf ? len : 0, VY_WIRE_HDR_LEN);

	uint32_t magic = vy_get_u32(buf);
	if (magic != VY_WIRE_MAGIC)
		return vy_error_set(err, EPROTO,
				   "bad frame magic 0x%08x (expected 0x%08x "
				   "\"VYG1\"): peer is not a Voyager agent or "
				   "the stream is out of step",
				   magic, VY_WIRE_MAGIC);

	uint16_t type = vy_get_u16(buf + 4);
	if (type == 0 || type > VY_MSG_TYPE_MAX)
		return vy_error_set(err, EPROTO,
				   "unknown message type %u (this agent knows "
				   "1..%d)",
				   type, VY_MSG_TYPE_MAX);

	uint16_t flags = vy_get_u16(buf + 6);
	if (flags != 0)
		return vy_error_set(err, EPROTO,
				   "%s frame has reserved flags 0x%04x set",
				   vy_msg_type_name(type), flags);

	uint32_t length = vy_get_u32(buf + 8);
	if (length > VY_WIRE_MAX_PAYLOAD)
		return vy_error_set(err, EMSGSIZE,
				   "%s frame length %u exceeds the limit of %u "
				   "bytes",
				   vy_msg_type_name(type), length,
				   VY_WIRE_MAX_PAYLOAD);

	out->type = type;
	out->flags = flags;
	out->length = length;
	return 0;
}

void vy_wire_encode_data_header(uint8_t out[VY_WIRE_DATA_HDR_LEN],
				uint32_t stream, uint32_t entry,
				uint64_t offset)
{
	vy_put_u32(out, stream);
	vy_put_u32(out + 4, entry);
	vy_put_u64(out + 8, offset);
}

int vy_wire_parse_data(const uint8_t *payload, size_t len,
		       struct vy_data_chunk *out, vy_error *err)
{
	if (!payload || len < VY_WIRE_DATA_HDR_LEN)
		return vy_error_set(err, EPROTO,
				   "DATA payload truncated: %zu bytes, need at "
				   "least %d for the stream/entry/offset prefix",
				   payload ? len : 0, VY_WIRE_DATA_HDR_LEN);
	if (len - VY_WIRE_DATA_HDR_LEN > VY_WIRE_MAX_PAYLOAD)
		return vy_error_set(err, EMSGSIZE,
				   "DATA payload of %zu bytes exceeds the "
				   "frame limit of %u",
				   len, VY_WIRE_MAX_PAYLOAD);

	uint32_t stream = vy_get_u32(payload);
	uint32_t entry = vy_get_u32(payload + 4);
	uint64_t offset = vy_get_u64(payload + 8);
	size_t data_len = len - VY_WIRE_DATA_HDR_LEN;

	/* The receiver pwrite()s at this offset, and off_t is signed: a
	 * chunk ending past INT64_MAX cannot describe a real file and would
	 * turn negative or wrap in the writer's "offset + len". */
	if (offset > (uint64_t)INT64_MAX ||
	    data_len > (uint64_t)INT64_MAX - offset)
		return vy_error_set(err, EOVERFLOW,
				   "DATA chunk for stream %u entry %u: offset "
				   "%llu + length %zu overflows a file offset",
				   stream, entry, (unsigned long long)offset,
				   data_len);

	out->stream = stream;
	out->entry = entry;
	out->offset = offset;
	out->data = payload + VY_WIRE_DATA_HDR_LEN;
	out->len = data_len;
	return 0;
}
