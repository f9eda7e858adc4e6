/* fuzz_wire.c - libFuzzer target for the frame parsers of wire.c.
 *
 * The input is read as a peer's bytes: a frame header, and the rest as the
 * payload of a DATA frame, and of a HELD_PACKETS frame.  Whatever the parsers accept must hold together
 * (bounds inside the input, offsets that do not overflow), so the target
 * aborts if an accepted result breaks the promises wire.h makes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

static void check_header(const uint8_t *data, size_t size)
{
	struct vy_frame_header h;
	vy_error err;
	if (vy_wire_parse_header(data, size, &h, &err) < 0) {
		if (memchr(err.msg, '\0', sizeof(err.msg)) == NULL)
			abort();
		return;
	}
	if (size < VY_WIRE_HDR_LEN || h.type == 0 || h.type > VY_MSG_TYPE_MAX ||
	    h.flags != 0 || h.length > VY_WIRE_MAX_PAYLOAD)
		abort();

	/* What the parser accepts, the encoder must reproduce byte for
	 * byte: one format, no alternative spellings. */
	uint8_t again[VY_WIRE_HDR_LEN];
	vy_wire_encode_header(again, h.type, h.length);
	if (memcmp(again, data, VY_WIRE_HDR_LEN) != 0)
		abort();
}

static void check_data(const uint8_t *data, size_t size)
{
	struct vy_data_chunk c;
	vy_error err;
	if (vy_wire_parse_data(data, size, &c, &err) < 0)
		return;
	if (size < VY_WIRE_DATA_HDR_LEN ||
	    c.data != data + VY_WIRE_DATA_HDR_LEN ||
	    c.len != size - VY_WIRE_DATA_HDR_LEN ||
	    c.offset > (uint64_t)INT64_MAX ||
	    c.len > (uint64_t)INT64_MAX - c.offset)
		abort();
	/* Touch every byte the chunk claims, so ASan sees any overrun. */
	volatile uint8_t sink = 0;
	for (size_t i = 0; i < c.len; i++)
		sink ^= c.data[i];
	(void)sink;
}

static void check_held(const uint8_t *data, size_t size)
{
	struct vy_held h;
	vy_error err;
	if (vy_wire_parse_held(data, size, &h, &err) < 0)
		return;
	if (h.count > VY_HELD_MAX_PACKETS || h.packets != data + VY_HELD_HDR_LEN ||
	    h.len != size - VY_HELD_HDR_LEN)
		abort();
	/* The walk sees exactly count packets, inside the payload, that
	 * fill it; each one's bytes are touched for ASan. */
	struct vy_held_packet p;
	size_t pos = 0, bytes = 0;
	uint32_t n = 0;
	volatile uint8_t sink = 0;
	while (vy_wire_held_next(&h, &pos, &p)) {
		if (p.data < h.packets || p.data + p.len > h.packets + h.len ||
		    (p.family != 4 && p.family != 6))
			abort();
		for (size_t i = 0; i < p.len; i++)
			sink ^= p.data[i];
		bytes += p.len;
		n++;
	}
	(void)sink;
	if (n != h.count || pos != h.len || bytes > VY_HELD_MAX_BYTES)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_header(data, size);
	if (size >= VY_WIRE_HDR_LEN)
		check_data(data + VY_WIRE_HDR_LEN, size - VY_WIRE_HDR_LEN);
	check_data(data, size);
	check_held(data, size);
	return 0;
}
