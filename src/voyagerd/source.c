/* source.c - migrating a container out of this host (stop-and-copy).
 *
 * The order of events is what keeps the container alive on exactly one
 * host:
 *   preflight   both hosts checked; nothing touched yet
 *   checkpoint  the runtime checkpoints and stops the container
 *   transfer    CRIU images, rootfs and volumes, each with its manifest
 *   restore     the target restores and answers RESTORED
 *   commit      the decision "committed" is fsync'd in our journal, and only
 *               then COMMIT is sent; the target owns the container now
 *   cleanup     our checkpoint (and a bundle we had received) is deleted
 * Any failure after the checkpoint and before the decision rolls back: the
 * decision "rolled-back" is recorded first, the target is told to drop what
 * it has, and the container is restored here from our own checkpoint.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bundle.h"
#include "cleanup.h"
#include "daemon.h"
#include "kparam.h"
#include "log.h"
#include "delta.h"
#include "jit.h"
#include "manifest.h"
#include "netns.h"
#include "pkthold.h"
#include "postcopy.h"
#include "preflight.h"
#include "source.h"
#include "util.h"

#define MANIFEST_FRAME (4u << 20)


static void phase_begin(struct migration *m, const char *phase)
{
	uint64_t now = vy_now_ms();
	if (m->phase)
		json_object_object_add(m->phases_ms, m->phase,
				       json_object_new_int64((int64_t)(now - m->t_phase)));
	m->phase = phase;
	m->t_phase = now;
	vy_active_phase(m->act, phase);
	if (m->j)
		vy_journal_phase(m->j, phase, NULL);
	json_object *e = json_object_new_object();
	json_object_object_add(e, "event", json_object_new_string("phase"));
	json_object_object_add(e, "phase", json_object_new_string(phase));
	vy_events_send(m->ev, e);
	json_object_put(e);
	vy_info("migration %s (%s): %s", m->id, m->container, phase);
}



static int load_container(struct migration *m, vy_error *err)
{
	struct vy_container_state st;
	if (vy_runtime_state(&m->d->rt, m->container, &st, err) < 0)
		return -1;
	if (strcmp(st.status, "running") != 0)
		return vy_error_set(err, ENOENT,
				    "container %s is not running under %s --root %s (state: %s)",
				    m->container, m->d->rt.name,
				    m->d->rt.root[0] ? m->d->rt.root : "(default)", st.status);
	snprintf(m->bundle, sizeof(m->bundle), "%s", st.bundle);
	if (vy_bundle_load(m->bundle, &m->config, err) < 0 ||
	    vy_bundle_rootfs(m->config, m->bundle, m->rootfs, sizeof(m->rootfs), err) < 0 ||
	    vy_bundle_volumes(m->config, m->vols, &m->nvol, err) < 0)
		return vy_error_wrap(err, "bundle %s", m->bundle);
	for (int i = 0; i < m->nvol; i++) {
		const char *fs = vy_network_fs(m->vols[i].host_path);
		for (int k = 0; !fs && k < m->d->nshared; k++)
			if (vy_path_is_under(m->vols[i].host_path, m->d->shared[k]) ||
			    !strcmp(m->vols[i].host_path, m->d->shared[k]))
				fs = "--shared-path";
		m->vols[i].shared = fs != NULL;
		if (fs)
			vy_info("migration %s: volume %s is on shared storage (%s): re-mounted on "
				"the target, not copied", m->id, m->vols[i].host_path, fs);
	}
	/* Freezing works on the container's cgroup: a process outside it would
	 * keep running through the dump, and then run on both hosts. */
	const char *cgp = vy_json_str(json_object_object_get(m->config, "linux"), "cgroupsPath", "");
	char frz[4096];
	if (cgp[0] == '/' && vy_process_freezer_cgroup(st.pid, frz, sizeof(frz), NULL) == 0 &&
	    frz[0] && strcmp(frz, cgp) != 0)
		return vy_error_set(err, EPERM,
				    "container %s runs outside its cgroup (%s, not %s), so it cannot "
				    "be frozen safely; crun 1.21 restores containers into the root "
				    "cgroup (a crun bug fixed in later releases)",
				    m->container, frz, cgp);
	const char *ns = vy_bundle_netns_path(m->config);
	if (ns) {
		snprintf(m->netns, sizeof(m->netns), "%s", ns);
		if (vy_net_describe(m->netns, &m->net, err) < 0)
			return vy_error_wrap(err, "network identity of %s", m->container);
	}
	m->pid = st.pid;
	int uid = 0;
	uint64_t rss = 0;
	vy_container_processes(st.pid, &uid, &rss);
	m->need_bytes = rss;
	if (uid > 0)
		vy_warn("container %s runs processes as uid %d; CRIU needs CAP_SYS_RESOURCE "
			"to dump them (prlimit on another uid)", m->container, uid);
	return 0;
}


