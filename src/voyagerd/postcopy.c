/* postcopy.c - the source's side of post-copy memory: the page server,
 * its guard and tunnel, the exposed window and the report.  See
 * postcopy.h for the protocol and the decision; postcopy_target.c is the
 * other side.
 *
 * The tunnel registry: a migration opens a slot named by its id before it
 * freezes.  The target opens two channels to our agent port, and
 * server.c hands each (its first frame a HELLO {"role": "tunnel"}) to
 * vy_postcopy_tunnel_serve() in its own peer thread.  The thread that
 * brings the second channel runs the relay to the page server on our
 * loopback; the other waits.  Closing the slot stops a relay that still
 * runs (shutdown of the channels' sockets) and waits for both threads.
 */
#include "postcopy.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lazypages.h"
#include "log.h"
#include "source.h"
#include "tunnel.h"
#include "util.h"

#define DUMP_READY_TIMEOUT_MS (5 * 60 * 1000)
#define ABORT_CONFIRM_MS 60000

struct pc_slot {
	bool used, relaying, done, closing;
	int users;               /* peer threads inside serve() */
	char id[17];
	char peer_host[VY_PEER_NAME_MAX];
	char page_server[32];
	vy_channel *ch[2];       /* to-source (in), to-target (out) */
	int rc;
	vy_error err;
	struct vy_tunnel_stats st;
};

struct vy_pc_source {
	int port;
	char guard[32];          /* nft table, "" when none */
	bool leased, pipe_raised;
	int64_t pipe_was, pipe_now;
	struct vy_lazy_proc dump;
	bool dumping;            /* started and not reaped */
	struct pc_slot *slot;
	uint64_t t_ready, t_pages;
	bool exposed;            /* RESTORED: the target runs on our pages */
	bool pages_ok;
	bool target_dropped;     /* the target said its copy is gone */
	int lazy_exit;           /* the target's lazy-pages daemon */
	int64_t target_pages_ms; /* restore -> last page, as the target saw it */
	char pages_error[1024];
	int ckpt_exit;           /* our `runc checkpoint` (-1: not seen) */
	struct vy_tunnel_stats st;
	bool tunnel_used;
};

static struct pc_slot slots[VY_MAX_ACTIVE];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slots_cond = PTHREAD_COND_INITIALIZER;

/* ---- the tunnel registry ---------------------------------------------- */

static void host_of(const char *peer, char *out, size_t len)
{
	snprintf(out, len, "%s", peer);
	char *c = strrchr(out, ':');
	if (c)
		*c = '\0';
}

static struct pc_slot *slot_open(const char *id, const char *peer, int port)
{
	pthread_mutex_lock(&slots_lock);
	struct pc_slot *s = NULL;
	for (int i = 0; i < VY_MAX_ACTIVE && !s; i++)
		if (!slots[i].used)
			s = &slots[i];
	if (s) {
		memset(s, 0, sizeof(*s));
		s->used = true;
		snprintf(s->id, sizeof(s->id), "%s", id);
		host_of(peer, s->peer_host, sizeof(s->peer_host));
		snprintf(s->page_server, sizeof(s->page_server), "127.0.0.1:%d", port);
	}
	pthread_mutex_unlock(&slots_lock);
	return s;
}

/* Stop the relay if it still runs, wait for the peer threads, free the
 * slot; its stats land in st. */
static void slot_close(struct pc_slot *s, struct vy_tunnel_stats *st, bool *used)
{
	if (!s)
		return;
	pthread_mutex_lock(&slots_lock);
	s->closing = true;
	if (s->relaying && !s->done)
		for (int i = 0; i < 2; i++)
			if (s->ch[i])
				shutdown(vy_channel_fd(s->ch[i]), SHUT_RDWR);
	pthread_cond_broadcast(&slots_cond);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 35;
	while (s->users > 0 &&
	       pthread_cond_timedwait(&slots_cond, &slots_lock, &until) != ETIMEDOUT)
		;
	*st = s->st;
	*used = s->relaying;
	if (s->users == 0)
		s->used = false; /* else the last thread out frees it */
	pthread_mutex_unlock(&slots_lock);
}

