/* net.c - addresses and plain TCP sockets for the agent-to-agent link.
 *
 * The TLS channel (channel.c) sits on top of what this file hands it: a
 * connected or listening TCP socket.  Host specs are checked character by
 * character before they reach the resolver, and connecting is
 * non-blocking so that a silent peer cannot hold a caller past its
 * deadline.
 */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"

/* ---- Addresses -------------------------------------------------------- */

static int parse_port(const char *spec, const char *text, bool allow_zero,
		      uint16_t *port, vy_error *err)
{
	unsigned long value = 0;
	size_t digits = strspn(text, "0123456789");
	if (digits == 0 || digits > 5 || text[digits] != '\0')
		return vy_error_set(err, EINVAL, "address %s: port \"%s\" is "
						 "not a number",
				   spec, text);
	value = strtoul(text, NULL, 10);
	if ((value == 0 && !allow_zero) || value > 65535)
		return vy_error_set(err, EINVAL, "address %s: port %lu is out "
						 "of range 1-65535",
				   spec, value);
	*port = (uint16_t)value;
	return 0;
}

static bool host_chars_ok(const char *host, size_t len, bool bracketed)
{
	const char *allowed = bracketed ? "0123456789abcdefABCDEF:."
					: "abcdefghijklmnopqrstuvwxyz"
					  "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					  "0123456789.-_";
	for (size_t i = 0; i < len; i++)
		if (!strchr(allowed, host[i]))
			return false;
	return len > 0;
}

/* Port 0 only makes sense to listen on ("any free port"), so only
 * vy_net_listen() allows it. */
static int parse_hostport(const char *spec, bool allow_port_zero, char *host,
			  size_t hostlen, uint16_t *port, vy_error *err)
{
	if (!spec || !*spec)
		return vy_error_set(err, EINVAL, "empty address");
	const char *start = spec, *end, *port_text = NULL;
	bool bracketed = spec[0] == '[';
	if (bracketed) {
		start = spec + 1;
		end = strchr(start, ']');
		if (!end)
			return vy_error_set(err, EINVAL, "address %s: missing "
							 "']'",
					   spec);
		if (end[1] == ':')
			port_text = end + 2;
		else if (end[1] != '\0')
			return vy_error_set(err, EINVAL, "address %s: expected "
							 "':PORT' after ']'",
					   spec);
	} else {
		end = strchr(spec, ':');
		if (end && strchr(end + 1, ':'))
			return vy_error_set(err, EINVAL,
					   "address %s: write IPv6 addresses "
					   "in brackets, e.g. [::1]:%d",
					   spec, VY_DEFAULT_PORT);
		if (end)
			port_text = end + 1;
		else
			end = spec + strlen(spec);
	}
	size_t len = (size_t)(end - start);
	if (!host_chars_ok(start, len, bracketed))
		return vy_error_set(err, EINVAL, "address %s: \"%.*s\" is not a "
						 "host name or IP address",
				   spec, (int)len, start);
	if (len >= hostlen)
		return vy_error_set(err, ENAMETOOLONG, "address %s: host name "
						       "too long",
				   spec);
	uint16_t p = VY_DEFAULT_PORT;
	if (port_text &&
	    parse_port(spec, port_text, allow_port_zero, &p, err) < 0)
		return -1;
	memcpy(host, start, len);
	host[len] = '\0';
	*port = p;
	return 0;
}

int vy_parse_hostport(const char *spec, char *host, size_t hostlen,
		      uint16_t *port, vy_error *err)
{
	return parse_hostport(spec, false, host, hostlen, port, err);
}

/* ---- Sockets and time ------------------------------------------------- */

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline for poll(): -1 means no deadline. */
int vy_net_remaining_ms(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - monotonic_ms();
	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

int64_t vy_net_deadline_after(int timeout_ms)
{
	return timeout_ms > 0 ? monotonic_ms() + timeout_ms : -1;
}

int vy_net_set_nonblocking(int fd, bool on)
{
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0)
		return -1;
	flags = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, flags);
}

void vy_net_format_sockaddr(const struct sockaddr *sa, char *out, size_t len)
{
	char addr[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
		snprintf(out, len, "%s:%u", addr, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
		snprintf(out, len, "[%s]:%u", addr, ntohs(in6->sin6_port));
	} else {
		snprintf(out, len, "local peer");
	}
}

/* Name the peer of a connected socket for messages, and switch on
 * TCP_NODELAY where it is TCP: frames are written whole, and a small
 * control message must not wait for a delayed ACK. */
void vy_net_prepare_connected(int fd, char *peer, size_t peerlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		snprintf(peer, peerlen, "unknown peer");
		return;
	}
	vy_net_format_sockaddr((struct sockaddr *)&ss, peer, peerlen);
	if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
}

