/* tunnel.h - one TCP connection carried over Voyager's TLS channels.
 *
 * For post-copy memory, CRIU's lazy page server listens on the source
 * host's loopback and the target's `criu lazy-pages` connects to a port on
 * the target's loopback.  The target agent accepts that connection and the
 * source agent connects to the page server; the bytes in between travel
 * over two authenticated channels, one per direction:
 *
 *   criu lazy-pages --TCP--> target --"to-source" channel--> source --TCP--> page server
 *                   <--TCP-- agent  <--"to-target" channel-- agent  <--TCP--
 *
 * Each channel carries VY_MSG_TUNNEL_DATA frames, then VY_MSG_TUNNEL_EOF
 * when its sender's local socket reached end of file, or VY_MSG_ERROR
 * ({"phase": "tunnel", "error"}) when the sender gave up.  A tunnel that
 * fails resets its local connection (RST, never a clean FIN): CRIU's page
 * server takes a clean end of file for "transfer finished".
 */
#ifndef VY_TUNNEL_H
#define VY_TUNNEL_H

#include <stdint.h>

#include "channel.h"
#include "error.h"

struct vy_tunnel_opts {
	/* A send to a channel or to the local socket that makes no progress
	 * for this long fails the tunnel (0: 30000). */
	int io_timeout_ms;
	/* No byte either way for this long fails the tunnel (0: never; a
	 * peer that vanishes is still found by TCP keepalive). */
	int idle_timeout_ms;
	/* vy_tunnel_run_target: wait this long for the local connection
	 * (0: forever). */
	int accept_timeout_ms;
};

struct vy_tunnel_stats {
	uint64_t bytes_out; /* read from the local socket, sent to the peer */
	uint64_t bytes_in;  /* received from the peer, written locally */
};

/* Relay local_fd (a connected stream socket; always closed on return) over
 * the pair: bytes read from it go to `out`, bytes from `in` are written to
 * it.  Returns 0 once both directions ended with an end of file; -1 with
 * err saying which side failed and why.  Uses one extra thread; while it
 * runs, `out` is written only by that thread and `in` read only by the
 * caller's thread.  opts may be NULL, stats may be NULL. */
int vy_tunnel_relay(int local_fd, vy_channel *in, vy_channel *out,
		    const struct vy_tunnel_opts *opts,
		    struct vy_tunnel_stats *stats, vy_error *err);

/* Target side: the channels to the source, opened once the local
 * connection has arrived (e.g. vy_tunnel_connect_pair()). */
typedef int (*vy_tunnel_open_fn)(void *arg, vy_channel **in,
				 vy_channel **out, vy_error *err);

/* Target side: accept one connection on listen_fd (e.g. from
 * vy_net_listen("127.0.0.1:0")), open the channels and relay.  The channels
 * are closed on return; listen_fd is not. */
int vy_tunnel_run_target(int listen_fd, vy_tunnel_open_fn open, void *arg,
			 const struct vy_tunnel_opts *opts,
			 struct vy_tunnel_stats *stats, vy_error *err);

/* Source side: connect to local_addr ("127.0.0.1:PORT", the page server)
 * and relay.  If that connection fails the target is told with an ERROR
 * frame.  The channels stay the caller's. */
int vy_tunnel_run_source(vy_channel *in, vy_channel *out,
			 const char *local_addr,
			 const struct vy_tunnel_opts *opts,
			 struct vy_tunnel_stats *stats, vy_error *err);

/* Pairing, for a caller that has nothing better: the target opens two
 * channels to spec and names each with a HELLO {"version", "role":
 * "tunnel", "tunnel": id, "direction": "to-source"|"to-target"}; the source
 * accepts two connections on listen_fd, checks the id and answers ACK on
 * both.  An agent that already has a control channel can open its pair
 * its own way.  in/out are from the caller's point of view. */
int vy_tunnel_connect_pair(const char *spec, const uint8_t key[VY_KEY_LEN],
			   const char *id, int timeout_ms, vy_channel **in,
			   vy_channel **out, vy_error *err);
int vy_tunnel_accept_pair(int listen_fd, const uint8_t key[VY_KEY_LEN],
			  const char *id, int timeout_ms, vy_channel **in,
			  vy_channel **out, vy_error *err);

#endif
