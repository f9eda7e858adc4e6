/* test_wire.c - the frame header and DATA prefix codecs of wire.c.
 *
 * Round trips show encode and parse agree; every rejection test starts
 * from a valid encoding and breaks exactly one thing, so it fails if the
 * parser stops checking that thing.
 */
#include <errno.h>
#include <string.h>

#include "unit.h"
#include "wire.h"

static void test_header_round_trip(void)
{
	for (uint16_t type = 1; type <= VY_MSG_TYPE_MAX; type++) {
		uint8_t buf[VY_WIRE_HDR_LEN];
		struct vy_frame_header h = { 0 };
		vy_error err = { 0 };
		vy_wire_encode_header(buf, type, 1000u + type);
		CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == 0);
		CHECK(h.type == type);
		CHECK(h.flags == 0);
		CHECK(h.length == 1000u + type);
		CHECK(strcmp(vy_msg_type_name(type), "UNKNOWN") != 0);
	}
	/* The limit itself is allowed, and the layout is big-endian "VYG1". */
	uint8_t buf[VY_WIRE_HDR_LEN];
	struct vy_frame_header h;
	vy_error err;
	vy_wire_encode_header(buf, VY_MSG_DATA, VY_WIRE_MAX_PAYLOAD);
	CHECK(memcmp(buf, "VYG1", 4) == 0);
	CHECK(buf[4] == 0 && buf[5] == VY_MSG_DATA);
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == 0);
	CHECK(h.length == VY_WIRE_MAX_PAYLOAD);
	CHECK(strcmp(vy_msg_type_name(VY_MSG_COMMIT_ACK), "COMMIT_ACK") == 0);
	CHECK(strcmp(vy_msg_type_name(0), "UNKNOWN") == 0);
	CHECK(strcmp(vy_msg_type_name(VY_MSG_TYPE_MAX + 1), "UNKNOWN") == 0);
}

static void test_header_truncated(void)
{
	uint8_t buf[VY_WIRE_HDR_LEN];
	struct vy_frame_header h;
	vy_error err;
	vy_wire_encode_header(buf, VY_MSG_HELLO, 3);
	for (size_t len = 0; len < VY_WIRE_HDR_LEN; len++) {
		err.code = 0;
		CHECK(vy_wire_parse_header(buf, len, &h, &err) == -1);
		CHECK(err.code == EPROTO);
		CHECK(strstr(err.msg, "truncated") != NULL);
	}
	CHECK(vy_wire_parse_header(NULL, 0, &h, &err) == -1);
}

static void test_header_bad_magic(void)
{
	uint8_t buf[VY_WIRE_HDR_LEN];
	struct vy_frame_header h;
	vy_error err;
	vy_wire_encode_header(buf, VY_MSG_HELLO, 3);
	buf[3] ^= 1;
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
	CHECK(strstr(err.msg, "magic") != NULL);
	memcpy(buf, "GET ", 4); /* someone pointed HTTP at us */
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
}

static void test_header_unknown_type(void)
{
	uint8_t buf[VY_WIRE_HDR_LEN];
	struct vy_frame_header h;
	vy_error err;
	vy_wire_encode_header(buf, 0, 3);
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
	CHECK(strstr(err.msg, "unknown message type 0") != NULL);
	vy_wire_encode_header(buf, VY_MSG_TYPE_MAX + 1, 3);
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
	CHECK(strstr(err.msg, "unknown message type") != NULL);
	vy_wire_encode_header(buf, 0xffff, 3);
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
}

static void test_header_nonzero_flags(void)
{
	uint8_t buf[VY_WIRE_HDR_LEN];
	struct vy_frame_header h;
	vy_error err;
	for (int bit = 0; bit < 16; bit++) {
		vy_wire_encode_header(buf, VY_MSG_ACK, 0);
		vy_put_u16(buf + 6, (uint16_t)(1u << bit));
		CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
		CHECK(strstr(err.msg, "flags") != NULL);
	}
}

static void test_header_oversized(void)
{
	uint8_t buf[VY_WIRE_HDR_LEN];
	struct vy_frame_header h;
	vy_error err;
	vy_wire_encode_header(buf, VY_MSG_DATA, VY_WIRE_MAX_PAYLOAD + 1);
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
	CHECK(err.code == EMSGSIZE);
	vy_wire_encode_header(buf, VY_MSG_DATA, UINT32_MAX);
	CHECK(vy_wire_parse_header(buf, sizeof(buf), &h, &err) == -1);
	CHECK(strstr(err.msg, "exceeds") != NULL);
}

