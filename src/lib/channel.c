/* channel.c - the authenticated TLS 1.3 link between two agents.
 *
 * Agents hold a 32-byte cluster key; nothing else authenticates them.  The
 * key becomes a TLS 1.3 *external* PSK: the client offers it (proving
 * possession with the PSK binder), the server looks it up by identity and
 * proves possession with its Finished message.  The default psk_dhe_ke mode
 * is kept, so every connection also runs (EC)DHE and a leaked cluster key
 * does not decrypt recorded traffic.  There are no certificates.
 *
 * On top of TLS the channel moves the frames of wire.h: a 12-byte header and
 * a payload, read and written whole.  Key files are key.c's business, and
 * addresses and plain TCP sockets are net.c's; this file starts from a
 * connected socket and a key.
 *
 * Each vy_channel is used by one thread at a time; different channels may be
 * used from different threads concurrently (the SSL_CTXs are shared,
 * created once per process, and read-only after that).
 */
#include "channel.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cleanup.h"
#include "log.h"

/* Sent by the client, checked by the server.  Bump the suffix if the way the
 * key is used ever changes, so old and new agents fail loudly. */
#define CLUSTER_PSK_IDENTITY "voyager-cluster-v1"

/* The PSK is bound to SHA-256 (its session's cipher is TLS_AES_128_GCM_SHA256),
 * and TLS 1.3 only lets a PSK be used with suites of the same hash.  Offering
 * a SHA-384 suite would let the server pick it and then silently ignore the
 * PSK, failing the handshake for no visible reason. */
#define CLUSTER_CIPHERSUITES "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"

struct vy_channel {
	int fd;
	SSL *ssl;
	bool broken;            /* framing or TLS state lost: no more I/O */
	bool send_failed;       /* a frame may be half sent: no more sends,
				 * but the peer's last words can be read */
	bool identity_mismatch; /* server: peer offered a PSK that is not ours */
	int timeout_ms;         /* I/O timeout set by vy_channel_set_timeout */
	uint64_t bytes_sent;
	uint64_t bytes_received;
	uint8_t key[VY_KEY_LEN];
	char peer[VY_PEER_NAME_MAX];
};

static void channel_closep(vy_channel **ch)
{
	if (*ch)
		vy_channel_close(*ch);
}
#define cleanup_channel __attribute__((cleanup(channel_closep)))

/* ---- Process-wide TLS contexts ---------------------------------------- */

static SSL_CTX *client_ctx, *server_ctx;
static char ctx_failure[256];
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

/* Build an SSL_SESSION that carries the cluster key as a TLS 1.3 external
 * PSK.  The "master key" of such a session is the PSK itself. */
static SSL_SESSION *cluster_psk_session(SSL *ssl, const uint8_t *key)
{
	static const unsigned char aes128gcm_sha256[2] = { 0x13, 0x01 };
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes128gcm_sha256);
	if (!cipher)
		return NULL;
	SSL_SESSION *sess = SSL_SESSION_new();
	if (!sess)
		return NULL;
	if (!SSL_SESSION_set1_master_key(sess, key, VY_KEY_LEN) ||
	    !SSL_SESSION_set_cipher(sess, cipher) ||
	    !SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION)) {
		SSL_SESSION_free(sess);
		return NULL;
	}
	return sess;
}

/* Client: offer the cluster PSK.  libssl takes ownership of *sess. */
static int offer_cluster_psk(SSL *ssl, const EVP_MD *md,
			     const unsigned char **id, size_t *idlen,
			     SSL_SESSION **sess)
{
	vy_channel *ch = SSL_get_app_data(ssl);
	*sess = NULL;
	SSL_SESSION *psk = cluster_psk_session(ssl, ch->key);
	if (!psk)
		return 0;
	/* After a HelloRetryRequest md is the negotiated hash; a PSK of
	 * another hash must not be offered then. */
	if (md && md != SSL_CIPHER_get_handshake_digest(
			      SSL_SESSION_get0_cipher(psk))) {
		SSL_SESSION_free(psk);
		return 1;
	}
	*id = (const unsigned char *)CLUSTER_PSK_IDENTITY;
	*idlen = strlen(CLUSTER_PSK_IDENTITY);
	*sess = psk;
	return 1;
}

/* Server: find the PSK the client names.  Returning no session for an
 * unknown identity makes the handshake fail, as the server has no
 * certificate to fall back on. */
