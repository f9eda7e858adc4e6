/* test_tunnel.c - the page-server tunnel (tunnel.c) over real TLS channels.
 *
 * Every test builds the whole path on 127.0.0.1:
 *
 *   client --TCP--> run_target --2 TLS channels--> run_source --TCP--> server
 *
 * The client stands for `criu lazy-pages`, the server for CRIU's page
 * server.  Streams are pseudo-random (xorshift, a seed per direction) and
 * are checked byte by byte as they arrive, so nothing large is kept.  A
 * peer that dies is a forked child killed with SIGKILL.  alarm() bounds the
 * whole run: a hang is a failure, never a stuck test.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "net.h"
#include "tunnel.h"
#include "unit.h"
#include "util.h"

static const uint8_t key[VY_KEY_LEN] = { 0x42, 0x17, 0x99, 0x01, 0x5a };

/* ---- byte streams ------------------------------------------------------ */

struct stream {
	uint64_t x;
	uint64_t word;
	int left; /* bytes of word not used yet */
};

static void stream_init(struct stream *s, uint64_t seed)
{
	s->x = seed | 1;
	s->left = 0;
}

static uint8_t stream_next(struct stream *s)
{
	if (s->left == 0) {
		s->x ^= s->x << 13;
		s->x ^= s->x >> 7;
		s->x ^= s->x << 17;
		s->word = s->x;
		s->left = 8;
	}
	uint8_t b = (uint8_t)s->word;
	s->word >>= 8;
	s->left--;
	return b;
}

/* Write n stream bytes to fd in odd-sized pieces; then shut down writing
 * if shut.  Returns bytes written (less on an error). */
static size_t send_stream(int fd, uint64_t seed, size_t n, bool shut)
{
	struct stream s;
	uint8_t buf[70001];
	size_t done = 0;
	stream_init(&s, seed);
	while (done < n) {
		size_t k = n - done < sizeof(buf) ? n - done : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = stream_next(&s);
		size_t off = 0;
		while (off < k) {
			ssize_t w = send(fd, buf + off, k - off, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return done + off;
			off += (size_t)w;
		}
		done += k;
	}
	if (shut)
		shutdown(fd, SHUT_WR);
	return done;
}

/* Read until EOF or an error, checking against the stream. */
struct received {
	size_t bytes;
	bool mismatch;
	int error; /* errno of a failed read, 0 for a clean EOF */
};

static struct received recv_stream(int fd, uint64_t seed)
{
	struct stream s;
	struct received r = { 0 };
	uint8_t buf[65536];
	stream_init(&s, seed);
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r.error = errno;
			return r;
		}
		if (n == 0)
			return r;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != stream_next(&s))
				r.mismatch = true;
		r.bytes += (size_t)n;
	}
}

/* ---- endpoints ---------------------------------------------------------- */

static int listen_local(uint16_t *port)
{
	int fd = -1;
	vy_error err;
	if (vy_channel_listen("127.0.0.1:0", &fd, &err) < 0) {
		fprintf(stderr, "  listen: %s\n", err.msg);
		return -1;
	}
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	getsockname(fd, (struct sockaddr *)&sa, &len);
	*port = ntohs(sa.sin_port);
	return fd;
}

