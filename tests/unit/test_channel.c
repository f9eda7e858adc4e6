/* test_channel.c - the TLS channel, key files and address parsing.
 *
 * Most tests run both ends in one process: a socketpair, the server side
 * (vy_channel_accept) on a thread, the client (vy_channel_client_fd) on the
 * main thread.  Where a test needs a misbehaving peer - one with another
 * PSK identity, one that stops mid-frame - it speaks TLS through OpenSSL
 * directly, so the channel code under test is only ever on one side.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "channel.h"
#include "unit.h"

static const uint8_t key_a[VY_KEY_LEN] = { 0x11, 0x22, 0x33, 0x44, 0x55 };
static const uint8_t key_b[VY_KEY_LEN] = { 0x11, 0x22, 0x33, 0x44, 0x56 };

/* ---- A server on a thread --------------------------------------------- */

struct server {
	int fd;
	const uint8_t *key;
	int timeout_ms;
	void (*serve)(struct server *s, vy_channel *ch);
	int rc;          /* vy_channel_accept's result */
	vy_error err;    /* its error, or the error that ended serve() */
	uint64_t sent, received;
	pthread_t thread;
};

static void *server_main(void *arg)
{
	struct server *s = arg;
	vy_channel *ch = NULL;
	s->rc = vy_channel_accept(s->fd, s->key, s->timeout_ms, &ch, &s->err);
	if (s->rc == 0 && s->serve)
		s->serve(s, ch);
	if (ch) {
		s->sent = vy_channel_bytes_sent(ch);
		s->received = vy_channel_bytes_received(ch);
		vy_channel_close(ch);
	}
	return NULL;
}

/* Start a server on one end of a fresh socketpair; return the other. */
static int start_server(struct server *s, const uint8_t *key,
			void (*serve)(struct server *, vy_channel *))
{
	int sv[2];
	memset(s, 0, sizeof(*s));
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	s->fd = sv[0];
	s->key = key;
	s->timeout_ms = 5000;
	s->serve = serve;
	s->rc = 1; /* not yet run */
	pthread_create(&s->thread, NULL, server_main, s);
	return sv[1];
}

/* Send back every frame received, until the peer goes away. */
static void serve_echo(struct server *s, vy_channel *ch)
{
	struct vy_message msg;
	while (vy_channel_recv(ch, &msg, &s->err) == 0) {
		int rc = vy_channel_send(ch, msg.type, msg.payload, msg.length,
					 &s->err);
		vy_message_free(&msg);
		if (rc < 0)
			break;
	}
}

/* ---- Round trips ------------------------------------------------------ */

