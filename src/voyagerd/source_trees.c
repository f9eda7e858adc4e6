/* source_trees.c - how an outgoing migration sends its trees: the CRIU
 * images, the root filesystem and the volumes, each as a manifest and its
 * data, whole, pre-synced while the container runs, or as the delta since
 * the pre-sync; and the progress events the CLI draws while they move. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanup.h"
#include "delta.h"
#include "jit.h"
#include "log.h"
#include "source.h"
#include "transfer.h"
#include "util.h"

#define MANIFEST_FRAME (4u << 20)

static void *progress_loop(void *arg)
{
	struct migration *m = arg;
	uint64_t last_bytes = 0, last_t = vy_now_ms();
	double rate = 0;
	for (;;) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 200 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&m->progress_lock);
		if (!m->progress_stop)
			pthread_cond_timedwait(&m->progress_cond, &m->progress_lock, &until);
		bool stop = m->progress_stop;
		pthread_mutex_unlock(&m->progress_lock);
		if (stop)
			break;
		uint64_t b = atomic_load(&m->act->progress.bytes), t = vy_now_ms();
		if (t > last_t) {
			double inst = (double)(b - last_bytes) * 1000.0 / (double)(t - last_t);
			rate = rate ? 0.7 * rate + 0.3 * inst : inst;
		}
		last_bytes = b;
		last_t = t;
		json_object *e = json_object_new_object();
		json_object_object_add(e, "event", json_object_new_string("progress"));
		json_object_object_add(e, "phase", json_object_new_string(m->phase ? m->phase : ""));
		json_object_object_add(e, "bytes", json_object_new_int64((int64_t)b));
		json_object_object_add(e, "total", json_object_new_int64((int64_t)m->act->total_bytes));
		json_object_object_add(e, "rate_bps", json_object_new_int64((int64_t)rate));
		vy_events_send(m->ev, e);
		json_object_put(e);
	}
	return NULL;
}

void vy_source_progress_start(struct migration *m)
{
	m->progress_stop = false;
	pthread_mutex_init(&m->progress_lock, NULL);
	pthread_cond_init(&m->progress_cond, NULL);
	if (m->act && pthread_create(&m->progress_thread, NULL, progress_loop, m) == 0)
		m->progress_running = true;
}

void vy_source_progress_stop(struct migration *m)
{
	if (!m->progress_running)
		return;
	pthread_mutex_lock(&m->progress_lock);
	m->progress_stop = true;
	pthread_cond_signal(&m->progress_cond);
	pthread_mutex_unlock(&m->progress_lock);
	pthread_join(m->progress_thread, NULL);
	m->progress_running = false;
}

/* When a send fails, the target has usually said why before closing. */
int vy_source_explain_send_failure(struct migration *m, vy_error *err)
{
	struct vy_message msg = { 0 };
	vy_error peer;
	vy_channel_set_timeout(m->ch, 2000, NULL);
	if (vy_channel_recv(m->ch, &msg, &peer) == 0 && msg.type == VY_MSG_ERROR) {
		json_object *o = NULL;
		if (vy_message_json(&msg, &o, NULL) == 0)
			vy_error_set(err, EIO, "target: %s", vy_json_str(o, "error", "unknown error"));
		json_object_put(o);
	}
	vy_message_free(&msg);
	return -1;
}

uint64_t vy_tree_size(const char *path, bool is_dir)
{
	struct stat st;
	if (!is_dir)
		return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
	struct vy_manifest man = { 0 };
	uint64_t n = 0;
	if (vy_manifest_scan(path, &man, NULL) == 0)
		n = man.data_bytes;
	vy_manifest_free(&man);
	return n;
}

/* A manifest for a single-file volume: the root, and the file. */
static int single_file_manifest(const char *path, struct vy_manifest *man, vy_error *err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return vy_error_sys(err, errno, "stat %s", path);
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	man->entries = calloc(2, sizeof(*man->entries));
	if (!man->entries)
		return vy_error_set(err, ENOMEM, "out of memory");
	man->count = man->cap = 2;
	struct vy_entry *root = &man->entries[0], *f = &man->entries[1];
	root->path = strdup("");
	root->type = VY_ENTRY_DIR;
	root->mode = 0755;
	root->link_of = f->link_of = VY_NO_LINK;
	f->path = strdup(base);
	f->type = VY_ENTRY_REG;
	f->mode = st.st_mode & 07777;
	f->uid = st.st_uid;
	f->gid = st.st_gid;
	f->size = (uint64_t)st.st_size;
	f->atime_ns = (int64_t)st.st_atim.tv_sec * 1000000000 + st.st_atim.tv_nsec;
	f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	man->data_bytes = f->size;
	if (!root->path || !f->path)
		return vy_error_set(err, ENOMEM, "out of memory");
	return 0;
}

/* presync, at the freeze: the entries of the pre-sync's manifest pre whose
 * copy is void here (vy_delta_forget; what the container maps shared and
 * writable), as a "resend" list for the target, which voids its own copy
 * of each before it works out which files get data, as this side did; or
 * NULL for none.  Both sides then agree on what is sent. */
static json_object *resend_list(const struct vy_manifest *pre)
{
	json_object *l = NULL;
	for (uint32_t i = 0; i < pre->count; i++) {
		if (pre->entries[i].type != VY_ENTRY_REG || pre->entries[i].mtime_ns != INT64_MIN)
			continue;
		if (!l)
			l = json_object_new_array();
		json_object_array_add(l, json_object_new_int64(i));
	}
	return l;
}

/* A tree's header and its manifest (or, flavor "jit-delta", a delta)
 * already encoded in buf.  patch (taken), when not NULL: the entries whose
 * data comes as patches (presync-delta); resend (taken), when not NULL:
 * resend_list's. */