static void test_data_round_trip(void)
{
	uint8_t payload[VY_WIRE_DATA_HDR_LEN + 5];
	struct vy_data_chunk c = { 0 };
	vy_error err;
	vy_wire_encode_data_header(payload, 7, 0x01020304, 0x1122334455667788ull);
	memcpy(payload + VY_WIRE_DATA_HDR_LEN, "hello", 5);
	CHECK(vy_wire_parse_data(payload, sizeof(payload), &c, &err) == 0);
	CHECK(c.stream == 7);
	CHECK(c.entry == 0x01020304);
	CHECK(c.offset == 0x1122334455667788ull);
	CHECK(c.len == 5);
	CHECK(c.data == payload + VY_WIRE_DATA_HDR_LEN);
	CHECK(payload[4] == 0x01 && payload[8] == 0x11); /* big-endian */

	/* An empty chunk (just the prefix) is valid: a zero-length file. */
	CHECK(vy_wire_parse_data(payload, VY_WIRE_DATA_HDR_LEN, &c, &err) == 0);
	CHECK(c.len == 0);
}

static void test_data_short(void)
{
	uint8_t payload[VY_WIRE_DATA_HDR_LEN];
	struct vy_data_chunk c;
	vy_error err;
	vy_wire_encode_data_header(payload, 1, 2, 3);
	for (size_t len = 0; len < VY_WIRE_DATA_HDR_LEN; len++) {
		err.code = 0;
		CHECK(vy_wire_parse_data(payload, len, &c, &err) == -1);
		CHECK(err.code == EPROTO);
	}
	CHECK(strstr(err.msg, "truncated") != NULL);
}

static void test_data_offset_overflow(void)
{
	uint8_t payload[VY_WIRE_DATA_HDR_LEN + 2];
	struct vy_data_chunk c;
	vy_error err;

	/* Ending exactly at INT64_MAX is the largest valid chunk. */
	vy_wire_encode_data_header(payload, 1, 2, (uint64_t)INT64_MAX - 2);
	CHECK(vy_wire_parse_data(payload, sizeof(payload), &c, &err) == 0);

	vy_wire_encode_data_header(payload, 1, 2, (uint64_t)INT64_MAX - 1);
	CHECK(vy_wire_parse_data(payload, sizeof(payload), &c, &err) == -1);
	CHECK(err.code == EOVERFLOW);
	CHECK(strstr(err.msg, "overflow") != NULL);

	vy_wire_encode_data_header(payload, 1, 2, UINT64_MAX);
	CHECK(vy_wire_parse_data(payload, sizeof(payload), &c, &err) == -1);
	/* Even an empty chunk may not start beyond what off_t can hold. */
	CHECK(vy_wire_parse_data(payload, VY_WIRE_DATA_HDR_LEN, &c, &err) == -1);
}

/* ---- HELD_PACKETS ---- */

/* A TCP/IPv4 packet of 40 + extra bytes to 10.0.0.2 in out. */
static size_t ipv4_tcp(uint8_t *out, size_t extra)
{
	size_t len = 40 + extra;
	memset(out, 0, len);
	out[0] = 0x45;
	vy_put_u16(out + 2, (uint16_t)len);
	out[8] = 64;
	out[9] = 6; /* TCP */
	memcpy(out + 12, "\x0a\x00\x00\x01\x0a\x00\x00\x02", 8);
	out[20 + 12] = 5 << 4; /* data offset: 20 bytes */
	return len;
}

/* A UDP/IPv6 packet with payload bytes to 2001:db8::2 in out. */
static size_t ipv6_udp(uint8_t *out, size_t payload)
{
	size_t len = 48 + payload;
	memset(out, 0, len);
	out[0] = 0x60;
	vy_put_u16(out + 4, (uint16_t)(8 + payload));
	out[6] = 17; /* UDP */
	out[7] = 64;
	out[24] = 0x20, out[25] = 0x01, out[26] = 0x0d, out[27] = 0xb8, out[39] = 2;
	vy_put_u16(out + 40 + 4, (uint16_t)(8 + payload));
	return len;
}

/* payload = header + the packets given, each with its u16 length. */
static size_t held_payload(uint8_t *buf, uint32_t dropped, int n, const uint8_t *const *pkts,
			   const size_t *lens)
{
	vy_wire_encode_held_header(buf, (uint32_t)n, dropped);
	size_t pos = VY_HELD_HDR_LEN;
	for (int i = 0; i < n; i++) {
		vy_put_u16(buf + pos, (uint16_t)lens[i]);
		memcpy(buf + pos + 2, pkts[i], lens[i]);
		pos += 2 + lens[i];
	}
	return pos;
}