static int echo_round_trip(void)
{
	struct server s;
	vy_channel *ch = NULL;
	vy_error err = { 0 };
	int failures = 0;
	/* Like CHECK, evaluating expr once, and also counting failures
	 * for callers on other threads and showing the last error. */
#define EXPECT(expr)                                                       \
	do {                                                               \
		if (!(expr)) {                                             \
			fprintf(stderr, "  %s:%d: CHECK failed: %s (%s)\n", \
				__FILE__, __LINE__, #expr, err.msg);       \
			failures++;                                        \
		}                                                          \
	} while (0)
	int fd = start_server(&s, key_a, serve_echo);
	EXPECT(fd >= 0);
	if (fd < 0)
		return 1;
	EXPECT(vy_channel_client_fd(fd, key_a, 5000, &ch, &err) == 0);
	if (!ch) {
		pthread_join(s.thread, NULL);
		return 1;
	}

	json_object *hello = json_object_new_object();
	json_object_object_add(hello, "host", json_object_new_string("a"));
	EXPECT(vy_channel_send_json(ch, VY_MSG_HELLO, hello, &err) == 0);
	size_t hello_len = strlen(json_object_to_json_string_ext(
		hello, JSON_C_TO_STRING_PLAIN));
	json_object_put(hello);

	struct vy_message msg;
	json_object *obj = NULL, *host = NULL;
	EXPECT(vy_channel_expect(ch, VY_MSG_HELLO, &msg, &err) == 0);
	EXPECT(msg.payload[msg.length] == '\0');
	EXPECT(vy_message_json(&msg, &obj, &err) == 0);
	EXPECT(json_object_object_get_ex(obj, "host", &host));
	EXPECT(host && strcmp(json_object_get_string(host), "a") == 0);
	json_object_put(obj);
	vy_message_free(&msg);

	/* Bigger than one TLS record, so it crosses record boundaries. */
	enum { BLOCK = 100000 };
	uint8_t *block = malloc(BLOCK);
	for (size_t i = 0; block && i < BLOCK; i++)
		block[i] = (uint8_t)(i * 7);
	EXPECT(block && vy_channel_send_data(ch, 3, 9, 1 << 20, block, BLOCK,
					     &err) == 0);
	struct vy_data_chunk chunk = { 0 };
	EXPECT(vy_channel_expect(ch, VY_MSG_DATA, &msg, &err) == 0);
	EXPECT(vy_wire_parse_data(msg.payload, msg.length, &chunk, &err) == 0);
	EXPECT(chunk.stream == 3 && chunk.entry == 9 && chunk.offset == 1 << 20);
	EXPECT(chunk.len == BLOCK);
	EXPECT(chunk.data && block && memcmp(chunk.data, block, BLOCK) == 0);
	vy_message_free(&msg);
	free(block);

	uint64_t expected = hello_len + VY_WIRE_DATA_HDR_LEN + BLOCK;
	EXPECT(vy_channel_bytes_sent(ch) == expected);
	EXPECT(vy_channel_bytes_received(ch) == expected);
	vy_channel_close(ch);
	pthread_join(s.thread, NULL);
	EXPECT(s.rc == 0);
	EXPECT(s.sent == expected && s.received == expected);
	/* The server's loop ended because we closed: that is ECONNRESET. */
	EXPECT(s.err.code == ECONNRESET);
	EXPECT(strstr(s.err.msg, "peer closed the connection") != NULL);
#undef EXPECT
	return failures;
}

static void test_round_trip(void)
{
	unit_current_failed += echo_round_trip();
}

static void *round_trip_thread(void *arg)
{
	*(int *)arg = echo_round_trip();
	return NULL;
}

/* Channels on different threads must not share state behind our back. */
static void test_concurrent_channels(void)
{
	pthread_t threads[6];
	int failures[6];
	for (int i = 0; i < 6; i++)
		pthread_create(&threads[i], NULL, round_trip_thread, &failures[i]);
	/* unit.h's counter is not thread-safe: count here, check once. */
	for (int i = 0; i < 6; i++) {
		pthread_join(threads[i], NULL);
		CHECK(failures[i] == 0);
	}
}

/* ---- Failing handshakes ----------------------------------------------- */

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void test_wrong_key(void)
{
	struct server s;
	vy_channel *ch = NULL;
	vy_error err = { 0 };
	int fd = start_server(&s, key_a, NULL);
	int server_fd = s.fd;
	CHECK(vy_channel_client_fd(fd, key_b, 5000, &ch, &err) == -1);
	CHECK(ch == NULL);
	pthread_join(s.thread, NULL);
	CHECK(s.rc == -1);
	CHECK(strstr(s.err.msg, "TLS handshake with") != NULL);
	CHECK(strstr(s.err.msg, "does not hold the cluster key") != NULL);
	CHECK(s.err.code == EACCES);
	CHECK(strstr(err.msg, "cluster key") != NULL);
	CHECK(err.code == EACCES);
	CHECK(!fd_is_open(server_fd));
	CHECK(!fd_is_open(fd));
	if (ch)
		vy_channel_close(ch);
}

static void test_plain_peer_rejected(void)
{
	struct server s;
	int fd = start_server(&s, key_a, NULL);
	int server_fd = s.fd;
	static const char junk[] = "GET / HTTP/1.1\r\nHost: voyager\r\n\r\n";
	CHECK(write(fd, junk, sizeof(junk) - 1) == (ssize_t)sizeof(junk) - 1);
	pthread_join(s.thread, NULL);
	CHECK(s.rc == -1);
	CHECK(s.err.code != 0);
	CHECK(strstr(s.err.msg, "does not speak TLS") != NULL);
	CHECK(!fd_is_open(server_fd));
	close(fd);
}

/* A peer that connects and says nothing must not hold the server. */
static void test_handshake_timeout(void)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	vy_channel *ch = NULL;
	vy_error err = { 0 };
	CHECK(vy_channel_accept(sv[0], key_a, 200, &ch, &err) == -1);
	CHECK(err.code == ETIMEDOUT);
	CHECK(strstr(err.msg, "timed out after 200 ms") != NULL);
	CHECK(!fd_is_open(sv[0]));
	close(sv[1]);
}