static int send_encoded(struct migration *m, uint32_t stream, const char *kind, int index,
			const char *flavor, const struct vy_manifest *man, const uint8_t *buf,
			size_t len, json_object *patch, json_object *resend, vy_error *err)
{
	json_object *t = json_object_new_object();
	if (patch)
		json_object_object_add(t, "patch", patch);
	if (resend)
		json_object_object_add(t, "resend", resend);
	json_object_object_add(t, "stream", json_object_new_int64(stream));
	json_object_object_add(t, "kind", json_object_new_string(kind));
	json_object_object_add(t, "index", json_object_new_int(index));
	json_object_object_add(t, "flavor", json_object_new_string(flavor));
	json_object_object_add(t, "manifest_bytes", json_object_new_int64((int64_t)len));
	json_object_object_add(t, "data_bytes", json_object_new_int64((int64_t)man->data_bytes));
	json_object_object_add(t, "entries", json_object_new_int64(man->count));
	int rc = vy_channel_send_json(m->ch, VY_MSG_TREE, t, err);
	json_object_put(t);
	for (size_t off = 0; rc == 0 && off < len; off += MANIFEST_FRAME) {
		size_t n = len - off < MANIFEST_FRAME ? len - off : MANIFEST_FRAME;
		rc = vy_channel_send(m->ch, VY_MSG_MANIFEST, buf + off, n, err);
	}
	return rc;
}

/* sha, when not NULL, gets the SHA-256 of the manifest's bytes; resend as
 * send_encoded's. */
static int send_manifest(struct migration *m, uint32_t stream, const char *kind, int index,
			 const char *flavor, const struct vy_manifest *man, uint8_t *sha,
			 json_object *resend, vy_error *err)
{
	cleanup_free uint8_t *buf = NULL;
	size_t len;
	unsigned dlen = 0;
	if (vy_manifest_encode(man, &buf, &len, err) < 0) {
		json_object_put(resend);
		return -1;
	}
	if (sha && !EVP_Digest(buf, len, sha, &dlen, EVP_sha256(), NULL)) {
		json_object_put(resend);
		return vy_error_set(err, EIO, "SHA-256 of a manifest");
	}
	return send_encoded(m, stream, kind, index, flavor, man, buf, len, NULL, resend, err);
}

/* Calls fn(pid, arg) for each process whose root is init's: the
 * container's. */
static void for_each_container_pid(pid_t init, void (*fn)(const char *pid, void *arg), void *arg)
{
	char p[PATH_MAX];
	struct stat want, st;
	snprintf(p, sizeof(p), "/proc/%d/root", (int)init);
	if (init <= 0 || stat(p, &want) < 0)
		return;
	cleanup_closedir DIR *proc = opendir("/proc");
	struct dirent *de;
	while (proc && (de = readdir(proc))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(p, sizeof(p), "/proc/%s/root", de->d_name);
		if (stat(p, &st) == 0 && st.st_dev == want.st_dev && st.st_ino == want.st_ino)
			fn(de->d_name, arg);
	}
}

struct voids_ctx {
	struct vy_inode_set *set;
	vy_error err;
	int failed;
};

/* One process's shared, writable file mappings: their inodes, through
 * /proc/PID/map_files (stat(2) there gives what a scan of the tree sees,
 * where the maps' device numbers need not: btrfs subvolumes). */
static void add_shared_writable(const char *pid, void *arg)
{
	struct voids_ctx *c = arg;
	char p[64], line[PATH_MAX + 128];
	if (c->failed)
		return;
	snprintf(p, sizeof(p), "/proc/%s/maps", pid);
	cleanup_fclose FILE *f = fopen(p, "re");
	/* a process that is gone maps nothing; one we cannot read might
	 * map anything: then what was copied cannot be trusted */
	if (!f && errno != ENOENT && errno != ESRCH) {
		vy_error_sys(&c->err, errno, "read the mappings of process %s of the container", pid);
		c->failed = 1;
	}
	while (f && !c->failed && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8], mf[96];
		struct stat st;
		/* "start-end perms offset dev inode path": perms as "rw-s" */
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[1] != 'w' ||
		    perms[3] != 's' || !strchr(line, '/'))
			continue;
		snprintf(mf, sizeof(mf), "/proc/%s/map_files/%lx-%lx", pid, lo, hi);
		if (stat(mf, &st) < 0) {
			if (errno == ENOENT || errno == ESRCH)
				continue;
			vy_error_sys(&c->err, errno, "stat %s (a shared, writable mapping of the "
				     "container)", mf);
			c->failed = 1;
		} else if (S_ISREG(st.st_mode) &&
			   vy_inode_set_add(c->set, st.st_dev, st.st_ino, &c->err) < 0) {
			c->failed = 1;
		}
	}
}

/* presync and jit, at the freeze (the container is frozen: the set cannot
 * grow): the inodes of the files its processes have mapped shared and
 * writable.  A write through such a mapping is no event and need not move
 * the file's times at all: tmpfs never moves them, and a page that was
 * already dirty and writable when the pre-sync read it takes more writes
 * without a fault.  So what was copied of those files before the freeze
 * cannot be trusted: they are read again (as patches, where the pre-sync
 * kept chunk digests).  A process outside the container writing through
 * its own mapping is not seen (README, limits). */
static int frozen_shared_writable(struct migration *m, vy_error *err)
{
	struct voids_ctx c = { .set = &m->voids };
	cleanup_free int *pids = NULL;
	size_t n = 0;
	vy_error why;
	uint64_t t0 = vy_now_ms();
	bool cg = false;
	vy_inode_set_free(&m->voids);
	/* the frozen cgroup's processes; else those whose root is the
	 * container's (a scan of every process of the host) */
	const char *cgp = vy_json_str(json_object_object_get(m->config, "linux"), "cgroupsPath", "");
	if (vy_runtime_cgroup_procs(m->container, m->pid, cgp, &pids, &n, &why) == 0) {
		cg = true;
		for (size_t i = 0; i < n; i++) {
			char pid[16];
			snprintf(pid, sizeof(pid), "%d", pids[i]);
			add_shared_writable(pid, &c);
		}
	} else {
		for_each_container_pid(m->pid, add_shared_writable, &c);
	}
	if (c.failed) {
		*err = c.err;
		return -1;
	}
	vy_inode_set_sort(&m->voids);
	if (m->voids.n)
		vy_info("migration %s: %zu files mapped shared and writable by the container "
			"(its processes from %s, in %llu ms): what was copied of them before the "
			"freeze is read again", m->id, m->voids.n,
			cg ? "its cgroup" : "a scan of this host's", (unsigned long long)(vy_now_ms() - t0));
	return 0;
}

