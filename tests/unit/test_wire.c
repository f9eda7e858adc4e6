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
	return unit_summary();
}