static int find_cluster_psk(SSL *ssl, const unsigned char *identity,
			    size_t identity_len, SSL_SESSION **sess)
{
	vy_channel *ch = SSL_get_app_data(ssl);
	*sess = NULL;
	if (identity_len != strlen(CLUSTER_PSK_IDENTITY) ||
	    memcmp(identity, CLUSTER_PSK_IDENTITY, identity_len) != 0) {
		ch->identity_mismatch = true;
		return 1;
	}
	*sess = cluster_psk_session(ssl, ch->key);
	return *sess ? 1 : 0;
}

static SSL_CTX *new_cluster_context(bool server)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method()
					  : TLS_client_method());
	if (!ctx)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, CLUSTER_CIPHERSUITES)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Every connection is a fresh PSK handshake: no resumption tickets,
	 * no session cache, nothing to leak or go stale. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (server) {
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_psk_find_session_callback(ctx, find_cluster_psk);
	} else {
		SSL_CTX_set_psk_use_session_callback(ctx, offer_cluster_psk);
	}
	return ctx;
}

static void create_contexts(void)
{
	client_ctx = new_cluster_context(false);
	server_ctx = new_cluster_context(true);
	if (!client_ctx || !server_ctx) {
		unsigned long e = ERR_peek_last_error();
		ERR_error_string_n(e, ctx_failure, sizeof(ctx_failure));
	}
}

static SSL_CTX *cluster_context(bool server, vy_error *err)
{
	pthread_once(&ctx_once, create_contexts);
	SSL_CTX *ctx = server ? server_ctx : client_ctx;
	if (!ctx)
		vy_error_set(err, EPROTO, "cannot set up a TLS 1.3 context: %s",
			     ctx_failure[0] ? ctx_failure : "unknown error");
	return ctx;
}

/* ---- OpenSSL errors in words ------------------------------------------ */

/* The earliest error on this thread's OpenSSL queue is the root cause; the
 * rest are the call stack unwinding.  Drains the queue.  OpenSSL 3 files a
 * failed read() or write() there too, as ERR_LIB_SYS with the errno as
 * reason: that one is handed back through *sys_errno and not returned, so
 * callers treat it like any other system error. */
static unsigned long first_ssl_error(char *text, size_t len, int *sys_errno)
{
	unsigned long first = 0, e;
	while ((e = ERR_get_error()) != 0)
		if (!first)
			first = e;
	if (first && ERR_GET_LIB(first) == ERR_LIB_SYS) {
		if (sys_errno)
			*sys_errno = ERR_GET_REASON(first);
		first = 0;
	}
	if (first)
		ERR_error_string_n(first, text, len);
	else
		snprintf(text, len, "no OpenSSL error recorded");
	return first;
}

static bool reason_means_not_tls(int reason)
{
	switch (reason) {
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_UNKNOWN_PROTOCOL:
	case SSL_R_RECORD_LAYER_FAILURE:
	case SSL_R_BAD_RECORD_TYPE:
		return true;
	default:
		return false;
	}
}

/* The server checks our PSK binder and answers a mismatch with a
 * decrypt_error alert; a server without our key cannot produce records we
 * can decrypt. */
static bool reason_means_key_mismatch(bool server, int reason)
{
	if (server)
		return reason == SSL_R_BINDER_DOES_NOT_VERIFY;
	return reason == SSL_R_TLSV1_ALERT_DECRYPT_ERROR ||
	       reason == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC;
}

/* What a failed handshake means, for a person reading the log. */
static const char *explain_handshake_failure(const vy_channel *ch,
					     bool server, int reason)
{
	if (reason_means_key_mismatch(server, reason))
		return server ? "peer does not hold the cluster key"
			      : "peer rejected our cluster key, or does not "
				"hold it";
	if (server && ch->identity_mismatch)
		return "peer offered a pre-shared key that is not the Voyager "
		       "cluster key";
	if (server && (reason == SSL_R_NO_SHARED_CIPHER ||
		       reason == SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM))
		return "peer offered no cluster key";
	if (reason_means_not_tls(reason))
		return "peer does not speak TLS (not a Voyager agent?)";
	if (reason == SSL_R_UNSUPPORTED_PROTOCOL ||
	    reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
		return "peer does not speak TLS 1.3";
	if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)
		return "peer closed the connection during the handshake";
	return "TLS error";
}