static char *cpuinfo_base64(struct migration *m, vy_error *err)
{
	char dir[PATH_MAX], img[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/cpuinfo", m->dir);
	if (vy_mkdir_p(dir, 0700, err) < 0 || vy_criu_cpuinfo_dump(dir, err) < 0)
		return NULL;
	snprintf(img, sizeof(img), "%s/cpuinfo.img", dir);
	cleanup_free char *raw = NULL;
	size_t len;
	if (vy_read_file(img, 1u << 20, &raw, &len, err) < 0)
		return NULL;
	char *b64 = malloc(4 * ((len + 2) / 3) + 1);
	if (!b64) {
		vy_error_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	EVP_EncodeBlock((unsigned char *)b64, (unsigned char *)raw, (int)len);
	return b64;
}

static json_object *preflight_request(struct migration *m, vy_error *err)
{
	cleanup_free char *cpu = cpuinfo_base64(m, err);
	if (!cpu)
		return NULL;
	json_object *facts = m->d->facts;
	json_object *o = json_object_new_object();
	/* VOYAGER_TEST_PROTOCOL: t_refusals stands in for an agent of another
	 * version with it */
	const char *tv = getenv("VOYAGER_TEST_PROTOCOL");
	json_object_object_add(o, "version", json_object_new_int(tv ? atoi(tv) : VY_PROTOCOL_VERSION));
	json_object_object_add(o, "id", json_object_new_string(m->id));
	json_object_object_add(o, "container", json_object_new_string(m->container));
	json_object_object_add(o, "mode", json_object_new_string(m->mode));
	if (m->hydrate_rate)
		json_object_object_add(o, "hydrate_rate", json_object_new_int64((int64_t)m->hydrate_rate));
	json_object_object_add(o, "memory", json_object_new_string(m->memory));
	json_object_object_add(o, "runtime", json_object_new_string(m->d->rt.name));
	json_object_object_add(o, "criu_version",
			       json_object_new_string(vy_json_str(facts, "criu_version", "")));
	json_object_object_add(o, "arch", json_object_new_string(vy_json_str(facts, "arch", "")));
	json_object_object_add(o, "cpuinfo", json_object_new_string(cpu));
	json_object_object_add(o, "need_bytes", json_object_new_int64((int64_t)m->need_bytes));
	json_object_object_add(o, "source_listen", json_object_new_string(m->d->listen));
	json_object *vols = json_object_new_array();
	for (int i = 0; i < m->nvol; i++) {
		json_object *v = json_object_new_object();
		const char *base = strrchr(m->vols[i].host_path, '/');
		json_object_object_add(v, "index", json_object_new_int(i));
		json_object_object_add(v, "destination", json_object_new_string(m->vols[i].ctr_path));
		json_object_object_add(v, "is_dir", json_object_new_boolean(m->vols[i].is_dir));
		json_object_object_add(v, "name", json_object_new_string(base ? base + 1 : "volume"));
		if (m->vols[i].shared) {
			json_object_object_add(v, "shared", json_object_new_boolean(1));
			json_object_object_add(v, "source", json_object_new_string(m->vols[i].host_path));
		}
		json_object_array_add(vols, v);
	}
	json_object_object_add(o, "volumes", vols);
	if (m->net) {
		const char *base = strrchr(m->netns, '/');
		json_object *n = json_object_new_object();
		json_object_object_add(n, "name", json_object_new_string(base ? base + 1 : m->netns));
		json_object_object_add(n, "identity", json_object_get(m->net));
		json_object_object_add(o, "net", n);
	}
	return o;
}

static int run_preflight(struct migration *m, vy_error *err)
{
	if (load_container(m, err) < 0)
		return -1;
	/* auto weighs the container's memory too, now that it is known */
	if (!strcmp(m->memory_requested, "auto")) {
		struct vy_memory_caps caps = {
			.soft_dirty = m->d->soft_dirty, .uffd = m->d->uffd,
			.runtime = m->d->rt.name, .memory_bytes = m->need_bytes,
			.lazy_pages = json_object_get_boolean(
				json_object_object_get(m->d->facts, "lazy_pages")),
		};
		if (vy_memory_mode_choose(m->memory_requested, &caps, &m->memory,
					  m->memory_reason, sizeof(m->memory_reason), err) < 0)
			return -1;
	}
	m->disk_bytes = vy_tree_size(m->rootfs, true);
	for (int i = 0; i < m->nvol; i++)
		if (!m->vols[i].shared)
			m->disk_bytes += vy_tree_size(m->vols[i].host_path, m->vols[i].is_dir);
	m->need_bytes += m->disk_bytes;
	if (vy_mkdir_p(m->dir, 0700, err) < 0)
		return -1;
	json_object *req = preflight_request(m, err);
	if (!req)
		return -1;
	int rc = vy_channel_connect(m->to, m->d->key, 5000, &m->ch, err);
	if (rc == 0) {
		vy_channel_set_timeout(m->ch, m->d->peer_timeout_ms, NULL);
		rc = vy_channel_send_json(m->ch, VY_MSG_PREFLIGHT, req, err);
	}
	json_object_put(req);
	if (rc < 0)
		return vy_error_wrap(err, "target %s", m->to);
	struct vy_message msg = { 0 };
	if (vy_channel_expect(m->ch, VY_MSG_PREFLIGHT_OK, &msg, err) < 0)
		return vy_error_wrap(err, "target %s refused", m->to);
	json_object *ok = NULL;
	bool can_replay = vy_message_json(&msg, &ok, NULL) == 0 &&
			  json_object_get_boolean(json_object_object_get(ok, "packet_hold"));
	json_object_put(ok);
	vy_message_free(&msg);
	if (m->net && !m->hold_state[0])
		snprintf(m->hold_state, sizeof(m->hold_state), "%s",
			 can_replay ? "af_packet" : "off: the target cannot replay held packets");
	return 0;
}

/* After the lock, before the freeze: start copying what reaches the
 * container.  Holding is an optimisation: if it cannot start, the
 * migration goes on as without it, and the report says why. */
static void hold_begin(struct migration *m)
{
	if (strcmp(m->hold_state, "af_packet") != 0)
		return;
	vy_error err;
	if (vy_hold_start(m->net, &m->hold, &err) < 0) {
		snprintf(m->hold_state, sizeof(m->hold_state), "off: %s", err.msg);
		vy_warn("migration %s: packets are not held during the freeze: %s", m->id, err.msg);
	}
}

/* The target runs the container: stop copying, leave the segment, and
 * send what was held, for the target to replay. */
static void hold_deliver(struct migration *m)
{
	if (!m->hold)
		return;
	vy_hold_stop(m->hold);
	vy_error err;
	if (vy_net_link(m->net, false, &err) < 0)
		vy_warn("migration %s: detach: %s", m->id, err.msg);
	else
		m->net_detached = true;
	const uint8_t *p;
	size_t len;
	vy_hold_payload(m->hold, &p, &len);
	struct vy_hold_stats st = vy_hold_stats(m->hold);
	if (vy_channel_send(m->ch, VY_MSG_HELD_PACKETS, p, len, &err) < 0)
		vy_warn("migration %s: cannot send the %u held packets: %s", m->id, st.packets,
			err.msg);
	else
		vy_info("migration %s: sent %u held packets (%llu bytes; %u not held)", m->id,
			st.packets, (unsigned long long)st.bytes, st.dropped);
}

/* Rolling back: what was held goes into the container here. */
static void hold_replay_here(struct migration *m)
{
	if (!m->hold || (m->replayed_on && !strcmp(m->replayed_on, "source")))
		return;
	const uint8_t *p;
	size_t len;
	uint32_t n = 0;
	vy_error err;
	vy_hold_stop(m->hold);
	vy_hold_payload(m->hold, &p, &len);
	if (vy_hold_replay(m->net, p, len, &n, &err) < 0) {
		snprintf(m->replay_error, sizeof(m->replay_error), "%s", err.msg);
		vy_warn("migration %s: replay here: %s", m->id, err.msg);
	}
	m->replayed = n;
	m->replayed_on = "source";
}

/* Put the container's network back as it was before the freeze. */
static void restore_network(struct migration *m)
{
	vy_error err;
	if (!m->net)
		return;
	/* Stopped before the unlock: a packet let in must not also be held. */
	vy_hold_stop(m->hold);
	if (m->net_detached && vy_net_link(m->net, true, &err) < 0)
		vy_err("migration %s: reattach: %s", m->id, err.msg);
	m->net_detached = false;
	/* Opened with accept rules: deleting the table would cost the
	 * container 10 ms more of its downtime (drop_lock does it after). */
	if (m->net_locked && vy_net_open(m->netns, &err) < 0)
		vy_err("migration %s: unlock: %s", m->id, err.msg);
	if (vy_net_announce(m->netns, m->net, &err) < 0)
		vy_warn("migration %s: announce: %s", m->id, err.msg);
	hold_replay_here(m);
}

/* The lock's table, opened by restore_network, goes once the container
 * runs here again. */
static void drop_lock(struct migration *m)
{
	vy_error err;
	if (m->net_locked && vy_net_unlock(m->netns, &err) < 0)
		vy_err("migration %s: unlock: %s", m->id, err.msg);
	m->net_locked = false;
}

/* The CPU wake-up latency bound (kparam.h), for the stretches of the
 * freeze where processes hand work to each other: CRIU's dump, the wait
 * for the target's restore, a rollback.  Not while trees are sent: a
 * stop-copy memory image can take minutes, and idle CPUs would spin all
 * along.  The report keeps the words of the first hold. */
static void latency_bound(struct migration *m)
{
	if (m->cpulat_fd >= 0)
		return;
	char how[256];
	m->cpulat_fd = vy_cpu_latency_hold(how, sizeof(how));
	if (!m->cpulat_how[0])
		snprintf(m->cpulat_how, sizeof(m->cpulat_how), "%s", how);
}

static void rcu_end(struct migration *m)
{
	if (m->rcu_held)
		vy_rcu_expedite_end();
	m->rcu_held = false;
}

static int checkpoint(struct migration *m, vy_error *err)
{
	snprintf(m->images, sizeof(m->images), "%s/images", m->dir);
	snprintf(m->work, sizeof(m->work), "%s/work", m->dir);
	if (vy_mkdir_p(m->images, 0700, err) < 0 || vy_mkdir_p(m->work, 0700, err) < 0)
		return -1;
	/* Freeze first and dump with --leave-running: the container stays
	 * frozen here, whole, until the decision.  Rolling back is then a
	 * thaw, which cannot fail the way a second restore can. */
	latency_bound(m);
	/* Taken before the freeze's clock starts: the lease's files. */
	m->rcu_held = vy_rcu_expedite(m->rcu_how, sizeof(m->rcu_how));
	m->t_freeze = vy_now_ms();
	vy_steps_start(&m->ck_steps);
	/* From here until the decision no packet reaches or leaves the
	 * container here: the kernel must not answer for a frozen socket. */
	if (m->net) {
		if (vy_net_lock(m->netns, err) < 0)
			return -1;
		m->net_locked = true;
		vy_steps_mark(&m->ck_steps, "lock");
		hold_begin(m);
		vy_steps_mark(&m->ck_steps, "hold");
	}
	/* Through the cgroup, not `runc pause`: 5 ms less in the freeze. */
	const char *cgp = vy_json_str(json_object_object_get(m->config, "linux"), "cgroupsPath", "");
	if (vy_runtime_freeze(&m->d->rt, m->container, m->pid, cgp, err) < 0) {
		restore_network(m);
		drop_lock(m);
		return vy_error_wrap(err, "freeze %s", m->container);
	}
	m->frozen = true;
	vy_steps_mark(&m->ck_steps, "pause");
	m->opts.leave_running = true;
	/* Where our lock holds the container's network, CRIU need not lock
	 * it too; nor where its namespace has nothing but loopback (the
	 * runtime made it): no packet from outside can get in.  Read at the
	 * freeze, so an interface added since pre-flight counts. */
	m->net_lo_only = !m->net && vy_netns_loopback_only(m->pid);
	m->opts.criu_config = m->net_locked || m->net_lo_only ? m->d->criu_conf_netlock
							      : m->d->criu_conf;
	int ck = m->pc ? vy_postcopy_dump(m, err) /* post-copy: the lazy checkpoint (postcopy.c) */
		       : vy_runtime_checkpoint(&m->d->rt, m->container, m->images, m->work, &m->opts, err);
	if (ck < 0) {
		vy_error thaw;
		if (vy_runtime_resume(&m->d->rt, m->container, &thaw) < 0)
			vy_err("migration %s: cannot thaw %s after a failed checkpoint: %s", m->id,
			       m->container, thaw.msg);
		else
			m->frozen = false;
		restore_network(m);
		drop_lock(m);
		char log[PATH_MAX + 16];
		snprintf(log, sizeof(log), "%s/dump.log", m->work);
		cleanup_free char *tail = vy_file_tail(log, 200);
		if (strstr(tail, "Can't get rlimit"))
			vy_error_wrap(err, "CRIU lacks CAP_SYS_RESOURCE here, so it cannot dump a "
				      "process whose uid is not 0; run the container's processes as "
				      "root on this host, or grant CAP_SYS_RESOURCE");
		return -1;
	}
	m->checkpointed = true;
	vy_steps_mark(&m->ck_steps, "runtime");
	/* Detach from the segment, so the target's announcement wins.  While
	 * packets are held the veth stays until the target has restored: the
	 * lock keeps the container silent, and its host end is where the
	 * packets are copied. */
	if (m->net && !m->hold && vy_net_link(m->net, false, err) < 0)
		vy_warn("migration %s: detach: %s", m->id, err->msg);
	else if (m->net && !m->hold)
		m->net_detached = true;
	vy_steps_mark(&m->ck_steps, "detach");
	vy_journal_set(m->j, "checkpointed", json_object_new_boolean(1));
	int rc = vy_journal_phase(m->j, "checkpointed", err);
	vy_steps_mark(&m->ck_steps, "journal");
	return rc;
}


static int restore_remote(struct migration *m, vy_error *err)
{
	latency_bound(m);
	json_object *r = json_object_new_object();
	json_object_object_add(r, "id", json_object_new_string(m->id));
	json_object_object_add(r, "config", json_object_get(m->config));
	json_object_object_add(r, "tcp_established", json_object_new_boolean(m->opts.tcp_established));
	json_object_object_add(r, "lazy_pages", json_object_new_boolean(m->pc != NULL));
	/* The container's own namespace, loopback only: CRIU need not lock
	 * the one it makes on the target either. */
	json_object_object_add(r, "netns_loopback_only", json_object_new_boolean(m->net_lo_only));
	int rc = vy_channel_send_json(m->ch, VY_MSG_RESTORE, r, err);
	json_object_put(r);
	if (rc < 0)
		return vy_source_explain_send_failure(m, err);
	vy_channel_set_timeout(m->ch, 10 * 60 * 1000, NULL);
	struct vy_message msg = { 0 };
	if (vy_channel_expect(m->ch, VY_MSG_RESTORED, &msg, err) < 0)
		return -1;
	vy_failpoint("source-before-decision");
	m->t_running = vy_now_ms();
	json_object *o = NULL;
	if (vy_message_json(&msg, &o, NULL) == 0 && json_object_object_get(o, "warnings"))
		m->warnings = json_object_get(json_object_object_get(o, "warnings"));
	json_object *steps = json_object_object_get(o, "steps_ms");
	if (steps && json_object_is_type(steps, json_type_object))
		m->restore_steps = json_object_get(steps);
	json_object *rx = json_object_object_get(o, "receive_ms");
	if (rx && json_object_is_type(rx, json_type_object))
		m->receive_steps = json_object_get(rx);
	snprintf(m->rcu_target, sizeof(m->rcu_target), "%s", vy_json_str(o, "rcu_expedited", ""));
	snprintf(m->cpulat_target, sizeof(m->cpulat_target), "%s", vy_json_str(o, "cpu_latency", ""));
	json_object_put(o);
	vy_message_free(&msg);
	return 0;
}

/* The point of no return: persist the decision before telling anyone. */
static int commit(struct migration *m, vy_error *err)
{
	vy_journal_set(m->j, "decision", json_object_new_string("committed"));
	if (vy_journal_phase(m->j, "committed", err) < 0)
		return -1;
	json_object *c = json_object_new_object();
	json_object_object_add(c, "id", json_object_new_string(m->id));
	vy_error ack;
	struct vy_message msg = { 0 };
	vy_channel_set_timeout(m->ch, 10000, NULL);
	json_object *a = NULL;
	if (vy_channel_send_json(m->ch, VY_MSG_COMMIT, c, &ack) < 0 ||
	    vy_channel_expect(m->ch, VY_MSG_COMMIT_ACK, &msg, &ack) < 0 ||
	    vy_message_json(&msg, &a, &ack) < 0)
		vy_warn("migration %s: commit not acknowledged (%s); the target will ask us",
			m->id, ack.msg);
	/* Our checkpoint is the last copy until the target's data is on disk. */
	m->target_durable = a && json_object_get_boolean(json_object_object_get(a, "durable"));
	if (a && json_object_object_get(a, "replayed")) {
		m->replayed = vy_json_int(a, "replayed", 0);
		m->replayed_on = "target";
		snprintf(m->replay_error, sizeof(m->replay_error), "%s",
			 vy_json_str(a, "replay_error", ""));
	}
	json_object_put(a);
	vy_message_free(&msg);
	json_object_put(c);
	return 0;
}

static void cleanup_source(struct migration *m)
{
	vy_error err;
	/* post-copy: CRIU's page-server session is over before the original goes */
	if (vy_postcopy_source_end(m, false, &err) < 0)
		vy_warn("migration %s: %s", m->id, err.msg);
	/* The frozen original goes first: it must never run again. */
	if (vy_runtime_delete(&m->d->rt, m->container, true, &err) < 0)
		vy_err("migration %s: cannot delete the frozen %s here: %s", m->id, m->container,
		       err.msg);
	m->frozen = false;
	/* The identity lives on at the target; a namespace we hold goes, and
	 * its veths with it (the namespace itself may outlive its bind mount
	 * while something holds it; its veth must not keep the name here). */
	if (m->net && vy_path_is_under(m->netns, m->d->netns_dir)) {
		if (vy_net_unlink(m->net, &err) < 0)
			vy_warn("migration %s: %s", m->id, err.msg);
		if (vy_netns_delete(m->netns, &err) < 0)
			vy_warn("migration %s: %s", m->id, err.msg);
	}
	if (!strcmp(m->mode, "jit")) {
		/* No process of it runs here any more, but its files are the
		 * target's until the target says it holds every byte. */
		vy_journal_set(m->j, "serving", json_object_new_boolean(1));
		vy_info("migration %s: serving %llu bytes of %s's files until the target is "
			"independent", m->id, (unsigned long long)m->jit_bytes, m->container);
		return;
	}
	if (!m->target_durable) {
		vy_warn("migration %s: the target has not confirmed its copy is on disk; keeping "
			"our checkpoint in %s", m->id, m->dir);
		vy_journal_set(m->j, "checkpoint_kept", json_object_new_string(m->dir));
		return;
	}
	if (vy_rm_rf(m->dir, &err) < 0)
		vy_warn("migration %s: %s", m->id, err.msg);
	/* A bundle that we received in an earlier migration is ours to delete;
	 * an operator's bundle is left where it was. */
	char ours[PATH_MAX];
	snprintf(ours, sizeof(ours), "%s/containers/%s/bundle", m->d->state_dir, m->container);
	if (!strcmp(m->bundle, ours)) {
		snprintf(ours, sizeof(ours), "%s/containers/%s", m->d->state_dir, m->container);
		if (vy_rm_rf(ours, &err) < 0)
			vy_warn("migration %s: %s", m->id, err.msg);
	}
}

/* Tell the target to drop the migration: on the open channel if it still
 * works, else on a fresh connection.  Best effort: if the target cannot be
 * reached it asks us later and hears "rolled-back". */
static void tell_target_abort(struct migration *m, const char *reason)
{
	json_object *a = json_object_new_object();
	json_object_object_add(a, "id", json_object_new_string(m->id));
	json_object_object_add(a, "reason", json_object_new_string(reason));
	vy_error err;
	struct vy_message msg = { 0 };
	vy_channel *ch = NULL;
	if (m->ch) {
		m->wire_bytes = vy_channel_bytes_sent(m->ch);
		vy_channel_close(m->ch);
	}
	m->ch = NULL;
	if (vy_channel_connect(m->to, m->d->key, 3000, &ch, &err) == 0) {
		vy_channel_set_timeout(ch, 15000, NULL);
		if (vy_channel_send_json(ch, VY_MSG_ABORT, a, &err) < 0 ||
		    vy_channel_expect(ch, VY_MSG_ABORT_ACK, &msg, &err) < 0)
			vy_warn("migration %s: target did not confirm the abort: %s", m->id, err.msg);
		vy_message_free(&msg);
		vy_channel_close(ch);
	} else {
		vy_warn("migration %s: cannot reach the target to abort: %s", m->id, err.msg);
	}
	json_object_put(a);
}

static int rollback(struct migration *m, const char *reason, vy_error *err)
{
	phase_begin(m, "rollback");
	latency_bound(m);
	vy_journal_set(m->j, "decision", json_object_new_string("rolled-back"));
	if (vy_journal_save(m->j, err) < 0)
		return -1;
	tell_target_abort(m, reason);
	/* post-copy: the target's copy is gone and CRIU lets go before any thaw */
	if (vy_postcopy_source_end(m, true, err) < 0)
		return -1;
	vy_serve_drop(m->id);
	char work[PATH_MAX];
	snprintf(work, sizeof(work), "%s/work-rollback", m->dir);
	if (vy_mkdir_p(work, 0700, err) < 0)
		return -1;
	struct vy_container_state st;
	if (vy_runtime_state(&m->d->rt, m->container, &st, err) < 0)
		return -1;
	if (!strcmp(st.status, "paused")) {
		restore_network(m);
		int thawed = vy_runtime_resume(&m->d->rt, m->container, err);
		drop_lock(m);
		if (thawed < 0)
			return vy_error_wrap(err, "thaw %s", m->container);
		vy_info("migration %s: rolled back, %s runs here again", m->id, m->container);
		vy_rm_rf(m->dir, NULL);
		return 0;
	}
	if (strcmp(st.status, "absent") != 0 && strcmp(st.status, "stopped") != 0)
		return vy_error_set(err, EEXIST, "container %s is unexpectedly %s here",
				    m->container, st.status);
	if (m->pc) /* post-copy: the pages were never written to disk */
		return vy_error_set(err, ENOENT, "container %s is gone here, and a post-copy "
				    "checkpoint holds no memory pages to restore it from", m->container);
	if (!strcmp(st.status, "stopped"))
		vy_runtime_delete(&m->d->rt, m->container, true, NULL);
	if (m->net_detached)
		vy_net_link(m->net, true, NULL);
	m->net_detached = false;
	if (vy_runtime_restore(&m->d->rt, m->container, m->bundle, m->images, work,
			       &m->opts, err) < 0)
		return -1;
	restore_network(m);
	drop_lock(m);
	vy_info("migration %s: rolled back, %s runs here again", m->id, m->container);
	vy_rm_rf(m->dir, NULL);
	return 0;
}

static json_object *network_report(struct migration *m)
{
	json_object *n = json_object_new_object();
	struct vy_hold_stats st = vy_hold_stats(m->hold);
	/* "af_packet" only once holding started; before the freeze it never did */
	const char *state = m->hold || !strncmp(m->hold_state, "off:", 4) ? m->hold_state
									  : "off: no freeze";
	json_object_object_add(n, "hold", json_object_new_string(state));
	json_object_object_add(n, "held_packets", json_object_new_int64(st.packets));
	json_object_object_add(n, "held_bytes", json_object_new_int64((int64_t)st.bytes));
	json_object_object_add(n, "held_dropped", json_object_new_int64(st.dropped));
	json_object_object_add(n, "held_gso_cut", json_object_new_int64(st.gso_cut));
	if (m->replayed >= 0) {
		json_object_object_add(n, "replayed", json_object_new_int64(m->replayed));
		json_object_object_add(n, "replayed_on", json_object_new_string(m->replayed_on));
	}
	if (m->replay_error[0])
		json_object_object_add(n, "replay_error", json_object_new_string(m->replay_error));
	return n;
}

/* {"source": ..., "target": ...} under key, each where known. */
static void add_per_host(json_object *r, const char *key, const char *source,
			 const char *target)
{
	if (!source[0] && !target[0])
		return;
	json_object *k = json_object_new_object();
	if (source[0])
		json_object_object_add(k, "source", json_object_new_string(source));
	if (target[0])
		json_object_object_add(k, "target", json_object_new_string(target));
	json_object_object_add(r, key, k);
}

static json_object *build_report(struct migration *m, const char *result,
				  const char *err_phase, const char *err_msg)
{
	uint64_t now = vy_now_ms();
	json_object *r = json_object_new_object();
	json_object_object_add(r, "result", json_object_new_string(result));
	json_object_object_add(r, "id", json_object_new_string(m->id));
	json_object_object_add(r, "container", json_object_new_string(m->container));
	json_object_object_add(r, "to", json_object_new_string(m->to));
	json_object_object_add(r, "mode", json_object_new_string(m->mode));
	json_object_object_add(r, "runtime", json_object_new_string(m->d->rt.name));
	if (m->memory) {
		json_object *mem = json_object_new_object();
		json_object_object_add(mem, "requested", json_object_new_string(m->memory_requested));
		json_object_object_add(mem, "mode", json_object_new_string(m->memory));
		json_object_object_add(mem, "reason", json_object_new_string(m->memory_reason));
		json_object_object_add(r, "memory", mem);
	}
	if (m->t_running && m->t_freeze)
		json_object_object_add(r, "downtime_ms",
				       json_object_new_int64((int64_t)(m->t_running - m->t_freeze)));
	else if (m->t_freeze)
		json_object_object_add(r, "downtime_ms",
				       json_object_new_int64((int64_t)(now - m->t_freeze)));
	json_object_object_add(r, "total_ms", json_object_new_int64((int64_t)(now - m->t_start)));
	json_object *b = json_object_new_object();
	json_object_object_add(b, "memory", json_object_new_int64((int64_t)m->bytes_memory));
	json_object_object_add(b, "rootfs", json_object_new_int64((int64_t)m->bytes_rootfs));
	json_object_object_add(b, "volumes", json_object_new_int64((int64_t)m->bytes_volumes));
	json_object_object_add(b, "wire", json_object_new_int64(
		(int64_t)(m->ch ? vy_channel_bytes_sent(m->ch) : m->wire_bytes)));
	json_object_object_add(r, "bytes", b);
	json_object_object_add(r, "phases_ms", json_object_get(m->phases_ms));
	if (m->ck_steps.n || m->restore_steps) {
		json_object *st = json_object_new_object();
		if (m->ck_steps.n)
			json_object_object_add(st, "checkpoint", vy_steps_json(&m->ck_steps));
		if (m->restore_steps)
			json_object_object_add(st, "restore", json_object_get(m->restore_steps));
		if (m->receive_steps)
			json_object_object_add(st, "receive", json_object_get(m->receive_steps));
		json_object_object_add(r, "steps_ms", st);
	}
	add_per_host(r, "rcu_expedited", m->rcu_how, m->rcu_target);
	add_per_host(r, "cpu_latency", m->cpulat_how, m->cpulat_target);
	if (!strcmp(m->mode, "jit") && m->t_freeze) {
		uint32_t refetch = 0;
		for (size_t i = 0; i < sizeof(m->pf_refetch) / sizeof(m->pf_refetch[0]); i++)
			refetch += m->pf_refetch[i];
		json_object *p = json_object_new_object();
		json_object_object_add(p, "files", json_object_new_int64(m->pf_files));
		json_object_object_add(p, "bytes", json_object_new_int64((int64_t)m->pf_bytes));
		json_object_object_add(p, "ms", json_object_new_int64((int64_t)m->pf_ms));
		json_object_object_add(p, "skipped", json_object_new_int64(m->pf_skipped));
		json_object_object_add(p, "refetched", json_object_new_int64(refetch));
		json_object_object_add(r, "prefetch", p);
	}
	if (!strcmp(m->mode, "jit") && !strcmp(result, "migrated")) {
		json_object *h = json_object_new_object();
		json_object_object_add(h, "state", json_object_new_string("hydrating"));
		json_object_object_add(h, "bytes_left", json_object_new_int64((int64_t)m->jit_bytes));
		json_object_object_add(h, "note", json_object_new_string(
			"the container runs on the target; its files move in the background and "
			"this host serves them until the target is independent"));
		json_object_object_add(r, "hydration", h);
	}
	if (m->net)
		json_object_object_add(r, "network", network_report(m));
	if (m->warnings)
		json_object_object_add(r, "warnings", json_object_get(m->warnings));
	if (err_msg) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "phase", json_object_new_string(err_phase));
		json_object_object_add(e, "message", json_object_new_string(err_msg));
		json_object_object_add(r, "error", e);
	}
	vy_postcopy_report(m, r);
	return r;
}

