/* tunnel.c - relay one TCP connection over a pair of TLS channels.
 *
 * What it is for: post-copy memory.  CRIU's lazy page server must not be an
 * open, unauthenticated port (it serves the container's memory to whoever
 * connects first), so it listens on the source's loopback, the target's
 * `criu lazy-pages` connects to the target's loopback, and the two agents
 * carry the bytes between them over channels keyed by the cluster secret.
 * See tunnel.h for the picture and the frames.
 *
 * Design: two channels per tunnel, one per direction, and two threads per
 * side.  A vy_channel is blocking, moves whole frames, and its SSL object
 * may be used by only one thread at a time; OpenSSL does not allow SSL_read
 * and SSL_write on one SSL from two threads.  One channel for both
 * directions would need either a lock around it (a thread blocked reading
 * would then hold up every write) or non-blocking TLS behind a poll loop,
 * which the channel's frame API does not offer; with blocking writes on
 * both ends of one connection, two full socket buffers deadlock.  With one
 * channel per direction every SSL object is written by exactly one thread
 * on one side and read by exactly one thread on the other, no lock touches
 * I/O, and the cost is one more TLS handshake per tunnel.
 *
 * Per side: the caller's thread reads frames from `in` and writes them to
 * the local socket; one extra thread reads the local socket and writes
 * frames to `out`.  Both end at an end of file (TUNNEL_EOF or a local FIN)
 * and the relay succeeds when both directions have ended that way.  The
 * first failure wins: it is recorded, the other thread is stopped (a flag
 * it polls every TICK_MS, or shutdown() of the socket it is blocked on),
 * the peer is told with an ERROR frame unless the peer told us, and the
 * local connection is reset rather than closed cleanly.  Nothing waits
 * without a bound: sends fail after io_timeout_ms without progress, an
 * idle limit is optional, and TCP keepalive finds a peer that vanished.
 */
#include "tunnel.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "net.h"
#include "util.h"

#define TUNNEL_CHUNK (128 * 1024)
#define TICK_MS 200
#define DEFAULT_IO_TIMEOUT_MS 30000

/* Where a failure came from; it decides who tells whom. */
enum fail_kind {
	FAIL_LOCAL, /* our side: the local socket, a bad frame, idle: the
		     * peer must be told */
	FAIL_SEND,  /* sending to the peer failed: it has probably told us
		     * why on the other channel, and its words win */
	FAIL_PEER,  /* the peer's stream broke */
	FAIL_PEER_SAID, /* the peer's ERROR frame */
};

struct relay {
	int local_fd;
	vy_channel *in, *out;
	int io_timeout_ms, idle_timeout_ms;
	atomic_bool stop;
	atomic_uint_fast64_t last_ms; /* last byte moved, either way */
	pthread_mutex_t lock;         /* guards failed, kind, err */
	bool failed;
	enum fail_kind kind;
	vy_error err;
	/* Each written by one thread, read after the join. */
	bool out_eof_sent, in_eof_seen, peer_told;
	uint64_t bytes_out, bytes_in;
};

static void channel_closep(vy_channel **ch)
{
	if (*ch)
		vy_channel_close(*ch);
}
#define cleanup_channel __attribute__((cleanup(channel_closep)))

/* How long the reading thread may still wait for the peer's last words
 * once the tunnel is stopping. */
#define GRACE_MS 1000

/* Record the first failure (a peer's ERROR replaces our own failed send,
 * which it explains) and stop the other thread. */
static void relay_fail(struct relay *r, const vy_error *e, enum fail_kind kind)
{
	pthread_mutex_lock(&r->lock);
	if (!r->failed || (kind == FAIL_PEER_SAID && r->kind == FAIL_SEND)) {
		r->failed = true;
		r->kind = kind;
		r->err = *e;
	}
	pthread_mutex_unlock(&r->lock);
	atomic_store(&r->stop, true);
}

