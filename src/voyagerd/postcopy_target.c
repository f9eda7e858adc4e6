/* postcopy_target.c - the target's side of post-copy memory: the
 * pre-flight, the lazy-pages daemon and the tunnel's local end, and the
 * exposed window until the last page.  See postcopy.h. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "lazypages.h"
#include "log.h"
#include "postcopy.h"
#include "tunnel.h"
#include "util.h"

struct vy_pc_target {
	struct vy_daemon *d;
	bool leased, pipe_raised;
	int64_t pipe_was, pipe_now;
	char source_addr[300];
	char id[17];
	char work[4096];
	int listen_fd;
	pthread_t thread;
	bool thread_started;
	atomic_bool tunnel_done;
	int tunnel_rc;
	vy_error tunnel_err;
	struct vy_tunnel_stats st;
	struct vy_lazy_proc lazy;
	bool lazy_started;
	uint64_t t_restored;
};

int vy_postcopy_target_preflight(struct vy_daemon *d, json_object *req,
				 struct vy_pc_target **out, vy_error *err)
{
	*out = NULL;
	if (strcmp(vy_json_str(req, "memory", "stop-copy"), "post-copy") != 0)
		return 0;
	if (!d->uffd)
		return vy_error_set(err, ENOTSUP, "post-copy needs userfaultfd on this host "
				    "(criu check --feature uffd-noncoop fails here)");
	if (!vy_runtime_has_lazy_pages(&d->rt))
		return vy_error_set(err, ENOTSUP, "post-copy needs a runtime with lazy pages; "
				    "%s here has no `restore --lazy-pages` (runc has)", d->rt.name);
	struct vy_pc_target *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return vy_error_set(err, ENOMEM, "out of memory");
	pc->d = d;
	pc->listen_fd = -1;
	pc->lazy.status_fd = -1;
	atomic_init(&pc->tunnel_done, false);
	if (vy_pipe_size_acquire(&pc->pipe_was, &pc->pipe_now, &pc->pipe_raised, err) < 0) {
		free(pc);
		return vy_error_wrap(err, "post-copy: CRIU needs fs.pipe-max-size >= 4 MiB here");
	}
	pc->leased = true;
	if (pc->pipe_raised)
		vy_info("fs.pipe-max-size raised from %lld to %lld for CRIU's lazy pages",
			(long long)pc->pipe_was, (long long)pc->pipe_now);
	*out = pc;
	return 0;
}

static int open_pair(void *arg, vy_channel **in, vy_channel **out, vy_error *err)
{
	struct vy_pc_target *pc = arg;
	return vy_tunnel_connect_pair(pc->source_addr, pc->d->key, pc->id, 10000, in, out, err);
}

static void *tunnel_thread(void *arg)
{
	struct vy_pc_target *pc = arg;
	vy_lazy_background_thread();
	struct vy_tunnel_opts o = { .io_timeout_ms = 30000, .accept_timeout_ms = 120000 };
	pc->tunnel_rc = vy_tunnel_run_target(pc->listen_fd, open_pair, pc, &o, &pc->st,
					     &pc->tunnel_err);
	atomic_store(&pc->tunnel_done, true);
	return NULL;
}

bool vy_postcopy_target_started(const struct vy_pc_target *pc)
{
	return pc->lazy_started;
}

int vy_postcopy_target_ready(struct vy_pc_target *pc, vy_error *err)
{
	if (vy_lazy_daemon_ready(&pc->lazy, pc->work, err) < 0)
		return vy_error_wrap(err, "post-copy");
	return 0;
}

int vy_postcopy_target_start(struct vy_pc_target *pc, const char *source_addr,
			     const char *id, const char *image_dir,
			     const char *work_dir, vy_error *err)
{
	snprintf(pc->source_addr, sizeof(pc->source_addr), "%s", source_addr);
	snprintf(pc->id, sizeof(pc->id), "%s", id);
	snprintf(pc->work, sizeof(pc->work), "%s", work_dir);
	if (vy_net_listen("127.0.0.1:0", &pc->listen_fd, err) < 0)
		return vy_error_wrap(err, "post-copy: the tunnel's local end");
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	if (getsockname(pc->listen_fd, (struct sockaddr *)&sa, &len) < 0)
		return vy_error_sys(err, errno, "getsockname");
	int port = ntohs(sa.sin_port);
	int rc = pthread_create(&pc->thread, NULL, tunnel_thread, pc);
	if (rc != 0)
		return vy_error_sys(err, rc, "post-copy: starting the tunnel");
	pc->thread_started = true;
	if (vy_lazy_daemon_start(image_dir, work_dir, "127.0.0.1", port, &pc->lazy, err) < 0)
		return vy_error_wrap(err, "post-copy");
	pc->lazy_started = true;
	vy_info("migration %s: CRIU's lazy-pages daemon runs (pid %d)", id, (int)pc->lazy.pid);
	vy_failpoint("target-postcopy-before-restore");
	return 0;
}

/* Wait for the lazy-pages daemon; false when the source's channel stirs
 * first: in this window the source sends nothing but the packets it held
 * (handed to on_message), so anything else means it closed the channel
 * (it rolled back, or it died). */