static const char *run_migration(struct migration *m, vy_error *err)
{
	phase_begin(m, "preflight");
	if (run_preflight(m, err) < 0)
		return "failed";
	if (!strcmp(m->mode, "presync")) {
		phase_begin(m, "presync");
		if (vy_source_presync(m, err) < 0)
			return "presync-failed";
	} else if (!strcmp(m->mode, "jit")) {
		phase_begin(m, "skeleton");
		if (vy_source_skeleton(m, err) < 0)
			return "presync-failed";
		vy_waitpoint("source-after-skeleton");
	}
	/* Persisted with the next phase change, before anything is frozen:
	 * a restarted agent then knows to look for a frozen container. */
	/* post-copy: page server port, guard, pipe limit, before the freeze */
	if (m->memory && !strcmp(m->memory, "post-copy") && vy_postcopy_prepare(m, err) < 0)
		return "presync-failed"; /* nothing frozen: the target is told to drop */
	vy_journal_set(m->j, "bundle", json_object_new_string(m->bundle));
	vy_journal_set(m->j, "frozen", json_object_new_boolean(1));
	if (m->net) {
		vy_journal_set(m->j, "netns", json_object_new_string(m->netns));
		vy_journal_set(m->j, "net", json_object_get(m->net));
	}
	phase_begin(m, "checkpoint");
	int ck = checkpoint(m, err);
	rcu_end(m); /* whatever the checkpoint's result */
	if (ck < 0)
		return "failed";
	vy_cpu_latency_release(&m->cpulat_fd); /* until the restore */
	phase_begin(m, "transfer");
	if (vy_source_transfer(m, err) < 0)
		return "rollback";
	phase_begin(m, "restore");
	if (restore_remote(m, err) < 0)
		return "rollback";
	hold_deliver(m);
	/* The freeze is over here: no spinning through post-copy's pages. */
	vy_cpu_latency_release(&m->cpulat_fd);
	if (m->pc) { /* post-copy: exposed until the last page arrives (postcopy.c) */
		phase_begin(m, "pages");
		if (vy_postcopy_await_pages(m, err) < 0)
			return "rollback";
	}
	/* What we serve must survive a restart of this agent once committed. */
	if (!strcmp(m->mode, "jit") && vy_serve_persist(m->id, m->dir, err) < 0)
		return "rollback";
	phase_begin(m, "commit");
	if (commit(m, err) < 0)
		return "rollback";
	phase_begin(m, "cleanup");
	cleanup_source(m);
	phase_begin(m, "done");
	return "migrated";
}

