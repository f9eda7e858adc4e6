/* test_chunkserve.c - unit tests for chunkserve.c (FETCH / FETCH_REPLY).
 *
 * The parsers are fed every malformed member we can think of; the request
 * check is walked across every bound of the manifest; and a real TLS
 * channel over a socketpair carries good and bad requests to the real
 * vy_chunk_serve(), which must answer the good ones byte-exact (holes as
 * zeros), refuse the bad ones and keep serving, and end cleanly when the
 * client goes.  The tree lives in /tmp/vytest-XXXXXX.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chunkserve.h"
#include "manifest.h"
#include "unit.h"

#define STREAM 3
#define BIG (6u * 1024 * 1024 + 123)

static const uint8_t test_key[VY_KEY_LEN] = "0123456789abcdef0123456789abcde";
static char dir[64], tree[96];
static struct vy_manifest man;
static uint32_t big_e, link_e, dir_e, shrink_e;
static uint8_t *big_data;

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *f)
{
	remove(p);
	return 0;
}

static uint32_t entry_of(const char *path)
{
	for (uint32_t i = 0; i < man.count; i++)
		if (!strcmp(man.entries[i].path, path))
			return i;
	return UINT32_MAX;
}

static int setup(void)
{
	strcpy(dir, "/tmp/vytest-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(tree, sizeof(tree), "%s/tree", dir);
	char p[160], q[160];
	mkdir(tree, 0755);
	snprintf(p, sizeof(p), "%s/sub", tree);
	mkdir(p, 0755);
	big_data = calloc(1, BIG);
	unsigned seed = 7;
	for (size_t i = 0; i < BIG; i++) /* a hole in the middle: 2..3 MiB */
		big_data[i] = (i >= 2u << 20 && i < 3u << 20) ? 0 : (uint8_t)rand_r(&seed);
	snprintf(p, sizeof(p), "%s/big", tree);
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (pwrite(fd, big_data, 2u << 20, 0) != 2 << 20 ||
	    pwrite(fd, big_data + (3u << 20), BIG - (3u << 20), 3u << 20) != BIG - (3 << 20))
		return -1;
	close(fd);
	snprintf(q, sizeof(q), "%s/sub/link", tree);
	if (link(p, q) < 0)
		return -1;
	snprintf(p, sizeof(p), "%s/shrinks", tree);
	fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (pwrite(fd, "0123456789", 10, 0) != 10)
		return -1;
	close(fd);
	vy_error err;
	if (vy_manifest_scan(tree, &man, &err) < 0)
		return -1;
	big_e = entry_of("big");
	link_e = entry_of("sub/link");
	dir_e = entry_of("sub");
	shrink_e = entry_of("shrinks");
	return truncate(p, 4); /* now shorter than its manifest says */
}

static json_object *req_json(const char *text)
{
	return json_tokener_parse(text);
}

static void test_parse_request(void)
{
	struct vy_fetch_req r;
	vy_error err;
	json_object *o = req_json("{\"stream\":1,\"entry\":2,\"offset\":4096,\"length\":100}");
	CHECK(vy_fetch_parse_request(o, &r, &err) == 0);
	CHECK(r.stream == 1 && r.entry == 2 && r.offset == 4096 && r.length == 100);
	json_object_put(o);
	const char *bad[] = {
		"{\"entry\":2,\"offset\":0,\"length\":1}",
		"{\"stream\":1,\"entry\":2,\"offset\":0}",
		"{\"stream\":\"1\",\"entry\":2,\"offset\":0,\"length\":1}",
		"{\"stream\":1,\"entry\":2.5,\"offset\":0,\"length\":1}",
		"{\"stream\":-1,\"entry\":2,\"offset\":0,\"length\":1}",
		"{\"stream\":4294967296,\"entry\":2,\"offset\":0,\"length\":1}",
		"{\"stream\":1,\"entry\":2,\"offset\":-5,\"length\":1}",
		"{\"stream\":1,\"entry\":2,\"offset\":0,\"length\":0}",
		"{\"stream\":1,\"entry\":2,\"offset\":0,\"length\":4194305}",
		"{\"stream\":1,\"entry\":2,\"offset\":9223372036854775807,\"length\":1}",
		"{\"stream\":1,\"entry\":2,\"offset\":9223372036854775806,\"length\":2}",
		"{\"stream\":1,\"entry\":2,\"offset\":18446744073709551615,\"length\":1}",
		"[1,2,3]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o = req_json(bad[i]);
		int rc = vy_fetch_parse_request(o, &r, &err);
		if (rc == 0)
			fprintf(stderr, "  accepted: %s\n", bad[i]);
		CHECK(rc < 0);
		json_object_put(o);
	}
	CHECK(vy_fetch_parse_request(NULL, &r, &err) < 0);
}

static void test_parse_reply(void)
{
	struct vy_fetch_reply rep;
	vy_error err;
	char ok[256];
	snprintf(ok, sizeof(ok), "{\"stream\":1,\"entry\":2,\"offset\":0,\"length\":3,"
		 "\"sha256\":\"%064d\"}", 0);
	json_object *o = req_json(ok);
	CHECK(vy_fetch_parse_reply(o, &rep, &err) == 0 && !rep.error[0]);
	json_object_put(o);
	o = req_json("{\"stream\":1,\"entry\":2,\"offset\":0,\"length\":3,\"error\":\"no\"}");
	CHECK(vy_fetch_parse_reply(o, &rep, &err) == 0 && !strcmp(rep.error, "no"));
	json_object_put(o);
	o = req_json("{\"stream\":1,\"entry\":2,\"offset\":0,\"length\":3,\"sha256\":\"ABC\"}");
	CHECK(vy_fetch_parse_reply(o, &rep, &err) < 0);
	json_object_put(o);
	snprintf(ok, sizeof(ok), "{\"stream\":1,\"entry\":2,\"offset\":0,\"length\":3,"
		 "\"sha256\":\"%063dZ\"}", 0);
	o = req_json(ok);
	CHECK(vy_fetch_parse_reply(o, &rep, &err) < 0);
	json_object_put(o);
}

