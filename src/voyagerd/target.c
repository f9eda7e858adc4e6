/* target.c - receiving a container on this host.
 *
 * The session answers the source's pre-flight, materialises each tree it is
 * sent (manifest first, then verified data), writes a bundle whose paths are
 * this host's own, restores through the runtime and reports RESTORED.  It
 * then waits for the source's decision.  If the link dies before COMMIT,
 * the container is paused and the source is asked what it decided: the
 * source's journal is the authority, so the container never runs on both
 * hosts for longer than it takes to ask.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
#include "util.h"

#define MAX_MANIFEST_BYTES (2ull << 30)
#define MAX_STREAMS (2 + VY_MAX_VOLUMES)

struct session {
	struct vy_daemon *d;
	vy_channel *ch;
	struct vy_active *act;
	struct vy_journal *j;
	char id[17];
	char container[160];
	char source_addr[300];
	char mig_dir[PATH_MAX];  /* STATE/migrations/ID */
	char ctr_dir[PATH_MAX];  /* STATE/containers/NAME */
	json_object *volumes;    /* from the pre-flight */
	json_object *net;        /* the container's network identity, if any */
	char netns[PATH_MAX];    /* the namespace we built for it */
	uint8_t seen[MAX_STREAMS];               /* 0 nothing, 1 pre-synced, 2 final */
	struct vy_manifest pre[MAX_STREAMS];     /* what each pre-sync brought */
	uint8_t pre_sha[MAX_STREAMS][32];        /* SHA-256 of each pre[]'s encoding */
	bool pre_sha_ok[MAX_STREAMS];            /* presync: pre_sha and pre_paths known */
	struct vy_manifest_paths *pre_paths[MAX_STREAMS]; /* its paths, indexed */
	bool restored;
	bool tcp_established;
	const char *phase;
	bool jit;                                /* trees arrive as voyager-fs mounts */
	uint64_t hydrate_rate;                   /* --hydrate-rate for them, 0 = link speed */
	struct vy_fs_mount fs[MAX_STREAMS];
	int nfs;
	struct vy_pc_target *pc; /* post-copy memory (postcopy_target.c), or NULL */
	bool held;               /* the source sent the packets it held */
	uint32_t replayed;       /* of them, sent into the container */
	char replay_error[512];
	/* A CPU wake-up latency bound of 0 (kparam.h) from RESTORE until the
	 * restored reply: its fd, or -1; the report's words. */
	int cpulat_fd;
	char cpulat_how[256];
	/* Expedited RCU grace periods (kparam.h) from the first tree sent in
	 * the freeze until the restored container's network is open; the
	 * report's words. */
	bool rcu_held;
	char rcu_how[256];
	/* The trees sent in the freeze, from the first one's arrival: the
	 * time each kind took to take in, and the wait for RESTORE after
	 * them (the report's steps_ms.receive). */
	struct vy_steps rx;
	bool rx_on;
	int64_t rx_stream; /* of the tree being taken in */
};

static void send_error(struct session *s, const char *phase, const char *msg)
{
	vy_channel_send_error(s->ch, phase, msg);
}