/* presync, at the freeze, without the watch's verify (which does it on its
 * way): void the pre-sync's copy of each file in m->voids, so that the
 * comparison with a new scan sends it again. */
static void void_mapped(struct migration *m, uint32_t stream, const char *path, bool is_dir)
{
	struct vy_manifest *pre = &m->pre[stream];
	struct stat st;
	uint32_t marked;
	vy_error why;
	if (!m->voids.n || !pre->count)
		return;
	if (!is_dir) {
		if (stat(path, &st) == 0 && pre->entries[0].type == VY_ENTRY_REG &&
		    vy_inode_set_has(&m->voids, st.st_dev, st.st_ino))
			pre->entries[0].mtime_ns = INT64_MIN;
		return;
	}
	if (vy_manifest_watch_verify(NULL, path, pre, &m->voids, &marked, &why) < 0)
		vy_warn("migration %s: %s: %s", m->id, path, why.msg);
}

/* At the freeze: the files sent before it (vy_source_skeleton) that
 * changed since the skeleton's scan.  A write(2) is an inotify event, and
 * the delta has the file; a write through a shared mapping is none, but it
 * moves the file's mtime, which is looked at here, and the file's
 * directory is then read again as if it had seen an event.  The target
 * drops what it has of any file the delta names. */
static void check_prefetched(struct migration *m, uint32_t stream, const char *root)
{
	const struct vy_manifest *pre = &m->pre[stream];
	m->pf_kept[stream] = 0;
	m->pf_refetch[stream] = 0;
	for (uint32_t k = 0; k < m->npf[stream]; k++) {
		const struct vy_entry *e = &pre->entries[m->pf[stream][k]];
		char p[2 * PATH_MAX];
		struct stat st;
		snprintf(p, sizeof(p), "%s/%s", root, e->path);
		bool mapped = false;
		if (lstat(p, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == e->size &&
		    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == e->mtime_ns &&
		    !(mapped = vy_inode_set_has(&m->voids, st.st_dev, st.st_ino))) {
			m->pf_kept[stream] += e->size;
			continue;
		}
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", e->path);
		char *slash = strrchr(dir, '/');
		if (slash)
			*slash = '\0';
		else
			dir[0] = '\0';
		vy_manifest_watch_mark(m->watch[stream], dir);
		m->pf_refetch[stream]++;
		vy_info("migration %s: %s %s; the target fetches it again", m->id, e->path,
			mapped ? "is mapped shared and writable by the container"
			       : "changed after it was sent before the freeze");
	}
}

/* jit, at the freeze: what changed since the skeleton, as a delta when it
 * can be one (read from the watch; else from a rescan compared whole),
 * else the whole manifest.  *man gets the manifest both sides now hold
 * (the skeleton's with the delta applied, or the rescan); *delta says
 * which went. */
static int send_frozen(struct migration *m, uint32_t stream, const char *kind, int index,
		       const char *path, bool is_dir, struct vy_manifest *man,
		       int64_t *dirs_read, bool *delta, vy_error *err)
{
	struct vy_manifest *pre = &m->pre[stream];
	struct vy_manifest_delta d;
	struct vy_manifest cur = { 0 };
	uint32_t dirs = 0;
	int got = 0;
	*delta = false;
	check_prefetched(m, stream, path);
	if (is_dir) {
		vy_error why;
		got = vy_manifest_rescan_delta(m->watch[stream], path, pre, &d, &dirs, &why);
		if (got < 0)
			vy_warn("migration %s: %s: no delta from the watch (%s); scanning again",
				m->id, kind, why.msg);
		if (got > 0)
			*dirs_read = dirs;
	}
	if (got <= 0) {
		int rc = is_dir ? vy_manifest_rescan(m->watch[stream], path, pre, &cur, dirs_read, err)
				: single_file_manifest(path, &cur, err);
		got = rc < 0 ? -1 : vy_manifest_diff(pre, &cur, &d, err);
		if (got < 0) {
			vy_manifest_free(&cur);
			return -1;
		}
	}
	if (!got) {
		*man = cur;
		return send_manifest(m, stream, kind, index, "jit", man, NULL, NULL, err);
	}
	memcpy(d.base_sha, m->pre_sha[stream], 32);
	uint32_t nput = d.put.count, ngone = d.ngone;
	cleanup_free uint8_t *buf = NULL;
	size_t len = 0;
	int rc = vy_manifest_delta_encode(&d, &buf, &len, err);
	if (rc == 0)
		rc = vy_manifest_delta_apply(pre, &d, NULL, err);
	vy_manifest_delta_free(&d);
	/* the rescan, if any, is freed after the freeze, not in it */
	vy_manifest_free(&m->stale[stream]);
	m->stale[stream] = cur;
	if (rc < 0)
		return -1;
	*man = *pre;
	*pre = (struct vy_manifest){ 0 };
	*delta = true;
	if (send_encoded(m, stream, kind, index, "jit-delta", man, buf, len, NULL, NULL, err) < 0)
		return -1;
	vy_info("migration %s: %s: %u entries changed or new and %u gone since the skeleton "
		"(delta of %zu bytes)", m->id, kind, nput, ngone, len);
	return 0;
}

static int open_tree_root(const char *path, bool is_dir, vy_error *err)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	if (!is_dir) {
		char *slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "open %s", dir);
	return fd;
}