static void tunnel_refuse(vy_channel *ch, const char *why)
{
	vy_channel_send_error(ch, "tunnel", why);
	vy_warn("refused a tunnel channel from %s: %s", vy_channel_peer(ch), why);
}

/* Find the slot for hello and take ch into it; the slot is returned
 * locked, or NULL with why filled. */
static struct pc_slot *slot_claim(vy_channel *ch, json_object *hello, int *dir,
				  char *why, size_t len)
{
	const char *id = vy_json_str(hello, "tunnel", "");
	const char *d = vy_json_str(hello, "direction", "");
	char host[VY_PEER_NAME_MAX];
	host_of(vy_channel_peer(ch), host, sizeof(host));
	*dir = !strcmp(d, "to-source") ? 0 : !strcmp(d, "to-target") ? 1 : -1;
	pthread_mutex_lock(&slots_lock);
	struct pc_slot *s = NULL;
	for (int i = 0; i < VY_MAX_ACTIVE && !s; i++)
		if (slots[i].used && !slots[i].closing && !strcmp(slots[i].id, id))
			s = &slots[i];
	if (!s)
		snprintf(why, len, "no post-copy migration '%.20s' waits for a tunnel here", id);
	else if (*dir < 0)
		snprintf(why, len, "bad tunnel direction '%.20s'", d);
	else if (strcmp(s->peer_host, host) != 0)
		snprintf(why, len, "tunnel %s belongs to %s, not %s", id, s->peer_host, host);
	else if (s->ch[*dir])
		snprintf(why, len, "tunnel %s already has its %s channel", id, d);
	else {
		s->ch[*dir] = ch;
		s->users++;
		return s;
	}
	pthread_mutex_unlock(&slots_lock);
	return NULL;
}

void vy_postcopy_tunnel_serve(struct vy_daemon *d, vy_channel *ch, json_object *hello)
{
	(void)d;
	char why[256];
	int dir;
	struct pc_slot *s = slot_claim(ch, hello, &dir, why, sizeof(why));
	if (!s) {
		tunnel_refuse(ch, why);
		return;
	}
	bool relay = s->ch[0] && s->ch[1] && !s->relaying;
	if (relay)
		s->relaying = true;
	pthread_mutex_unlock(&slots_lock);
	vy_channel_send(ch, VY_MSG_ACK, "{}", 2, NULL);
	if (relay) {
		/* A peer thread, ending with the tunnel: its priority goes with it. */
		vy_lazy_background_thread();
		struct vy_tunnel_opts o = { .io_timeout_ms = 30000 };
		struct vy_tunnel_stats st = { 0 };
		vy_error err = { 0 };
		int rc = vy_tunnel_run_source(s->ch[0], s->ch[1], s->page_server, &o, &st, &err);
		if (rc < 0)
			vy_warn("migration %s: page tunnel: %s", s->id, err.msg);
		else
			vy_info("migration %s: page tunnel done, %llu bytes to the target", s->id,
				(unsigned long long)st.bytes_out);
		pthread_mutex_lock(&slots_lock);
		s->rc = rc;
		s->err = err;
		s->st = st;
		s->done = true;
	} else {
		pthread_mutex_lock(&slots_lock);
		while (!s->done && !s->closing)
			pthread_cond_wait(&slots_cond, &slots_lock);
	}
	s->ch[dir] = NULL;
	if (--s->users == 0 && s->closing)
		s->used = false;
	pthread_cond_broadcast(&slots_cond);
	pthread_mutex_unlock(&slots_lock);
}

/* ---- the source's phases ---------------------------------------------- */

/* The tunnel is over (or never came): close it, keep its figures. */
static void close_tunnel(struct vy_pc_source *pc)
{
	if (!pc->slot)
		return;
	struct vy_tunnel_stats st = { 0 };
	bool used = false;
	slot_close(pc->slot, &st, &used);
	if (used) {
		pc->st = st;
		pc->tunnel_used = true;
	}
	pc->slot = NULL;
}