static int check_cpu(struct session *s, const char *b64, vy_error *err)
{
	char dir[PATH_MAX], img[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/cpuinfo", s->mig_dir);
	snprintf(img, sizeof(img), "%s/cpuinfo.img", dir);
	size_t n = strlen(b64);
	if (n == 0 || n > (1u << 20) || n % 4)
		return vy_error_set(err, EINVAL, "malformed cpuinfo in pre-flight");
	cleanup_free unsigned char *raw = malloc(n);
	if (!raw)
		return vy_error_set(err, ENOMEM, "out of memory");
	int len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
	if (len < 0)
		return vy_error_set(err, EINVAL, "malformed cpuinfo in pre-flight");
	while (n && b64[--n] == '=')
		len--;
	if (vy_mkdir_p(dir, 0700, err) < 0 ||
	    vy_write_file_atomic(img, raw, (size_t)len, 0600, err) < 0)
		return -1;
	return vy_criu_cpuinfo_check(dir, err);
}

static int version_cmp(const char *a, const char *b)
{
	int x[3] = { 0 }, y[3] = { 0 };
	sscanf(a, "%d.%d.%d", &x[0], &x[1], &x[2]);
	sscanf(b, "%d.%d.%d", &y[0], &y[1], &y[2]);
	for (int i = 0; i < 3; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

static int check_versions(struct session *s, json_object *req, vy_error *err)
{
	json_object *facts = NULL;
	if (!s->d->rt.path[0])
		return vy_error_set(err, ENOENT, "runtime %s is not installed on this host",
				    s->d->rt.name);
	if (vy_preflight_host(&s->d->rt, &facts, err) < 0)
		return -1;
	const char *want_rt = vy_json_str(req, "runtime", "");
	const char *src_criu = vy_json_str(req, "criu_version", "");
	const char *my_criu = vy_json_str(facts, "criu_version", "");
	const char *arch = vy_json_str(req, "arch", "");
	int rc = 0;
	if (strcmp(want_rt, s->d->rt.name) != 0)
		rc = vy_error_set(err, ENOTSUP, "the source checkpoints with %.16s, this host "
				  "restores with %s", want_rt, s->d->rt.name);
	else if (version_cmp(my_criu, src_criu) < 0)
		rc = vy_error_set(err, ENOTSUP, "CRIU %s here is older than the source's %.16s",
				  my_criu, src_criu);
	else if (strcmp(arch, vy_json_str(facts, "arch", "")) != 0)
		rc = vy_error_set(err, ENOTSUP, "architecture %.16s differs from this host's %s",
				  arch, vy_json_str(facts, "arch", ""));
	json_object_put(facts);
	return rc;
}

static int check_name_free(struct session *s, vy_error *err)
{
	struct vy_container_state st;
	if (vy_runtime_state(&s->d->rt, s->container, &st, err) < 0)
		return -1;
	if (strcmp(st.status, "absent") != 0)
		return vy_error_set(err, EEXIST, "a container named %s already exists on this "
				    "host (%s)", s->container, st.status);
	if (vy_active_has_container(s->container))
		return vy_error_set(err, EBUSY, "container %s is being migrated here already",
				    s->container);
	if (access(s->ctr_dir, F_OK) == 0)
		return vy_error_set(err, EEXIST, "%s already exists on this host", s->ctr_dir);
	return 0;
}

static int check_room(struct session *s, json_object *req, vy_error *err)
{
	uint64_t need = (uint64_t)vy_json_int(req, "need_bytes", 0), have;
	if (vy_free_bytes(s->d->state_dir, &have, err) < 0)
		return -1;
	uint64_t want = need + need / 20 + (64u << 20);
	if (have < want)
		return vy_error_set(err, ENOSPC, "not enough room in %s: %llu MiB free, %llu MiB "
				    "needed", s->d->state_dir, (unsigned long long)(have >> 20),
				    (unsigned long long)(want >> 20));
	return 0;
}

static bool volume_shared(json_object *v)
{
	return json_object_get_boolean(json_object_object_get(v, "shared"));
}

static int check_volumes(struct session *s, json_object *req, vy_error *err)
{
	json_object *vols;
	if (!json_object_object_get_ex(req, "volumes", &vols) ||
	    !json_object_is_type(vols, json_type_array))
		return vy_error_set(err, EINVAL, "pre-flight has no volume list");
	size_t n = json_object_array_length(vols);
	if (n > VY_MAX_VOLUMES)
		return vy_error_set(err, E2BIG, "too many volumes (%zu)", n);
	for (size_t i = 0; i < n; i++) {
		json_object *v = json_object_array_get_idx(vols, i);
		const char *name = vy_json_str(v, "name", "");
		const char *dst = vy_json_str(v, "destination", "");
		if (vy_json_int(v, "index", -1) != (int64_t)i || dst[0] != '/' ||
		    !vy_path_is_safe(name, strlen(name)) || !name[0] || strchr(name, '/'))
			return vy_error_set(err, EINVAL, "volume %zu cannot be mapped on this host "
					    "(name '%.64s', destination '%.64s')", i, name, dst);
		if (!volume_shared(v))
			continue;
		/* Network storage: it must be right here, at the same path. */
		const char *src = vy_json_str(v, "source", "");
		bool is_dir = json_object_get_boolean(json_object_object_get(v, "is_dir"));
		struct stat st;
		if (src[0] != '/' || !vy_path_is_safe(src + 1, strlen(src + 1)))
			return vy_error_set(err, EINVAL, "shared volume %zu has a bad source '%.64s'",
					    i, src);
		if (stat(src, &st) < 0 || (is_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
			return vy_error_set(err, ENOENT, "network volume %s (%s in the container) is "
					    "not reachable on this host: mount it here at the same "
					    "path first", src, dst);
	}
	s->volumes = json_object_get(vols);
	return 0;
}

/* Build the container's network identity here, before the freeze: locked,
 * with the host side of each veth down (not yet on the segment). */
static int prepare_network(struct session *s, json_object *req, vy_error *err)
{
	json_object *n = json_object_object_get(req, "net");
	if (!n)
		return 0;
	const char *name = vy_json_str(n, "name", "");
	json_object *id = json_object_object_get(n, "identity");
	if (!vy_name_is_safe(name) || !id || !json_object_is_type(id, json_type_object))
		return vy_error_set(err, EINVAL, "malformed network identity in pre-flight");
	snprintf(s->netns, sizeof(s->netns), "%s/%s", s->d->netns_dir, name);
	if (access(s->netns, F_OK) == 0)
		return vy_error_set(err, EEXIST, "network namespace %s already exists here",
				    s->netns);
	if (vy_net_check_target(id, s->d->bridge, s->d->netns_dir, err) < 0)
		return -1;
	s->net = json_object_get(id);
	if (vy_netns_create(s->netns, err) < 0) {
		s->netns[0] = '\0';
		return -1;
	}
	if (vy_net_lock(s->netns, err) < 0 || vy_net_build(s->netns, id, s->d->bridge, err) < 0 ||
	    vy_net_link(id, false, err) < 0)
		return vy_error_wrap(err, "network identity");
	return 0;
}

static void drop_network(struct session *s)
{
	if (s->netns[0])
		vy_netns_delete(s->netns, NULL);
	s->netns[0] = '\0';
}

static int target_preflight(struct session *s, json_object *req, vy_error *err)
{
	const char *id = vy_json_str(req, "id", "");
	const char *c = vy_json_str(req, "container", "");
	int64_t version = vy_json_int(req, "version", 0);
	if (version != VY_PROTOCOL_VERSION)
		return vy_error_set(err, EPROTO, "the source agent speaks protocol %lld and this one "
				    "protocol %d: run the same Voyager version on both hosts",
				    (long long)version, VY_PROTOCOL_VERSION);
	if (!vy_journal_id_is_valid(id))
		return vy_error_set(err, EINVAL, "invalid migration id");
	if (!vy_name_is_safe(c))
		return vy_error_set(err, EINVAL, "invalid container name");
	snprintf(s->id, sizeof(s->id), "%s", id);
	snprintf(s->container, sizeof(s->container), "%s", c);
	snprintf(s->mig_dir, sizeof(s->mig_dir), "%s/migrations/%s", s->d->state_dir, id);
	snprintf(s->ctr_dir, sizeof(s->ctr_dir), "%s/containers/%s", s->d->state_dir, c);
	const char *mode = vy_json_str(req, "mode", "");
	if (strcmp(mode, "stop-copy") != 0 && strcmp(mode, "presync") != 0 && strcmp(mode, "jit") != 0)
		return vy_error_set(err, ENOTSUP, "unknown migration mode '%.16s'", mode);
	s->jit = !strcmp(mode, "jit");
	int64_t rate = vy_json_int(req, "hydrate_rate", 0);
	s->hydrate_rate = rate > 0 ? (uint64_t)rate : 0;
	char fsbin[PATH_MAX];
	if (s->jit && vy_fs_binary(fsbin, sizeof(fsbin), err) < 0)
		return -1;
	if (s->jit && access("/dev/fuse", R_OK | W_OK) < 0)
		return vy_error_sys(err, errno, "jit mode needs FUSE and /dev/fuse is not usable "
				    "on this host (load the fuse module, or migrate with --mode "
				    "presync)");
	if (check_versions(s, req, err) < 0 || check_name_free(s, err) < 0 ||
	    check_room(s, req, err) < 0 || check_volumes(s, req, err) < 0 ||
	    vy_postcopy_target_preflight(s->d, req, &s->pc, err) < 0)
		return -1;
	if (access(s->mig_dir, F_OK) == 0)
		return vy_error_set(err, EEXIST, "migration %s is already known here", id);
	if (vy_mkdir_p(s->mig_dir, 0700, err) < 0 ||
	    check_cpu(s, vy_json_str(req, "cpuinfo", ""), err) < 0 ||
	    prepare_network(s, req, err) < 0)
		return -1;
	return 0;
}

/* The directory a stream lands in; checks the order of a stream's trees:
 * "full" once, or "presync" then "delta" or "presync-delta". */
static int stream_dir(struct session *s, json_object *t, char *out, size_t len,
		      vy_error *err)
{
	int64_t stream = vy_json_int(t, "stream", -1);
	int64_t index = vy_json_int(t, "index", -1);
	const char *kind = vy_json_str(t, "kind", "");
	const char *flavor = vy_json_str(t, "flavor", "full");
	if (stream < 0 || stream >= MAX_STREAMS)
		return vy_error_set(err, EPROTO, "bad stream %lld", (long long)stream);
	uint8_t want = !strcmp(flavor, "delta") || !strcmp(flavor, "jit-delta") ||
		       !strcmp(flavor, "presync-delta") ? 1 : 0;
	bool jit = !strcmp(flavor, "skeleton") || !strcmp(flavor, "jit") ||
		   !strcmp(flavor, "jit-delta");
	if (!strcmp(flavor, "jit") && s->seen[stream] == 1)
		want = 1; /* after its skeleton */
	if ((strcmp(flavor, "full") && strcmp(flavor, "presync") && strcmp(flavor, "delta") &&
	     strcmp(flavor, "presync-delta") && !jit) ||
	    s->seen[stream] != want || (stream == 0 && strcmp(flavor, "full")) || jit != (s->jit && stream))
		return vy_error_set(err, EPROTO, "unexpected '%.16s' tree on stream %lld", flavor,
				    (long long)stream);
	s->seen[stream] = !strcmp(flavor, "presync") || !strcmp(flavor, "skeleton") ? 1 : 2;
	if (s->seen[stream] == 2 && !s->rx_on) { /* the first tree sent in the freeze */
		vy_steps_start(&s->rx);
		s->rx_on = true;
		/* taken here, so that the restore's steps do not pay for it */
		s->rcu_held = vy_rcu_expedite(s->rcu_how, sizeof(s->rcu_how));
	}
	s->rx_stream = stream;
	if (jit && (!strcmp(kind, "rootfs") ? stream == 1 :
		    !strcmp(kind, "volume") && index >= 0 && stream == 2 + index &&
		    (size_t)index < json_object_array_length(s->volumes) &&
		    !volume_shared(json_object_array_get_idx(s->volumes, (size_t)index))))
		snprintf(out, len, "%s/backing/%lld", s->ctr_dir, (long long)stream);
	else if (jit)
		return vy_error_set(err, EPROTO, "unexpected tree kind '%.16s' on stream %lld",
				    kind, (long long)stream);
	else if (!strcmp(kind, "memory") && stream == 0)
		snprintf(out, len, "%s/images", s->mig_dir);
	else if (!strcmp(kind, "rootfs") && stream == 1)
		snprintf(out, len, "%s/bundle/rootfs", s->ctr_dir);
	else if (!strcmp(kind, "volume") && index >= 0 && stream == 2 + index &&
		 (size_t)index < json_object_array_length(s->volumes) &&
		 !volume_shared(json_object_array_get_idx(s->volumes, (size_t)index)))
		snprintf(out, len, "%s/volumes/%lld", s->ctr_dir, (long long)index);
	else
		return vy_error_set(err, EPROTO, "unexpected tree kind '%.16s' on stream %lld",
				    kind, (long long)stream);
	return 0;
}

/* The MANIFEST frames of a tree: total bytes, into *out. */
static int recv_manifest_bytes(struct session *s, uint64_t total, uint8_t **out,
			       vy_error *err)
{
	if (total == 0 || total > MAX_MANIFEST_BYTES)
		return vy_error_set(err, EPROTO, "manifest size %llu out of range",
				    (unsigned long long)total);
	cleanup_free uint8_t *buf = malloc(total);
	if (!buf)
		return vy_error_set(err, ENOMEM, "no memory for a %llu-byte manifest",
				    (unsigned long long)total);
	uint64_t have = 0;
	while (have < total) {
		struct vy_message msg = { 0 };
		if (vy_channel_expect(s->ch, VY_MSG_MANIFEST, &msg, err) < 0)
			return -1;
		if (msg.length > total - have) {
			vy_message_free(&msg);
			return vy_error_set(err, EPROTO, "manifest longer than announced");
		}
		memcpy(buf + have, msg.payload, msg.length);
		have += msg.length;
		vy_message_free(&msg);
	}
	*out = take_ptr(buf);
	return 0;
}

/* raw, when not NULL, gets the encoded bytes too (the caller frees them). */
static int recv_manifest(struct session *s, uint64_t total, struct vy_manifest *man,
			 uint8_t **raw, vy_error *err)
{
	cleanup_free uint8_t *buf = NULL;
	if (recv_manifest_bytes(s, total, &buf, err) < 0 ||
	    vy_manifest_decode(buf, total, man, err) < 0)
		return -1;
	if (raw)
		*raw = take_ptr(buf);
	return 0;
}

/* DATA and FILE_END frames into sink until TREE_END; whole: the tree must
 * be (vy_tree_sink_finish), else the caller finishes. */
static int recv_frames(struct session *s, struct vy_tree_sink *sink, bool whole, vy_error *err)
{
	for (;;) {
		struct vy_message msg = { 0 };
		if (vy_channel_recv(s->ch, &msg, err) < 0)
			return -1;
		int rc = 0;
		json_object *o = NULL;
		if (msg.type == VY_MSG_DATA) {
			struct vy_data_chunk c;
			rc = vy_wire_parse_data(msg.payload, msg.length, &c, err);
			if (rc == 0)
				rc = vy_tree_sink_data(sink, &c, err);
			if (rc == 0 && s->act)
				atomic_fetch_add(&s->act->progress.bytes, c.len);
		} else if (msg.type == VY_MSG_FILE_END) {
			rc = vy_message_json(&msg, &o, err);
			if (rc == 0)
				rc = vy_tree_sink_file_end(sink, o, err);
		} else if (msg.type == VY_MSG_TREE_END) {
			vy_message_free(&msg);
			return whole ? vy_tree_sink_finish(sink, err) : 0;
		} else if (msg.type == VY_MSG_ERROR) {
			rc = vy_message_json(&msg, &o, err);
			if (rc == 0)
				rc = vy_error_set(err, ECONNABORTED, "source: %s",
						  vy_json_str(o, "error", "error"));
		} else {
			rc = vy_error_set(err, EPROTO, "unexpected %s during a tree",
					  vy_msg_type_name(msg.type));
		}
		json_object_put(o);
		vy_message_free(&msg);
		if (rc < 0)
			return -1;
	}
}

static int recv_data(struct session *s, struct vy_tree_sink *sink, vy_error *err)
{
	return recv_frames(s, sink, true, err);
}

/* jit, with the skeleton: the files its TREE_END names in "prefetch"
 * (mapped files of the running container), whole, into the skeleton laid
 * out under rootfd, made durable there; the paths that arrived go to
 * present, for voyager-fs's --present.  A file the source skipped (it
 * changed under the read) is fetched later like any other. */
static int recv_prefetch(struct session *s, uint32_t stream, int rootfd,
			 const struct vy_manifest *man, json_object *list, const char *present,
			 vy_error *err)
{
	size_t n = json_object_array_length(list);
	uint64_t t0 = vy_now_ms(), bytes = 0;
	uint32_t files = 0;
	if (n > man->count)
		return vy_error_set(err, EPROTO, "more files to prefetch than the skeleton has");
	cleanup_free uint8_t *have = malloc(man->count), *skipped = calloc(man->count, 1);
	if (!have || !skipped)
		return vy_error_set(err, ENOMEM, "out of memory");
	memset(have, 1, man->count);
	for (size_t k = 0; k < n; k++) {
		json_object *v = json_object_array_get_idx(list, k);
		int64_t i = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
		const struct vy_entry *e = i >= 0 && i < man->count ? &man->entries[i] : NULL;
		if (!e || e->type != VY_ENTRY_REG || e->link_of != VY_NO_LINK || !e->size)
			return vy_error_set(err, EPROTO, "prefetch names entry %lld, which is not "
					    "a file with data", (long long)i);
		have[i] = 0;
	}
	struct vy_tree_sink *sink = NULL;
	int rc = vy_tree_sink_new(rootfd, man, stream, &sink, err);
	if (rc == 0) {
		vy_tree_sink_have(sink, have);
		vy_tree_sink_allow_skips(sink, skipped);
		rc = recv_frames(s, sink, false, err);
	}
	if (rc == 0)
		rc = vy_tree_sink_finish_some(sink, true, &files, &bytes, err);
	vy_tree_sink_free(sink);
	cleanup_fclose FILE *f = rc == 0 ? fopen(present, "we") : NULL;
	if (rc == 0 && !f)
		rc = vy_error_sys(err, errno, "open %s", present);
	for (uint32_t i = 0; rc == 0 && i < man->count; i++)
		if (!have[i] && !skipped[i] && !strchr(man->entries[i].path, '\n'))
			fprintf(f, "%s\n", man->entries[i].path);
	if (rc == 0 && fflush(f) != 0)
		rc = vy_error_sys(err, errno, "write %s", present);
	if (rc < 0)
		return vy_error_wrap(err, "mapped files sent before the freeze");
	vy_info("migration %s: %u mapped files (%llu bytes) of stream %u whole here before the "
		"freeze, in %llu ms", s->id, files, (unsigned long long)bytes, stream,
		(unsigned long long)(vy_now_ms() - t0));
	return 0;
}

/* presync, at the freeze: the data of the files of man (the tree as it is
 * now, laid out in place under rootfd) that lack have[i], into them.  Each
 * is emptied first: a hole in its new content must read as zeros, not as
 * what the pre-sync wrote there; but not one that comes as a patch
 * (patch[i], transfer.h), whose unchanged chunks stay.  Made durable with
 * the rest at the commit (sync_received).  *files, *bytes: what arrived. */
static int recv_changed(struct session *s, uint32_t stream, int rootfd,
			const struct vy_manifest *man, const uint8_t *have, const uint8_t *patch,
			uint32_t *files, uint64_t *bytes, vy_error *err)
{
	struct vy_tree_sink *sink = NULL;
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i < man->count; i++) {
		const struct vy_entry *e = &man->entries[i];
		if (e->type != VY_ENTRY_REG || e->link_of != VY_NO_LINK || have[i] ||
		    (patch && patch[i]))
			continue;
		cleanup_close int fd = vy_manifest_open_entry(rootfd, e->path, O_WRONLY | O_TRUNC, err);
		if (fd < 0)
			rc = -1;
		else if (e->size > INT64_MAX || ftruncate(fd, (off_t)e->size) < 0)
			rc = vy_error_sys(err, e->size > INT64_MAX ? EFBIG : errno,
					  "'%s': ftruncate to %llu", e->path, (unsigned long long)e->size);
	}
	if (rc == 0)
		rc = vy_tree_sink_new(rootfd, man, stream, &sink, err);
	if (rc == 0) {
		vy_tree_sink_have(sink, have);
		if (patch)
			vy_tree_sink_patches(sink, patch);
		rc = recv_frames(s, sink, false, err);
	}
	if (rc == 0)
		rc = vy_tree_sink_finish_some(sink, false, files, bytes, err);
	vy_tree_sink_free(sink);
	return rc;
}

/* presync, at the freeze, when the change was no delta (a hard link among
 * it): man is the tree as it is now, and only the files that changed since
 * the pre-sync (vy_delta_unchanged, which the source works out the same
 * way) carry data.  The pre-synced tree is brought to man in place,
 * touching only the entries that differ: no second tree is laid out, no
 * file moved, no time set on what did not change. */
/* presync, at the freeze: the source's "resend" list (NULL: none), the
 * entries of the pre-synced manifest pre whose copy the source voided
 * (what the container maps shared and writable, whose data may have
 * changed with no trace in its metadata).  Each copy is voided here too
 * (vy_delta_forget), so that both sides agree on which files get data. */
static int void_resend(struct vy_manifest *pre, json_object *list, vy_error *err)
{
	if (!list)
		return 0;
	if (!json_object_is_type(list, json_type_array))
		return vy_error_set(err, EPROTO, "malformed resend list");
	for (size_t k = 0; k < json_object_array_length(list); k++) {
		json_object *v = json_object_array_get_idx(list, k);
		int64_t i = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
		if (i < 0 || i >= pre->count || pre->entries[i].type != VY_ENTRY_REG)
			return vy_error_set(err, EPROTO, "the resend list names entry %lld, which is "
					    "no file of the pre-synced tree", (long long)i);
		pre->entries[i].mtime_ns = INT64_MIN;
	}
	return 0;
}

static int recv_delta(struct session *s, uint32_t stream, const char *dir,
		      struct vy_manifest *man, json_object *resend, vy_error *err)
{
	cleanup_free uint8_t *have = NULL;
	cleanup_close int rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint32_t changed = 0, files = 0;
	uint64_t bytes = 0, t0 = vy_now_ms();
	int rc = rootfd < 0 ? vy_error_sys(err, errno, "open %s", dir) : 0;
	if (rc == 0)
		rc = void_resend(&s->pre[stream], resend, err);
	if (rc == 0)
		rc = vy_delta_unchanged(&s->pre[stream], man, &have, NULL, err);
	if (rc == 0)
		rc = vy_manifest_update_skeleton(&s->pre[stream], man, rootfd, &changed, err);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return vy_error_set(err, EPROTO, "the tree's root is no directory here or there");
	rc = recv_changed(s, stream, rootfd, man, have, NULL, &files, &bytes, err);
	if (rc == 0)
		vy_info("migration %s: %s brought up to date in place in %llu ms: %u of %u entries "
			"changed, %u files (%llu bytes) sent again", s->id, dir,
			(unsigned long long)(vy_now_ms() - t0), changed, man->count, files,
			(unsigned long long)bytes);
	return rc;
}

/* Inside the freeze window: no fsync here, the commit syncs the tree. */
static int write_quick(const char *path, const void *buf, size_t len, vy_error *err)
{
	cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return vy_error_sys(err, errno, "open %s", path);
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, (const char *)buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return vy_error_sys(err, n < 0 ? errno : EIO, "write %s", path);
		off += (size_t)n;
	}
	return 0;
}

/* The priority list voyager-fs hydrates first: paths, one per line. */
static int write_priority(const char *path, json_object *list, vy_error *err)
{
	size_t n = list && json_object_is_type(list, json_type_array)
		   ? json_object_array_length(list) : 0;
	cleanup_fclose FILE *f = fopen(path, "we");
	if (!f)
		return vy_error_sys(err, errno, "open %s", path);
	for (size_t i = 0; i < n; i++) {
		const char *p = json_object_get_string(json_object_array_get_idx(list, i));
		if (p && vy_path_is_safe(p, strlen(p)) && !strchr(p, '\n'))
			fprintf(f, "%s\n", p);
	}
	return fflush(f) == 0 ? 0 : vy_error_sys(err, errno, "write %s", path);
}

static void mountpoint_of(struct session *s, uint32_t stream, char *out, size_t len)
{
	if (stream == 1)
		snprintf(out, len, "%s/bundle/rootfs", s->ctr_dir);
	else
		snprintf(out, len, "%s/volumes/%u", s->ctr_dir, stream - 2);
}

/* The voyager-fs of a stream: its slot in s->fs, or -1. */
static int fs_of(struct session *s, uint32_t stream)
{
	for (int i = 0; i < s->nfs; i++)
		if (s->fs[i].stream == stream)
			return i;
	return -1;
}

static void fs_paths(struct session *s, uint32_t stream, const char *dir,
		     struct vy_fs_mount *fm)
{
	memset(fm, 0, sizeof(*fm));
	fm->ctl = -1;
	fm->stream = stream;
	snprintf(fm->backing, sizeof(fm->backing), "%s", dir);
	mountpoint_of(s, stream, fm->mountpoint, sizeof(fm->mountpoint));
	char fsdir[PATH_MAX];
	snprintf(fsdir, sizeof(fsdir), "%s/fs", s->ctr_dir);
	snprintf(fm->state, sizeof(fm->state), "%s/%u.state", fsdir, stream);
	snprintf(fm->manifest, sizeof(fm->manifest), "%s/%u.manifest", fsdir, stream);
	snprintf(fm->priority, sizeof(fm->priority), "%s/%u.priority", fsdir, stream);
	snprintf(fm->log, sizeof(fm->log), "%s/%u.log", fsdir, stream);
}

static int save_fs(struct session *s, vy_error *err)
{
	json_object *arr = json_object_new_array();
	for (int i = 0; i < s->nfs; i++)
		json_object_array_add(arr, vy_fs_to_json(&s->fs[i]));
	vy_journal_set(s->j, "fs", arr);
	return vy_journal_save(s->j, err);
}

/* Before the freeze, the skeleton laid out: its manifest goes where
 * voyager-fs reads it, and voyager-fs starts, reads it and every directory
 * of the skeleton, and waits; at the freeze only the delta is left to do
 * (recv_jit_delta).  If voyager-fs cannot start now, it starts at the
 * freeze instead (slower, as with a whole manifest). */
static int stage_fs(struct session *s, uint32_t stream, const char *dir, const uint8_t *raw,
		    size_t rawlen, const char *present, vy_error *err)
{
	if (s->nfs >= MAX_STREAMS || fs_of(s, stream) >= 0)
		return vy_error_set(err, EPROTO, "a second skeleton for stream %u", stream);
	struct vy_fs_mount *fm = &s->fs[s->nfs];
	fs_paths(s, stream, dir, fm);
	snprintf(fm->delta, sizeof(fm->delta), "%s/fs/%u.delta", s->ctr_dir, stream);
	snprintf(fm->present, sizeof(fm->present), "%s", present ? present : "");
	char fsdir[PATH_MAX];
	snprintf(fsdir, sizeof(fsdir), "%s/fs", s->ctr_dir);
	unsigned dlen = 0;
	if (!EVP_Digest(raw, rawlen, s->pre_sha[stream], &dlen, EVP_sha256(), NULL))
		return vy_error_set(err, EIO, "SHA-256 of the skeleton's manifest");
	if (vy_mkdir_p(fsdir, 0700, err) < 0 || write_quick(fm->manifest, raw, rawlen, err) < 0)
		return -1;
	vy_error why;
	if (vy_fs_prestart(s->d, s->id, s->source_addr, s->hydrate_rate, fm, &why) < 0) {
		vy_warn("migration %s: voyager-fs for %s cannot start before the freeze, so it "
			"will start in it: %s", s->id, fm->mountpoint, why.msg);
		fm->staged = false;
		fm->pid = 0;
	}
	s->nfs++;
	return save_fs(s, err);
}

/* jit: a skeleton (before the freeze: metadata only, materialised in the
 * backing directory), or the frozen tree's whole manifest, which brings the
 * skeleton up to date and starts voyager-fs over it.  man is consumed. */
static int recv_jit_tree(struct session *s, uint32_t stream, const char *dir, bool skeleton,
			 struct vy_manifest *man, const uint8_t *raw, size_t rawlen, vy_error *err)
{
	struct vy_message end = { 0 };
	json_object *e = NULL;
	cleanup_close int rootfd = -1;
	int rc = vy_channel_expect(s->ch, VY_MSG_TREE_END, &end, err);
	if (rc == 0)
		rc = vy_message_json(&end, &e, err);
	vy_message_free(&end);
	/* A whole manifest at the freeze: the voyager-fs staged for a delta
	 * is of no use (it holds the skeleton open); one starts afresh. */
	int slot = skeleton ? -1 : fs_of(s, stream);
	if (slot >= 0) {
		vy_fs_stop(&s->fs[slot]);
		unlink(s->fs[slot].state); /* made for the skeleton's manifest */
	}
	/* Metadata is local before anything runs here.  At the freeze only
	 * the entries that changed since the skeleton are touched. */
	bool same = false;
	if (rc == 0 && !skeleton && s->pre[stream].entries) {
		uint32_t changed = 0;
		cleanup_close int oldfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int up = oldfd < 0 ? vy_error_sys(err, errno, "open %s", dir)
				   : vy_manifest_update_skeleton(&s->pre[stream], man, oldfd,
								 &changed, err);
		if (up < 0)
			rc = -1;
		same = up == 1;
		vy_info("migration %s: skeleton %s: %s (%u of %u entries changed)", s->id, dir,
			same ? "updated in place" : "rebuilt", changed, man->count);
	}
	if (rc == 0 && !same && access(dir, F_OK) == 0)
		rc = vy_rm_rf(dir, err);
	if (rc == 0 && !same)
		rc = vy_mkdir_p(dir, 0700, err);
	if (rc == 0 && (rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = vy_error_sys(err, errno, "open %s", dir);
	if (rc == 0 && !same)
		rc = vy_manifest_materialise(man, rootfd, err);
	if (rc == 0 && !same)
		rc = vy_manifest_finish(man, rootfd, err);
	json_object *pf = e ? json_object_object_get(e, "prefetch") : NULL;
	char present[PATH_MAX] = "";
	if (rc == 0 && skeleton && pf && !json_object_is_type(pf, json_type_array))
		rc = vy_error_set(err, EPROTO, "malformed prefetch list");
	if (rc == 0 && skeleton && pf && json_object_array_length(pf)) {
		snprintf(present, sizeof(present), "%s/fs/%u.present", s->ctr_dir, stream);
		char fsdir[PATH_MAX];
		snprintf(fsdir, sizeof(fsdir), "%s/fs", s->ctr_dir);
		rc = vy_mkdir_p(fsdir, 0700, err);
		if (rc == 0)
			rc = recv_prefetch(s, stream, rootfd, man, pf, present, err);
	}
	if (rc == 0 && skeleton) {
		rc = stage_fs(s, stream, dir, raw, rawlen, present[0] ? present : NULL, err);
		vy_manifest_free(&s->pre[stream]);
		s->pre[stream] = *man;
		*man = (struct vy_manifest){ 0 };
		/* so that checking the delta at the freeze costs the change */
		vy_manifest_paths_free(s->pre_paths[stream]);
		s->pre_paths[stream] = NULL;
		if (rc == 0)
			rc = vy_manifest_paths_build(&s->pre[stream], &s->pre_paths[stream], err);
		json_object *ack = json_object_new_object();
		json_object_object_add(ack, "stream", json_object_new_int64(stream));
		if (rc == 0)
			rc = vy_channel_send_json(s->ch, VY_MSG_ACK, ack, err);
		json_object_put(ack);
	}
	if (rc == 0 && !skeleton) {
		if (slot < 0 && s->nfs >= MAX_STREAMS)
			rc = vy_error_set(err, EPROTO, "too many trees");
		struct vy_fs_mount *fm = &s->fs[slot >= 0 ? slot : s->nfs];
		char fsdir[PATH_MAX];
		snprintf(fsdir, sizeof(fsdir), "%s/fs", s->ctr_dir);
		if (rc == 0) {
			fs_paths(s, stream, dir, fm);
			rc = vy_mkdir_p(fsdir, 0700, err);
		}
		/* as it came (no second encoding in the freeze window); made
		 * durable with the rest at the commit (sync_received) */
		if (rc == 0)
			rc = write_quick(fm->manifest, raw, rawlen, err);
		if (rc == 0)
			rc = write_priority(fm->priority, json_object_object_get(e, "priority"), err);
		if (rc == 0)
			rc = vy_fs_start(s->d, s->id, s->source_addr, s->hydrate_rate, fm, err);
		if (rc == 0 && slot < 0)
			s->nfs++;
		if (rc == 0)
			rc = save_fs(s, err);
	}
	json_object_put(e);
	vy_manifest_free(man);
	if (rc < 0)
		return vy_error_wrap(err, "%s of %s", skeleton ? "skeleton" : "federated tree", dir);
	return 0;
}

/* jit, at the freeze: what changed since the skeleton (raw, the delta's
 * bytes, len of them), applied to the skeleton; then the staged voyager-fs
 * goes.  All of it grows with the change, not with the tree. */
static int recv_jit_delta(struct session *s, uint32_t stream, const char *dir,
			  const uint8_t *raw, size_t len, vy_error *err)
{
	struct vy_message end = { 0 };
	json_object *e = NULL;
	struct vy_manifest_delta d = { 0 };
	int slot = fs_of(s, stream);
	int rc = vy_channel_expect(s->ch, VY_MSG_TREE_END, &end, err);
	if (rc == 0)
		rc = vy_message_json(&end, &e, err);
	vy_message_free(&end);
	if (rc == 0 && (slot < 0 || !s->pre[stream].count))
		rc = vy_error_set(err, EPROTO, "a delta for stream %u, which had no skeleton", stream);
	if (rc == 0)
		rc = vy_manifest_delta_decode(raw, len, &d, err);
	if (rc == 0 && memcmp(d.base_sha, s->pre_sha[stream], 32))
		rc = vy_error_set(err, EPROTO, "the delta is not for the skeleton we have");
	if (rc == 0)
		rc = vy_manifest_delta_check_with(&s->pre[stream], s->pre_paths[stream], &d, err);
	uint32_t changed = 0;
	cleanup_close int rootfd = rc == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (rc == 0 && rootfd < 0)
		rc = vy_error_sys(err, errno, "open %s", dir);
	if (rc == 0)
		rc = vy_manifest_delta_update_skeleton(&s->pre[stream], &d, rootfd, &changed, err);
	if (rc == 0)
		vy_info("migration %s: skeleton %s: %u entries changed since it was laid out "
			"(of %u)", s->id, dir, changed, s->pre[stream].count);
	struct vy_fs_mount *fm = slot >= 0 ? &s->fs[slot] : NULL;
	/* made durable with the rest at the commit (sync_received) */
	if (rc == 0)
		rc = write_quick(fm->delta, raw, len, err);
	if (rc == 0)
		rc = write_priority(fm->priority, json_object_object_get(e, "priority"), err);
	if (rc == 0 && !fm->staged)
		unlink(fm->state); /* a staged start that failed may have left one */
	bool staged = fm && fm->staged;
	if (rc == 0)
		rc = staged ? vy_fs_go_send(fm, err) /* waited for at the restore */
			    : vy_fs_start(s->d, s->id, s->source_addr, s->hydrate_rate, fm, err);
	/* a staged voyager-fs is the process the journal has named since the
	 * skeleton: only a new one is news (and a journal save costs ~5 ms
	 * of the freeze here) */
	if (rc == 0 && !staged)
		rc = save_fs(s, err);
	vy_manifest_delta_free(&d);
	json_object_put(e);
	if (rc < 0)
		return vy_error_wrap(err, "changes to %s", dir);
	return 0;
}

/* presync: the SHA-256 of the pre-synced manifest's encoding and an
 * index of its paths, before the freeze. */
static int presync_index(struct session *s, uint32_t stream, vy_error *err)
{
	vy_manifest_paths_free(s->pre_paths[stream]);
	s->pre_paths[stream] = NULL;
	if (vy_manifest_sha256(&s->pre[stream], s->pre_sha[stream], err) < 0)
		return -1;
	return vy_manifest_paths_build(&s->pre[stream], &s->pre_paths[stream], err);
}

/* presync, at the freeze: what changed since the pre-sync as a manifest
 * delta (raw, len bytes), then the data of the files it changed.  The
 * pre-synced tree is brought up to date in place, touching only what the
 * delta names: the freeze grows with the change, not with the tree. */
static int recv_presync_delta(struct session *s, uint32_t stream, const char *dir,
			      const uint8_t *raw, size_t len, json_object *plist,
			      json_object *resend, vy_error *err)
{
	struct vy_manifest_delta d = { 0 };
	struct vy_manifest *pre = &s->pre[stream];
	cleanup_free uint8_t *need = NULL;
	uint32_t changed = 0, files = 0;
	uint64_t bytes = 0, t0 = vy_now_ms();
	int rc = 0;
	if (!s->pre_sha_ok[stream])
		rc = vy_error_set(err, EPROTO, "a delta for stream %u, which has no pre-synced "
				  "tree indexed", stream);
	if (rc == 0)
		rc = vy_manifest_delta_decode(raw, len, &d, err);
	if (rc == 0 && memcmp(d.base_sha, s->pre_sha[stream], 32))
		rc = vy_error_set(err, EPROTO, "the delta is not for the tree we pre-synced");
	if (rc == 0)
		rc = vy_manifest_delta_check_with(pre, s->pre_paths[stream], &d, err);
	cleanup_close int rootfd = rc == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (rc == 0 && rootfd < 0)
		rc = vy_error_sys(err, errno, "open %s", dir);
	if (rc == 0)
		rc = void_resend(pre, resend, err);
	if (rc == 0)
		rc = vy_delta_need(pre, &d, &need, NULL, NULL, NULL, err);
	if (rc == 0)
		rc = vy_manifest_delta_update_skeleton(pre, &d, rootfd, &changed, err);
	/* pre becomes the tree as it is now; the paths index no longer fits */
	vy_manifest_paths_free(s->pre_paths[stream]);
	s->pre_paths[stream] = NULL;
	s->pre_sha_ok[stream] = false;
	if (rc == 0)
		rc = vy_manifest_delta_apply(pre, &d, NULL, err);
	/* the files whose changed chunks only come (patches): each one that
	 * must receive data */
	cleanup_free uint8_t *patch = rc == 0 ? calloc(pre->count ? pre->count : 1, 1) : NULL;
	if (rc == 0 && !patch)
		rc = vy_error_set(err, ENOMEM, "out of memory");
	if (rc == 0 && plist && !json_object_is_type(plist, json_type_array))
		rc = vy_error_set(err, EPROTO, "malformed patch list");
	for (size_t k = 0; rc == 0 && plist && k < json_object_array_length(plist); k++) {
		json_object *v = json_object_array_get_idx(plist, k);
		int64_t i = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
		if (i < 0 || i >= pre->count || !need[i] || patch[i])
			rc = vy_error_set(err, EPROTO, "the patch list names entry %lld, which gets "
					  "no data", (long long)i);
		else
			patch[i] = 1;
	}
	for (uint32_t i = 0; rc == 0 && i < pre->count; i++)
		need[i] = !need[i]; /* now: what we have */
	if (rc == 0)
		rc = recv_changed(s, stream, rootfd, pre, need, patch, &files, &bytes, err);
	vy_manifest_delta_free(&d);
	if (rc == 0)
		vy_info("migration %s: %s brought up to date in %llu ms: %u of %u entries changed, "
			"%u files written again or patched (%llu bytes in all)", s->id, dir,
			(unsigned long long)(vy_now_ms() - t0), changed, pre->count, files,
			(unsigned long long)bytes);
	return rc;
}

/* post-copy: the lazy-pages daemon and the page tunnel, once
 * (postcopy_target.c); the images must be complete. */
static int start_lazy_pages(struct session *s, vy_error *err)
{
	char images[PATH_MAX], work[PATH_MAX];
	if (vy_postcopy_target_started(s->pc))
		return 0;
	snprintf(images, sizeof(images), "%s/images", s->mig_dir);
	snprintf(work, sizeof(work), "%s/work", s->mig_dir);
	if (vy_mkdir_p(work, 0700, err) < 0)
		return -1;
	return vy_postcopy_target_start(s->pc, s->source_addr, s->id, images, work, err);
}

static int recv_tree(struct session *s, struct vy_message *first, vy_error *err)
{
	json_object *t = NULL;
	char dir[PATH_MAX];
	if (vy_message_json(first, &t, err) < 0)
		return -1;
	int rc = stream_dir(s, t, dir, sizeof(dir), err);
	uint32_t stream = (uint32_t)vy_json_int(t, "stream", 0);
	uint64_t mbytes = (uint64_t)vy_json_int(t, "manifest_bytes", 0);
	char flavor[16];
	snprintf(flavor, sizeof(flavor), "%s", vy_json_str(t, "flavor", "full"));
	json_object *patch = json_object_get(json_object_object_get(t, "patch"));
	json_object *resend = json_object_get(json_object_object_get(t, "resend"));
	json_object_put(t);
	if (rc < 0) {
		json_object_put(patch);
		json_object_put(resend);
		return -1;
	}
	struct vy_manifest man = { 0 };
	struct vy_tree_sink *sink = NULL;
	cleanup_close int rootfd = -1;
	cleanup_free uint8_t *raw = NULL;
	if (!strcmp(flavor, "presync-delta")) {
		rc = recv_manifest_bytes(s, mbytes, &raw, err);
		if (rc == 0)
			rc = recv_presync_delta(s, stream, dir, raw, mbytes, patch, resend, err);
		json_object_put(patch);
		json_object_put(resend);
		return rc < 0 ? vy_error_wrap(err, "receive changes into %s", dir) : 0;
	}
	json_object_put(patch);
	if (!strcmp(flavor, "jit-delta")) {
		json_object_put(resend);
		rc = recv_manifest_bytes(s, mbytes, &raw, err);
		return rc < 0 ? -1 : recv_jit_delta(s, stream, dir, raw, mbytes, err);
	}
	bool jit = !strcmp(flavor, "skeleton") || !strcmp(flavor, "jit");
	rc = recv_manifest(s, mbytes, &man, jit ? &raw : NULL, err);
	if (rc == 0 && !strcmp(flavor, "delta")) {
		rc = recv_delta(s, stream, dir, &man, resend, err);
		vy_manifest_free(&man);
		json_object_put(resend);
		return rc < 0 ? vy_error_wrap(err, "receive changes into %s", dir) : 0;
	}
	json_object_put(resend);
	if (rc == 0 && jit)
		return recv_jit_tree(s, stream, dir, !strcmp(flavor, "skeleton"), &man, raw,
				     mbytes, err);
	if (rc == 0)
		rc = vy_mkdir_p(dir, 0700, err);
	if (rc == 0 && (rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = vy_error_sys(err, errno, "open %s", dir);
	if (rc == 0)
		rc = vy_manifest_materialise(&man, rootfd, err);
	bool live = !strcmp(flavor, "presync");
	cleanup_free uint8_t *skipped = live ? calloc(man.count ? man.count : 1, 1) : NULL;
	if (rc == 0 && live && !skipped)
		rc = vy_error_set(err, ENOMEM, "out of memory");
	if (rc == 0)
		rc = vy_tree_sink_new(rootfd, &man, stream, &sink, err);
	if (rc == 0) {
		if (live)
			vy_tree_sink_allow_skips(sink, skipped);
		rc = recv_data(s, sink, err);
	}
	vy_tree_sink_free(sink);
	/* post-copy: the lazy-pages daemon reads the images when it starts,
	 * which took 7 ms of the restore; now it starts while the trees'
	 * changes still arrive */
	if (rc == 0 && stream == 0 && s->pc)
		rc = start_lazy_pages(s, err);
	if (rc == 0 && live) {
		vy_delta_forget(&man, skipped);
		s->pre[stream] = man;
		/* for a delta at the freeze (recv_presync_delta): the manifest
		 * both sides hold, and its paths indexed now, so that checking
		 * the delta costs the change */
		vy_error why;
		s->pre_sha_ok[stream] = man.count && man.entries[0].type == VY_ENTRY_DIR &&
					presync_index(s, stream, &why) == 0;
		/* VOYAGER_TEST_NO_PRESYNC_INDEX: t_presync stands in for a
		 * target that could not index its pre-sync (out of memory) */
		if (s->pre_sha_ok[stream] && getenv("VOYAGER_TEST_NO_PRESYNC_INDEX")) {
			s->pre_sha_ok[stream] = false;
			vy_error_set(&why, ENOMEM, "not indexed (VOYAGER_TEST_NO_PRESYNC_INDEX)");
		}
		if (!s->pre_sha_ok[stream] && man.count && man.entries[0].type == VY_ENTRY_DIR)
			vy_warn("migration %s: %s: %s; the freeze will send the whole manifest",
				s->id, dir, why.msg);
		/* The source freezes once the pre-sync is laid out here: the
		 * work of writing it must not spill into the freeze. */
		json_object *ack = json_object_new_object();
		json_object_object_add(ack, "stream", json_object_new_int64(stream));
		json_object_object_add(ack, "delta", json_object_new_boolean(s->pre_sha_ok[stream]));
		rc = vy_channel_send_json(s->ch, VY_MSG_ACK, ack, err);
		json_object_put(ack);
	} else {
		vy_manifest_free(&man);
	}
	if (rc < 0)
		return vy_error_wrap(err, "receive into %s", dir);
	return 0;
}

static int write_bundle(struct session *s, json_object *config, char *bundle,
			size_t blen, vy_error *err)
{
	struct vy_volume vols[VY_MAX_VOLUMES];
	int nvol = 0;
	size_t n = json_object_array_length(s->volumes);
	json_object *mounts = NULL;
	json_object_object_get_ex(config, "mounts", &mounts);
	/* Volumes are found in the config the same way the source found them. */
	for (size_t i = 0, mi = 0; mounts && i < n; i++) {
		json_object *v = json_object_array_get_idx(s->volumes, i);
		const char *dst = vy_json_str(v, "destination", "");
		for (; mi < json_object_array_length(mounts); mi++)
			if (!strcmp(vy_json_str(json_object_array_get_idx(mounts, mi),
						"destination", ""), dst))
				break;
		if (mi == json_object_array_length(mounts))
			return vy_error_set(err, EINVAL, "volume %s has no mount in config", dst);
		vols[nvol].mount_index = (int)mi++;
		vols[nvol].is_dir = json_object_get_boolean(json_object_object_get(v, "is_dir"));
		if (volume_shared(v))
			snprintf(vols[nvol].host_path, PATH_MAX, "%s", vy_json_str(v, "source", ""));
		else if (vols[nvol].is_dir)
			snprintf(vols[nvol].host_path, PATH_MAX, "%s/volumes/%zu", s->ctr_dir, i);
		else
			snprintf(vols[nvol].host_path, PATH_MAX, "%s/volumes/%zu/%s", s->ctr_dir, i,
				 vy_json_str(v, "name", "file"));
		nvol++;
	}
	char rootfs[PATH_MAX], cg[512];
	snprintf(bundle, blen, "%s/bundle", s->ctr_dir);
	snprintf(rootfs, sizeof(rootfs), "%s/rootfs", bundle);
	snprintf(cg, sizeof(cg), "/%s/%s", s->d->cgroup_parent, s->container);
	if (vy_bundle_rewrite(config, rootfs, vols, nvol,
			      s->d->cgroup_parent[0] ? cg : NULL, err) < 0)
		return -1;
	if (s->net && vy_bundle_set_netns_path(config, s->netns, err) < 0)
		return -1;
	return vy_bundle_save(config, bundle, err);
}

/* Tell the source when the runtime restored the container outside the
 * cgroup its config names: its limits then no longer apply. */
static void check_placement(struct session *s, const char *want, const char *pid_file,
			    json_object *reply)
{
	cleanup_free char *text = NULL;
	char got[4096];
	long pid = 0;
	if (!want[0] || want[0] != '/' || vy_read_file(pid_file, 64, &text, NULL, NULL) < 0 ||
	    (pid = strtol(text, NULL, 10)) <= 0 ||
	    vy_process_freezer_cgroup((pid_t)pid, got, sizeof(got), NULL) < 0 || !got[0] ||
	    !strcmp(got, want))
		return;
	char msg[8400];
	snprintf(msg, sizeof(msg), "%s restored the container into cgroup %s, not %s: its "
		 "resource limits do not apply on this host, and it cannot be migrated again "
		 "(crun 1.21 does this; fixed in later crun releases)", s->d->rt.name, got, want);
	vy_warn("migration %s: %s", s->id, msg);
	json_object *w = json_object_new_array();
	json_object_array_add(w, json_object_new_string(msg));
	json_object_object_add(reply, "warnings", w);
}

static void rcu_end(struct session *s)
{
	if (s->rcu_held)
		vy_rcu_expedite_end();
	s->rcu_held = false;
}

static int restore_expedited(struct session *s, struct vy_message *msg, vy_error *err);

/* The restore, with expedited RCU grace periods until the container's
 * network is open (restore_expedited lets go there), or its failure. */
static int restore_here(struct session *s, struct vy_message *msg, vy_error *err)
{
	if (s->rx_on)
		vy_steps_mark(&s->rx, "wait"); /* the last tree in, until RESTORE */
	s->cpulat_fd = vy_cpu_latency_hold(s->cpulat_how, sizeof(s->cpulat_how));
	int rc = restore_expedited(s, msg, err);
	rcu_end(s);
	return rc;
}

static int restore_expedited(struct session *s, struct vy_message *msg, vy_error *err)
{
	json_object *r = NULL, *config;
	char bundle[PATH_MAX], images[PATH_MAX], work[PATH_MAX];
	struct vy_steps st;
	vy_steps_start(&st);
	if (vy_message_json(msg, &r, err) < 0)
		return -1;
	int rc = 0;
	bool complete = s->seen[0] == 2 && s->seen[1] == 2;
	for (size_t v = 0; complete && v < json_object_array_length(s->volumes); v++)
		complete = s->seen[2 + v] == 2 ||
			   volume_shared(json_object_array_get_idx(s->volumes, v));
	if (!complete)
		rc = vy_error_set(err, EPROTO, "restore requested before every tree arrived");
	else if (!json_object_object_get_ex(r, "config", &config) ||
		 !json_object_is_type(config, json_type_object))
		rc = vy_error_set(err, EINVAL, "restore request has no config");
	else
		rc = write_bundle(s, config, bundle, sizeof(bundle), err);
	char config_cgroup[4096] = "";
	if (rc == 0)
		snprintf(config_cgroup, sizeof(config_cgroup), "%s",
			 vy_json_str(json_object_object_get(config, "linux"), "cgroupsPath", ""));
	s->tcp_established = json_object_get_boolean(json_object_object_get(r, "tcp_established"));
	bool lo_only = json_object_get_boolean(json_object_object_get(r, "netns_loopback_only"));
	json_object_put(r);
	if (rc < 0)
		return -1;
	vy_steps_mark(&st, "bundle");
	snprintf(images, sizeof(images), "%s/images", s->mig_dir);
	snprintf(work, sizeof(work), "%s/work", s->mig_dir);
	if (vy_mkdir_p(work, 0700, err) < 0)
		return -1;
	struct vy_checkpoint_opts o = {
		.tcp_established = s->tcp_established,
		.file_locks = true,
		/* The namespace is ours and locked (build_network), or CRIU
		 * makes one with nothing but loopback: either way CRIU need not
		 * lock it. */
		.criu_config = s->net || lo_only ? s->d->criu_conf_netlock : s->d->criu_conf,
	};
	/* post-copy: the lazy-pages daemon and the page tunnel, if the
	 * images' arrival did not start them (it must listen before the
	 * runtime's restore; waited for below) */
	if (s->pc && start_lazy_pages(s, err) < 0)
		return -1;
	o.lazy_pages = s->pc != NULL;
	char pid_file[PATH_MAX + 16];
	snprintf(pid_file, sizeof(pid_file), "%s/restored.pid", work);
	o.pid_file = pid_file;
	vy_steps_mark(&st, "prepare");
	vy_journal_phase(s->j, "restoring", NULL);
	uint64_t t0 = vy_now_ms();
	vy_steps_mark(&st, "journal");
	if (s->net && vy_net_link(s->net, true, err) < 0)
		return vy_error_wrap(err, "attach network");
	vy_steps_mark(&st, "link");
	/* The voyager-fs told to go with their deltas mount meanwhile (2 to 4
	 * ms), and the lazy-pages daemon starts (3 to 5 ms): both waited for
	 * last, so that the bundle, the journal and the veth overlap them. */
	for (int i = 0; i < s->nfs; i++)
		if (vy_fs_wait_gone(&s->fs[i], s->id, err) < 0)
			return -1;
	if (s->pc && vy_postcopy_target_ready(s->pc, err) < 0)
		return -1;
	vy_steps_mark(&st, "ready");
	if (vy_runtime_restore(&s->d->rt, s->container, bundle, images, work, &o, err) < 0)
		return -1;
	s->restored = true;
	vy_steps_mark(&st, "runtime");
	/* The sockets exist now: let the client's retransmissions in, and
	 * tell the segment where the address lives.  The lock's table itself
	 * goes after the commit (drop_lock_table), not in the freeze, nor
	 * while held packets wait to be replayed. */
	if (s->net && vy_net_open(s->netns, err) < 0)
		return vy_error_wrap(err, "network after restore");
	vy_steps_mark(&st, "unlock");
	rcu_end(s);
	if (s->net && vy_net_announce(s->netns, s->net, err) < 0)
		return vy_error_wrap(err, "network after restore");
	vy_steps_mark(&st, "announce");
	vy_journal_set(s->j, "restored", json_object_new_boolean(1));
	if (vy_journal_phase(s->j, "restored", err) < 0)
		return -1;
	/* not "journal" again: the report's step names are JSON keys */
	vy_steps_mark(&st, "recorded");
	json_object *ok = json_object_new_object();
	json_object_object_add(ok, "restore_ms", json_object_new_int64((int64_t)(vy_now_ms() - t0)));
	json_object_object_add(ok, "rcu_expedited", json_object_new_string(s->rcu_how));
	if (s->cpulat_how[0])
		json_object_object_add(ok, "cpu_latency", json_object_new_string(s->cpulat_how));
	check_placement(s, config_cgroup, pid_file, ok);
	vy_steps_mark(&st, "placement");
	json_object_object_add(ok, "steps_ms", vy_steps_json(&st));
	if (s->rx_on)
		json_object_object_add(ok, "receive_ms", vy_steps_json(&s->rx));
	rc = vy_channel_send_json(s->ch, VY_MSG_RESTORED, ok, err);
	json_object_put(ok);
	/* Restored: the background streams may take every file now (they
	 * held the cold ones back so as not to slow the restore down). */
	for (int i = 0; i < s->nfs; i++)
		vy_fs_release_cold(&s->fs[i]);
	vy_failpoint("target-after-restored");
	return rc;
}

/* Drop everything this session made, the restored container included. */
static void discard(struct session *s, const char *why)
{
	struct vy_container_state st;
	char ours[PATH_MAX];
	snprintf(ours, sizeof(ours), "%s/bundle", s->ctr_dir);
	/* A failed restore may leave the runtime holding a half-made container. */
	if (!s->restored && s->container[0] &&
	    vy_runtime_state(&s->d->rt, s->container, &st, NULL) == 0 &&
	    strcmp(st.status, "absent") != 0 && !strcmp(st.bundle, ours))
		s->restored = true;
	if (s->restored) {
		vy_error err;
		if (vy_runtime_delete(&s->d->rt, s->container, true, &err) < 0)
			vy_err("migration %s: cannot delete the restored %s: %s", s->id,
			       s->container, err.msg);
		s->restored = false;
	}
	drop_network(s);
	for (int i = 0; i < s->nfs; i++) {
		vy_fs_stop(&s->fs[i]);
		/* Its log goes with the directory: keep what it said. */
		cleanup_free char *tail = vy_file_tail(s->fs[i].log, 8);
		if (tail && tail[0])
			vy_info("migration %s: voyager-fs on %s said, last:\n%s", s->id,
				s->fs[i].mountpoint, tail);
	}
	s->nfs = 0;
	if (s->ctr_dir[0])
		vy_fs_unmount_under(s->ctr_dir);
	if (s->mig_dir[0])
		vy_rm_rf(s->mig_dir, NULL);
	if (s->ctr_dir[0])
		vy_rm_rf(s->ctr_dir, NULL);
	if (s->j)
		vy_journal_finish(s->j, "aborted", why, NULL);
	vy_info("migration %s: dropped (%s)", s->id, why);
}

/* The received bundle must be on disk before the source deletes its copy. */
static bool sync_received(struct session *s)
{
	int fd = open(s->ctr_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return false;
	int rc = syncfs(fd);
	close(fd);
	if (rc < 0)
		vy_err("migration %s: syncfs %s: %s", s->id, s->ctr_dir, strerror(errno));
	return rc == 0;
}

static void committed(struct session *s)
{
	vy_journal_phase(s->j, "committed", NULL);
	if (!s->jit)
		vy_journal_finish(s->j, "migrated", NULL, NULL);
	vy_rm_rf(s->mig_dir, NULL);
	vy_info("migration %s: %s now runs here", s->id, s->container);
}

/* The network lock, opened at the restore (vy_net_open), goes now.  If
 * this agent dies first, the table stays, accepting everything. */
static void drop_lock_table(struct session *s)
{
	vy_error err;
	if (s->net && vy_net_unlock(s->netns, &err) < 0)
		vy_warn("migration %s: the network lock's table stays (its rules accept "
			"everything): %s", s->id, err.msg);
}

/* jit: the container is ours; its files keep arriving until independent. */
static void after_commit(struct session *s)
{
	if (s->jit)
		vy_jit_hydrate(s->d, s->j, s->act, s->id, s->source_addr, s->fs, s->nfs);
}

/* Ask the source what it decided, until it knows. */
const char *vy_target_ask_source(struct vy_daemon *d, const char *addr, const char *id)
{
	vy_channel *ch;
	vy_error err;
	if (vy_channel_connect(addr, d->key, 3000, &ch, &err) < 0)
		return "unreachable";
	json_object *q = json_object_new_object();
	json_object_object_add(q, "id", json_object_new_string(id));
	struct vy_message msg = { 0 };
	json_object *o = NULL;
	static const char *const answers[] = { "committed", "rolled-back", "pending", "unknown" };
	const char *dec = "unreachable";
	vy_channel_set_timeout(ch, 5000, NULL);
	if (vy_channel_send_json(ch, VY_MSG_QUERY, q, &err) == 0 &&
	    vy_channel_expect(ch, VY_MSG_DECISION, &msg, &err) == 0 &&
	    vy_message_json(&msg, &o, &err) == 0) {
		const char *got = vy_json_str(o, "decision", "unknown");
		for (size_t i = 0; i < 4; i++)
			if (!strcmp(got, answers[i]))
				dec = answers[i];
	}
	json_object_put(o);
	json_object_put(q);
	vy_message_free(&msg);
	vy_channel_close(ch);
	return dec;
}

static void await_decision(struct session *s)
{
	vy_error err;
	if (vy_runtime_pause(&s->d->rt, s->container, &err) < 0)
		vy_warn("migration %s: cannot pause %s: %s", s->id, s->container, err.msg);
	vy_journal_phase(s->j, "awaiting-decision", NULL);
	for (int attempt = 0;; attempt++) {
		const char *dec = vy_target_ask_source(s->d, s->source_addr, s->id);
		if (!strcmp(dec, "committed")) {
			vy_runtime_resume(&s->d->rt, s->container, NULL);
			committed(s);
			after_commit(s);
			return;
		}
		if (!strcmp(dec, "rolled-back") || !strcmp(dec, "unknown")) {
			discard(s, "the source rolled back");
			return;
		}
		vy_warn("migration %s: source decision %s; asking again", s->id, dec);
		sleep(attempt < 10 ? 1 : 5);
	}
}

static void source_address(struct session *s, json_object *req)
{
	/* The source's listen port, at the address it connected from. */
	const char *listen = vy_json_str(req, "source_listen", "");
	const char *colon = strrchr(listen, ':');
	const char *peer = vy_channel_peer(s->ch);
	char host[256];
	snprintf(host, sizeof(host), "%s", peer);
	char *pc = strrchr(host, ':');
	if (pc)
		*pc = '\0';
	snprintf(s->source_addr, sizeof(s->source_addr), "%s:%s", host,
		 colon ? colon + 1 : "7600");
}

/* The packets that reached the container on the source while it was
 * frozen: into the container, which runs here now, unlocked.  A failure
 * here is reported, never fatal: the client retransmits what is lost. */
static int replay_held(void *arg, struct vy_message *msg)
{
	struct session *s = arg;
	if (msg->type != VY_MSG_HELD_PACKETS)
		return -1;
	vy_error err;
	uint32_t n = 0;
	int rc = !s->net || !s->restored
			 ? vy_error_set(&err, EPROTO, "held packets before the container was restored here")
			 : vy_hold_replay(s->net, msg->payload, msg->length, &n, &err);
	s->held = true;
	s->replayed += n;
	if (rc < 0) {
		snprintf(s->replay_error, sizeof(s->replay_error), "%s", err.msg);
		vy_warn("migration %s: replayed %u held packets: %s", s->id, n, err.msg);
	} else {
		vy_info("migration %s: replayed %u held packets into %s", s->id, n, s->container);
	}
	return 0;
}

static void run_session(struct session *s)
{
	vy_error err;
	for (;;) {
		struct vy_message msg = { 0 };
		if (vy_channel_recv(s->ch, &msg, &err) < 0) {
			if (s->restored)
				await_decision(s);
			else
				discard(s, err.msg);
			return;
		}
		int rc = 0;
		if (msg.type == VY_MSG_TREE) {
			s->phase = "transfer";
			rc = recv_tree(s, &msg, &err);
			if (rc == 0 && s->rx_on)
				vy_steps_mark(&s->rx, s->rx_stream == 0 ? "memory" :
						      s->rx_stream == 1 ? "rootfs" : "volumes");
		} else if (msg.type == VY_MSG_RESTORE) {
			s->phase = "restore";
			rc = restore_here(s, &msg, &err);
			vy_cpu_latency_release(&s->cpulat_fd); /* restored (or failed) */
			if (rc == 0 && s->pc) { /* post-copy: exposed until the last page */
				rc = vy_postcopy_target_pages(s->pc, s->ch, s->container, s->j,
							      replay_held, s, &err);
				if (rc < 0)
					s->restored = false; /* it deleted the incomplete copy */
			}
		} else if (msg.type == VY_MSG_HELD_PACKETS) {
			replay_held(s, &msg);
		} else if (msg.type == VY_MSG_COMMIT && s->restored) {
			committed(s);
			json_object *a = json_object_new_object();
			json_object_object_add(a, "id", json_object_new_string(s->id));
			json_object_object_add(a, "durable", json_object_new_boolean(sync_received(s)));
			if (s->held) {
				json_object_object_add(a, "replayed", json_object_new_int64(s->replayed));
				if (s->replay_error[0])
					json_object_object_add(a, "replay_error",
							       json_object_new_string(s->replay_error));
			}
			vy_channel_send_json(s->ch, VY_MSG_COMMIT_ACK, a, NULL);
			json_object_put(a);
			vy_message_free(&msg);
			drop_lock_table(s);
			after_commit(s);
			return;
		} else if (msg.type == VY_MSG_ABORT) {
			discard(s, "the source aborted");
			vy_message_free(&msg);
			return;
		} else {
			rc = vy_error_set(&err, EPROTO, "unexpected %s", vy_msg_type_name(msg.type));
		}
		vy_message_free(&msg);
		if (rc < 0) {
			vy_warn("migration %s: %s failed: %s", s->id, s->phase, err.msg);
			send_error(s, s->phase, err.msg);
			discard(s, err.msg);
			return;
		}
	}
}

void vy_target_session(struct vy_daemon *d, vy_channel *ch, struct vy_message *first)
{
	struct session ss = { .d = d, .ch = ch, .phase = "preflight", .cpulat_fd = -1 }, *s = &ss;
	vy_error err;
	json_object *req = NULL;
	if (vy_message_json(first, &req, &err) < 0 || target_preflight(s, req, &err) < 0) {
		vy_warn("refused a migration from %s: %s", vy_channel_peer(ch), err.msg);
		send_error(s, "preflight", err.msg);
		if (s->mig_dir[0] && err.code != EEXIST)
			vy_rm_rf(s->mig_dir, NULL);
		if (s->net)
			drop_network(s);
		json_object_put(req);
		json_object_put(s->volumes);
		json_object_put(s->net);
		vy_postcopy_target_free(s->pc);
		return;
	}
	source_address(s, req);
	json_object_put(req);
	s->act = vy_active_add(s->id, s->container, "target", vy_channel_peer(ch));
	if (vy_journal_create(d->state_dir, s->id, "target", s->container, s->source_addr,
			      &s->j, &err) < 0) {
		send_error(s, "preflight", err.msg);
		vy_rm_rf(s->mig_dir, NULL);
	} else {
		vy_journal_set(s->j, "target_dirs", json_object_new_string(s->ctr_dir));
		vy_journal_set(s->j, "mode", json_object_new_string(s->jit ? "jit" : "copy"));
		if (s->netns[0])
			vy_journal_set(s->j, "netns", json_object_new_string(s->netns));
		vy_journal_phase(s->j, "receiving", NULL);
		json_object *ok = json_object_new_object();
		json_object_object_add(ok, "host", json_object_get(d->facts));
		/* The source may send what reached the container while frozen. */
		if (s->net)
			json_object_object_add(ok, "packet_hold", json_object_new_boolean(1));
		if (vy_channel_send_json(ch, VY_MSG_PREFLIGHT_OK, ok, &err) < 0)
			discard(s, err.msg);
		else
			run_session(s);
		json_object_put(ok);
	}
	vy_cpu_latency_release(&s->cpulat_fd);
	rcu_end(s);
	vy_postcopy_target_free(s->pc);
	vy_journal_free(s->j);
	json_object_put(s->volumes);
	json_object_put(s->net);
	for (int i = 0; i < MAX_STREAMS; i++) {
		vy_manifest_free(&s->pre[i]);
		vy_manifest_paths_free(s->pre_paths[i]);
	}
	vy_active_remove(s->act);
}

int vy_target_abort(struct vy_daemon *d, const char *id, vy_error *err)
{
	/* The session notices its channel die and asks the source, which has
	 * already recorded "rolled-back"; wait for that to settle here. */
	for (int i = 0; i < 150; i++) {
		if (!vy_active_has_id(id) && vy_postcopy_target_settled(d, id)) /* recovery may still decide */
			return 0;
		usleep(100 * 1000);
	}
	return vy_error_set(err, ETIMEDOUT, "migration %s is still being dropped", id);
}