static bool lazy_ends_first(struct vy_pc_target *pc, vy_channel *ch,
			    vy_pc_message_fn on_message, void *arg)
{
	for (;;) {
		if (vy_lazy_wait(&pc->lazy, 0))
			return true;
		struct pollfd p = { .fd = vy_channel_fd(ch), .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		/* The source may send one thing meanwhile (held packets); any
		 * other message, or none, means it went away. */
		struct vy_message msg = { 0 };
		vy_error err;
		bool taken = on_message && vy_channel_recv(ch, &msg, &err) == 0 &&
			     on_message(arg, &msg) == 0;
		vy_message_free(&msg);
		if (!taken)
			return vy_lazy_wait(&pc->lazy, 0);
	}
}

static void stop_tunnel(struct vy_pc_target *pc)
{
	if (!pc->thread_started)
		return;
	/* Wakes an accept that still waits; a relay ends with its local
	 * connection (the daemon is gone by now). */
	if (pc->listen_fd >= 0)
		shutdown(pc->listen_fd, SHUT_RDWR);
	pthread_join(pc->thread, NULL);
	pc->thread_started = false;
}

static void send_pages(vy_channel *ch, struct vy_pc_target *pc, bool ok, bool dropped,
		       const char *why)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "what", json_object_new_string("pages"));
	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	json_object_object_add(o, "dropped", json_object_new_boolean(dropped));
	json_object_object_add(o, "lazy_pages_exit", json_object_new_int(pc->lazy.status));
	json_object_object_add(o, "pages_ms",
			       json_object_new_int64((int64_t)(vy_now_ms() - pc->t_restored)));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)pc->st.bytes_in));
	if (why)
		json_object_object_add(o, "error", json_object_new_string(why));
	vy_channel_send_json(ch, VY_MSG_ACK, o, NULL);
	json_object_put(o);
}

int vy_postcopy_target_pages(struct vy_pc_target *pc, vy_channel *ch,
			     const char *container, struct vy_journal *j,
			     vy_pc_message_fn on_message, void *arg, vy_error *err)
{
	pc->t_restored = vy_now_ms();
	vy_journal_set(j, "exposed", json_object_new_boolean(1));
	vy_journal_save(j, NULL);
	bool ended = lazy_ends_first(pc, ch, on_message, arg);
	if (ended && pc->lazy.status == 0) {
		/* The tunnel ends with the daemon's connection. */
		for (int i = 0; i < 500 && !atomic_load(&pc->tunnel_done); i++)
			usleep(10000);
		if (atomic_load(&pc->tunnel_done))
			stop_tunnel(pc);
		vy_journal_set(j, "all_pages", json_object_new_boolean(1));
		vy_journal_save(j, NULL);
		vy_info("migration %s: every page arrived (%llu bytes), %llu ms after the restore",
			pc->id, (unsigned long long)pc->st.bytes_in,
			(unsigned long long)(vy_now_ms() - pc->t_restored));
		send_pages(ch, pc, true, false, NULL);
		return 0;
	}
	/* Incomplete memory can never be completed (the daemon's userfaultfd
	 * is gone; later faults would read zeros): the copy goes before the
	 * source, which holds the only whole one, is told. */
	vy_lazy_kill(&pc->lazy);
	vy_error del;
	if (vy_runtime_delete(&pc->d->rt, container, true, &del) < 0)
		vy_err("migration %s: cannot delete the incomplete %s: %s", pc->id, container,
		       del.msg);
	stop_tunnel(pc);
	char log[4200];
	snprintf(log, sizeof(log), "%s/lazy-pages.log", pc->work);
	cleanup_free char *tail = vy_file_tail(log, 3);
	if (ended)
		vy_error_set(err, EIO, "criu lazy-pages exited %d before every page arrived%s%s%s%s",
			     pc->lazy.status, pc->tunnel_rc < 0 ? "; " : "",
			     pc->tunnel_rc < 0 ? pc->tunnel_err.msg : "", tail[0] ? "; log: " : "",
			     tail);
	else
		vy_error_set(err, ECONNABORTED, "the source went away while pages were still "
			     "coming");
	vy_warn("migration %s: post-copy failed, deleted the incomplete %s: %s", pc->id,
		container, err->msg);
	vy_journal_set(j, "pages_failed", json_object_new_string(err->msg));
	if (ended)
		send_pages(ch, pc, false, true, err->msg);
	return -1;
}

void vy_postcopy_target_free(struct vy_pc_target *pc)
{
	if (!pc)
		return;
	if (pc->lazy_started)
		vy_lazy_kill(&pc->lazy);
	stop_tunnel(pc);
	if (pc->listen_fd >= 0)
		close(pc->listen_fd);
	if (pc->leased)
		vy_pipe_size_release();
	free(pc);
}

bool vy_postcopy_target_settled(struct vy_daemon *d, const char *id)
{
	json_object *j = NULL;
	if (!vy_journal_id_is_valid(id) || vy_journal_load(d->state_dir, id, &j, NULL) < 0)
		return true;
	bool settled = json_object_object_get(j, "result") != NULL;
	json_object_put(j);
	return settled;
}