/* ---- Connecting and listening ----------------------------------------- */

/* Non-blocking connect to one address, waiting at most until deadline. */
static int connect_one(const struct addrinfo *ai, int64_t deadline,
		       int timeout_ms, const char *name, int *fd_out,
		       vy_error *err)
{
	cleanup_close int fd = socket(ai->ai_family,
				      ai->ai_socktype | SOCK_CLOEXEC |
					      SOCK_NONBLOCK,
				      ai->ai_protocol);
	if (fd < 0)
		return vy_error_sys(err, errno, "socket for %s", name);
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS)
			return vy_error_sys(err, errno, "connect to %s", name);
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int n;
		do
			n = poll(&pfd, 1, vy_net_remaining_ms(deadline));
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return vy_error_sys(err, errno, "poll connecting to %s",
					    name);
		if (n == 0)
			return vy_error_set(err, ETIMEDOUT,
					   "connect to %s timed out after %d ms",
					   name, timeout_ms);
		int so_error = 0;
		socklen_t len = sizeof(so_error);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
		if (so_error)
			return vy_error_sys(err, so_error, "connect to %s",
					    name);
	}
	if (vy_net_set_nonblocking(fd, false) < 0)
		return vy_error_sys(err, errno, "fcntl on socket to %s", name);
	*fd_out = take_fd(fd);
	return 0;
}

static int resolve(const char *host, uint16_t port, bool passive,
		   struct addrinfo **res, vy_error *err)
{
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	int rc = getaddrinfo(host, service, &hints, res);
	if (rc == EAI_SYSTEM)
		return vy_error_sys(err, errno, "resolving %s", host);
	if (rc != 0)
		return vy_error_set(err, EHOSTUNREACH, "resolving %s: %s", host,
				   gai_strerror(rc));
	return 0;
}

int vy_net_connect(const char *spec, int64_t deadline, int timeout_ms,
		   int *fd_out, vy_error *err)
{
	char host[256];
	uint16_t port;
	if (vy_parse_hostport(spec, host, sizeof(host), &port, err) < 0)
		return -1;
	struct addrinfo *res = NULL;
	if (resolve(host, port, false, &res, err) < 0)
		return vy_error_wrap(err, "connecting to %s", spec);

	/* Try each address in the resolver's order; report the last failure
	 * if none answers. */
	int fd = -1;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		char name[VY_PEER_NAME_MAX];
		vy_net_format_sockaddr(ai->ai_addr, name, sizeof(name));
		if (connect_one(ai, deadline, timeout_ms, name, &fd, err) < 0 &&
		    vy_net_remaining_ms(deadline) == 0)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return vy_error_wrap(err, "connecting to %s", spec);
	*fd_out = fd;
	return 0;
}

static int listen_on(const struct addrinfo *ai, int *fd_out, vy_error *err)
{
	char name[VY_PEER_NAME_MAX];
	vy_net_format_sockaddr(ai->ai_addr, name, sizeof(name));
	cleanup_close int fd = socket(ai->ai_family,
				      ai->ai_socktype | SOCK_CLOEXEC,
				      ai->ai_protocol);
	if (fd < 0)
		return vy_error_sys(err, errno, "socket for %s", name);
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return vy_error_sys(err, errno, "SO_REUSEADDR on %s", name);
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		return vy_error_sys(err, errno, "bind %s", name);
	if (listen(fd, 64) < 0)
		return vy_error_sys(err, errno, "listen on %s", name);
	*fd_out = take_fd(fd);
	return 0;
}

int vy_net_listen(const char *spec, int *fd_out, vy_error *err)
{
	char host[256];
	uint16_t port;
	if (parse_hostport(spec, true, host, sizeof(host), &port, err) < 0)
		return -1;
	struct addrinfo *res = NULL;
	if (resolve(host, port, true, &res, err) < 0)
		return vy_error_wrap(err, "listening on %s", spec);
	int rc = -1;
	for (struct addrinfo *ai = res; ai && rc < 0; ai = ai->ai_next)
		rc = listen_on(ai, fd_out, err);
	freeaddrinfo(res);
	return rc;
}