int vy_postcopy_prepare(struct migration *m, vy_error *err)
{
	struct vy_pc_source *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return vy_error_set(err, ENOMEM, "out of memory");
	m->pc = pc;
	pc->ckpt_exit = -1;
	pc->lazy_exit = -1;
	pc->dump.status_fd = -1;
	if (vy_pipe_size_acquire(&pc->pipe_was, &pc->pipe_now, &pc->pipe_raised, err) < 0)
		return vy_error_wrap(err, "post-copy: CRIU's page server needs fs.pipe-max-size "
				     ">= 4 MiB without CAP_SYS_RESOURCE");
	pc->leased = true;
	if (pc->pipe_raised)
		vy_info("migration %s: fs.pipe-max-size raised from %lld to %lld for CRIU's page "
			"pipe (put back when no migration needs it)", m->id,
			(long long)pc->pipe_was, (long long)pc->pipe_now);
	if (vy_lazy_free_port(&pc->port, err) < 0)
		return vy_error_wrap(err, "post-copy: a port for the page server");
	snprintf(pc->guard, sizeof(pc->guard), "vyps_%s", m->id);
	if (vy_lazy_guard_add(pc->guard, pc->port, err) < 0) {
		pc->guard[0] = '\0';
		return -1;
	}
	char ps[32];
	snprintf(ps, sizeof(ps), "127.0.0.1:%d", pc->port);
	vy_journal_set(m->j, "page_server", json_object_new_string(ps));
	vy_journal_set(m->j, "page_guard", json_object_new_string(pc->guard));
	pc->slot = slot_open(m->id, vy_channel_peer(m->ch), pc->port);
	if (!pc->slot)
		return vy_error_set(err, EBUSY, "post-copy: too many tunnels open");
	return vy_journal_save(m->j, err);
}

int vy_postcopy_dump(struct migration *m, vy_error *err)
{
	struct vy_pc_source *pc = m->pc;
	if (vy_lazy_dump_start(&m->d->rt, m->container, m->images, m->work, &m->opts, pc->port,
			       &pc->dump, err) < 0)
		return -1;
	pc->dumping = true;
	if (vy_lazy_dump_ready(&pc->dump, m->work, DUMP_READY_TIMEOUT_MS, err) < 0) {
		pc->dumping = false; /* reaped: the container is paused again */
		pc->ckpt_exit = pc->dump.status;
		return vy_error_wrap(err, "checkpoint %s", m->container);
	}
	pc->t_ready = vy_now_ms();
	return 0;
}

/* The channel to the target stays quiet while pages move, maybe for
 * minutes: no receive timeout, but TCP keepalive finds a vanished peer. */
static void quiet_channel(vy_channel *ch)
{
	int fd = vy_channel_fd(ch), on = 1, idle = 10, intvl = 5, cnt = 3;
	unsigned int uto = 60000;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
	vy_channel_set_timeout(ch, 0, NULL);
}

int vy_postcopy_await_pages(struct migration *m, vy_error *err)
{
	struct vy_pc_source *pc = m->pc;
	pc->exposed = true;
	vy_journal_set(m->j, "exposed", json_object_new_boolean(1));
	vy_journal_save(m->j, NULL);
	quiet_channel(m->ch);
	struct vy_message msg = { 0 };
	json_object *o = NULL;
	int rc = vy_channel_expect(m->ch, VY_MSG_ACK, &msg, err);
	if (rc == 0)
		rc = vy_message_json(&msg, &o, err);
	vy_message_free(&msg);
	if (rc < 0)
		return vy_error_wrap(err, "post-copy: lost the target while pages were still "
				     "moving");
	if (strcmp(vy_json_str(o, "what", ""), "pages") != 0) {
		json_object_put(o);
		return vy_error_set(err, EPROTO, "post-copy: the target sent an unexpected "
				    "acknowledgement");
	}
	pc->lazy_exit = (int)vy_json_int(o, "lazy_pages_exit", -1);
	pc->target_pages_ms = vy_json_int(o, "pages_ms", -1);
	bool ok = json_object_get_boolean(json_object_object_get(o, "ok"));
	if (!ok) {
		pc->target_dropped = json_object_get_boolean(json_object_object_get(o, "dropped"));
		snprintf(pc->pages_error, sizeof(pc->pages_error), "%s",
			 vy_json_str(o, "error", "(no reason given)"));
		vy_error_set(err, EIO, "post-copy: not every page reached the target, which %s: %s",
			     pc->target_dropped ? "deleted its incomplete copy" : "says",
			     pc->pages_error);
		json_object_put(o);
		return -1;
	}
	json_object_put(o);
	pc->pages_ok = true;
	pc->t_pages = vy_now_ms();
	vy_journal_set(m->j, "all_pages", json_object_new_boolean(1));
	vy_info("migration %s: every page is on the target, %llu ms after the restore", m->id,
		(unsigned long long)(pc->t_pages - m->t_running));
	return vy_journal_save(m->j, err);
}

