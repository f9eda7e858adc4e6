/* vyfs_source.c - test driver: the source side of voyager-fs, standing in
 * for the agent until it is wired in.
 *
 *   vyfs_source --listen ADDR:PORT --key FILE --tree DIR --stream N
 *               [--manifest-out FILE] [--port-file FILE]
 *
 * Scans DIR into a manifest (written encoded to --manifest-out, for the
 * target's vy_manifest_materialise() and voyager-fs --manifest), then
 * accepts authenticated channels and runs the real vy_chunk_serve() on
 * each, one thread per connection, until killed.  With --manifest-only it
 * writes the manifest and exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "chunkserve.h"
#include "cleanup.h"
#include "log.h"
#include "manifest.h"
#include "util.h"

static struct vy_manifest man;
static uint8_t key[VY_KEY_LEN];
static int rootfd = -1;
static uint32_t stream;

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	vy_channel *ch = NULL;
	vy_error err;
	if (vy_channel_accept(fd, key, 10000, &ch, &err) < 0) {
		vy_warn("accept: %s", err.msg);
		return NULL;
	}
	uint64_t served = 0;
	if (vy_chunk_serve(ch, stream, rootfd, &man, &served, &err) < 0)
		vy_warn("%s", err.msg);
	vy_info("connection from %s done, %llu bytes served", vy_channel_peer(ch),
		(unsigned long long)served);
	vy_channel_close(ch);
	return NULL;
}

static int write_manifest(const char *path, vy_error *err)
{
	cleanup_free uint8_t *buf = NULL;
	size_t len = 0;
	if (vy_manifest_encode(&man, &buf, &len, err) < 0)
		return -1;
	return vy_write_file_atomic(path, buf, len, 0600, err);
}

int main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "key", required_argument, NULL, 'k' },
		{ "tree", required_argument, NULL, 't' },
		{ "stream", required_argument, NULL, 'n' },
		{ "manifest-out", required_argument, NULL, 'o' },
		{ "manifest-only", no_argument, NULL, 'M' },
		{ 0 } };
	const char *listen_spec = NULL, *keyfile = NULL, *tree = NULL, *out = NULL;
	bool only = false;
	int c;
	while ((c = getopt_long(argc, argv, "l:k:t:n:o:M", longs, NULL)) != -1) {
		switch (c) {
		case 'l': listen_spec = optarg; break;
		case 'k': keyfile = optarg; break;
		case 't': tree = optarg; break;
		case 'n': stream = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'o': out = optarg; break;
		case 'M': only = true; break;
		default: return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN); /* a peer that left is an error return */
	vy_log_set_tag("vyfs-source");
	vy_error err;
	if (!tree || (!only && (!listen_spec || !keyfile))) {
		fprintf(stderr, "usage: vyfs_source --tree DIR [--manifest-out FILE] "
				"[--manifest-only | --listen ADDR:PORT --key FILE --stream N]\n");
		return 2;
	}
	if (vy_manifest_scan(tree, &man, &err) < 0 || (out && write_manifest(out, &err) < 0)) {
		vy_err("%s", err.msg);
		return 1;
	}
	if (only)
		return 0;
	int lfd;
	rootfd = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0 || vy_key_load(keyfile, key, &err) < 0 ||
	    vy_channel_listen(listen_spec, &lfd, &err) < 0) {
		vy_err("%s", rootfd < 0 ? strerror(errno) : err.msg);
		return 1;
	}
	vy_info("serving %s (%u entries) on %s", tree, man.count, listen_spec);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			vy_err("accept: %s", strerror(errno));
			return 1;
		}
		pthread_t t;
		if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd) == 0)
			pthread_detach(t);
		else
			close(fd);
	}
}