static int parse_request(struct migration *m, json_object *req, vy_error *err)
{
	const char *c = vy_json_str(req, "container", "");
	const char *to = vy_json_str(req, "to", "");
	const char *mode = vy_json_str(req, "mode", "jit");
	if (!vy_name_is_safe(c))
		return vy_error_set(err, EINVAL, "invalid container name '%.64s'", c);
	if (!*to || strlen(to) >= sizeof(m->to))
		return vy_error_set(err, EINVAL, "missing or invalid --to address");
	if (strcmp(mode, "stop-copy") != 0 && strcmp(mode, "presync") != 0 && strcmp(mode, "jit") != 0)
		return vy_error_set(err, ENOTSUP, "unknown mode '%.32s' (jit, presync or stop-copy)",
				    mode);
	snprintf(m->mode, sizeof(m->mode), "%s", mode);
	int64_t rate = vy_json_int(req, "hydrate_rate", 0);
	m->hydrate_rate = rate > 0 ? (uint64_t)rate : 0;
	snprintf(m->memory_requested, sizeof(m->memory_requested), "%.15s",
		 vy_json_str(req, "memory", "auto"));
	struct vy_memory_caps caps = {
		.soft_dirty = m->d->soft_dirty, .uffd = m->d->uffd, .runtime = m->d->rt.name,
		.lazy_pages = json_object_get_boolean(json_object_object_get(m->d->facts, "lazy_pages")),
	};
	if (vy_memory_mode_choose(m->memory_requested, &caps, &m->memory,
				  m->memory_reason, sizeof(m->memory_reason), err) < 0)
		return -1;
	if (vy_active_has_container(c))
		return vy_error_set(err, EBUSY, "container %s is already being migrated", c);
	snprintf(m->container, sizeof(m->container), "%s", c);
	snprintf(m->to, sizeof(m->to), "%s", to);
	m->opts.tcp_established = true;
	m->opts.file_locks = true;
	const char *env = getenv("VOYAGER_NO_PACKET_HOLD");
	m->no_prefetch = json_object_get_boolean(json_object_object_get(req, "no_prefetch"));
	if (json_object_get_boolean(json_object_object_get(req, "no_hold")))
		snprintf(m->hold_state, sizeof(m->hold_state), "off: --no-hold");
	else if (env && *env && strcmp(env, "0") != 0)
		snprintf(m->hold_state, sizeof(m->hold_state), "off: VOYAGER_NO_PACKET_HOLD is set");
	return 0;
}

