/* pkthold.h - holding the packets that reach a container while it is
 * frozen, and replaying them into it once it runs again.
 *
 * While a container is frozen its namespace's lock (netns.h) drops every
 * packet, so a client that sent during the freeze waits for its own TCP
 * retransmission timer (0.2, 0.6, 1.4 s ...) after the container runs
 * again on the target.  Holding removes that wait:
 *
 *   source  vy_hold_start() after the lock and before the freeze: an
 *           AF_PACKET socket on the host end of each of the container's
 *           veths copies the frames the host sends into the container
 *           (TCP and UDP to the container's addresses only, bounded by
 *           VY_HELD_MAX_PACKETS and VY_HELD_MAX_BYTES; beyond that they
 *           are counted and left to the client's retransmission).  The
 *           lock inside the namespace still drops them there.
 *           vy_hold_stop() once the target has restored the container;
 *           vy_hold_payload() is then a VY_MSG_HELD_PACKETS payload.
 *   target  vy_hold_replay() once the container runs and its lock is
 *           gone: the payload is checked whole (wire.h) and against the
 *           container's identity, then each packet goes into the
 *           container as an Ethernet frame to its MAC, sent on the host
 *           end of its veth.
 *
 * Frames whose checksum the sending kernel left to the hardware (as veths
 * and local senders do) get it computed here, since the replayed copy is
 * checked in software.  A TCP packet longer than the interface's MTU (a
 * batch the sender left to be segmented further on, GSO) is cut into
 * segments that fit, as the hardware would have; any other packet over
 * the MTU is counted as dropped.
 * Nothing here needs a library or a kernel option beyond CONFIG_PACKET.
 */
#ifndef VY_PKTHOLD_H
#define VY_PKTHOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "error.h"

struct vy_hold;

struct vy_hold_stats {
	uint32_t packets; /* held */
	uint64_t bytes;   /* IP bytes held */
	uint32_t dropped; /* seen, in scope, but not held (bounds, MTU, truncation) */
	uint32_t gso_cut; /* TCP batches over the MTU held as several segments */
};

/* Start copying what reaches the container of identity (netns.h) on this
 * host; the host ends of its veths must exist here. */
int vy_hold_start(json_object *identity, struct vy_hold **out, vy_error *err);
/* The same without capturing: packets come only from vy_hold_take(). */
int vy_hold_new(json_object *identity, struct vy_hold **out, vy_error *err);
/* Hold the IP packet ip[0..len) that reached interface iface (an index
 * into the identity's interfaces) if it is TCP or UDP to one of that
 * interface's addresses; csum_partial: its TCP/UDP checksum is still to
 * be computed.  The capture calls this for every frame; so do the unit
 * tests.  May change ip (the checksum). */
void vy_hold_take(struct vy_hold *h, int iface, uint8_t *ip, size_t len, bool csum_partial);
/* Stop copying (idempotent); what was held stays. */
void vy_hold_stop(struct vy_hold *h);
struct vy_hold_stats vy_hold_stats(const struct vy_hold *h);
/* After vy_hold_stop(): the held packets as a HELD_PACKETS payload, owned
 * by h. */
void vy_hold_payload(struct vy_hold *h, const uint8_t **payload, size_t *len);
void vy_hold_free(struct vy_hold *h);

/* Send the packets of a HELD_PACKETS payload into the container of
 * identity through the host ends of its veths on this host.  A payload
 * that is malformed, or holds a packet for an address the container does
 * not have, is refused whole: nothing is sent.  *replayed counts the
 * packets sent; a send that fails is reported after the rest are sent. */
int vy_hold_replay(json_object *identity, const uint8_t *payload, size_t len,
		   uint32_t *replayed, vy_error *err);

#endif
