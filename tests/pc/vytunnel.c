/* vytunnel - one end of a page-server tunnel (tunnel.h), for
 * bench/manual-postcopy.sh --tunnel: post-copy by hand with CRIU's page
 * traffic carried over Voyager's TLS channels instead of an open port.
 *
 *   vytunnel source --key FILE --listen ADDR:PORT --connect 127.0.0.1:PSPORT
 *   vytunnel target --key FILE --listen 127.0.0.1:LPORT --source ADDR:PORT
 *   options: --id ID (default "vytunnel"), --timeout SECONDS (default 120:
 *            how long to wait for the pair, or for the local connection)
 *
 * The source end accepts the pair of channels on --listen, then connects to
 * the page server at --connect.  The target end waits for `criu
 * lazy-pages` on --listen (its loopback), then opens the pair to --source.
 * Each relays one connection and exits: 0 when both directions ended
 * cleanly, 1 with the reason on stderr otherwise.  Last line on stderr:
 * "vytunnel ROLE: ok, N bytes out, N bytes in" or "vytunnel ROLE: ERROR".
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel.h"
#include "cleanup.h"
#include "tunnel.h"

struct args {
	const char *role, *key_file, *listen, *connect, *source, *id;
	int timeout_ms;
	uint8_t key[VY_KEY_LEN];
};

static int usage(void)
{
	fprintf(stderr,
		"usage: vytunnel source --key FILE --listen ADDR:PORT "
		"--connect ADDR:PORT [--id ID] [--timeout S]\n"
		"       vytunnel target --key FILE --listen ADDR:PORT "
		"--source ADDR:PORT [--id ID] [--timeout S]\n");
	return 2;
}

static int parse(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "listen", required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'c' },
		{ "source", required_argument, NULL, 's' },
		{ "id", required_argument, NULL, 'i' },
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	if (argc < 2)
		return -1;
	a->role = argv[1];
	a->id = "vytunnel";
	a->timeout_ms = 120000;
	optind = 2;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k': a->key_file = optarg; break;
		case 'l': a->listen = optarg; break;
		case 'c': a->connect = optarg; break;
		case 's': a->source = optarg; break;
		case 'i': a->id = optarg; break;
		case 't': a->timeout_ms = atoi(optarg) * 1000; break;
		default: return -1;
		}
	}
	bool source = !strcmp(a->role, "source");
	if ((!source && strcmp(a->role, "target")) || !a->key_file ||
	    !a->listen || (source ? !a->connect : !a->source))
		return -1;
	return 0;
}

static int open_pair(void *arg, vy_channel **in, vy_channel **out,
		     vy_error *err)
{
	struct args *a = arg;
	return vy_tunnel_connect_pair(a->source, a->key, a->id, 10000, in, out,
				      err);
}

static int run(struct args *a, struct vy_tunnel_stats *st, vy_error *err)
{
	cleanup_close int lfd = -1;
	struct vy_tunnel_opts o = { .io_timeout_ms = 30000,
				    .accept_timeout_ms = a->timeout_ms };
	if (vy_channel_listen(a->listen, &lfd, err) < 0)
		return -1;
	if (!strcmp(a->role, "target"))
		return vy_tunnel_run_target(lfd, open_pair, a, &o, st, err);
	vy_channel *in = NULL, *out = NULL;
	if (vy_tunnel_accept_pair(lfd, a->key, a->id, a->timeout_ms, &in, &out,
				  err) < 0)
		return -1;
	int rc = vy_tunnel_run_source(in, out, a->connect, &o, st, err);
	vy_channel_close(in);
	vy_channel_close(out);
	return rc;
}

int main(int argc, char **argv)
{
	struct args a = { 0 };
	struct vy_tunnel_stats st = { 0 };
	vy_error err = { 0 };
	signal(SIGPIPE, SIG_IGN);
	if (parse(argc, argv, &a) < 0)
		return usage();
	if (vy_key_load(a.key_file, a.key, &err) < 0 || run(&a, &st, &err) < 0) {
		fprintf(stderr, "vytunnel %s: %s\nvytunnel %s: ERROR\n", a.role,
			err.msg, a.role);
		return 1;
	}
	fprintf(stderr, "vytunnel %s: ok, %llu bytes out, %llu bytes in\n",
		a.role, (unsigned long long)st.bytes_out,
		(unsigned long long)st.bytes_in);
	return 0;
}