/* ABORT on a fresh connection, answered by ABORT_ACK once the target's
 * copy is gone (vy_target_abort). */
static bool target_confirms_abort(struct migration *m)
{
	vy_channel *ch = NULL;
	vy_error e;
	if (vy_channel_connect(m->to, m->d->key, 3000, &ch, &e) < 0)
		return false;
	json_object *a = json_object_new_object();
	json_object_object_add(a, "id", json_object_new_string(m->id));
	json_object_object_add(a, "reason", json_object_new_string("post-copy rollback"));
	struct vy_message msg = { 0 };
	vy_channel_set_timeout(ch, 20000, NULL);
	bool ok = vy_channel_send_json(ch, VY_MSG_ABORT, a, &e) == 0 &&
		  vy_channel_expect(ch, VY_MSG_ABORT_ACK, &msg, &e) == 0;
	vy_message_free(&msg);
	json_object_put(a);
	vy_channel_close(ch);
	return ok;
}

int vy_postcopy_source_end(struct migration *m, bool rollback, vy_error *err)
{
	struct vy_pc_source *pc = m->pc;
	if (!pc)
		return 0;
	/* Thawing while the target's copy may still run would run it twice. */
	if (rollback && pc->exposed && !pc->target_dropped) {
		uint64_t until = vy_now_ms() + ABORT_CONFIRM_MS;
		while (!target_confirms_abort(m)) {
			if (vy_now_ms() > until)
				return vy_error_set(err, ETIMEDOUT, "post-copy: the target never "
						    "confirmed that its copy is gone, so %s stays "
						    "frozen here (its only whole copy); once the "
						    "target is back and has dropped it, `%s resume %s`",
						    m->container, m->d->rt.name, m->container);
			vy_warn("migration %s: waiting for the target to confirm its copy is gone",
				m->id);
			sleep(2);
		}
		pc->target_dropped = true;
	}
	if (!pc->dumping)
		return 0;
	/* The session ends by itself once the target's daemon closes; else
	 * end it: a client that never came is replaced by a connect-and-close,
	 * a tunnel that still runs is cut (CRIU then reports a failed
	 * transfer, and leaves the container paused either way). */
	if (!vy_lazy_wait(&pc->dump, rollback ? 1000 : 30000)) {
		bool used = false;
		pthread_mutex_lock(&slots_lock);
		used = pc->slot && pc->slot->relaying;
		pthread_mutex_unlock(&slots_lock);
		if (used)
			close_tunnel(pc);
		else
			vy_lazy_poke(pc->port);
	}
	if (!vy_lazy_wait(&pc->dump, 30000)) {
		if (!rollback)
			return vy_error_set(err, ETIMEDOUT, "post-copy: CRIU's page server on port %d "
					    "did not end", pc->port);
		/* Rolling back, and the target's copy is gone: CRIU letting go
		 * of the tasks is what we want anyway; freeze them again for
		 * the ordinary thaw. */
		vy_warn("migration %s: CRIU did not end its page-server session; killing it",
			m->id);
		vy_lazy_kill(&pc->dump);
		vy_runtime_pause(&m->d->rt, m->container, NULL);
	}
	pc->dumping = false;
	pc->ckpt_exit = pc->dump.status;
	if (pc->ckpt_exit != 0)
		vy_warn("migration %s: the lazy checkpoint exited %d (%s)", m->id, pc->ckpt_exit,
			pc->dump.log);
	close_tunnel(pc);
	return 0;
}