/* Bytes that go over the wire for man, less what the target already has. */
static uint64_t bytes_to_send(const struct vy_manifest *man, const uint8_t *skip)
{
	uint64_t n = man->data_bytes;
	for (uint32_t i = 0; skip && i < man->count; i++)
		if (skip[i])
			n -= man->entries[i].size;
	return n;
}

/* The paths of list (in the container's view) below dest ("/" for the
 * rootfs), relative to that tree's root, no leading '/'. */
static json_object *paths_under(json_object *list, const char *dest)
{
	json_object *out = json_object_new_array();
	size_t dl = strlen(dest);
	for (size_t i = 0; list && i < json_object_array_length(list); i++) {
		const char *p = json_object_get_string(json_object_array_get_idx(list, i));
		if (!strcmp(dest, "/"))
			json_object_array_add(out, json_object_new_string(p + 1));
		else if (!strncmp(p, dest, dl) && p[dl] == '/')
			json_object_array_add(out, json_object_new_string(p + dl + 1));
	}
	return out;
}

/* The entries of man (the skeleton of the tree at dest) that go to the
 * target before the freeze: m->prefetch's regular files below dest, the
 * smallest first, up to VY_PREFETCH_MAX bytes in all.  *skip gets the
 * complement, for vy_tree_send_live_some(). */
static uint32_t pick_prefetch(struct migration *m, const struct vy_manifest *man,
			      const char *dest, uint32_t **idx, uint8_t **skip)
{
	*idx = NULL;
	*skip = NULL;
	json_object *want = json_object_new_object(), *rel = paths_under(m->prefetch, dest);
	for (size_t i = 0; i < json_object_array_length(rel); i++)
		json_object_object_add(want, json_object_get_string(json_object_array_get_idx(rel, i)),
				       NULL);
	json_object_put(rel);
	uint32_t n = 0, cap = (uint32_t)json_object_object_length(want);
	uint32_t *pick = cap ? calloc(cap, sizeof(*pick)) : NULL;
	for (uint32_t i = 0; pick && i < man->count && n < cap; i++) {
		const struct vy_entry *e = &man->entries[i];
		if (e->type == VY_ENTRY_REG && e->link_of == VY_NO_LINK && e->size > 0 &&
		    json_object_object_get_ex(want, e->path, NULL))
			pick[n++] = i;
	}
	json_object_put(want);
	/* smallest first (a handful of entries: insertion sort) */
	for (uint32_t a = 1; a < n; a++)
		for (uint32_t b = a; b > 0 && man->entries[pick[b]].size <
					     man->entries[pick[b - 1]].size; b--) {
			uint32_t t = pick[b];
			pick[b] = pick[b - 1];
			pick[b - 1] = t;
		}
	uint64_t total = 0;
	uint32_t kept = 0;
	for (uint32_t k = 0; k < n && total + man->entries[pick[k]].size <= VY_PREFETCH_MAX; k++) {
		total += man->entries[pick[k]].size;
		kept++;
	}
	if (!kept || !(*skip = malloc(man->count))) {
		free(pick);
		return 0;
	}
	memset(*skip, 1, man->count);
	for (uint32_t k = 0; k < kept; k++)
		(*skip)[pick[k]] = 0;
	*idx = pick;
	return kept;
}

/* jit, with the skeleton: the files picked by pick_prefetch(), after the
 * TREE_END that names them, read from the running container's tree (one
 * that changes under the read is skipped: the target fetches it later). */
static int send_prefetch(struct migration *m, uint32_t stream, const char *path,
			 const struct vy_manifest *man, const uint8_t *skip, vy_error *err)
{
	uint64_t t0 = vy_now_ms(), bytes = 0;
	uint32_t n = m->npf[stream], sent = 0;
	cleanup_free uint8_t *skipped = calloc(man->count ? man->count : 1, 1);
	cleanup_close int rootfd = open_tree_root(path, true, err);
	if (!skipped || rootfd < 0)
		return skipped ? -1 : vy_error_set(err, ENOMEM, "out of memory");
	if (vy_tree_send_live_some(m->ch, stream, rootfd, man, skip, skipped, NULL, err) < 0)
		return -1;
	/* only what arrived whole is looked at again at the freeze */
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = m->pf[stream][k];
		if (skipped[i]) {
			m->pf_skipped++;
			continue;
		}
		m->pf[stream][sent++] = i;
		bytes += man->entries[i].size;
	}
	m->pf_bytes += bytes;
	m->npf[stream] = sent;
	m->pf_files += sent;
	m->pf_ms += vy_now_ms() - t0;
	vy_info("migration %s: %u mapped files (%llu bytes) sent before the freeze in %llu ms%s",
		m->id, sent, (unsigned long long)bytes,
		(unsigned long long)(vy_now_ms() - t0), sent < n ? ", some skipped: they changed" : "");
	return 0;
}

/* jit: the tree's manifest only; its data stays here and is served to the
 * target's voyager-fs from now until the target releases us.  Registered
 * before TREE_END, so the target's first fetch finds it. */