/* ---- A hand-made TLS client ------------------------------------------- */

static const char *raw_identity;
static const uint8_t *raw_key;
static bool raw_allow_psk_only; /* offer psk_ke as well as psk_dhe_ke */

static int raw_offer_psk(SSL *ssl, const EVP_MD *md, const unsigned char **id,
			 size_t *idlen, SSL_SESSION **sess)
{
	static const unsigned char suite[2] = { 0x13, 0x01 };
	SSL_SESSION *s = SSL_SESSION_new();
	SSL_SESSION_set1_master_key(s, raw_key, VY_KEY_LEN);
	SSL_SESSION_set_cipher(s, SSL_CIPHER_find(ssl, suite));
	SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION);
	*id = (const unsigned char *)raw_identity;
	*idlen = strlen(raw_identity);
	*sess = s;
	return 1;
}

/* A TLS 1.3 client holding key, naming it identity, on fd.  NULL if the
 * handshake fails. */
static SSL *raw_tls_client(int fd, const char *identity, const uint8_t *key,
			   SSL_CTX **ctx_out)
{
	raw_identity = identity;
	raw_key = key;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
	SSL_CTX_set_psk_use_session_callback(ctx, raw_offer_psk);
	if (raw_allow_psk_only)
		SSL_CTX_set_options(ctx, SSL_OP_ALLOW_NO_DHE_KEX |
					 SSL_OP_PREFER_NO_DHE_KEX);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	*ctx_out = ctx;
	if (SSL_connect(ssl) == 1)
		return ssl;
	SSL_free(ssl);
	return NULL;
}

static void test_foreign_identity(void)
{
	struct server s;
	SSL_CTX *ctx;
	int fd = start_server(&s, key_a, NULL);
	SSL *ssl = raw_tls_client(fd, "someone-else", key_a, &ctx);
	CHECK(ssl == NULL);
	pthread_join(s.thread, NULL);
	CHECK(s.rc == -1);
	CHECK(strstr(s.err.msg, "not the Voyager cluster key") != NULL);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
}

static void serve_one_recv(struct server *s, vy_channel *ch)
{
	struct vy_message msg;
	if (vy_channel_recv(ch, &msg, &s->err) == 0) {
		vy_message_free(&msg);
		vy_error_set(&s->err, 0, "unexpectedly received a frame");
	}
}

/* The peer sends a header promising 100 bytes, 10 of them, and leaves -
 * politely (close_notify) or not. */