static int handshake_error(vy_channel *ch, bool server, int ssl_err,
			   int saved_errno, vy_error *err)
{
	char text[256];
	unsigned long e = first_ssl_error(text, sizeof(text), &saved_errno);
	ch->broken = true;
	if (!e && (ssl_err == SSL_ERROR_SYSCALL || saved_errno)) {
		if (saved_errno == 0)
			return vy_error_set(err, ECONNRESET,
					   "TLS handshake with %s failed: peer "
					   "closed the connection",
					   ch->peer);
		return vy_error_sys(err, saved_errno,
				   "TLS handshake with %s failed", ch->peer);
	}
	int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
	int code = reason_means_key_mismatch(server, reason) ? EACCES : EPROTO;
	return vy_error_set(err, code, "TLS handshake with %s failed: %s (%s)",
			   ch->peer, explain_handshake_failure(ch, server, reason),
			   text);
}

/* Run the handshake on a non-blocking socket so that a silent or slow
 * peer cannot hold us past the deadline. */
static int run_handshake(vy_channel *ch, bool server, int64_t deadline,
			 int timeout_ms, vy_error *err)
{
	if (vy_net_set_nonblocking(ch->fd, true) < 0)
		return vy_error_sys(err, errno, "fcntl O_NONBLOCK on %s",
				    ch->peer);
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int r = server ? SSL_accept(ch->ssl) : SSL_connect(ch->ssl);
		if (r == 1)
			break;
		int saved_errno = errno;
		int ssl_err = SSL_get_error(ch->ssl, r);
		if (ssl_err != SSL_ERROR_WANT_READ &&
		    ssl_err != SSL_ERROR_WANT_WRITE)
			return handshake_error(ch, server, ssl_err,
					       saved_errno, err);
		struct pollfd pfd = {
			.fd = ch->fd,
			.events = ssl_err == SSL_ERROR_WANT_READ ? POLLIN
								 : POLLOUT,
		};
		int n = poll(&pfd, 1, vy_net_remaining_ms(deadline));
		if (n < 0 && errno != EINTR)
			return vy_error_sys(err, errno, "poll on %s", ch->peer);
		if (n == 0) {
			ch->broken = true;
			return vy_error_set(err, ETIMEDOUT,
					   "TLS handshake with %s timed out "
					   "after %d ms",
					   ch->peer, timeout_ms);
		}
	}
	if (vy_net_set_nonblocking(ch->fd, false) < 0)
		return vy_error_sys(err, errno, "fcntl ~O_NONBLOCK on %s",
				    ch->peer);
	return 0;
}

/* Wrap a connected socket (ownership taken) in TLS and shake hands. */
static int establish_channel(int fd_in, const uint8_t key[VY_KEY_LEN],
			     bool server, int64_t deadline, int timeout_ms,
			     vy_channel **out, vy_error *err)
{
	cleanup_close int fd = fd_in;
	SSL_CTX *ctx = cluster_context(server, err);
	if (!ctx)
		return -1;
	cleanup_channel vy_channel *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return vy_error_sys(err, ENOMEM, "allocating a channel");
	ch->fd = take_fd(fd);
	memcpy(ch->key, key, VY_KEY_LEN);
	vy_net_prepare_connected(ch->fd, ch->peer, sizeof(ch->peer));

	ERR_clear_error();
	ch->ssl = SSL_new(ctx);
	if (!ch->ssl || !SSL_set_fd(ch->ssl, ch->fd)) {
		char text[256];
		first_ssl_error(text, sizeof(text), NULL);
		ch->broken = true;
		return vy_error_set(err, ENOMEM, "creating TLS state for %s: %s",
				   ch->peer, text);
	}
	SSL_set_app_data(ch->ssl, ch);
	if (run_handshake(ch, server, deadline, timeout_ms, err) < 0)
		return -1;
	vy_debug("TLS 1.3 channel with %s up (%s, key exchange %s, %s)",
		 ch->peer, SSL_get_cipher_name(ch->ssl),
		 SSL_group_to_name(ch->ssl, SSL_get_negotiated_group(ch->ssl)),
		 server ? "server" : "client");
	*out = take_ptr(ch);
	return 0;
}

int vy_channel_accept(int fd, const uint8_t key[VY_KEY_LEN], int timeout_ms,
		      vy_channel **out, vy_error *err)
{
	return establish_channel(fd, key, true, vy_net_deadline_after(timeout_ms),
				 timeout_ms, out, err);
}

