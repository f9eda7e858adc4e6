/* test_pkthold.c - what is held (vy_hold_take: scope, checksums, cutting
 * batches over the MTU, bounds) and what vy_hold_replay() refuses before
 * it sends anything.
 *
 * The identity names "lo" as the host end, which exists in every network
 * namespace; no payload here gets as far as a socket, so nothing is sent
 * anywhere.  The capture itself and replays that send are exercised by
 * tests/e2e/network_common.sh on real veths.
 */
#include <errno.h>
#include <string.h>

#include "pkthold.h"
#include "unit.h"
#include "wire.h"

static json_object *identity(const char *host_if)
{
	char buf[512];
	snprintf(buf, sizeof(buf),
		 "{\"interfaces\":[{\"name\":\"eth0\",\"mac\":\"02:00:00:00:00:02\",\"mtu\":1500,"
		 "\"host_if\":\"%s\",\"addrs\":[\"10.0.0.2/24\",\"2001:db8::2/64\"]}]}", host_if);
	return json_tokener_parse(buf);
}

/* A held payload with one TCP/IPv4 packet to 10.0.0.<last>. */
static size_t one_packet(uint8_t *buf, uint8_t last)
{
	uint8_t *ip = buf + VY_HELD_HDR_LEN + 2;
	memset(buf, 0, VY_HELD_HDR_LEN + 2 + 40);
	vy_wire_encode_held_header(buf, 1, 0);
	vy_put_u16(buf + VY_HELD_HDR_LEN, 40);
	ip[0] = 0x45;
	vy_put_u16(ip + 2, 40);
	ip[9] = 6;
	memcpy(ip + 12, "\x0a\x00\x00\x01\x0a\x00\x00", 7);
	ip[19] = last;
	ip[32] = 5 << 4;
	return VY_HELD_HDR_LEN + 2 + 40;
}

static void test_refuses_foreign_address(void)
{
	json_object *id = identity("lo");
	uint8_t buf[64];
	uint32_t n = 99;
	vy_error err = { 0 };
	size_t len = one_packet(buf, 3);
	CHECK(vy_hold_replay(id, buf, len, &n, &err) == -1);
	CHECK(n == 0);
	CHECK(strstr(err.msg, "10.0.0.3") != NULL);
	CHECK(strstr(err.msg, "none replayed") != NULL);
	json_object_put(id);
}

static void test_refuses_malformed(void)
{
	json_object *id = identity("lo");
	uint8_t buf[64];
	uint32_t n = 99;
	vy_error err = { 0 };
	size_t len = one_packet(buf, 2);
	buf[VY_HELD_HDR_LEN + 2 + 9] = 1; /* ICMP */
	CHECK(vy_hold_replay(id, buf, len, &n, &err) == -1);
	CHECK(n == 0);
	CHECK(strstr(err.msg, "refused, none replayed") != NULL);
	CHECK(strstr(err.msg, "protocol 1") != NULL);
	/* A count that promises more than there is. */
	len = one_packet(buf, 2);
	vy_wire_encode_held_header(buf, 2, 0);
	CHECK(vy_hold_replay(id, buf, len, &n, &err) == -1);
	CHECK(n == 0 && err.code == EPROTO);
	json_object_put(id);
}

static void test_empty_and_bad_identity(void)
{
	json_object *id = identity("lo");
	uint8_t buf[VY_HELD_HDR_LEN];
	uint32_t n = 99;
	vy_error err = { 0 };
	vy_wire_encode_held_header(buf, 0, 5);
	CHECK(vy_hold_replay(id, buf, sizeof(buf), &n, &err) == 0);
	CHECK(n == 0);
	json_object_put(id);
	/* A host end that does not exist here: refused before any send. */
	id = identity("vyunit-none0");
	uint8_t one[64];
	size_t len = one_packet(one, 2);
	CHECK(vy_hold_replay(id, one, len, &n, &err) == -1);
	CHECK(strstr(err.msg, "vyunit-none0") != NULL);
	json_object_put(id);
	/* Holding cannot start for it either. */
	struct vy_hold *h = NULL;
	id = identity("vyunit-none0");
	CHECK(vy_hold_start(id, &h, &err) == -1 && h == NULL);
	json_object_put(id);
	struct vy_hold_stats st = vy_hold_stats(NULL);
	CHECK(st.packets == 0 && st.dropped == 0);
}

/* A TCP/IPv4 packet 10.0.0.1 -> 10.0.0.<last> with data bytes of payload
 * and 12 bytes of options; its checksum left as a sender's kernel leaves
 * it for the hardware (the pseudo-header sum only: here 0). */
static size_t tcp4(uint8_t *ip, uint8_t last, size_t data, uint8_t flags)
{
	size_t len = 20 + 32 + data;
	memset(ip, 0, len);
	ip[0] = 0x45;
	vy_put_u16(ip + 2, (uint16_t)len);
	vy_put_u16(ip + 4, 100); /* id */
	ip[8] = 64;
	ip[9] = 6;
	memcpy(ip + 12, "\x0a\x00\x00\x01\x0a\x00\x00", 7);
	ip[19] = last;
	vy_put_u32(ip + 24, 1000); /* seq */
	ip[32] = 8 << 4;           /* 32-byte header */
	ip[33] = flags;
	for (size_t i = 0; i < data; i++)
		ip[52 + i] = (uint8_t)i;
	return len;
}