void vy_postcopy_report(struct migration *m, json_object *r)
{
	struct vy_pc_source *pc = m->pc;
	if (!pc)
		return;
	json_object *o = json_object_new_object();
	char ps[64];
	snprintf(ps, sizeof(ps), "127.0.0.1:%d", pc->port);
	json_object_object_add(o, "page_server", json_object_new_string(ps));
	json_object_object_add(o, "page_server_guarded", json_object_new_boolean(pc->guard[0]));
	if (pc->t_ready && m->t_freeze)
		json_object_object_add(o, "dump_ms", json_object_new_int64((int64_t)(pc->t_ready - m->t_freeze)));
	if (pc->pages_ok && m->t_freeze)
		json_object_object_add(o, "all_pages_ms",
				       json_object_new_int64((int64_t)(pc->t_pages - m->t_freeze)));
	if (pc->exposed && m->t_running) {
		uint64_t end = pc->pages_ok ? pc->t_pages : vy_now_ms();
		json_object_object_add(o, "exposed_ms", json_object_new_int64((int64_t)(end - m->t_running)));
		json_object_object_add(o, "exposed", json_object_new_string(
			pc->pages_ok ? "from the restore until the last page arrived, the container "
				       "ran on the target with part of its memory still here: losing "
				       "this host then would have lost the container"
				     : "the container ran on the target before all its pages arrived, "
				       "and they never all did; the target's copy was deleted"));
	}
	json_object_object_add(o, "pages", json_object_new_string(
		pc->pages_ok ? "all arrived" : pc->exposed ? "incomplete" : "never requested"));
	if (pc->pages_error[0])
		json_object_object_add(o, "pages_error", json_object_new_string(pc->pages_error));
	if (pc->lazy_exit >= 0)
		json_object_object_add(o, "target_lazy_pages_exit", json_object_new_int(pc->lazy_exit));
	if (pc->ckpt_exit >= 0)
		json_object_object_add(o, "checkpoint_exit", json_object_new_int(pc->ckpt_exit));
	if (pc->tunnel_used)
		json_object_object_add(o, "page_bytes", json_object_new_int64((int64_t)pc->st.bytes_out));
	json_object *p = json_object_new_object();
	json_object_object_add(p, "found", json_object_new_int64(pc->pipe_was));
	json_object_object_add(p, "in_force", json_object_new_int64(pc->pipe_now));
	/* raised by us, or already high enough (maybe by another agent's lease) */
	json_object_object_add(p, "raised", json_object_new_boolean(pc->pipe_raised));
	json_object_object_add(o, "pipe_max_size", p);
	json_object_object_add(r, "post_copy", o);
}

void vy_postcopy_source_free(struct migration *m)
{
	struct vy_pc_source *pc = m->pc;
	if (!pc)
		return;
	if (pc->dumping) {
		vy_error e;
		if (vy_postcopy_source_end(m, false, &e) < 0)
			vy_err("migration %s: %s", m->id, e.msg);
	}
	close_tunnel(pc);
	vy_error e;
	if (pc->guard[0] && vy_lazy_guard_remove(pc->guard, &e) < 0)
		vy_warn("migration %s: %s", m->id, e.msg);
	if (pc->leased)
		vy_pipe_size_release();
	free(pc);
	m->pc = NULL;
}

/* ---- recovery --------------------------------------------------------- */

bool vy_postcopy_recover_source(struct vy_daemon *d, json_object *j)
{
	const char *ps = vy_json_str(j, "page_server", NULL);
	const char *guard = vy_json_str(j, "page_guard", NULL);
	const char *container = vy_json_str(j, "container", "");
	if (!ps)
		return false;
	const char *colon = strrchr(ps, ':');
	int port = colon ? atoi(colon + 1) : 0;
	/* A session nobody came to is still waiting; one whose tunnel died
	 * with our previous run ends by itself.  Either way CRIU then puts
	 * the container back to paused. */
	struct vy_container_state st;
	bool listened = false;
	for (int i = 0; i < 300; i++) {
		if (vy_runtime_state(&d->rt, container, &st, NULL) < 0 ||
		    strcmp(st.status, "running") != 0)
			break;
		if (i % 50 == 0 && port > 0)
			listened |= vy_lazy_poke(port);
		/* Running, nothing listening, for 3 s: no CRIU holds it (an
		 * earlier run had thawed it already). */
		if (i >= 30 && !listened)
			break;
		usleep(100 * 1000);
	}
	if (guard)
		vy_lazy_guard_remove(guard, NULL);
	return true;
}