static void test_held_round_trip(void)
{
	uint8_t a[100], b[100], buf[300];
	size_t la = ipv4_tcp(a, 10), lb = ipv6_udp(b, 4);
	const uint8_t *pk[] = { a, b };
	size_t lens[] = { la, lb };
	size_t len = held_payload(buf, 7, 2, pk, lens);
	struct vy_held h;
	vy_error err;
	CHECK(vy_wire_parse_held(buf, len, &h, &err) == 0);
	CHECK(h.count == 2 && h.dropped == 7);
	size_t pos = 0;
	struct vy_held_packet p;
	CHECK(vy_wire_held_next(&h, &pos, &p));
	CHECK(p.family == 4 && p.proto == 6 && p.len == la && p.data == buf + 10);
	CHECK(memcmp(p.dst, "\x0a\x00\x00\x02", 4) == 0);
	CHECK(vy_wire_held_next(&h, &pos, &p));
	CHECK(p.family == 6 && p.proto == 17 && p.len == lb && p.dst[15] == 2);
	CHECK(!vy_wire_held_next(&h, &pos, &p));
	/* None held is a valid message too. */
	vy_wire_encode_held_header(buf, 0, 3);
	CHECK(vy_wire_parse_held(buf, VY_HELD_HDR_LEN, &h, &err) == 0);
	CHECK(h.count == 0 && h.dropped == 3);
	pos = 0;
	CHECK(!vy_wire_held_next(&h, &pos, &p));
	CHECK(strcmp(vy_msg_type_name(VY_MSG_HELD_PACKETS), "HELD_PACKETS") == 0);
}

/* Parse buf with byte i changed to v: must fail, naming what. */
static void expect_refused(const uint8_t *good, size_t len, size_t at, int delta,
			   const char *why)
{
	uint8_t buf[300];
	struct vy_held h;
	vy_error err = { 0 };
	memcpy(buf, good, len);
	buf[at] = (uint8_t)(buf[at] + delta);
	int rc = vy_wire_parse_held(buf, len, &h, &err);
	CHECK(rc == -1 && strstr(err.msg, why) != NULL);
	if (rc == -1 && strstr(err.msg, why) == NULL)
		fprintf(stderr, "  message '%s' lacks '%s'\n", err.msg, why);
}

static void test_held_malformed(void)
{
	uint8_t a[100], b[100], good[300];
	size_t la = ipv4_tcp(a, 10), lb = ipv6_udp(b, 4);
	const uint8_t *pk[] = { a, b };
	size_t lens[] = { la, lb };
	size_t len = held_payload(good, 0, 2, pk, lens);
	struct vy_held h;
	vy_error err;
	/* Each part broken on its own. */
	expect_refused(good, len, 3, 1, "truncated");              /* count 3, 2 present */
	expect_refused(good, len, 3, -1, "after its 1 packets");   /* count 1 */
	expect_refused(good, len, 9, 1, "packet 1 of 2");          /* length one more */
	expect_refused(good, len, 10, 0x10, "IP version 5");       /* version */
	expect_refused(good, len, 10, 0x0a, "header of 60 bytes"); /* IHL 15 > len */
	expect_refused(good, len, 13, 1, "says 51 bytes");         /* IPv4 total length */
	expect_refused(good, len, 16, 0x20, "fragment");           /* MF set */
	expect_refused(good, len, 19, -5, "protocol 1");           /* ICMP */
	expect_refused(good, len, 10 + 32, 0x40, "data offset");   /* TCP offset 36 in 30 */
	expect_refused(good, len, 10 + la + 2 + 6, -17, "protocol 0"); /* IPv6 extension header */
	expect_refused(good, len, 10 + la + 2 + 45, 1, "UDP datagram says 13"); /* UDP length */
	expect_refused(good, len, 10 + la + 2 + 5, 1, "IPv6");     /* IPv6 payload length */
	/* Truncated anywhere. */
	for (size_t n = 0; n < len; n++)
		CHECK(vy_wire_parse_held(good, n, &h, &err) == -1);
	CHECK(vy_wire_parse_held(NULL, 0, &h, &err) == -1);
	/* Bounds: more packets than allowed. */
	uint8_t hdr[VY_HELD_HDR_LEN];
	vy_wire_encode_held_header(hdr, VY_HELD_MAX_PACKETS + 1, 0);
	CHECK(vy_wire_parse_held(hdr, sizeof(hdr), &h, &err) == -1);
	CHECK(err.code == E2BIG);
	/* A lone IP packet: the shortest TCP header, and one byte short. */
	uint8_t t[60];
	CHECK(vy_wire_check_ip_packet(t, ipv4_tcp(t, 0), NULL, &err) == 0);
	CHECK(vy_wire_check_ip_packet(t, 39, NULL, &err) == -1);
}

int main(void)
{
	RUN(test_header_round_trip);
	RUN(test_header_truncated);
	RUN(test_header_bad_magic);
	RUN(test_header_unknown_type);
	RUN(test_header_nonzero_flags);
	RUN(test_header_oversized);
	RUN(test_data_round_trip);
	RUN(test_data_short);
	RUN(test_data_offset_overflow);
	RUN(test_held_round_trip);
	RUN(test_held_malformed);
	return unit_summary();
}