static void peer_leaves_mid_frame(bool polite)
{
	struct server s;
	SSL_CTX *ctx;
	int fd = start_server(&s, key_a, serve_one_recv);
	SSL *ssl = raw_tls_client(fd, "voyager-cluster-v1", key_a, &ctx);
	CHECK(ssl != NULL);
	if (ssl) {
		uint8_t frame[VY_WIRE_HDR_LEN + 10] = { 0 };
		vy_wire_encode_header(frame, VY_MSG_MANIFEST, 100);
		CHECK(SSL_write(ssl, frame, sizeof(frame)) == sizeof(frame));
		if (polite)
			SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	close(fd);
	pthread_join(s.thread, NULL);
	CHECK(s.rc == 0);
	CHECK(s.err.code == ECONNRESET);
	CHECK(strstr(s.err.msg, "MANIFEST frame (100 bytes) cut short") != NULL);
	CHECK(strstr(s.err.msg, "peer closed the connection") != NULL);
	SSL_CTX_free(ctx);
}

static void test_peer_closes_mid_frame(void)
{
	peer_leaves_mid_frame(true);
	peer_leaves_mid_frame(false);
}

/* The PSK alone must not key the session: the server must insist on an
 * (EC)DHE share even from a client that would settle for psk_ke, so that a
 * stolen cluster key does not decrypt recorded traffic. */
static void test_forward_secrecy(void)
{
	struct server s;
	SSL_CTX *ctx;
	int fd = start_server(&s, key_a, serve_one_recv);
	raw_allow_psk_only = true;
	SSL *ssl = raw_tls_client(fd, "voyager-cluster-v1", key_a, &ctx);
	raw_allow_psk_only = false;
	CHECK(ssl != NULL);
	if (ssl) {
		int group = SSL_get_negotiated_group(ssl);
		CHECK(group != 0);
		const char *name = SSL_group_to_name(ssl, group);
		printf("     key exchange: %s\n", name ? name : "?");
		SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	close(fd);
	pthread_join(s.thread, NULL);
	CHECK(s.rc == 0);
	SSL_CTX_free(ctx);
}

static void test_garbage_frame_after_handshake(void)
{
	struct server s;
	SSL_CTX *ctx;
	int fd = start_server(&s, key_a, serve_one_recv);
	SSL *ssl = raw_tls_client(fd, "voyager-cluster-v1", key_a, &ctx);
	CHECK(ssl != NULL);
	if (ssl) {
		CHECK(SSL_write(ssl, "HTTP/1.1 200 OK\r\n", 17) == 17);
		SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	close(fd);
	pthread_join(s.thread, NULL);
	CHECK(s.rc == 0);
	CHECK(strstr(s.err.msg, "bad frame magic") != NULL);
	SSL_CTX_free(ctx);
}

/* ---- Peer errors, JSON and timeouts ----------------------------------- */

static void serve_error(struct server *s, vy_channel *ch)
{
	static const char with_phase[] =
		"{\"phase\":\"restore\",\"error\":\"runc restore: exit 1\"}";
	static const char without_phase[] = "{\"error\":\"disk full\"}";
	vy_channel_send(ch, VY_MSG_ERROR, with_phase, sizeof(with_phase) - 1,
			&s->err);
	vy_channel_send(ch, VY_MSG_ERROR, without_phase,
			sizeof(without_phase) - 1, &s->err);
	vy_channel_send(ch, VY_MSG_ACK, "{}", 2, &s->err);
	vy_channel_send(ch, VY_MSG_ERROR, "not json", 8, &s->err);
}

static void test_expect_peer_error(void)
{
	struct server s;
	vy_channel *ch = NULL;
	vy_error err;
	struct vy_message msg = { .payload = (uint8_t *)"sentinel" };
	int fd = start_server(&s, key_a, serve_error);
	CHECK(vy_channel_client_fd(fd, key_a, 5000, &ch, &err) == 0);
	if (ch) {
		CHECK(vy_channel_expect(ch, VY_MSG_RESTORED, &msg, &err) == -1);
		CHECK(strcmp(err.msg, "peer error in phase restore: "
				      "runc restore: exit 1") == 0);
		CHECK(msg.payload == NULL);
		CHECK(vy_channel_expect(ch, VY_MSG_RESTORED, &msg, &err) == -1);
		CHECK(strcmp(err.msg, "peer error: disk full") == 0);
		CHECK(vy_channel_expect(ch, VY_MSG_RESTORED, &msg, &err) == -1);
		CHECK(strstr(err.msg, "expected RESTORED") != NULL);
		CHECK(strstr(err.msg, "got ACK") != NULL);
		CHECK(err.code == EPROTO);
		CHECK(vy_channel_expect(ch, VY_MSG_RESTORED, &msg, &err) == -1);
		CHECK(strstr(err.msg, "unreadable ERROR") != NULL);
		vy_channel_close(ch);
	}
	pthread_join(s.thread, NULL);
	CHECK(s.rc == 0);
}

static int parse_json_text(const char *text, size_t len, vy_error *err)
{
	struct vy_message msg = {
		.type = VY_MSG_ACK,
		.length = (uint32_t)len,
		.payload = (uint8_t *)text,
	};
	json_object *obj = NULL;
	int rc = vy_message_json(&msg, &obj, err);
	json_object_put(obj);
	return rc;
}

static void test_message_json(void)
{
	vy_error err;
	CHECK(parse_json_text("{\"a\":1}", 7, &err) == 0);
	CHECK(parse_json_text("{\"a\":1}\n", 8, &err) == 0);
	CHECK(parse_json_text("[1,2]", 5, &err) == -1);
	CHECK(strstr(err.msg, "not a single JSON object") != NULL);
	CHECK(parse_json_text("{\"a\":1}{}", 9, &err) == -1);
	CHECK(parse_json_text("{\"a\":", 5, &err) == -1);
	CHECK(strstr(err.msg, "not valid JSON") != NULL);
	CHECK(parse_json_text("", 0, &err) == -1);
	/* The frame length bounds the parse, not a NUL: the closing brace
	 * lies outside the frame here. */
	CHECK(parse_json_text("{\"a\":1}", 6, &err) == -1);
}

/* A timeout while waiting for the next frame is not fatal: the caller may
 * wait again. */
static void test_io_timeout(void)
{
	struct server s;
	vy_channel *ch = NULL;
	vy_error err;
	int fd = start_server(&s, key_a, serve_echo);
	CHECK(vy_channel_client_fd(fd, key_a, 5000, &ch, &err) == 0);
	if (ch) {
		struct vy_message msg;
		CHECK(vy_channel_set_timeout(ch, 150, &err) == 0);
		/* The server waits for us and we for it: nothing arrives. */
		CHECK(vy_channel_recv(ch, &msg, &err) == -1);
		CHECK(err.code == ETIMEDOUT);
		CHECK(strstr(err.msg, "timed out after 150 ms") != NULL);
		CHECK(vy_channel_set_timeout(ch, 5000, &err) == 0);
		CHECK(vy_channel_send(ch, VY_MSG_ACK, "{}", 2, &err) == 0);
		CHECK(vy_channel_expect(ch, VY_MSG_ACK, &msg, &err) == 0);
		vy_message_free(&msg);
		vy_channel_close(ch);
	}
	pthread_join(s.thread, NULL);
	CHECK(s.rc == 0);
}

static void serve_error_and_leave(struct server *s, vy_channel *ch)
{
	static const char why[] = "{\"phase\":\"transfer\",\"error\":\"disk full\"}";
	vy_channel_send(ch, VY_MSG_ERROR, why, sizeof(why) - 1, &s->err);
}

/* When a send fails because the peer gave up, the peer's ERROR frame that
 * preceded its exit can still be read, and explains the failure. */
static void test_recv_after_send_failure(void)
{
	struct server s;
	vy_channel *ch = NULL;
	vy_error err;
	struct vy_message msg;
	int fd = start_server(&s, key_a, serve_error_and_leave);
	CHECK(vy_channel_client_fd(fd, key_a, 5000, &ch, &err) == 0);
	pthread_join(s.thread, NULL); /* the server has sent and closed */
	if (ch) {
		static uint8_t chunk[4096];
		CHECK(vy_channel_send_data(ch, 0, 0, 0, chunk, sizeof(chunk),
					   &err) == -1);
		CHECK(err.code == ECONNRESET);
		CHECK(vy_channel_send(ch, VY_MSG_ACK, "{}", 2, &err) == -1);
		CHECK(strstr(err.msg, "earlier send") != NULL);
		CHECK(vy_channel_expect(ch, VY_MSG_FILE_END, &msg, &err) == -1);
		CHECK(strcmp(err.msg, "peer error in phase transfer: disk full") == 0);
		CHECK(vy_channel_recv(ch, &msg, &err) == -1);
		CHECK(err.code == ECONNRESET);
		vy_channel_close(ch);
	}
}

/* ---- Real TCP --------------------------------------------------------- */

struct tcp_server {
	int listen_fd;
	int rc;
	vy_error err;
};

static void *tcp_server_main(void *arg)
{
	struct tcp_server *t = arg;
	vy_channel *ch = NULL;
	t->rc = -1;
	int fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct server s = { .err = { 0 } };
	t->rc = vy_channel_accept(fd, key_a, 5000, &ch, &t->err);
	if (ch) {
		serve_echo(&s, ch);
		vy_channel_close(ch);
	}
	return NULL;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		return 0;
	return ntohs(sin.sin_port);
}

static void test_tcp_loopback(void)
{
	int lfd = -1;
	vy_error err;
	CHECK(vy_channel_listen("127.0.0.1:0", &lfd, &err) == 0);
	CHECK(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
	uint16_t port = bound_port(lfd);
	CHECK(port != 0);

	struct tcp_server t = { .listen_fd = lfd };
	pthread_t thread;
	pthread_create(&thread, NULL, tcp_server_main, &t);
	char spec[64], peer[64];
	snprintf(spec, sizeof(spec), "localhost:%u", port);
	snprintf(peer, sizeof(peer), "127.0.0.1:%u", port);
	vy_channel *ch = NULL;
	CHECK(vy_channel_connect(spec, key_a, 5000, &ch, &err) == 0);
	if (ch) {
		struct vy_message msg;
		CHECK(strcmp(vy_channel_peer(ch), peer) == 0);
		CHECK(fcntl(vy_channel_fd(ch), F_GETFD) & FD_CLOEXEC);
		CHECK(vy_channel_send(ch, VY_MSG_QUERY, "{\"id\":\"m1\"}", 11,
				      &err) == 0);
		CHECK(vy_channel_expect(ch, VY_MSG_QUERY, &msg, &err) == 0);
		CHECK(msg.length == 11 && memcmp(msg.payload, "{\"id\"", 5) == 0);
		vy_message_free(&msg);
		vy_channel_close(ch);
	}
	pthread_join(thread, NULL);
	CHECK(t.rc == 0);
	close(lfd);

	/* Nobody listens there any more. */
	CHECK(vy_channel_connect(spec, key_a, 2000, &ch, &err) == -1);
	CHECK(err.code == ECONNREFUSED);
	CHECK(strstr(err.msg, "connecting to localhost:") != NULL);
}

/* ---- Keys -------------------------------------------------------------- */

static int write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	fchmod(fd, mode);
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

static void check_key_text(const char *dir, const char *text, bool valid)
{
	char path[256];
	uint8_t key[VY_KEY_LEN];
	vy_error err = { 0 };
	snprintf(path, sizeof(path), "%s/text.key", dir);
	CHECK(write_file(path, text, 0600) == 0);
	int rc = vy_key_load(path, key, &err);
	CHECK(rc == (valid ? 0 : -1));
	if (rc != (valid ? 0 : -1))
		fprintf(stderr, "  key text \"%s\": %s\n", text, err.msg);
	unlink(path);
}

static void test_keys(void)
{
	char dir[] = "/tmp/vytest-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char sub[300], path[320], loose[320];
	snprintf(sub, sizeof(sub), "%s/etc/voyager", dir);
	snprintf(path, sizeof(path), "%s/cluster.key", sub);
	snprintf(loose, sizeof(loose), "%s/loose.key", dir);
	vy_error err;
	uint8_t key1[VY_KEY_LEN] = { 0 }, key2[VY_KEY_LEN] = { 0 };
	struct stat st;

	CHECK(vy_key_generate(path, &err) == 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(st.st_size == 2 * VY_KEY_LEN + 1);
	CHECK(stat(sub, &st) == 0 && (st.st_mode & 0777) == 0700);
	CHECK(vy_key_load(path, key1, &err) == 0);
	CHECK(memcmp(key1, key2, VY_KEY_LEN) != 0); /* not all zero */

	CHECK(vy_key_generate(path, &err) == -1);
	CHECK(err.code == EEXIST);
	CHECK(strstr(err.msg, "refusing to overwrite") != NULL);
	CHECK(vy_key_load(path, key2, &err) == 0);
	CHECK(memcmp(key1, key2, VY_KEY_LEN) == 0); /* untouched */

	static const char hex[] = "000102030405060708090a0b0c0d0e0f"
				  "101112131415161718191A1B1C1D1E1F";
	CHECK(write_file(loose, hex, 0644) == 0);
	CHECK(vy_key_load(loose, key2, &err) == -1);
	CHECK(strstr(err.msg, "readable by group or others") != NULL);
	CHECK(strstr(err.msg, "0644") != NULL);
	CHECK(chmod(loose, 0600) == 0);
	CHECK(vy_key_load(loose, key2, &err) == 0);
	CHECK(key2[0] == 0x00 && key2[10] == 0x0a && key2[31] == 0x1f);
	CHECK(vy_key_load("/nonexistent/vy.key", key2, &err) == -1);
	CHECK(err.code == ENOENT);

	check_key_text(dir, "000102030405060708090a0b0c0d0e0f"
			    "101112131415161718191a1b1c1d1e1f\n", true);
	check_key_text(dir, "000102030405060708090a0b0c0d0e0f"
			    "101112131415161718191a1b1c1d1e1f  \r\n\n", true);
	check_key_text(dir, "000102030405060708090a0b0c0d0e0f"
			    "101112131415161718191a1b1c1d1e\n", false);
	check_key_text(dir, "000102030405060708090a0b0c0d0e0f"
			    "101112131415161718191a1b1c1d1e1f00\n", false);
	check_key_text(dir, "000102030405060708090a0b0c0d0e0f"
			    "101112131415161718191a1b1c1d1e1g\n", false);
	check_key_text(dir, " 000102030405060708090a0b0c0d0e0f"
			    "101112131415161718191a1b1c1d1e1f", false);
	check_key_text(dir, "", false);

	unlink(loose);
	unlink(path);
	rmdir(sub);
	snprintf(sub, sizeof(sub), "%s/etc", dir);
	rmdir(sub);
	CHECK(rmdir(dir) == 0);
}

/* ---- Addresses --------------------------------------------------------- */

static void check_hostport(const char *spec, const char *host, int port)
{
	char got[64] = "";
	uint16_t got_port = 0;
	vy_error err = { 0 };
	int rc = vy_parse_hostport(spec, got, sizeof(got), &got_port, &err);
	if (!host) {
		CHECK(rc == -1);
		CHECK(err.msg[0] != '\0');
		return;
	}
	CHECK(rc == 0);
	CHECK(strcmp(got, host) == 0);
	CHECK(got_port == port);
	if (rc != 0 || strcmp(got, host) != 0 || got_port != port)
		fprintf(stderr, "  spec \"%s\": %s\n", spec, err.msg);
}

static void test_hostport(void)
{
	check_hostport("1.2.3.4:7600", "1.2.3.4", 7600);
	check_hostport("1.2.3.4", "1.2.3.4", VY_DEFAULT_PORT);
	check_hostport("[::1]:7601", "::1", 7601);
	check_hostport("[fe80::1]", "fe80::1", VY_DEFAULT_PORT);
	check_hostport("node-3.lab.example:65535", "node-3.lab.example", 65535);
	check_hostport("h:1", "h", 1);
	check_hostport("", NULL, 0);
	check_hostport(":7600", NULL, 0);
	check_hostport("1.2.3.4:0", NULL, 0);
	check_hostport("1.2.3.4:65536", NULL, 0);
	check_hostport("1.2.3.4:99999999999", NULL, 0);
	check_hostport("1.2.3.4:", NULL, 0);
	check_hostport("1.2.3.4:76x", NULL, 0);
	check_hostport("1.2.3.4:+76", NULL, 0);
	check_hostport("1.2.3.4: 76", NULL, 0);
	check_hostport("::1", NULL, 0);
	check_hostport("[::1", NULL, 0);
	check_hostport("[::1]x", NULL, 0);
	check_hostport("[]:7600", NULL, 0);
	check_hostport("[host]:7600", NULL, 0);
	check_hostport("bad host:7600", NULL, 0);
	check_hostport("a/b:7600", NULL, 0);

	char small[4];
	uint16_t port;
	vy_error err;
	CHECK(vy_parse_hostport("1.2.3.4", small, sizeof(small), &port, &err) == -1);
}

int main(void)
{
	/* A peer that vanishes must be an error, not a SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	RUN(test_round_trip);
	RUN(test_concurrent_channels);
	RUN(test_wrong_key);
	RUN(test_plain_peer_rejected);
	RUN(test_handshake_timeout);
	RUN(test_foreign_identity);
	RUN(test_peer_closes_mid_frame);
	RUN(test_forward_secrecy);
	RUN(test_garbage_frame_after_handshake);
	RUN(test_expect_peer_error);
	RUN(test_message_json);
	RUN(test_io_timeout);
	RUN(test_recv_after_send_failure);
	RUN(test_tcp_loopback);
	RUN(test_keys);
	RUN(test_hostport);
	return unit_summary();
}