static void test_check_bounds(void)
{
	vy_error err;
	struct vy_fetch_req r = { STREAM, big_e, 0, 4096 };
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) == 0);
	CHECK(vy_fetch_check(&r, STREAM + 1, &man, &err) < 0);
	r.offset = BIG - 4096;
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) == 0); /* ends exactly at EOF */
	r.offset++;
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) < 0 && err.code == ERANGE);
	r = (struct vy_fetch_req){ STREAM, man.count, 0, 1 };
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) < 0);
	r.entry = dir_e;
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) < 0);
	r.entry = link_e;
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) < 0); /* not the first name */
	r.entry = 0;                                          /* the root */
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) < 0);
	r = (struct vy_fetch_req){ STREAM, big_e, 0, VY_FETCH_MAX + 1 };
	CHECK(vy_fetch_check(&r, STREAM, &man, &err) < 0);
}

struct server {
	int fd, rc;
	uint64_t served;
	vy_error err;
};

static void *run_server(void *arg)
{
	struct server *s = arg;
	vy_channel *ch = NULL;
	int rootfd = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	s->rc = vy_channel_accept(s->fd, test_key, 5000, &ch, &s->err);
	if (s->rc == 0)
		s->rc = vy_chunk_serve(ch, STREAM, rootfd, &man, &s->served, &s->err);
	vy_channel_close(ch);
	close(rootfd);
	return NULL;
}

static void fetch_ok(vy_channel *ch, uint64_t off, uint32_t len, uint8_t *buf)
{
	vy_error err;
	struct vy_fetch_req r = { STREAM, big_e, off, len };
	int rc = vy_chunk_fetch(ch, &r, buf, &err);
	if (rc < 0)
		fprintf(stderr, "  fetch %lu+%u: %s\n", (unsigned long)off, len, err.msg);
	CHECK(rc == 0);
	CHECK(rc == 0 && memcmp(buf, big_data + off, len) == 0);
}

static void test_serve_over_tls(void)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	struct server s = { .fd = sv[1] };
	pthread_t t;
	pthread_create(&t, NULL, run_server, &s);
	vy_channel *ch = NULL;
	vy_error err;
	CHECK(vy_channel_client_fd(sv[0], test_key, 5000, &ch, &err) == 0);
	uint8_t *buf = malloc(VY_FETCH_MAX);
	if (ch && buf) {
		fetch_ok(ch, 0, 4096, buf);
		fetch_ok(ch, (2u << 20) - 100, VY_FETCH_MAX, buf); /* across the hole */
		fetch_ok(ch, BIG - 123, 123, buf);                 /* the short tail */
		struct vy_fetch_req r = { STREAM, big_e, BIG - 10, 11 };
		CHECK(vy_chunk_fetch(ch, &r, buf, &err) < 0 && err.code == EREMOTEIO);
		r = (struct vy_fetch_req){ STREAM, link_e, 0, 1 };
		CHECK(vy_chunk_fetch(ch, &r, buf, &err) < 0 && err.code == EREMOTEIO);
		r = (struct vy_fetch_req){ STREAM, shrink_e, 0, 10 };
		CHECK(vy_chunk_fetch(ch, &r, buf, &err) < 0 && err.code == EREMOTEIO);
		CHECK(strstr(err.msg, "shorter") != NULL);
		/* Garbage as a FETCH: refused with an error reply, still serving. */
		struct vy_message msg = { 0 };
		CHECK(vy_channel_send(ch, VY_MSG_FETCH, "{\"x\":", 5, &err) == 0);
		CHECK(vy_channel_expect(ch, VY_MSG_FETCH_REPLY, &msg, &err) == 0);
		CHECK(msg.payload && strstr((char *)msg.payload, "\"error\"") != NULL);
		vy_message_free(&msg);
		fetch_ok(ch, 4096, 8192, buf);
	}
	vy_channel_close(ch);
	pthread_join(t, NULL);
	CHECK(s.rc == 0); /* the client left: a clean end */
	CHECK(s.served == 4096 + VY_FETCH_MAX + 123 + 8192);
	free(buf);
}

/* Any message but FETCH ends the server with an error, not a crash. */
static void test_serve_rejects_other_messages(void)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	struct server s = { .fd = sv[1] };
	pthread_t t;
	pthread_create(&t, NULL, run_server, &s);
	vy_channel *ch = NULL;
	vy_error err;
	CHECK(vy_channel_client_fd(sv[0], test_key, 5000, &ch, &err) == 0);
	if (ch)
		CHECK(vy_channel_send(ch, VY_MSG_ACK, "{}", 2, &err) == 0);
	pthread_join(t, NULL);
	vy_channel_close(ch);
	CHECK(s.rc < 0 && s.err.code == EPROTO);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* a peer that left is an error return */
	if (setup() < 0) {
		fprintf(stderr, "setup failed\n");
		return 1;
	}
	RUN(test_parse_request);
	RUN(test_parse_reply);
	RUN(test_check_bounds);
	RUN(test_serve_over_tls);
	RUN(test_serve_rejects_other_messages);
	vy_manifest_free(&man);
	free(big_data);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return unit_summary();
}