static int send_jit_tree(struct migration *m, uint32_t stream, const char *kind, int index,
			 const char *path, bool is_dir, const char *flavor, const char *dest,
			 vy_error *err)
{
	struct vy_manifest man = { 0 };
	bool live = !strcmp(flavor, "skeleton");
	/* Watched from before the skeleton's scan, the frozen tree is read
	 * again only where it changed. */
	if (live && is_dir && !m->watch[stream] &&
	    vy_manifest_watch(path, &m->watch[stream], err) < 0)
		vy_warn("migration %s: %s: %s; the freeze will scan the whole tree", m->id, kind,
			err->msg);
	uint64_t t0 = vy_now_ms(), sent0 = vy_channel_bytes_sent(m->ch);
	int64_t dirs_read = -1;
	bool delta = false;
	int rc;
	if (live) {
		/* a live tree can change under the scan (a directory vanishing) */
		rc = is_dir ? vy_manifest_scan(path, &man, err) : single_file_manifest(path, &man, err);
		for (int retry = 0; rc < 0 && retry < 3; retry++) {
			vy_manifest_free(&man);
			rc = is_dir ? vy_manifest_scan(path, &man, err)
				    : single_file_manifest(path, &man, err);
		}
		if (rc == 0)
			rc = send_manifest(m, stream, kind, index, flavor, &man, m->pre_sha[stream],
					   NULL, err);
	} else if (m->pre[stream].count) {
		rc = send_frozen(m, stream, kind, index, path, is_dir, &man, &dirs_read, &delta, err);
	} else {
		rc = is_dir ? vy_manifest_scan(path, &man, err) : single_file_manifest(path, &man, err);
		if (rc == 0)
			rc = send_manifest(m, stream, kind, index, flavor, &man, NULL, NULL, err);
	}
	if (rc == 0)
		vy_info("migration %s: %s %s: %u entries %s, %s of %llu bytes sent, in %llu ms",
			m->id, flavor, kind, man.count,
			dirs_read >= 0 ? "known, changed directories read again" : "scanned",
			delta ? "delta" : "manifest",
			(unsigned long long)(vy_channel_bytes_sent(m->ch) - sent0),
			(unsigned long long)(vy_now_ms() - t0));
	char root[PATH_MAX], saved[PATH_MAX + 32];
	snprintf(root, sizeof(root), "%s", path);
	if (!is_dir) {
		char *slash = strrchr(root, '/');
		if (slash)
			*(slash == root ? slash + 1 : slash) = '\0';
	}
	vy_serve_manifest_path(m->dir, stream, saved, sizeof(saved));
	if (rc == 0 && live) {
		vy_manifest_free(&m->pre[stream]);
		m->pre[stream] = man;
		man = (struct vy_manifest){ 0 };
		/* the freeze then reads only what changed, nothing of the rest */
		vy_error why;
		if (m->watch[stream] &&
		    vy_manifest_watch_index(m->watch[stream], &m->pre[stream], &why) < 0)
			vy_warn("migration %s: %s: %s", m->id, kind, why.msg);
	} else if (rc == 0) {
		uint64_t data = man.data_bytes, had = delta ? m->pf_kept[stream] : 0;
		if (!delta && m->npf[stream]) {
			/* a fresh voyager-fs takes the whole manifest: nothing is
			 * known to be whole there */
			m->pf_refetch[stream] = m->npf[stream];
			vy_info("migration %s: %s: the whole manifest went, so the %u files sent "
				"before the freeze are fetched again", m->id, kind, m->npf[stream]);
		}
		if (had > data)
			had = data;
		data -= had;
		/* persisted by vy_serve_persist() once the container runs */
		rc = vy_serve_add(m->id, stream, root, &man, err);
		if (rc == 0) {
			json_object *s = json_object_new_object();
			json_object_object_add(s, "stream", json_object_new_int64(stream));
			json_object_object_add(s, "root", json_object_new_string(root));
			json_object_object_add(s, "manifest", json_object_new_string(saved));
			json_object_array_add(m->serve, s);
			m->jit_bytes += data;
		}
	}
	vy_manifest_free(&man);
	cleanup_free uint8_t *pf_skip = NULL;
	/* tmpfs does not move a file's mtime for writes through a shared
	 * mapping: there the freeze could not tell a sent file changed */
	struct statfs sf;
	bool mtime_moves = live && is_dir && statfs(path, &sf) == 0 &&
			   sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC;
	if (rc == 0 && live && is_dir && !mtime_moves && m->prefetch &&
	    json_object_array_length(m->prefetch))
		vy_info("migration %s: %s is on tmpfs: no file data goes before the freeze",
			m->id, kind);
	if (rc == 0 && live && is_dir && mtime_moves) {
		free(m->pf[stream]);
		m->npf[stream] = pick_prefetch(m, &m->pre[stream], dest, &m->pf[stream], &pf_skip);
	}
	if (rc == 0) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "stream", json_object_new_int64(stream));
		if (!live)
			json_object_object_add(e, "priority", paths_under(m->hot, dest));
		if (live && m->npf[stream]) {
			json_object *a = json_object_new_array();
			for (uint32_t k = 0; k < m->npf[stream]; k++)
				json_object_array_add(a, json_object_new_int64(m->pf[stream][k]));
			json_object_object_add(e, "prefetch", a);
		}
		rc = vy_channel_send_json(m->ch, VY_MSG_TREE_END, e, err);
		json_object_put(e);
	}
	if (rc == 0 && live && m->npf[stream])
		rc = send_prefetch(m, stream, path, &m->pre[stream], pf_skip, err);
	/* The target lays the skeleton out before we freeze: that work must
	 * not spill into the freeze window. */
	if (rc == 0 && live) {
		struct vy_message ack = { 0 };
		vy_channel_set_timeout(m->ch, 10 * 60 * 1000, NULL);
		rc = vy_channel_expect(m->ch, VY_MSG_ACK, &ack, err);
		vy_channel_set_timeout(m->ch, m->d->peer_timeout_ms, NULL);
		vy_message_free(&ack);
	}
	if (rc < 0)
		return vy_error_wrap(err, "send the %s of %s %s", live ? "skeleton" : "manifest",
				     kind, path);
	return 0;
}

/* Whether fd's description in /proc/PID/fdinfo/FD (p) was opened for
 * writing; true when that cannot be read. */
static bool fd_writes(const char *p)
{
	cleanup_fclose FILE *f = fopen(p, "re");
	char line[128];
	unsigned long flags;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "flags: %lo", &flags) == 1)
			return (flags & O_ACCMODE) != O_RDONLY;
	return true;
}

struct hot_ctx {
	json_object *seen, *mapped, *written;
};

