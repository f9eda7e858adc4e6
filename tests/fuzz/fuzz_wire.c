/* fuzz_wire.c - libFuzzer target for the frame parsers of wire.c.
 *
 * The input is read as a peer's bytes: a frame header, and the rest as the
 * payload of a DATA frame.  Whatever the parsers accept must hold together
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_header(data, size);
	if (size >= VY_WIRE_HDR_LEN)
		check_data(data + VY_WIRE_HDR_LEN, size - VY_WIRE_HDR_LEN);
	check_data(data, size);
	return 0;
}
