/*
 * udpecho: a UDP server that proves its socket and its memory crossed a
 * migration.  Run it as PID 1 of a container (built with gcc -static -O2).
 *
 * It binds UDP PORT on every address and answers each datagram, to its
 * sender, with "TOKEN N PAYLOAD": TOKEN a random 64-bit incarnation chosen
 * at start (16 hex digits), N how many datagrams it has answered so far,
 * this one included, and PAYLOAD the datagram as it came (up to 1 KiB).
 * After a migration the token must be the same (same process) and N must
 * go on from where it was (same memory, same socket).
 *
 * SIGTERM or SIGINT: exit 0.  Usage: udpecho [PORT]   (default 9000)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 9000;
	uint64_t token = 0, n = 0;
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	while (getrandom(&token, sizeof(token), 0) != sizeof(token))
		;
	int s = socket(AF_INET6, SOCK_DGRAM, 0);
	int off = 0;
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
				  .sin6_addr = in6addr_any };
	if (s < 0 || setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) < 0 ||
	    bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("udpecho: bind");
		return 1;
	}
	while (!stop) {
		char in[1024], out[1100];
		struct sockaddr_in6 from;
		socklen_t fl = sizeof(from);
		ssize_t len = recvfrom(s, in, sizeof(in), 0, (struct sockaddr *)&from, &fl);
		if (len < 0) {
			if (errno == EINTR)
				continue;
			perror("udpecho: recvfrom");
			return 1;
		}
		n++;
		int h = snprintf(out, sizeof(out), "%016" PRIx64 " %" PRIu64 " ", token, n);
		memcpy(out + h, in, (size_t)len);
		sendto(s, out, (size_t)h + (size_t)len, 0, (struct sockaddr *)&from, fl);
	}
	return 0;
}