/* One process's open and mapped files, for collect_hot_paths. */
static void add_hot(const char *pid, void *arg)
{
	struct hot_ctx *c = arg;
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "/proc/%s/maps", pid);
	FILE *f = fopen(p, "re");
	char line[PATH_MAX + 128];
	while (f && fgets(line, sizeof(line), f)) {
		char *path = strchr(line, '/');
		if (!path)
			continue;
		path[strcspn(path, "\n")] = '\0';
		if (strstr(path, " (deleted)"))
			continue;
		if (!json_object_object_get(c->seen, path))
			json_object_object_add(c->seen, path, NULL);
		/* "start-end perms ...": perms as "rw-s" */
		char *perms = strchr(line, ' ');
		bool shared_w = perms && perms + 5 < path && perms[2] == 'w' && perms[4] == 's';
		json_object_object_add(shared_w ? c->written : c->mapped, path, NULL);
	}
	if (f)
		fclose(f);
	snprintf(p, sizeof(p), "/proc/%s/fd", pid);
	cleanup_closedir DIR *fds = opendir(p);
	struct dirent *fe;
	while (fds && (fe = readdir(fds))) {
		char lp[PATH_MAX + 300], target[PATH_MAX];
		snprintf(lp, sizeof(lp), "%s/%s", p, fe->d_name);
		ssize_t n = readlink(lp, target, sizeof(target) - 1);
		if (n <= 0 || target[0] != '/')
			continue;
		target[n] = '\0';
		if (strstr(target, " (deleted)") || !strncmp(target, "/dev/", 5) ||
		    !strncmp(target, "/proc/", 6))
			continue;
		if (!json_object_object_get(c->seen, target))
			json_object_object_add(c->seen, target, NULL);
		snprintf(lp, sizeof(lp), "/proc/%s/fdinfo/%s", pid, fe->d_name);
		if (fd_writes(lp))
			json_object_object_add(c->written, target, NULL);
	}
}

/* What the container's processes have open or mapped, as paths in its
 * own view: the background stream fetches those first.  Read while it
 * still runs; a path that is gone by the freeze costs nothing.  And the
 * mapped files that go with the skeleton (m->prefetch): their pages are
 * read while the target restores, so there they had better be local.  Not
 * those mapped shared and writable, or open for writing: writes through a
 * mapping are no inotify event. */
static void collect_hot_paths(struct migration *m, pid_t init)
{
	json_object_put(m->hot);
	json_object_put(m->prefetch);
	m->hot = json_object_new_array();
	m->prefetch = json_object_new_array();
	struct hot_ctx c = { .seen = json_object_new_object(), .mapped = json_object_new_object(),
			     .written = json_object_new_object() };
	for_each_container_pid(init, add_hot, &c);
	json_object_object_foreach(c.mapped, mk, mv) {
		(void)mv;
		if (!m->no_prefetch && !json_object_object_get_ex(c.written, mk, NULL) &&
		    vy_path_is_safe(mk + 1, strlen(mk + 1)))
			json_object_array_add(m->prefetch, json_object_new_string(mk));
	}
	json_object_put(c.mapped);
	json_object_put(c.written);
	json_object_object_foreach(c.seen, k, v) {
		(void)v;
		if (vy_path_is_safe(k + 1, strlen(k + 1)))
			json_object_array_add(m->hot, json_object_new_string(k));
	}
	json_object_put(c.seen);
}

/* jit, while the container runs: the skeleton of every tree. */
int vy_source_skeleton(struct migration *m, vy_error *err)
{
	struct vy_container_state st;
	if (vy_runtime_state(&m->d->rt, m->container, &st, NULL) == 0)
		collect_hot_paths(m, st.pid);
	int rc = send_jit_tree(m, 1, "rootfs", 0, m->rootfs, true, "skeleton", "/", err);
	for (int i = 0; rc == 0 && i < m->nvol; i++)
		if (!m->vols[i].shared)
			rc = send_jit_tree(m, 2 + (uint32_t)i, "volume", i, m->vols[i].host_path,
				   m->vols[i].is_dir, "skeleton", m->vols[i].ctr_path, err);
	if (rc < 0)
		return vy_source_explain_send_failure(m, err);
	return 0;
}

/* presync, at the freeze, when what changed since the pre-sync can be a
 * delta d against the pre-sync's manifest (pre): d, then the data of the
 * files it changed (vy_delta_need).  The target brings its tree up to date
 * in place, so that neither the wire nor its work grows with the tree.
 * pre becomes the tree as it is now (pre + d); d is emptied. */
static int send_presync_delta(struct migration *m, uint32_t stream, const char *kind, int index,
			      int rootfd, struct vy_manifest_delta *d, uint64_t *bytes,
			      vy_error *err)
{
	struct vy_manifest *pre = &m->pre[stream];
	cleanup_free uint8_t *need = NULL, *buf = NULL;
	cleanup_free uint32_t *base_of = NULL;
	cleanup_free const struct vy_chunk_sums **pb = NULL;
	uint32_t files = 0, nput = d->put.count, ngone = d->ngone, npatch = 0;
	uint64_t data = 0, whole = 0, patched = 0;
	size_t len = 0;
	memcpy(d->base_sha, m->pre_sha[stream], 32);
	json_object *resend = resend_list(pre); /* before pre takes d */
	if (vy_delta_need(pre, d, &need, &files, &data, &base_of, err) < 0 ||
	    vy_manifest_delta_encode(d, &buf, &len, err) < 0 ||
	    vy_manifest_delta_apply(pre, d, NULL, err) < 0) {
		json_object_put(resend);
		return -1;
	}
	/* A file the pre-sync sent whole, with its chunk digests kept, goes
	 * as a patch: only the chunks that changed. */
	json_object *plist = json_object_new_array();
	pb = calloc(pre->count ? pre->count : 1, sizeof(*pb));
	if (!pb) {
		json_object_put(plist);
		json_object_put(resend);
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < pre->count; i++) {
		uint32_t b = base_of[i];
		if (need[i] && b != VY_DELTA_NEW && b < m->nsums[stream] && m->sums[stream][b].n &&
		    pre->entries[i].size >= VY_PATCH_MIN) {
			pb[i] = &m->sums[stream][b];
			json_object_array_add(plist, json_object_new_int64(i));
			npatch++;
		} else if (need[i]) {
			whole += pre->entries[i].size;
		}
		need[i] = !need[i]; /* what the target has: not sent */
	}
	m->act->total_bytes += data;
	if (send_encoded(m, stream, kind, index, "presync-delta", pre, buf, len, plist, resend,
			 err) < 0 ||
	    vy_tree_send_patched(m->ch, stream, rootfd, pre, need, pb, &patched,
				 &m->act->progress, err) < 0)
		return -1;
	*bytes += whole + patched;
	vy_info("migration %s: %s: %u entries changed or new and %u gone since the pre-sync "
		"(delta of %zu bytes); %u files sent again, %u of them as patches (%llu bytes "
		"of %llu)", m->id, kind, nput, ngone, len, files, npatch,
		(unsigned long long)(whole + patched), (unsigned long long)data);
	return 0;
}

