/* net.h - addresses and plain TCP sockets for the agent-to-agent link.
 *
 * Parsing "host:port" specs, listening, and connecting with a deadline.
 * Everything here is below TLS: channel.h wraps the sockets these
 * functions return.  Every socket is opened O_CLOEXEC.
 */
#ifndef VY_NET_H
#define VY_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "error.h"

#define VY_DEFAULT_PORT 7600

/* Room for "[v6-address]:port" in messages. */
#define VY_PEER_NAME_MAX (INET6_ADDRSTRLEN + 16)

/* Parse "ADDR:PORT", "ADDR" (default port), or "[v6]:PORT". */
int vy_parse_hostport(const char *spec, char *host, size_t hostlen,
		      uint16_t *port, vy_error *err);

/* Listening TCP socket (O_CLOEXEC, SO_REUSEADDR) on spec; port 0 picks a
 * free port. */
int vy_net_listen(const char *spec, int *fd_out, vy_error *err);

/* Resolve spec and connect to the first address that answers, waiting at
 * most until deadline (see vy_net_deadline_after; timeout_ms only names the
 * limit in messages).  The socket comes back in blocking mode. */
int vy_net_connect(const char *spec, int64_t deadline, int timeout_ms,
		   int *fd_out, vy_error *err);

/* A CLOCK_MONOTONIC deadline timeout_ms from now, or -1 (none) for 0. */
int64_t vy_net_deadline_after(int timeout_ms);
/* Milliseconds left until deadline for poll(): -1 means no deadline. */
int vy_net_remaining_ms(int64_t deadline);

int vy_net_set_nonblocking(int fd, bool on);
/* "a.b.c.d:port", "[v6]:port" or "local peer". */
void vy_net_format_sockaddr(const struct sockaddr *sa, char *out, size_t len);
/* Name the peer of a connected socket into peer, set FD_CLOEXEC, and
 * TCP_NODELAY where it is TCP. */
void vy_net_prepare_connected(int fd, char *peer, size_t peerlen);

#endif
