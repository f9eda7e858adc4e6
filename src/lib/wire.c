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
#include <netinet/in.h>

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
	[VY_MSG_HELD_PACKETS] = "HELD_PACKETS",
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

/* The transport header of a held packet: it must fit in what follows the
 * IP header, and UDP's own length must agree. */
static int check_transport(uint8_t proto, const uint8_t *l4, size_t left, vy_error *err)
{
	if (proto == IPPROTO_TCP) {
		if (left < 20)
			return vy_error_set(err, EPROTO, "held TCP segment of %zu bytes is shorter "
					    "than a TCP header", left);
		size_t off = (size_t)(l4[12] >> 4) * 4;
		if (off < 20 || off > left)
			return vy_error_set(err, EPROTO, "held TCP segment has a data offset of %zu "
					    "bytes in %zu", off, left);
		return 0;
	}
	if (proto == IPPROTO_UDP) {
		if (left < 8)
			return vy_error_set(err, EPROTO, "held UDP datagram of %zu bytes is shorter "
					    "than a UDP header", left);
		if (vy_get_u16(l4 + 4) != left)
			return vy_error_set(err, EPROTO, "held UDP datagram says %u bytes, carries %zu",
					    vy_get_u16(l4 + 4), left);
		return 0;
	}
	return vy_error_set(err, EPROTO, "held packet carries protocol %u (only TCP and UDP "
			    "are held)", proto);
}

int vy_wire_check_ip_packet(const uint8_t *data, size_t len,
			    struct vy_held_packet *p, vy_error *err)
{
	if (!data || len < 20)
		return vy_error_set(err, EPROTO, "held packet of %zu bytes is shorter than an IP "
				    "header", data ? len : 0);
	if (len > UINT16_MAX)
		return vy_error_set(err, EMSGSIZE, "held packet of %zu bytes is longer than IP "
				    "allows", len);
	unsigned version = data[0] >> 4;
	struct vy_held_packet out = { .data = data, .len = (uint16_t)len, .family = (uint8_t)version };
	size_t hlen;
	if (version == 4) {
		hlen = (size_t)(data[0] & 0x0f) * 4;
		if (hlen < 20 || hlen > len)
			return vy_error_set(err, EPROTO, "held IPv4 packet has a header of %zu bytes "
					    "in %zu", hlen, len);
		if (vy_get_u16(data + 2) != len)
			return vy_error_set(err, EPROTO, "held IPv4 packet says %u bytes, carries %zu",
					    vy_get_u16(data + 2), len);
		if (vy_get_u16(data + 6) & 0x3fff)
			return vy_error_set(err, EPROTO, "held IPv4 packet is a fragment");
		out.proto = data[9];
		out.dst = data + 16;
	} else if (version == 6) {
		hlen = 40;
		if (len < hlen || (size_t)vy_get_u16(data + 4) + hlen != len)
			return vy_error_set(err, EPROTO, "held IPv6 packet of %zu bytes says its "
					    "payload is %u", len, len < hlen ? 0 : vy_get_u16(data + 4));
		out.proto = data[6];
		out.dst = data + 24;
	} else {
		return vy_error_set(err, EPROTO, "held packet has IP version %u", version);
	}
	if (check_transport(out.proto, data + hlen, len - hlen, err) < 0)
		return -1;
	if (p)
		*p = out;
	return 0;
}

void vy_wire_encode_held_header(uint8_t out[VY_HELD_HDR_LEN], uint32_t count,
				uint32_t dropped)
{
	vy_put_u32(out, count);
	vy_put_u32(out + 4, dropped);
}

int vy_wire_parse_held(const uint8_t *payload, size_t len, struct vy_held *out,
		       vy_error *err)
{
	if (!payload || len < VY_HELD_HDR_LEN)
		return vy_error_set(err, EPROTO, "HELD_PACKETS payload truncated: %zu bytes, need "
				    "at least %d", payload ? len : 0, VY_HELD_HDR_LEN);
	uint32_t count = vy_get_u32(payload);
	if (count > VY_HELD_MAX_PACKETS)
		return vy_error_set(err, E2BIG, "HELD_PACKETS says %u packets, the limit is %u",
				    count, VY_HELD_MAX_PACKETS);
	size_t pos = VY_HELD_HDR_LEN, bytes = 0;
	for (uint32_t i = 0; i < count; i++) {
		if (len - pos < 2)
			return vy_error_set(err, EPROTO, "HELD_PACKETS truncated at packet %u of %u",
					    i + 1, count);
		size_t n = vy_get_u16(payload + pos);
		pos += 2;
		if (n > len - pos)
			return vy_error_set(err, EPROTO, "HELD_PACKETS packet %u of %u says %zu bytes, "
					    "%zu are left", i + 1, count, n, len - pos);
		bytes += n;
		if (bytes > VY_HELD_MAX_BYTES)
			return vy_error_set(err, E2BIG, "HELD_PACKETS holds more than %u bytes",
					    VY_HELD_MAX_BYTES);
		if (vy_wire_check_ip_packet(payload + pos, n, NULL, err) < 0)
			return vy_error_wrap(err, "HELD_PACKETS packet %u of %u", i + 1, count);
		pos += n;
	}
	if (pos != len)
		return vy_error_set(err, EPROTO, "HELD_PACKETS has %zu bytes after its %u packets",
				    len - pos, count);
	out->count = count;
	out->dropped = vy_get_u32(payload + 4);
	out->packets = payload + VY_HELD_HDR_LEN;
	out->len = len - VY_HELD_HDR_LEN;
	return 0;
}

bool vy_wire_held_next(const struct vy_held *h, size_t *pos, struct vy_held_packet *p)
{
	if (*pos > h->len || h->len - *pos < 2)
		return false;
	size_t n = vy_get_u16(h->packets + *pos);
	if (n > h->len - *pos - 2 ||
	    vy_wire_check_ip_packet(h->packets + *pos + 2, n, p, NULL) < 0)
		return false;
	*pos += 2 + n;
	return true;
}