/* presync, at the freeze, with the tree watched since before the
 * pre-sync's scan: what changed read from the watch, not from a scan of
 * the whole tree.  Every entry is looked at once more (one fstatat:
 * vy_manifest_watch_verify), so that an inode changed without an event in
 * its directory (a write through a shared mapping, through a hard link
 * from outside the tree) is read again too; only the directories with a
 * change are read.  1 when sent, 0 when the change can be no delta (the
 * caller scans and sends the whole manifest), -1 on error. */
static int presync_fast_delta(struct migration *m, uint32_t stream, const char *kind, int index,
			      const char *path, uint64_t *bytes, vy_error *err)
{
	struct vy_manifest_delta d;
	uint32_t marked = 0, dirs = 0;
	uint64_t t0 = vy_now_ms();
	vy_error why;
	cleanup_close int rootfd = open_tree_root(path, true, err);
	if (rootfd < 0)
		return -1;
	int got = vy_manifest_watch_verify(m->watch[stream], path, &m->pre[stream], &m->voids,
					   &marked, &why);
	if (got == 0)
		got = vy_manifest_rescan_delta(m->watch[stream], path, &m->pre[stream], &d, &dirs,
					       &why);
	if (got <= 0) {
		if (got < 0)
			vy_warn("migration %s: %s: no delta from the watch (%s); scanning again",
				m->id, kind, why.msg);
		return 0;
	}
	vy_info("migration %s: %s: %u entries changed without an event; %u directories read "
		"again, in %llu ms", m->id, kind, marked, dirs,
		(unsigned long long)(vy_now_ms() - t0));
	int rc = send_presync_delta(m, stream, kind, index, rootfd, &d, bytes, err);
	vy_manifest_delta_free(&d);
	return rc < 0 ? -1 : 1;
}

/* Send one tree.  flavor "full": everything; "presync": everything, while
 * the container runs, remembering the manifest; "delta": at the freeze,
 * only files that changed since the pre-sync (as a manifest delta where
 * it can be one, else with the whole manifest). */
static int send_tree(struct migration *m, uint32_t stream, const char *kind, int index,
		     const char *path, bool is_dir, const char *flavor, uint64_t *bytes,
		     vy_error *err)
{
	struct vy_manifest man = { 0 };
	cleanup_free uint8_t *skip = NULL;
	uint32_t kept = 0;
	bool live = !strcmp(flavor, "presync"), peer_delta = false;
	bool frozen_delta = !strcmp(flavor, "delta") && is_dir && m->pre_sha_ok[stream];
	/* What the container maps shared and writable is read again
	 * (presync_fast_delta's verify does it on its way). */
	if (!strcmp(flavor, "delta") && !(frozen_delta && m->watch[stream]))
		void_mapped(m, stream, path, is_dir);
	if (frozen_delta && m->watch[stream]) {
		int got = presync_fast_delta(m, stream, kind, index, path, bytes, err);
		if (got != 0)
			return got < 0 ? vy_error_wrap(err, "send %s %s", kind, path) : 0;
	}
	/* Watched from before the pre-sync's scan, the frozen tree is read
	 * again only where it changed (presync_fast_delta). */
	if (live && is_dir && !m->watch[stream] &&
	    vy_manifest_watch(path, &m->watch[stream], err) < 0)
		vy_warn("migration %s: %s: %s; the freeze will scan the whole tree", m->id, kind,
			err->msg);
	int rc = is_dir ? vy_manifest_scan(path, &man, err) : single_file_manifest(path, &man, err);
	/* A live tree can change under the scan (a directory vanishing): retry. */
	for (int retry = 0; live && rc < 0 && retry < 3; retry++) {
		vy_manifest_free(&man);
		rc = is_dir ? vy_manifest_scan(path, &man, err) : single_file_manifest(path, &man, err);
	}
	cleanup_close int rootfd = rc == 0 ? open_tree_root(path, is_dir, err) : -1;
	if (rc == 0 && rootfd < 0)
		rc = -1;
	if (rc == 0 && frozen_delta) {
		struct vy_manifest_delta d;
		int got = vy_manifest_diff(&m->pre[stream], &man, &d, err);
		if (got > 0) {
			rc = send_presync_delta(m, stream, kind, index, rootfd, &d, bytes, err);
			vy_manifest_delta_free(&d);
			vy_manifest_free(&man);
			return rc < 0 ? vy_error_wrap(err, "send %s %s", kind, path) : 0;
		}
		if (got < 0)
			rc = -1;
	}
	if (rc == 0 && !strcmp(flavor, "delta")) {
		rc = vy_delta_unchanged(&m->pre[stream], &man, &skip, &kept, err);
		if (rc == 0)
			m->act->total_bytes += bytes_to_send(&man, skip);
	}
	/* the target voids its copies of what this side voided */
	if (rc == 0)
		rc = send_manifest(m, stream, kind, index, flavor, &man, NULL,
				   !strcmp(flavor, "delta") ? resend_list(&m->pre[stream]) : NULL, err);
	if (rc == 0 && live) {
		skip = calloc(man.count ? man.count : 1, 1);
		/* chunk digests of what goes whole, for patches at the freeze */
		vy_chunk_sums_free(m->sums[stream], m->nsums[stream]);
		m->sums[stream] = is_dir ? calloc(man.count ? man.count : 1, sizeof(**m->sums)) : NULL;
		m->nsums[stream] = m->sums[stream] ? man.count : 0;
		rc = skip ? vy_tree_send_live_sums(m->ch, stream, rootfd, &man, skip, m->sums[stream],
						   &m->act->progress, err)
			  : vy_error_set(err, ENOMEM, "out of memory");
		if (rc == 0)
			vy_delta_forget(&man, skip);
		/* The target writes what it received after we sent it: the
		 * freeze waits until it has, so that its work is not in the
		 * freeze window. */
		struct vy_message ack = { 0 };
		json_object *a = NULL;
		vy_channel_set_timeout(m->ch, 10 * 60 * 1000, NULL);
		if (rc == 0)
			rc = vy_channel_expect(m->ch, VY_MSG_ACK, &ack, err);
		vy_channel_set_timeout(m->ch, m->d->peer_timeout_ms, NULL);
		if (rc == 0)
			rc = vy_message_json(&ack, &a, err);
		/* whether it holds this manifest indexed, for a delta */
		peer_delta = a && json_object_get_boolean(json_object_object_get(a, "delta"));
		json_object_put(a);
		vy_message_free(&ack);
	} else if (rc == 0) {
		rc = vy_tree_send_some(m->ch, stream, rootfd, &man, skip, &m->act->progress, err);
	}
	if (rc == 0) {
		*bytes += bytes_to_send(&man, live ? NULL : skip);
		if (!strcmp(flavor, "delta"))
			vy_info("migration %s: %s: %u of %u entries unchanged since the pre-sync",
				m->id, kind, kept, man.count);
	}
	if (rc == 0 && !strcmp(flavor, "presync")) {
		m->pre[stream] = man;
		/* for a delta at the freeze: both sides hold this manifest */
		vy_error why;
		m->pre_sha_ok[stream] = is_dir && peer_delta &&
					vy_manifest_sha256(&m->pre[stream], m->pre_sha[stream], &why) == 0;
		/* the freeze then reads only what changed, nothing of the rest */
		if (m->watch[stream] &&
		    (!m->pre_sha_ok[stream] ||
		     vy_manifest_watch_index(m->watch[stream], &m->pre[stream], &why) < 0)) {
			vy_manifest_watch_free(m->watch[stream]);
			m->watch[stream] = NULL;
		}
	} else {
		vy_manifest_free(&man);
	}
	if (rc < 0)
		return vy_error_wrap(err, "send %s %s", kind, path);
	return 0;
}