int vy_channel_client_fd(int fd, const uint8_t key[VY_KEY_LEN], int timeout_ms,
			 vy_channel **out, vy_error *err)
{
	return establish_channel(fd, key, false, vy_net_deadline_after(timeout_ms),
				 timeout_ms, out, err);
}

/* ---- Connecting and listening ----------------------------------------- */

int vy_channel_connect(const char *spec, const uint8_t key[VY_KEY_LEN],
		       int timeout_ms, vy_channel **out, vy_error *err)
{
	int64_t deadline = vy_net_deadline_after(timeout_ms);
	int fd = -1;
	if (vy_net_connect(spec, deadline, timeout_ms, &fd, err) < 0)
		return -1;
	if (establish_channel(fd, key, false, deadline, timeout_ms, out,
			      err) < 0)
		return vy_error_wrap(err, "connecting to %s", spec);
	return 0;
}

int vy_channel_listen(const char *spec, int *fd_out, vy_error *err)
{
	return vy_net_listen(spec, fd_out, err);
}

/* ---- Frames ----------------------------------------------------------- */

static int io_error(vy_channel *ch, int ssl_err, int saved_errno,
		    const char *what, vy_error *err)
{
	char text[256];
	unsigned long e = first_ssl_error(text, sizeof(text), &saved_errno);
	int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
	bool peer_gone = ssl_err == SSL_ERROR_ZERO_RETURN ||
			 reason == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
			 (!e && (saved_errno == EPIPE ||
				 saved_errno == ECONNRESET)) ||
			 (ssl_err == SSL_ERROR_SYSCALL && !e && !saved_errno);
	if (peer_gone)
		return vy_error_set(err, ECONNRESET,
				   "%s %s: peer closed the connection", what,
				   ch->peer);
	if (ssl_err == SSL_ERROR_WANT_READ || ssl_err == SSL_ERROR_WANT_WRITE)
		return vy_error_set(err, ETIMEDOUT, "%s %s: timed out after %d ms",
				   what, ch->peer, ch->timeout_ms);
	if (!e && saved_errno)
		return vy_error_sys(err, saved_errno, "%s %s", what, ch->peer);
	return vy_error_set(err, EPROTO, "%s %s: %s", what, ch->peer, text);
}

static int write_all(vy_channel *ch, const void *buf, size_t len,
		     vy_error *err)
{
	const uint8_t *p = buf;
	while (len > 0) {
		size_t written = 0;
		ERR_clear_error();
		errno = 0;
		if (SSL_write_ex(ch->ssl, p, len, &written) <= 0) {
			int saved_errno = errno;
			ch->send_failed = true;
			return io_error(ch, SSL_get_error(ch->ssl, 0),
					saved_errno, "sending to", err);
		}
		p += written;
		len -= written;
	}
	return 0;
}

/* Read len bytes.  A timeout before the first byte of a frame leaves the
 * channel usable (OpenSSL keeps any partial record and the caller may
 * simply try again); any other failure loses the framing for good. */
static int read_exact(vy_channel *ch, void *buf, size_t len,
		      bool frame_start, vy_error *err)
{
	uint8_t *p = buf;
	while (len > 0) {
		size_t got = 0;
		ERR_clear_error();
		errno = 0;
		if (SSL_read_ex(ch->ssl, p, len, &got) <= 0) {
			int saved_errno = errno;
			int ssl_err = SSL_get_error(ch->ssl, 0);
			bool idle_timeout = ssl_err == SSL_ERROR_WANT_READ &&
					    frame_start && p == buf;
			if (!idle_timeout)
				ch->broken = true;
			return io_error(ch, ssl_err, saved_errno,
					"receiving from", err);
		}
		p += got;
		len -= got;
	}
	return 0;
}

static int check_usable(vy_channel *ch, bool sending, vy_error *err)
{
	if (ch->broken)
		return vy_error_set(err, EPIPE,
				   "channel to %s already failed; reconnect",
				   ch->peer);
	if (sending && ch->send_failed)
		return vy_error_set(err, EPIPE,
				   "an earlier send to %s failed; the stream "
				   "is out of step, reconnect",
				   ch->peer);
	return 0;
}