static enum fail_kind failure_kind(struct relay *r)
{
	pthread_mutex_lock(&r->lock);
	enum fail_kind k = r->kind;
	pthread_mutex_unlock(&r->lock);
	return k;
}

/* From the writing thread: give the reader GRACE_MS more to read what the
 * peer still says, then it sees the stop flag.  A receive timeout on the
 * socket under `in` wakes SSL_read without touching the SSL object. */
static void wake_reader(struct relay *r)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = GRACE_MS * 1000 };
	setsockopt(vy_channel_fd(r->in), SOL_SOCKET, SO_RCVTIMEO, &tv,
		   sizeof(tv));
}

/* Tell the peer why we stop (from the writing thread, which owns `out`). */
static void tell_peer(struct relay *r, const char *why)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "phase", json_object_new_string("tunnel"));
	json_object_object_add(o, "error", json_object_new_string(why));
	vy_channel_send_json(r->out, VY_MSG_ERROR, o, NULL);
	json_object_put(o);
	r->peer_told = true;
}

static void touch(struct relay *r)
{
	atomic_store(&r->last_ms, vy_now_ms());
}

static bool idle_too_long(struct relay *r, vy_error *e)
{
	if (r->idle_timeout_ms <= 0)
		return false;
	uint64_t idle = vy_now_ms() - atomic_load(&r->last_ms);
	if (idle < (uint64_t)r->idle_timeout_ms)
		return false;
	vy_error_set(e, ETIMEDOUT, "tunnel idle: no byte either way for %d ms",
		     r->idle_timeout_ms);
	return true;
}

/* ---- local socket -> out ---------------------------------------------- */

/* The tunnel is stopping because of the reading side: pass the reason on
 * unless it came from the peer. */
static int pump_out_stopped(struct relay *r)
{
	if (failure_kind(r) == FAIL_LOCAL) {
		vy_error e;
		pthread_mutex_lock(&r->lock);
		e = r->err;
		pthread_mutex_unlock(&r->lock);
		tell_peer(r, e.msg);
	}
	return 0;
}

/* Our own failure while the out channel is fine: tell the peer, then
 * stop. */
static int pump_out_local_failure(struct relay *r, const vy_error *e)
{
	tell_peer(r, e->msg);
	relay_fail(r, e, FAIL_LOCAL);
	wake_reader(r);
	return -1;
}

/* One read from the local socket, sent on.  1: go on, 0: done (EOF sent
 * or stopped), -1: failed (recorded). */