static int accept_one(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	if (poll(&p, 1, 10000) != 1)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* The page server stand-in: accepts one connection; a thread writes
 * `send_n` bytes of seed 2 (then FIN), this one reads seed 1 to EOF.  With
 * reset_after, it closes with RST once that many bytes came in. */
struct server {
	int lfd;
	uint16_t port;
	size_t send_n;
	bool send_first; /* write everything (and FIN) before reading */
	size_t reset_after;
	struct received got;
	size_t sent;
	pthread_t thread;
};

struct writer {
	int fd;
	uint64_t seed;
	size_t n, sent;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	w->sent = send_stream(w->fd, w->seed, w->n, true);
	return NULL;
}

static void reset_fd(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static void *server_main(void *arg)
{
	struct server *s = arg;
	int fd = accept_one(s->lfd);
	if (fd < 0)
		return NULL;
	if (s->reset_after) {
		uint8_t buf[65536];
		size_t n = 0;
		while (n < s->reset_after) {
			ssize_t r = recv(fd, buf, sizeof(buf), 0);
			if (r <= 0)
				break;
			n += (size_t)r;
		}
		s->got.bytes = n;
		reset_fd(fd);
		return NULL;
	}
	struct writer w = { .fd = fd, .seed = 2, .n = s->send_n };
	pthread_t t;
	if (s->send_first)
		writer_main(&w);
	else
		pthread_create(&t, NULL, writer_main, &w);
	s->got = recv_stream(fd, 1);
	if (!s->send_first)
		pthread_join(t, NULL);
	s->sent = w.sent;
	close(fd);
	return NULL;
}

static int server_start(struct server *s)
{
	return pthread_create(&s->thread, NULL, server_main, s) ? -1 : 0;
}

/* The source agent: pair on its TLS listener, then relay to the server. */
struct source {
	int lfd;
	uint16_t port;
	char local[64];
	int rc;
	vy_error err;
	struct vy_tunnel_stats st;
	pthread_t thread;
};

static void source_run(struct source *s)
{
	vy_channel *in = NULL, *out = NULL;
	struct vy_tunnel_opts o = { .io_timeout_ms = 5000 };
	s->rc = vy_tunnel_accept_pair(s->lfd, key, "t1", 10000, &in, &out,
				      &s->err);
	if (s->rc == 0)
		s->rc = vy_tunnel_run_source(in, out, s->local, &o, &s->st,
					     &s->err);
	vy_channel_close(in);
	vy_channel_close(out);
}

static void *source_main(void *arg)
{
	source_run(arg);
	return NULL;
}

/* The target agent: accept the client on its loopback listener, open the
 * pair to the source. */
struct target {
	int lfd;
	uint16_t port;
	char source[64];
	int rc;
	vy_error err;
	struct vy_tunnel_stats st;
	pthread_t thread;
};

static int open_pair(void *arg, vy_channel **in, vy_channel **out,
		     vy_error *err)
{
	struct target *t = arg;
	return vy_tunnel_connect_pair(t->source, key, "t1", 5000, in, out, err);
}

static void *target_main(void *arg)
{
	struct target *t = arg;
	struct vy_tunnel_opts o = { .io_timeout_ms = 5000,
				    .accept_timeout_ms = 10000 };
	t->rc = vy_tunnel_run_target(t->lfd, open_pair, t, &o, &t->st, &t->err);
	return NULL;
}

static int connect_local(uint16_t port)
{
	char spec[32];
	int fd = -1;
	vy_error err;
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
	if (vy_net_connect(spec, vy_net_deadline_after(5000), 5000, &fd, &err) < 0)
		fprintf(stderr, "  connect: %s\n", err.msg);
	return fd;
}

/* Listeners for a server, a source and a target joined as in the picture;
 * no thread yet (a test may fork first). */
static int wire_listen(struct server *srv, struct source *src,
		       struct target *tgt)
{
	srv->lfd = listen_local(&srv->port);
	src->lfd = listen_local(&src->port);
	tgt->lfd = listen_local(&tgt->port);
	if (src->lfd < 0 || tgt->lfd < 0)
		return -1;
	snprintf(src->local, sizeof(src->local), "127.0.0.1:%u", srv->port);
	snprintf(tgt->source, sizeof(tgt->source), "127.0.0.1:%u", src->port);
	return srv->lfd < 0 ? -1 : 0;
}

static int wire_up(struct server *srv, struct source *src, struct target *tgt)
{
	if (wire_listen(srv, src, tgt) < 0)
		return -1;
	return server_start(srv);
}

static void unwire(struct server *srv, struct source *src, struct target *tgt)
{
	close(srv->lfd);
	close(src->lfd);
	close(tgt->lfd);
}

/* ---- tests ------------------------------------------------------------- */

/* 24 MiB up and 40 MiB down at once, every byte checked; both ends report
 * success and count what they moved. */
static void test_relay_both_ways(void)
{
	struct server srv = { .send_n = 40u << 20 };
	struct source src = { 0 };
	struct target tgt = { 0 };
	const size_t up = 24u << 20;
	CHECK(wire_up(&srv, &src, &tgt) == 0);
	pthread_create(&src.thread, NULL, source_main, &src);
	pthread_create(&tgt.thread, NULL, target_main, &tgt);
	int fd = connect_local(tgt.port);
	CHECK(fd >= 0);
	struct writer w = { .fd = fd, .seed = 1, .n = up };
	pthread_t t;
	pthread_create(&t, NULL, writer_main, &w);
	struct received down = recv_stream(fd, 2);
	pthread_join(t, NULL);
	close(fd);
	pthread_join(tgt.thread, NULL);
	pthread_join(src.thread, NULL);
	pthread_join(srv.thread, NULL);
	CHECK(w.sent == up);
	CHECK(down.bytes == srv.send_n && !down.mismatch && down.error == 0);
	CHECK(srv.got.bytes == up && !srv.got.mismatch && srv.got.error == 0);
	CHECK(src.rc == 0 && tgt.rc == 0);
	if (src.rc || tgt.rc)
		fprintf(stderr, "  source: %s\n  target: %s\n", src.err.msg,
			tgt.err.msg);
	CHECK(tgt.st.bytes_out == up && tgt.st.bytes_in == srv.send_n);
	CHECK(src.st.bytes_in == up && src.st.bytes_out == srv.send_n);
	unwire(&srv, &src, &tgt);
}

/* The directions end independently: the server's FIN reaches the client
 * while the client has not sent a byte, and the client's stream still gets
 * through afterwards. */
static void test_half_close_each_way(void)
{
	struct server srv = { .send_n = 3u << 20, .send_first = true };
	struct source src = { 0 };
	struct target tgt = { 0 };
	CHECK(wire_up(&srv, &src, &tgt) == 0);
	pthread_create(&src.thread, NULL, source_main, &src);
	pthread_create(&tgt.thread, NULL, target_main, &tgt);
	int fd = connect_local(tgt.port);
	struct received down = recv_stream(fd, 2);
	CHECK(down.bytes == srv.send_n && !down.mismatch && down.error == 0);
	CHECK(send_stream(fd, 1, 5u << 20, true) == 5u << 20);
	struct received rest = recv_stream(fd, 2);
	CHECK(rest.bytes == 0 && rest.error == 0);
	close(fd);
	pthread_join(tgt.thread, NULL);
	pthread_join(src.thread, NULL);
	pthread_join(srv.thread, NULL);
	CHECK(srv.got.bytes == 5u << 20 && !srv.got.mismatch);
	CHECK(src.rc == 0 && tgt.rc == 0);
	unwire(&srv, &src, &tgt);
}

/* The page server resets mid-stream: the source fails naming its local
 * connection, the target fails with the source's words, and the client
 * sees a reset, not a clean end of file. */
static void test_local_reset_mid_stream(void)
{
	struct server srv = { .reset_after = 2u << 20 };
	struct source src = { 0 };
	struct target tgt = { 0 };
	CHECK(wire_up(&srv, &src, &tgt) == 0);
	pthread_create(&src.thread, NULL, source_main, &src);
	pthread_create(&tgt.thread, NULL, target_main, &tgt);
	int fd = connect_local(tgt.port);
	uint64_t t0 = vy_now_ms();
	size_t sent = send_stream(fd, 1, 64u << 20, false);
	struct received r = recv_stream(fd, 2);
	close(fd);
	pthread_join(tgt.thread, NULL);
	pthread_join(src.thread, NULL);
	pthread_join(srv.thread, NULL);
	int send_err = sent < 64u << 20 ? errno : 0;
	/* A reset shows on whichever call comes first: the send or the
	 * read.  What must not happen is a clean end of both. */
	CHECK(send_err == ECONNRESET || send_err == EPIPE ||
	      r.error == ECONNRESET);
	CHECK(src.rc == -1 && strstr(src.err.msg, "local connection"));
	CHECK(tgt.rc == -1 && strstr(tgt.err.msg, "peer gave up"));
	CHECK(vy_now_ms() - t0 < 15000);
	fprintf(stderr, "  (target said: %s)\n", tgt.err.msg);
	unwire(&srv, &src, &tgt);
}

/* The source agent's process dies (SIGKILL) mid-stream: the target ends
 * with an error within seconds and resets the client. */
static void test_source_dies_mid_stream(void)
{
	struct server srv = { .send_n = 0 };
	struct source src = { 0 };
	struct target tgt = { 0 };
	CHECK(wire_listen(&srv, &src, &tgt) == 0);
	/* Fork before any thread exists: the child is the source host (page
	 * server and source agent), the parent the target host. */
	pid_t child = fork();
	if (child == 0) {
		alarm(60);
		server_start(&srv);
		source_run(&src);
		_exit(0);
	}
	close(src.lfd);
	close(srv.lfd);
	src.lfd = srv.lfd = -1;
	pthread_create(&tgt.thread, NULL, target_main, &tgt);
	int fd = connect_local(tgt.port);
	CHECK(send_stream(fd, 1, 4u << 20, false) == 4u << 20);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	uint64_t t0 = vy_now_ms();
	size_t more = send_stream(fd, 1, 256u << 20, false);
	int send_err = errno;
	struct received r = recv_stream(fd, 2);
	close(fd);
	pthread_join(tgt.thread, NULL);
	CHECK(more < 256u << 20);
	CHECK(send_err == ECONNRESET || send_err == EPIPE ||
	      r.error == ECONNRESET);
	CHECK(tgt.rc == -1);
	CHECK(strstr(tgt.err.msg, "tunnel (target)") != NULL);
	CHECK(vy_now_ms() - t0 < 15000);
	fprintf(stderr, "  (target said: %s)\n", tgt.err.msg);
	close(tgt.lfd);
}

/* The target agent's process dies mid-stream: the source ends with an
 * error and the page server sees a reset, not the clean end of file that
 * CRIU takes for "transfer finished". */
static void test_target_dies_mid_stream(void)
{
	struct server srv = { .send_n = 512u << 20 };
	struct source src = { 0 };
	struct target tgt = { 0 };
	CHECK(wire_listen(&srv, &src, &tgt) == 0);
	/* The child is the target host: target agent and client. */
	pid_t child = fork();
	if (child == 0) {
		alarm(60);
		close(srv.lfd);
		pthread_create(&tgt.thread, NULL, target_main, &tgt);
		int fd = connect_local(tgt.port);
		send_stream(fd, 1, 1u << 20, false);
		pause(); /* killed by the parent */
		_exit(0);
	}
	close(tgt.lfd);
	tgt.lfd = -1;
	server_start(&srv);
	pthread_create(&src.thread, NULL, source_main, &src);
	usleep(500 * 1000); /* let bytes flow both ways */
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	uint64_t t0 = vy_now_ms();
	pthread_join(src.thread, NULL);
	pthread_join(srv.thread, NULL);
	CHECK(src.rc == -1);
	CHECK(srv.got.error == ECONNRESET || srv.sent < srv.send_n);
	CHECK(srv.got.bytes <= 1u << 20);
	CHECK(vy_now_ms() - t0 < 15000);
	fprintf(stderr, "  (source said: %s; page server: %zu of %zu sent, read %s)\n",
		src.err.msg, srv.sent, srv.send_n,
		srv.got.error ? strerror(srv.got.error) : "EOF");
	close(srv.lfd);
	close(src.lfd);
}

/* Nothing listens where the source is to connect: the target is told why. */
static void test_source_cannot_connect(void)
{
	struct server srv = { 0 };
	struct source src = { 0 };
	struct target tgt = { 0 };
	CHECK(wire_up(&srv, &src, &tgt) == 0);
	/* Point the source at a port nobody listens on. */
	uint16_t dead;
	int dfd = listen_local(&dead);
	close(dfd);
	snprintf(src.local, sizeof(src.local), "127.0.0.1:%u", dead);
	pthread_create(&src.thread, NULL, source_main, &src);
	pthread_create(&tgt.thread, NULL, target_main, &tgt);
	int fd = connect_local(tgt.port);
	struct received r = recv_stream(fd, 2);
	close(fd);
	pthread_join(tgt.thread, NULL);
	pthread_join(src.thread, NULL);
	CHECK(r.error == ECONNRESET);
	CHECK(src.rc == -1 && tgt.rc == -1);
	CHECK(strstr(tgt.err.msg, "connecting to 127.0.0.1") != NULL);
	fprintf(stderr, "  (target said: %s)\n", tgt.err.msg);
	shutdown(srv.lfd, SHUT_RDWR);
	pthread_join(srv.thread, NULL);
	unwire(&srv, &src, &tgt);
}

/* A pair that names another tunnel, or holds another key, gets nothing;
 * the source gives up at its deadline. */
struct pairing {
	int lfd;
	int rc;
	vy_error err;
};

static void *pairing_main(void *arg)
{
	struct pairing *p = arg;
	vy_channel *in = NULL, *out = NULL;
	p->rc = vy_tunnel_accept_pair(p->lfd, key, "t1", 2500, &in, &out,
				      &p->err);
	vy_channel_close(in);
	vy_channel_close(out);
	return NULL;
}

static void test_pairing_refuses_strangers(void)
{
	static const uint8_t other_key[VY_KEY_LEN] = { 0x43 };
	struct pairing p = { 0 };
	uint16_t port;
	char spec[32];
	vy_channel *in = NULL, *out = NULL;
	vy_error err;
	p.lfd = listen_local(&port);
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
	pthread_t t;
	pthread_create(&t, NULL, pairing_main, &p);
	uint64_t t0 = vy_now_ms();
	CHECK(vy_tunnel_connect_pair(spec, key, "other", 2000, &in, &out,
				     &err) == -1);
	CHECK(vy_tunnel_connect_pair(spec, other_key, "t1", 2000, &in, &out,
				     &err) == -1);
	pthread_join(t, NULL);
	CHECK(p.rc == -1 && p.err.code == ETIMEDOUT);
	CHECK(vy_now_ms() - t0 < 10000);
	close(p.lfd);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	alarm(110);
	RUN(test_relay_both_ways);
	RUN(test_half_close_each_way);
	RUN(test_local_reset_mid_stream);
	RUN(test_source_dies_mid_stream);
	RUN(test_target_dies_mid_stream);
	RUN(test_source_cannot_connect);
	RUN(test_pairing_refuses_strangers);
	return unit_summary();
}