int vy_channel_send(vy_channel *ch, uint16_t type, const void *payload,
		    size_t len, vy_error *err)
{
	if (check_usable(ch, true, err) < 0)
		return -1;
	if (len > VY_WIRE_MAX_PAYLOAD)
		return vy_error_set(err, EMSGSIZE,
				   "%s message of %zu bytes exceeds the frame "
				   "limit of %u",
				   vy_msg_type_name(type), len,
				   VY_WIRE_MAX_PAYLOAD);
	uint8_t hdr[VY_WIRE_HDR_LEN];
	vy_wire_encode_header(hdr, type, (uint32_t)len);
	if (write_all(ch, hdr, sizeof(hdr), err) < 0 ||
	    write_all(ch, payload, len, err) < 0)
		return vy_error_wrap(err, "sending %s",
				     vy_msg_type_name(type));
	ch->bytes_sent += len;
	return 0;
}

int vy_channel_send_json(vy_channel *ch, uint16_t type, json_object *obj,
			 vy_error *err)
{
	size_t len = 0;
	const char *text = json_object_to_json_string_length(
		obj, JSON_C_TO_STRING_PLAIN, &len);
	if (!text)
		return vy_error_set(err, ENOMEM, "serialising %s message",
				   vy_msg_type_name(type));
	return vy_channel_send(ch, type, text, len, err);
}

int vy_channel_send_data(vy_channel *ch, uint32_t stream, uint32_t entry,
			 uint64_t offset, const void *data, size_t len,
			 vy_error *err)
{
	if (check_usable(ch, true, err) < 0)
		return -1;
	if (len > VY_WIRE_MAX_PAYLOAD - VY_WIRE_DATA_HDR_LEN)
		return vy_error_set(err, EMSGSIZE,
				   "DATA chunk of %zu bytes exceeds the frame "
				   "limit of %u",
				   len, VY_WIRE_MAX_PAYLOAD - VY_WIRE_DATA_HDR_LEN);
	/* Header and prefix go out as one small record, the bytes straight
	 * from the caller's buffer as the next: no copy of the data. */
	uint8_t prefix[VY_WIRE_HDR_LEN + VY_WIRE_DATA_HDR_LEN];
	size_t payload_len = VY_WIRE_DATA_HDR_LEN + len;
	vy_wire_encode_header(prefix, VY_MSG_DATA, (uint32_t)payload_len);
	vy_wire_encode_data_header(prefix + VY_WIRE_HDR_LEN, stream, entry,
				   offset);
	if (write_all(ch, prefix, sizeof(prefix), err) < 0 ||
	    write_all(ch, data, len, err) < 0)
		return vy_error_wrap(err, "sending DATA (stream %u entry %u "
					  "offset %llu)",
				     stream, entry,
				     (unsigned long long)offset);
	ch->bytes_sent += payload_len;
	return 0;
}

int vy_channel_recv(vy_channel *ch, struct vy_message *msg, vy_error *err)
{
	msg->payload = NULL;
	if (check_usable(ch, false, err) < 0)
		return -1;
	uint8_t hdr[VY_WIRE_HDR_LEN];
	struct vy_frame_header fh;
	if (read_exact(ch, hdr, sizeof(hdr), true, err) < 0)
		return -1;
	if (vy_wire_parse_header(hdr, sizeof(hdr), &fh, err) < 0) {
		/* Framing is lost; nothing later on this stream can be
		 * trusted. */
		ch->broken = true;
		return vy_error_wrap(err, "receiving from %s", ch->peer);
	}
	cleanup_free uint8_t *payload = malloc((size_t)fh.length + 1);
	if (!payload)
		return vy_error_sys(err, ENOMEM, "allocating %u bytes for %s",
				    fh.length, vy_msg_type_name(fh.type));
	if (read_exact(ch, payload, fh.length, false, err) < 0)
		return vy_error_wrap(err, "%s frame (%u bytes) cut short",
				     vy_msg_type_name(fh.type), fh.length);
	payload[fh.length] = '\0';
	ch->bytes_received += fh.length;
	msg->type = fh.type;
	msg->length = fh.length;
	msg->payload = take_ptr(payload);
	return 0;
}

/* Turn a peer's ERROR frame into our error, keeping its words. */
static int peer_error(const struct vy_message *msg, vy_error *err)
{
	json_object *obj = NULL;
	vy_error parse_err;
	if (vy_message_json(msg, &obj, &parse_err) < 0)
		return vy_error_set(err, EREMOTEIO,
				   "peer sent an unreadable ERROR message: %s",
				   parse_err.msg);
	json_object *phase = NULL, *text = NULL;
	json_object_object_get_ex(obj, "phase", &phase);
	json_object_object_get_ex(obj, "error", &text);
	const char *why = text ? json_object_get_string(text)
			       : "(no error text)";
	if (phase && json_object_is_type(phase, json_type_string))
		vy_error_set(err, EREMOTEIO, "peer error in phase %s: %s",
			     json_object_get_string(phase), why);
	else
		vy_error_set(err, EREMOTEIO, "peer error: %s", why);
	json_object_put(obj);
	return -1;
}