static int pump_out_once(struct relay *r, uint8_t *buf)
{
	vy_error e;
	struct pollfd p = { .fd = r->local_fd, .events = POLLIN };
	int n = poll(&p, 1, TICK_MS);
	if (atomic_load(&r->stop))
		return pump_out_stopped(r);
	if (n < 0 && errno != EINTR) {
		vy_error_sys(&e, errno, "tunnel: poll on the local connection");
		return pump_out_local_failure(r, &e);
	}
	if (n <= 0)
		return idle_too_long(r, &e) ? pump_out_local_failure(r, &e) : 1;
	ssize_t got = recv(r->local_fd, buf, TUNNEL_CHUNK, 0);
	if (got < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	if (got < 0) {
		vy_error_sys(&e, errno, "tunnel: reading the local connection");
		return pump_out_local_failure(r, &e);
	}
	int rc = got == 0 ? vy_channel_send(r->out, VY_MSG_TUNNEL_EOF, "", 0, &e)
			  : vy_channel_send(r->out, VY_MSG_TUNNEL_DATA, buf,
					    (size_t)got, &e);
	if (rc < 0) {
		relay_fail(r, &e, FAIL_SEND);
		wake_reader(r);
		return -1;
	}
	if (got == 0) {
		r->out_eof_sent = true;
		return 0;
	}
	r->bytes_out += (uint64_t)got;
	touch(r);
	return 1;
}

static void *pump_out(void *arg)
{
	struct relay *r = arg;
	uint8_t *buf = malloc(TUNNEL_CHUNK);
	if (!buf) {
		vy_error e;
		vy_error_set(&e, ENOMEM, "tunnel: allocating a buffer");
		pump_out_local_failure(r, &e);
		return NULL;
	}
	while (pump_out_once(r, buf) > 0)
		;
	free(buf);
	return NULL;
}

/* ---- in -> local socket ----------------------------------------------- */

static int write_local(struct relay *r, const uint8_t *p, size_t len,
		       vy_error *e)
{
	while (len > 0) {
		if (atomic_load(&r->stop))
			return vy_error_set(e, ECANCELED, "tunnel stopped");
		ssize_t n = send(r->local_fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return vy_error_set(e, ETIMEDOUT,
					   "tunnel: the local connection took "
					   "nothing for %d ms",
					   r->io_timeout_ms);
		if (n < 0)
			return vy_error_sys(e, errno, "tunnel: writing the "
						      "local connection");
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The peer's ERROR frame in words. */
static void peer_gave_up(const struct vy_message *msg, vy_error *e)
{
	json_object *o = NULL;
	if (vy_message_json(msg, &o, e) < 0) {
		vy_error_wrap(e, "tunnel: the peer gave up (unreadable ERROR)");
		return;
	}
	vy_error_set(e, EREMOTEIO, "tunnel: the peer gave up: %s",
		     vy_json_str(o, "error", "(no reason given)"));
	json_object_put(o);
}

/* Handle one frame from the peer.  1: go on, 0: EOF, -1: failed. */
static int pump_in_frame(struct relay *r, const struct vy_message *msg)
{
	vy_error e;
	switch (msg->type) {
	case VY_MSG_TUNNEL_DATA:
		if (atomic_load(&r->stop))
			return 1; /* stopping: only the peer's words matter */
		if (write_local(r, msg->payload, msg->length, &e) < 0) {
			relay_fail(r, &e, FAIL_LOCAL);
			return -1;
		}
		r->bytes_in += msg->length;
		touch(r);
		return 1;
	case VY_MSG_TUNNEL_EOF:
		/* Pass the half-close on; the local peer may have gone
		 * already, which is its business. */
		shutdown(r->local_fd, SHUT_WR);
		r->in_eof_seen = true;
		return 0;
	case VY_MSG_ERROR:
		peer_gave_up(msg, &e);
		relay_fail(r, &e, FAIL_PEER_SAID);
		return -1;
	default:
		vy_error_set(&e, EPROTO, "tunnel: unexpected %s frame from %s",
			     vy_msg_type_name(msg->type),
			     vy_channel_peer(r->in));
		relay_fail(r, &e, FAIL_LOCAL);
		return -1;
	}
}

static void pump_in(struct relay *r)
{
	uint64_t stopping_since = 0;
	for (;;) {
		struct vy_message msg = { 0 };
		vy_error e;
		if (atomic_load(&r->stop)) {
			/* Read on only for the peer's ERROR, briefly. */
			if (!stopping_since)
				stopping_since = vy_now_ms();
			if (failure_kind(r) != FAIL_SEND ||
			    vy_now_ms() - stopping_since > GRACE_MS)
				return;
		}
		if (vy_channel_recv(r->in, &msg, &e) < 0) {
			if (atomic_load(&r->stop))
				return; /* woken by wake_reader() */
			if (e.code == ETIMEDOUT && !idle_too_long(r, &e))
				continue; /* the other direction is busy */
			if (e.code == ECONNRESET)
				vy_error_wrap(&e, "tunnel: the peer's stream "
						  "ended without TUNNEL_EOF");
			relay_fail(r, &e, FAIL_PEER);
			return;
		}
		int rc = pump_in_frame(r, &msg);
		vy_message_free(&msg);
		if (rc <= 0)
			return;
	}
}

/* ---- the relay -------------------------------------------------------- */

/* Keepalive finds a peer host that vanished while the tunnel is idle;
 * TCP_USER_TIMEOUT one that stops acknowledging.  Best effort: a socket
 * that is not TCP (a test's socketpair) just goes without. */
static void tune_channel_socket(int fd, int io_timeout_ms)
{
	int on = 1, idle = 10, intvl = 5, cnt = 3;
	unsigned int uto = (unsigned int)io_timeout_ms;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
}

static int prepare_sockets(struct relay *r, vy_error *err)
{
	struct timeval tv = {
		.tv_sec = r->io_timeout_ms / 1000,
		.tv_usec = (r->io_timeout_ms % 1000) * 1000,
	};
	if (setsockopt(r->local_fd, SOL_SOCKET, SO_SNDTIMEO, &tv,
		       sizeof(tv)) < 0)
		return vy_error_sys(err, errno, "tunnel: send timeout on the "
						"local connection");
	tune_channel_socket(vy_channel_fd(r->in), r->io_timeout_ms);
	tune_channel_socket(vy_channel_fd(r->out), r->io_timeout_ms);
	/* `out` is only written here, `in` only read. */
	if (vy_channel_set_timeout(r->out, r->io_timeout_ms, err) < 0 ||
	    vy_channel_set_timeout(r->in, r->idle_timeout_ms, err) < 0)
		return vy_error_wrap(err, "tunnel");
	return 0;
}

/* Close the local connection with a reset: a clean FIN would tell CRIU's
 * page server that the transfer is complete. */
static void reset_close(int *fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(*fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(*fd);
	*fd = -1;
}

int vy_tunnel_relay(int local_fd, vy_channel *in, vy_channel *out,
		    const struct vy_tunnel_opts *opts,
		    struct vy_tunnel_stats *stats, vy_error *err)
{
	cleanup_close int fd = local_fd;
	struct relay r = {
		.local_fd = fd,
		.in = in,
		.out = out,
		.io_timeout_ms = opts && opts->io_timeout_ms > 0
					 ? opts->io_timeout_ms
					 : DEFAULT_IO_TIMEOUT_MS,
		.idle_timeout_ms = opts ? opts->idle_timeout_ms : 0,
		.lock = PTHREAD_MUTEX_INITIALIZER,
	};
	atomic_init(&r.stop, false);
	atomic_init(&r.last_ms, vy_now_ms());
	if (prepare_sockets(&r, err) < 0) {
		reset_close(&fd);
		return -1;
	}
	pthread_t t;
	int rc = pthread_create(&t, NULL, pump_out, &r);
	if (rc != 0) {
		reset_close(&fd);
		return vy_error_sys(err, rc, "tunnel: starting a thread");
	}
	pump_in(&r);
	pthread_join(t, NULL);
	if (stats) {
		stats->bytes_out = r.bytes_out;
		stats->bytes_in = r.bytes_in;
	}
	if (!r.failed && r.out_eof_sent && r.in_eof_seen)
		return 0;
	if (!r.failed)
		vy_error_set(&r.err, EPROTO, "tunnel ended before both "
					     "directions did");
	reset_close(&fd);
	if (err)
		*err = r.err;
	return -1;
}

/* ---- the two ends ----------------------------------------------------- */

/* Accept one connection, waiting at most timeout_ms (0: forever).  The
 * local ends get TCP_NODELAY too (vy_net_prepare_connected): CRIU's page
 * requests and the relay's writes are small, and under Nagle a write that
 * follows one not yet acknowledged waited for the reader's delayed ACK,
 * 40 ms on the loopback (seen: one page fault of a restoring thread). */
static int accept_within(int listen_fd, int timeout_ms, const char *what,
			 int *fd_out, vy_error *err)
{
	int64_t deadline = vy_net_deadline_after(timeout_ms);
	for (;;) {
		struct pollfd p = { .fd = listen_fd, .events = POLLIN };
		int n = poll(&p, 1, vy_net_remaining_ms(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return vy_error_sys(err, errno, "waiting for %s", what);
		if (n == 0)
			return vy_error_set(err, ETIMEDOUT, "no %s within %d ms",
					   what, timeout_ms);
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			char peer[64];
			vy_net_prepare_connected(fd, peer, sizeof(peer));
			*fd_out = fd;
			return 0;
		}
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
			return vy_error_sys(err, errno, "accepting %s", what);
	}
}

int vy_tunnel_run_target(int listen_fd, vy_tunnel_open_fn open, void *arg,
			 const struct vy_tunnel_opts *opts,
			 struct vy_tunnel_stats *stats, vy_error *err)
{
	int fd = -1;
	if (accept_within(listen_fd, opts ? opts->accept_timeout_ms : 0,
			  "local connection to tunnel", &fd, err) < 0)
		return vy_error_wrap(err, "tunnel (target)");
	cleanup_channel vy_channel *in = NULL;
	cleanup_channel vy_channel *out = NULL;
	if (open(arg, &in, &out, err) < 0) {
		reset_close(&fd);
		return vy_error_wrap(err, "tunnel (target): opening the "
					  "channels to the source");
	}
	if (vy_tunnel_relay(fd, in, out, opts, stats, err) < 0)
		return vy_error_wrap(err, "tunnel (target)");
	return 0;
}

int vy_tunnel_run_source(vy_channel *in, vy_channel *out,
			 const char *local_addr,
			 const struct vy_tunnel_opts *opts,
			 struct vy_tunnel_stats *stats, vy_error *err)
{
	int timeout = opts && opts->io_timeout_ms > 0 ? opts->io_timeout_ms
						      : DEFAULT_IO_TIMEOUT_MS;
	int fd = -1;
	if (vy_net_connect(local_addr, vy_net_deadline_after(timeout), timeout,
			   &fd, err) < 0) {
		vy_error_wrap(err, "tunnel (source): connecting to %s",
			      local_addr);
		json_object *o = json_object_new_object();
		json_object_object_add(o, "phase",
				       json_object_new_string("tunnel"));
		json_object_object_add(o, "error",
				       json_object_new_string(err ? err->msg : local_addr));
		vy_channel_send_json(out, VY_MSG_ERROR, o, NULL);
		json_object_put(o);
		return -1;
	}
	char peer[64];
	vy_net_prepare_connected(fd, peer, sizeof(peer));
	if (vy_tunnel_relay(fd, in, out, opts, stats, err) < 0)
		return vy_error_wrap(err, "tunnel (source)");
	return 0;
}

/* ---- pairing ---------------------------------------------------------- */

static int send_hello(vy_channel *ch, const char *id, const char *direction,
		      vy_error *err)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "version",
			       json_object_new_int(VY_PROTOCOL_VERSION));
	json_object_object_add(o, "role", json_object_new_string("tunnel"));
	json_object_object_add(o, "tunnel", json_object_new_string(id));
	json_object_object_add(o, "direction",
			       json_object_new_string(direction));
	int rc = vy_channel_send_json(ch, VY_MSG_HELLO, o, err);
	json_object_put(o);
	return rc;
}

int vy_tunnel_connect_pair(const char *spec, const uint8_t key[VY_KEY_LEN],
			   const char *id, int timeout_ms, vy_channel **in,
			   vy_channel **out, vy_error *err)
{
	cleanup_channel vy_channel *up = NULL;   /* to the source */
	cleanup_channel vy_channel *down = NULL; /* from the source */
	struct vy_message msg = { 0 };
	if (vy_channel_connect(spec, key, timeout_ms, &up, err) < 0 ||
	    send_hello(up, id, "to-source", err) < 0 ||
	    vy_channel_connect(spec, key, timeout_ms, &down, err) < 0 ||
	    send_hello(down, id, "to-target", err) < 0 ||
	    vy_channel_set_timeout(up, timeout_ms, err) < 0 ||
	    vy_channel_set_timeout(down, timeout_ms, err) < 0)
		return vy_error_wrap(err, "tunnel %s: opening the pair", id);
	for (int i = 0; i < 2; i++) {
		if (vy_channel_expect(i ? down : up, VY_MSG_ACK, &msg, err) < 0)
			return vy_error_wrap(err, "tunnel %s: source did not "
						  "accept the pair", id);
		vy_message_free(&msg);
	}
	*out = take_ptr(up);
	*in = take_ptr(down);
	return 0;
}

/* Accept one channel and read its HELLO; *dir: 0 to-source, 1 to-target. */
static int accept_one(int listen_fd, const uint8_t key[VY_KEY_LEN],
		      const char *id, int64_t deadline, int timeout_ms,
		      vy_channel **ch_out, int *dir, vy_error *err)
{
	int fd = -1;
	int left = vy_net_remaining_ms(deadline);
	if (accept_within(listen_fd, left < 0 ? 0 : (left ? left : 1),
			  "tunnel channel", &fd, err) < 0)
		return -1;
	cleanup_channel vy_channel *ch = NULL;
	struct vy_message msg = { 0 };
	json_object *o = NULL;
	if (vy_channel_accept(fd, key, timeout_ms, &ch, err) < 0 ||
	    vy_channel_set_timeout(ch, timeout_ms, err) < 0 ||
	    vy_channel_expect(ch, VY_MSG_HELLO, &msg, err) < 0)
		return -1;
	int rc = vy_message_json(&msg, &o, err);
	vy_message_free(&msg);
	if (rc < 0)
		return -1;
	const char *d = vy_json_str(o, "direction", "");
	*dir = !strcmp(d, "to-source") ? 0 : !strcmp(d, "to-target") ? 1 : -1;
	bool ours = !strcmp(vy_json_str(o, "role", ""), "tunnel") &&
		    !strcmp(vy_json_str(o, "tunnel", ""), id) && *dir >= 0;
	json_object_put(o);
	if (!ours)
		return vy_error_set(err, EPROTO, "%s offered another tunnel "
						 "(or a bad direction)",
				   vy_channel_peer(ch));
	*ch_out = take_ptr(ch);
	return 0;
}

static void close_pair(vy_channel *pair[2])
{
	for (int i = 0; i < 2; i++)
		vy_channel_close(pair[i]);
}

int vy_tunnel_accept_pair(int listen_fd, const uint8_t key[VY_KEY_LEN],
			  const char *id, int timeout_ms, vy_channel **in,
			  vy_channel **out, vy_error *err)
{
	int64_t deadline = vy_net_deadline_after(timeout_ms);
	vy_channel *pair[2] = { NULL, NULL }; /* to-source, to-target */
	while (!pair[0] || !pair[1]) {
		vy_channel *ch = NULL;
		int dir = -1;
		if (accept_one(listen_fd, key, id, deadline, timeout_ms, &ch,
			       &dir, err) < 0) {
			if (err && err->code == ETIMEDOUT) {
				close_pair(pair);
				return vy_error_wrap(err, "tunnel %s", id);
			}
			vy_warn("tunnel %s: refused a channel: %s", id,
				err ? err->msg : "?");
			continue;
		}
		if (pair[dir]) {
			vy_channel_close(ch);
			close_pair(pair);
			return vy_error_set(err, EPROTO, "tunnel %s: two "
							 "channels for one "
							 "direction",
					   id);
		}
		pair[dir] = ch;
	}
	for (int i = 0; i < 2; i++)
		if (vy_channel_send(pair[i], VY_MSG_ACK, "{}", 2, err) < 0) {
			close_pair(pair);
			return vy_error_wrap(err, "tunnel %s", id);
		}
	*in = pair[0];
	*out = pair[1];
	return 0;
}
