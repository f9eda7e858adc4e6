/* server.c - voyagerd's listeners and dispatch.
 *
 * Two listening sockets: the TLS port for peers and the root-only control
 * socket for the CLI.  Each accepted connection gets a detached thread.  A
 * peer's first frame says what it wants: PREFLIGHT opens an incoming
 * migration, QUERY asks what this host (as source) decided about one,
 * ABORT tells this host (as target) to drop one.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "control.h"
#include "daemon.h"
#include "jit.h"
#include "log.h"
#include "postcopy.h"
#include "preflight.h"
#include "util.h"

static struct vy_active active[VY_MAX_ACTIVE];
static pthread_mutex_t active_lock = PTHREAD_MUTEX_INITIALIZER;
extern volatile sig_atomic_t vy_stop_requested;

struct vy_active *vy_active_add(const char *id, const char *container,
				const char *role, const char *peer)
{
	pthread_mutex_lock(&active_lock);
	struct vy_active *a = NULL;
	for (int i = 0; i < VY_MAX_ACTIVE && !a; i++)
		if (!active[i].used)
			a = &active[i];
	if (a) {
		memset(a, 0, sizeof(*a));
		a->used = true;
		snprintf(a->id, sizeof(a->id), "%s", id);
		snprintf(a->container, sizeof(a->container), "%s", container);
		snprintf(a->role, sizeof(a->role), "%s", role);
		snprintf(a->peer, sizeof(a->peer), "%s", peer ? peer : "");
		snprintf(a->phase, sizeof(a->phase), "starting");
		a->started_ms = vy_wall_ms();
	}
	pthread_mutex_unlock(&active_lock);
	return a;
}

void vy_active_phase(struct vy_active *a, const char *phase)
{
	if (!a)
		return;
	pthread_mutex_lock(&active_lock);
	snprintf(a->phase, sizeof(a->phase), "%s", phase);
	pthread_mutex_unlock(&active_lock);
}

void vy_active_remove(struct vy_active *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&active_lock);
	a->used = false;
	pthread_mutex_unlock(&active_lock);
}

bool vy_active_has_container(const char *container)
{
	bool found = false;
	pthread_mutex_lock(&active_lock);
	for (int i = 0; i < VY_MAX_ACTIVE; i++)
		if (active[i].used && !strcmp(active[i].container, container))
			found = true;
	pthread_mutex_unlock(&active_lock);
	return found;
}

bool vy_active_has_id(const char *id)
{
	bool found = false;
	pthread_mutex_lock(&active_lock);
	for (int i = 0; i < VY_MAX_ACTIVE; i++)
		if (active[i].used && !strcmp(active[i].id, id))
			found = true;
	pthread_mutex_unlock(&active_lock);
	return found;
}

json_object *vy_active_list(void)
{
	json_object *arr = json_object_new_array();
	pthread_mutex_lock(&active_lock);
	for (int i = 0; i < VY_MAX_ACTIVE; i++) {
		struct vy_active *a = &active[i];
		if (!a->used)
			continue;
		json_object *o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(a->id));
		json_object_object_add(o, "container", json_object_new_string(a->container));
		json_object_object_add(o, "role", json_object_new_string(a->role));
		json_object_object_add(o, "phase", json_object_new_string(a->phase));
		json_object_object_add(o, "peer", json_object_new_string(a->peer));
		json_object_object_add(o, "started_ms", json_object_new_int64((int64_t)a->started_ms));
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)atomic_load(&a->progress.bytes)));
		json_object_object_add(o, "total_bytes", json_object_new_int64((int64_t)a->total_bytes));
		if (a->hydrating) {
			json_object *h = json_object_new_object();
			json_object_object_add(h, "bytes", json_object_new_int64(
				(int64_t)atomic_load(&a->progress.bytes)));
			json_object_object_add(h, "bytes_total", json_object_new_int64((int64_t)a->total_bytes));
			json_object_object_add(h, "files", json_object_new_int64((int64_t)a->files_done));
			json_object_object_add(h, "files_total", json_object_new_int64((int64_t)a->files_total));
			json_object_object_add(h, "rate_bps", json_object_new_int64((int64_t)a->rate_bps));
			json_object_object_add(h, "eta_s", json_object_new_int64((int64_t)a->eta_s));
			json_object_object_add(h, "source_up", json_object_new_boolean(a->source_up));
			json_object_object_add(o, "hydration", h);
		}
		json_object_array_add(arr, o);
	}
	pthread_mutex_unlock(&active_lock);
	return arr;
}

void vy_events_send(struct vy_events *ev, json_object *obj)
{
	if (!ev)
		return;
	pthread_mutex_lock(&ev->lock);
	if (!ev->broken && vy_control_send(ev->fd, obj, NULL) < 0) {
		ev->broken = true;
		vy_warn("the CLI went away; the migration carries on");
	}
	pthread_mutex_unlock(&ev->lock);
}

static json_object *result_event(void)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "event", json_object_new_string("result"));
	return o;
}

static json_object *error_event(const char *msg)
{
	json_object *o = result_event();
	json_object_object_add(o, "result", json_object_new_string("failed"));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return o;
}

static json_object *handle_status(struct vy_daemon *d, json_object *req)
{
	const char *id = vy_json_str(req, "id", NULL);
	json_object *o = result_event();
	json_object_object_add(o, "active", vy_active_list());
	json_object_object_add(o, "serving", vy_serve_list());
	vy_error err;
	if (id) {
		json_object *j;
		if (vy_journal_load(d->state_dir, id, &j, &err) < 0) {
			json_object_put(o);
			return error_event(err.msg);
		}
		json_object_object_add(o, "migration", j);
	} else {
		json_object *all;
		if (vy_journal_load_all(d->state_dir, &all, &err) < 0) {
			json_object_put(o);
			return error_event(err.msg);
		}
		json_object_object_add(o, "migrations", all);
	}
	json_object_object_add(o, "result", json_object_new_string("ok"));
	return o;
}

static json_object *handle_check(struct vy_daemon *d, json_object *req)
{
	vy_error err;
	json_object *facts;
	if (vy_preflight_host(&d->rt, &facts, &err) < 0)
		return error_event(err.msg);
	json_object *o = result_event();
	json_object_object_add(o, "result", json_object_new_string("ok"));
	json_object_object_add(o, "host", facts);
	return o;
}

static json_object *handle_containers(struct vy_daemon *d)
{
	vy_error err;
	json_object *list;
	if (!d->rt.path[0] || vy_runtime_list(&d->rt, &list, &err) < 0)
		return error_event(d->rt.path[0] ? err.msg : "the runtime is not installed here");
	json_object *o = result_event();
	json_object_object_add(o, "result", json_object_new_string("ok"));
	json_object_object_add(o, "containers", list);
	return o;
}

static void *control_thread(void *arg)
{
	struct vy_daemon *d = ((void **)arg)[0];
	int fd = (int)(intptr_t)((void **)arg)[1];
	free(arg);
	struct vy_line_reader r;
	vy_line_reader_init(&r, fd);
	json_object *req = NULL, *reply = NULL;
	vy_error err;
	struct vy_events ev = { .fd = fd, .lock = PTHREAD_MUTEX_INITIALIZER };
	if (vy_control_recv(&r, &req, &err) < 0) {
		reply = error_event(err.msg);
		goto out;
	}
	const char *cmd = vy_json_str(req, "cmd", "");
	if (!strcmp(cmd, "migrate")) {
		json_object *report = vy_source_migrate(d, req, &ev);
		json_object_object_add(report, "event", json_object_new_string("result"));
		reply = report;
	} else if (!strcmp(cmd, "status") || !strcmp(cmd, "list")) {
		reply = handle_status(d, req);
	} else if (!strcmp(cmd, "check")) {
		reply = handle_check(d, req);
	} else if (!strcmp(cmd, "containers")) {
		reply = handle_containers(d);
	} else if (!strncmp(cmd, "net-", 4)) {
		reply = vy_net_control(d, cmd, req);
		json_object_object_add(reply, "event", json_object_new_string("result"));
	} else {
		char msg[256];
		snprintf(msg, sizeof(msg), "unknown command '%.64s'", cmd);
		reply = error_event(msg);
	}
out:
	vy_events_send(&ev, reply);
	json_object_put(reply);
	json_object_put(req);
	vy_line_reader_free(&r);
	close(fd);
	return NULL;
}

static void answer_query(struct vy_daemon *d, vy_channel *ch, json_object *q)
{
	const char *id = vy_json_str(q, "id", "");
	json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "decision",
			       json_object_new_string(vy_source_decision(d, id)));
	vy_channel_send_json(ch, VY_MSG_DECISION, o, NULL);
	json_object_put(o);
}

static void answer_abort(struct vy_daemon *d, vy_channel *ch, json_object *q)
{
	vy_error err;
	const char *id = vy_json_str(q, "id", "");
	json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(id));
	if (vy_target_abort(d, id, &err) < 0) {
		json_object_object_add(o, "error", json_object_new_string(err.msg));
		vy_channel_send_json(ch, VY_MSG_ERROR, o, NULL);
	} else {
		vy_channel_send_json(ch, VY_MSG_ABORT_ACK, o, NULL);
	}
	json_object_put(o);
}

static void *peer_thread(void *arg)
{
	struct vy_daemon *d = ((void **)arg)[0];
	int fd = (int)(intptr_t)((void **)arg)[1];
	free(arg);
	vy_error err;
	vy_channel *ch;
	if (vy_channel_accept(fd, d->key, 10000, &ch, &err) < 0) {
		vy_warn("refused a peer: %s", err.msg);
		return NULL;
	}
	vy_channel_set_timeout(ch, d->peer_timeout_ms, NULL);
	struct vy_message msg = { 0 };
	if (vy_channel_recv(ch, &msg, &err) < 0) {
		vy_warn("peer %s: %s", vy_channel_peer(ch), err.msg);
		vy_channel_close(ch);
		return NULL;
	}
	json_object *body = NULL;
	if (msg.type != VY_MSG_PREFLIGHT && vy_message_json(&msg, &body, &err) < 0) {
		vy_warn("peer %s: %s", vy_channel_peer(ch), err.msg);
	} else if (msg.type == VY_MSG_PREFLIGHT) {
		vy_target_session(d, ch, &msg);
	} else if (msg.type == VY_MSG_QUERY) {
		answer_query(d, ch, body);
	} else if (msg.type == VY_MSG_ABORT) {
		answer_abort(d, ch, body);
	} else if (msg.type == VY_MSG_FETCH_OPEN) {
		vy_serve_session(d, ch, body);
	} else if (msg.type == VY_MSG_RELEASE) {
		vy_serve_release(d, ch, body);
	} else if (msg.type == VY_MSG_HELLO && !strcmp(vy_json_str(body, "role", ""), "tunnel")) {
		vy_postcopy_tunnel_serve(d, ch, body); /* post-copy pages (postcopy.c) */
	} else {
		vy_warn("peer %s opened with unexpected %s", vy_channel_peer(ch),
			vy_msg_type_name(msg.type));
	}
	json_object_put(body);
	vy_message_free(&msg);
	vy_channel_close(ch);
	return NULL;
}