static void finish(struct migration *m, const char *result, const char *msg)
{
	if (m->j) {
		if (!strcmp(result, "failed") && m->checkpointed)
			vy_journal_set(m->j, "decision", json_object_new_string("rolled-back"));
		vy_journal_finish(m->j, result, msg, NULL);
	}
}

json_object *vy_source_migrate(struct vy_daemon *d, json_object *req,
			       struct vy_events *ev)
{
	struct migration mm = { .d = d, .ev = ev, .replayed = -1, .cpulat_fd = -1 }, *m = &mm;
	vy_error err = { 0 };
	m->t_start = vy_now_ms();
	m->phases_ms = json_object_new_object();
	vy_random_id(m->id);
	const char *result = "failed";
	const char *err_phase = "request";
	char msg[VY_ERROR_MSG_MAX] = "";
	if (parse_request(m, req, &err) < 0)
		goto report;
	snprintf(m->dir, sizeof(m->dir), "%s/migrations/%s", d->state_dir, m->id);
	m->act = vy_active_add(m->id, m->container, "source", m->to);
	if (!m->act || vy_journal_create(d->state_dir, m->id, "source", m->container, m->to,
					 &m->j, &err) < 0)
		goto report;
	vy_journal_set(m->j, "mode", json_object_new_string(m->mode));
	vy_journal_set(m->j, "source_dir", json_object_new_string(m->dir));
	result = run_migration(m, &err);
	err_phase = m->phase;
	if (!strcmp(result, "presync-failed")) {
		/* Nothing was frozen: the container never stopped running here. */
		tell_target_abort(m, err.msg);
		result = "failed";
	}
	if (!strcmp(result, "rollback")) {
		snprintf(msg, sizeof(msg), "%s", err.msg);
		vy_error rb;
		if (rollback(m, err.msg, &rb) == 0) {
			result = "rolled-back";
		} else {
			result = "failed";
			vy_err("migration %s: ROLLBACK FAILED: %s", m->id, rb.msg);
			snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
				 "; rollback failed: %s", rb.msg);
		}
		snprintf(err.msg, sizeof(err.msg), "%s", msg);
	} else if (!strcmp(result, "failed") && m->checkpointed) {
		/* commit could not be recorded: the target never heard COMMIT */
		snprintf(msg, sizeof(msg), "%s", err.msg);
		vy_error rb;
		result = rollback(m, err.msg, &rb) == 0 ? "rolled-back" : "failed";
	}