static uint16_t fold(const uint8_t *p, size_t n, uint32_t s)
{
	for (; n > 1; p += 2, n -= 2)
		s += (uint32_t)(p[0] << 8 | p[1]);
	if (n)
		s += (uint32_t)(p[0] << 8);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* Both checksums of an IPv4 TCP packet verify. */
static int checksums_ok(const uint8_t *ip, size_t len)
{
	uint32_t pseudo = fold(ip + 12, 8, 0) + 6u + (uint32_t)(len - 20);
	return fold(ip, 20, 0) == 0xffff && fold(ip + 20, len - 20, pseudo) == 0xffff;
}

static void test_take_scope_and_checksum(void)
{
	json_object *id = identity("lo");
	struct vy_hold *h = NULL;
	vy_error err;
	CHECK(vy_hold_new(id, &h, &err) == 0);
	uint8_t ip[4000];
	size_t len = tcp4(ip, 2, 100, 0x18);
	/* fill the IPv4 header checksum as a kernel does */
	vy_put_u16(ip + 10, (uint16_t)~fold(ip, 20, 0));
	vy_hold_take(h, 0, ip, len, true);
	len = tcp4(ip, 3, 100, 0x18); /* not the container's address */
	vy_hold_take(h, 0, ip, len, true);
	ip[9] = 1;                    /* not TCP or UDP */
	vy_hold_take(h, 0, ip, len, true);
	vy_hold_take(h, 1, ip, len, true); /* no such interface */
	struct vy_hold_stats st = vy_hold_stats(h);
	CHECK(st.packets == 1 && st.bytes == 152 && st.dropped == 0 && st.gso_cut == 0);
	const uint8_t *pl;
	size_t pll;
	struct vy_held held;
	struct vy_held_packet p;
	size_t pos = 0;
	vy_hold_payload(h, &pl, &pll);
	CHECK(vy_wire_parse_held(pl, pll, &held, &err) == 0 && held.count == 1);
	CHECK(vy_wire_held_next(&held, &pos, &p) && p.len == 152);
	CHECK(checksums_ok(p.data, p.len));
	vy_hold_free(h);
	json_object_put(id);
}

static void test_take_cuts_batches(void)
{
	json_object *id = identity("lo");
	struct vy_hold *h = NULL;
	vy_error err;
	CHECK(vy_hold_new(id, &h, &err) == 0);
	uint8_t ip[4000];
	/* 3000 bytes of data with CWR, PSH, FIN: 1448 + 1448 + 104 */
	size_t len = tcp4(ip, 2, 3000, 0x80 | 0x08 | 0x01 | 0x10);
	vy_hold_take(h, 0, ip, len, true);
	struct vy_hold_stats st = vy_hold_stats(h);
	CHECK(st.packets == 3 && st.gso_cut == 1 && st.dropped == 0);
	const uint8_t *pl;
	size_t pll;
	struct vy_held held;
	struct vy_held_packet p;
	size_t pos = 0;
	vy_hold_payload(h, &pl, &pll);
	CHECK(vy_wire_parse_held(pl, pll, &held, &err) == 0 && held.count == 3);
	static const size_t want[] = { 1448, 1448, 104 };
	uint32_t seq = 1000;
	for (int i = 0; i < 3; i++) {
		CHECK(vy_wire_held_next(&held, &pos, &p));
		CHECK(p.len == 52 + want[i] && p.len <= 1500);
		CHECK(vy_get_u16(p.data + 4) == 100 + i);
		CHECK(vy_get_u32(p.data + 24) == seq);
		uint8_t flags = p.data[33];
		CHECK(!!(flags & 0x80) == (i == 0));             /* CWR first */
		CHECK(!!(flags & 0x09) == (i == 2));             /* PSH, FIN last */
		CHECK(flags & 0x10);                             /* ACK on all */
		CHECK(p.data[52] == (uint8_t)(seq - 1000));      /* the right bytes */
		CHECK(checksums_ok(p.data, p.len));
		seq += (uint32_t)want[i];
	}
	vy_hold_free(h);
	json_object_put(id);
}

static void test_take_bounds(void)
{
	json_object *id = identity("lo");
	struct vy_hold *h = NULL;
	vy_error err;
	CHECK(vy_hold_new(id, &h, &err) == 0);
	uint8_t ip[1500];
	for (unsigned i = 0; i < VY_HELD_MAX_PACKETS + 10; i++) {
		size_t len = tcp4(ip, 2, 10, 0x18);
		vy_hold_take(h, 0, ip, len, false);
	}
	struct vy_hold_stats st = vy_hold_stats(h);
	CHECK(st.packets == VY_HELD_MAX_PACKETS && st.dropped == 10);
	const uint8_t *pl;
	size_t pll;
	struct vy_held held;
	vy_hold_payload(h, &pl, &pll);
	CHECK(vy_wire_parse_held(pl, pll, &held, &err) == 0);
	CHECK(held.count == VY_HELD_MAX_PACKETS && held.dropped == 10);
	vy_hold_free(h);
	/* The byte bound: big packets stop at 4 MiB. */
	CHECK(vy_hold_new(id, &h, &err) == 0);
	for (unsigned i = 0; i < 3000; i++) {
		size_t len = tcp4(ip, 2, 1448, 0x18);
		vy_hold_take(h, 0, ip, len, false);
	}
	st = vy_hold_stats(h);
	CHECK(st.bytes <= VY_HELD_MAX_BYTES && st.packets == VY_HELD_MAX_BYTES / 1500);
	CHECK(st.dropped == 3000 - st.packets);
	vy_hold_payload(h, &pl, &pll);
	CHECK(vy_wire_parse_held(pl, pll, &held, &err) == 0);
	vy_hold_free(h);
	json_object_put(id);
}

int main(void)
{
	RUN(test_take_scope_and_checksum);
	RUN(test_take_cuts_batches);
	RUN(test_take_bounds);
	RUN(test_refuses_foreign_address);
	RUN(test_refuses_malformed);
	RUN(test_empty_and_bad_identity);
	return unit_summary();
}