static void spawn(void *(*fn)(void *), struct vy_daemon *d, int fd)
{
	void **arg = malloc(2 * sizeof(void *));
	pthread_t t;
	pthread_attr_t attr;
	if (!arg) {
		close(fd);
		return;
	}
	arg[0] = d;
	arg[1] = (void *)(intptr_t)fd;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, fn, arg) != 0) {
		vy_err("cannot start a thread: %s", strerror(errno));
		close(fd);
		free(arg);
	}
	pthread_attr_destroy(&attr);
}

int vy_server_run(struct vy_daemon *d, vy_error *err)
{
	cleanup_close int ctl = -1;
	cleanup_close int peer = -1;
	if (vy_control_listen(d->socket_path, &ctl, err) < 0)
		return -1;
	if (vy_channel_listen(d->listen, &peer, err) < 0)
		return vy_error_wrap(err, "listen on %s", d->listen);
	vy_info("listening on %s (peers, TLS 1.3) and %s (control)", d->listen,
		d->socket_path);
	if (d->pid_file[0]) {
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
		if (vy_write_file_atomic(d->pid_file, pid, (size_t)n, 0644, err) < 0)
			return vy_error_wrap(err, "pid file");
	}
	while (!vy_stop_requested) {
		struct pollfd p[2] = { { ctl, POLLIN, 0 }, { peer, POLLIN, 0 } };
		int n = poll(p, 2, 500);
		if (n < 0 && errno != EINTR)
			return vy_error_sys(err, errno, "poll");
		if (n <= 0)
			continue;
		if (p[0].revents & POLLIN) {
			int fd = accept4(ctl, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				spawn(control_thread, d, fd);
		}
		if (p[1].revents & POLLIN) {
			int fd = accept4(peer, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				spawn(peer_thread, d, fd);
		}
	}
	unlink(d->socket_path);
	if (d->pid_file[0])
		unlink(d->pid_file);
	vy_info("stopping");
	return 0;
}