report:;
	vy_cpu_latency_release(&m->cpulat_fd); /* held through a rollback's thaw */
	bool ok = !strcmp(result, "migrated");
	json_object *r = build_report(m, result, err_phase, ok ? NULL : err.msg);
	if (!ok)
		vy_warn("migration %s of %s: %s in %s: %s", m->id, m->container, result,
			err_phase, err.msg);
	finish(m, result, ok ? NULL : err.msg);
	if (m->j)
		vy_journal_set(m->j, "report", json_object_get(r)), vy_journal_save(m->j, NULL);
	vy_source_progress_stop(m);
	vy_postcopy_source_free(m);
	vy_hold_free(m->hold);
	if (m->ch)
		vy_channel_close(m->ch);
	for (size_t i = 0; i < sizeof(m->pre) / sizeof(m->pre[0]); i++) {
		vy_manifest_free(&m->pre[i]);
		vy_manifest_free(&m->stale[i]);
		vy_chunk_sums_free(m->sums[i], m->nsums[i]);
	}
	for (size_t i = 0; i < sizeof(m->watch) / sizeof(m->watch[0]); i++) {
		vy_manifest_watch_free(m->watch[i]);
		free(m->pf[i]);
	}
	vy_inode_set_free(&m->voids);
	json_object_put(m->config);
	json_object_put(m->net);
	json_object_put(m->phases_ms);
	json_object_put(m->restore_steps);
	json_object_put(m->receive_steps);
	json_object_put(m->warnings);
	json_object_put(m->hot);
	json_object_put(m->prefetch);
	json_object_put(m->serve);
	vy_journal_free(m->j);
	vy_active_remove(m->act);
	return r;
}

const char *vy_source_decision(struct vy_daemon *d, const char *id)
{
	json_object *j;
	if (vy_journal_load(d->state_dir, id, &j, NULL) < 0)
		return "unknown";
	const char *dec = vy_json_str(j, "decision", NULL);
	const char *res = vy_json_str(j, "result", NULL);
	const char *out = "pending";
	if (dec && !strcmp(dec, "committed"))
		out = "committed";
	else if (dec && !strcmp(dec, "rolled-back"))
		out = "rolled-back";
	else if (res)
		out = "rolled-back"; /* finished without ever committing */
	json_object_put(j);
	return out;
}