/* While the container runs: its rootfs and volumes, whole. */
int vy_source_presync(struct migration *m, vy_error *err)
{
	m->act->total_bytes = m->disk_bytes;
	vy_source_progress_start(m);
	int rc = send_tree(m, 1, "rootfs", 0, m->rootfs, true, "presync", &m->bytes_rootfs, err);
	for (int i = 0; rc == 0 && i < m->nvol; i++)
		if (!m->vols[i].shared)
			rc = send_tree(m, 2 + (uint32_t)i, "volume", i, m->vols[i].host_path,
				       m->vols[i].is_dir, "presync", &m->bytes_volumes, err);
	vy_source_progress_stop(m);
	if (rc < 0)
		return vy_source_explain_send_failure(m, err);
	return 0;
}

int vy_source_transfer(struct migration *m, vy_error *err)
{
	/* Inside the freeze window: no extra scan of the rootfs just for the
	 * progress bar.  The images are a handful of files; the trees count
	 * as the pre-flight saw them (stop-copy), or add what their delta
	 * sends once it is known (presync, in send_tree). */
	m->act->total_bytes = vy_tree_size(m->images, true);
	if (strcmp(m->mode, "presync") != 0)
		m->act->total_bytes += m->disk_bytes;
	atomic_store(&m->act->progress.bytes, 0);
	vy_source_progress_start(m);
	const char *flavor = !strcmp(m->mode, "presync") ? "delta" : "full";
	bool jit = !strcmp(m->mode, "jit");
	if ((jit || !strcmp(m->mode, "presync")) && frozen_shared_writable(m, err) < 0) {
		vy_source_progress_stop(m);
		return vy_error_wrap(err, "the container's shared, writable mappings, without which "
				     "what was copied before the freeze cannot be trusted (--mode "
				     "stop-copy copies nothing before it)");
	}
	if (jit)
		m->act->total_bytes -= m->disk_bytes;
	int rc = send_tree(m, 0, "memory", 0, m->images, true, "full", &m->bytes_memory, err);
	if (rc == 0 && jit) {
		m->serve = json_object_new_array();
		vy_journal_set(m->j, "serve", json_object_get(m->serve));
		rc = send_jit_tree(m, 1, "rootfs", 0, m->rootfs, true, "jit", "/", err);
		for (int i = 0; rc == 0 && i < m->nvol; i++)
			if (!m->vols[i].shared)
				rc = send_jit_tree(m, 2 + (uint32_t)i, "volume", i, m->vols[i].host_path,
					   m->vols[i].is_dir, "jit", m->vols[i].ctr_path, err);
		/* The journal names what we serve before anything can commit. */
		if (rc == 0)
			rc = vy_journal_save(m->j, err);
	} else if (rc == 0) {
		rc = send_tree(m, 1, "rootfs", 0, m->rootfs, true, flavor, &m->bytes_rootfs, err);
	}
	for (int i = 0; !jit && rc == 0 && i < m->nvol; i++)
		if (!m->vols[i].shared)
			rc = send_tree(m, 2 + (uint32_t)i, "volume", i, m->vols[i].host_path,
			       m->vols[i].is_dir, flavor, &m->bytes_volumes, err);
	vy_source_progress_stop(m);
	if (rc < 0)
		return vy_source_explain_send_failure(m, err);
	return 0;
}