int vy_channel_expect(vy_channel *ch, uint16_t type, struct vy_message *msg,
		      vy_error *err)
{
	if (vy_channel_recv(ch, msg, err) < 0)
		return vy_error_wrap(err, "waiting for %s",
				     vy_msg_type_name(type));
	if (msg->type == type)
		return 0;
	if (msg->type == VY_MSG_ERROR && type != VY_MSG_ERROR)
		peer_error(msg, err);
	else
		vy_error_set(err, EPROTO, "expected %s from %s, got %s",
			     vy_msg_type_name(type), ch->peer,
			     vy_msg_type_name(msg->type));
	vy_message_free(msg);
	return -1;
}

int vy_message_json(const struct vy_message *msg, json_object **out,
		    vy_error *err)
{
	const char *name = vy_msg_type_name(msg->type);
	if (!msg->payload || msg->length == 0)
		return vy_error_set(err, EPROTO, "%s message is empty, "
						 "expected a JSON object",
				   name);
	struct json_tokener *tok = json_tokener_new();
	if (!tok)
		return vy_error_set(err, ENOMEM, "allocating a JSON parser");
	const char *text = (const char *)msg->payload;
	json_object *obj = json_tokener_parse_ex(tok, text, (int)msg->length);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!obj || jerr != json_tokener_success) {
		json_object_put(obj);
		return vy_error_set(err, EPROTO, "%s message is not valid "
						 "JSON: %s",
				   name, json_tokener_error_desc(jerr));
	}
	/* The object must be the whole payload: trailing bytes mean a
	 * confused or hostile sender. */
	while (end < msg->length && isspace((unsigned char)text[end]))
		end++;
	if (end != msg->length || !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		return vy_error_set(err, EPROTO, "%s message is not a single "
						 "JSON object",
				   name);
	}
	*out = obj;
	return 0;
}

void vy_message_free(struct vy_message *msg)
{
	if (!msg)
		return;
	free(msg->payload);
	msg->payload = NULL;
	msg->length = 0;
}

/* ---- Channel state ---------------------------------------------------- */

int vy_channel_set_timeout(vy_channel *ch, int timeout_ms, vy_error *err)
{
	if (timeout_ms < 0)
		return vy_error_set(err, EINVAL, "negative timeout %d ms",
				   timeout_ms);
	struct timeval tv = {
		.tv_sec = timeout_ms / 1000,
		.tv_usec = (timeout_ms % 1000) * 1000,
	};
	if (setsockopt(ch->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(ch->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return vy_error_sys(err, errno, "setting a %d ms timeout on %s",
				    timeout_ms, ch->peer);
	ch->timeout_ms = timeout_ms;
	return 0;
}

uint64_t vy_channel_bytes_sent(const vy_channel *ch)
{
	return ch->bytes_sent;
}

uint64_t vy_channel_bytes_received(const vy_channel *ch)
{
	return ch->bytes_received;
}

const char *vy_channel_peer(const vy_channel *ch)
{
	return ch->peer;
}

int vy_channel_fd(const vy_channel *ch)
{
	return ch->fd;
}

void vy_channel_close(vy_channel *ch)
{
	if (!ch)
		return;
	if (ch->ssl) {
		/* Say goodbye if the link is healthy, but never wait for it:
		 * close must not block on a peer that stopped reading. */
		if (!ch->broken && !ch->send_failed &&
		    SSL_is_init_finished(ch->ssl) &&
		    vy_net_set_nonblocking(ch->fd, true) == 0)
			SSL_shutdown(ch->ssl);
		SSL_free(ch->ssl);
		ERR_clear_error();
	}
	if (ch->fd >= 0)
		close(ch->fd);
	OPENSSL_cleanse(ch->key, sizeof(ch->key));
	free(ch);
}

void vy_channel_send_error(vy_channel *ch, const char *phase, const char *msg)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "phase", json_object_new_string(phase));
	json_object_object_add(o, "error", json_object_new_string(msg));
	vy_channel_send_json(ch, VY_MSG_ERROR, o, NULL);
	json_object_put(o);
}
