/* main.c - voyager-fs: the federation filesystem, one process per migrated
 * tree on the target.
 *
 *   voyager-fs --backing DIR --state FILE --manifest FILE --source ADDR:PORT
 *              --key FILE --stream N [--delta FILE [--wait-fd FD]] [--hold-cold SEC]
 *              [--chunk-size BYTES] [--fetch-timeout SEC]
 *              [--priority FILE] [--present FILE] [--hydrate-rate BYTES_PER_SEC]
 *              [--migration ID] [--verbose] MOUNTPOINT
 *
 * It mounts a read-write view of DIR (the skeleton vy_manifest_materialise()
 * made, sparse files of the right size) at MOUNTPOINT.  Metadata comes from
 * DIR; file bytes that are not local yet are fetched from the frozen source
 * in chunks (hydrate.c), and the chunk state in FILE survives restarts.
 * Progress is the JSON value of the xattr "user.voyager.status" on the
 * mount root (getfattr --only-values -n user.voyager.status MNT); setting
 * "user.voyager.hydrate_rate" there to a number of bytes/s changes the
 * background lane's limit (0: link speed, the default).  With --hold-cold
 * SEC, the background lanes fetch only the files the container has open or
 * mapped (hot, and --priority) for SEC seconds, or until
 * "user.voyager.hydrate_cold" is set there: voyagerd holds the rest while
 * the container restores, which it would slow down.  It runs in the
 * foreground until unmounted or sent SIGTERM.
 *
 * With --delta, the tree is the manifest brought up to date by that delta
 * (manifest.h), and the chunk state is keyed to both.  With --wait-fd too,
 * voyagerd starts us before the freeze: we do the work that grows with the
 * tree (the manifest, the backing inode of every file) at once, say
 * "ready" on FD, and wait for "go" there, which voyagerd sends at the
 * freeze once the delta is written.  Only then do we apply the delta,
 * make the chunk state and mount: nothing is served before the tree is
 * final.  If FD closes first, voyagerd gave up on the migration: we exit.
 * --present FILE names (one path a line) the files voyagerd already wrote
 * whole into DIR before the freeze: a fresh chunk state starts with them
 * local, and any file the delta changed or replaced starts empty again.
 *
 * Why libfuse's low-level API: node ids map straight onto O_PATH fds of the
 * backing tree (no path strings rebuilt per call, renames cost nothing),
 * replies can splice from the backing fd, and passthrough needs the
 * per-open backing ids that only the low-level open reply carries.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/vfs.h>

#include <openssl/evp.h>

#include "cleanup.h"
#include "log.h"
#include "util.h"
#include "vyfs.h"

struct options {
	const char *backing, *state, *manifest, *source, *key, *priority, *present, *mountpoint;
	const char *migration, *delta;
	int wait_fd, hold_cold_s;
	uint32_t stream, chunk_size;
	uint64_t hydrate_rate;
	int fetch_timeout_s;
	bool stream_set, verbose;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: voyager-fs --backing DIR --state FILE --manifest FILE\n"
		"                  --source ADDR:PORT --key FILE --stream N\n"
		"                  [--delta FILE [--wait-fd FD]] [--hold-cold SEC]\n"
		"                  [--chunk-size BYTES] [--fetch-timeout SEC]\n"
		"                  [--priority FILE] [--present FILE]\n"
		"                  [--hydrate-rate BYTES_PER_SEC]\n"
		"                  [--migration ID] [--verbose] MOUNTPOINT\n");
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > max || *s == '-')
		return -1;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{ "backing", required_argument, NULL, 'b' },
		{ "state", required_argument, NULL, 's' },
		{ "manifest", required_argument, NULL, 'm' },
		{ "source", required_argument, NULL, 'S' },
		{ "key", required_argument, NULL, 'k' },
		{ "stream", required_argument, NULL, 'n' },
		{ "chunk-size", required_argument, NULL, 'c' },
		{ "fetch-timeout", required_argument, NULL, 't' },
		{ "priority", required_argument, NULL, 'p' },
		{ "present", required_argument, NULL, 'P' },
		{ "hydrate-rate", required_argument, NULL, 'r' },
		{ "migration", required_argument, NULL, 'M' },
		{ "delta", required_argument, NULL, 'd' },
		{ "wait-fd", required_argument, NULL, 'w' },
		{ "hold-cold", required_argument, NULL, 'H' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 } };
	*o = (struct options){ .chunk_size = 1 << 20, .fetch_timeout_s = 30, .wait_fd = -1 };
	int c;
	uint64_t v;
	while ((c = getopt_long(argc, argv, "b:s:m:S:k:n:c:t:p:P:r:M:d:w:H:vh", longs, NULL)) != -1) {
		switch (c) {
		case 'b': o->backing = optarg; break;
		case 's': o->state = optarg; break;
		case 'm': o->manifest = optarg; break;
		case 'S': o->source = optarg; break;
		case 'k': o->key = optarg; break;
		case 'p': o->priority = optarg; break;
		case 'P': o->present = optarg; break;
		case 'M': o->migration = optarg; break;
		case 'd': o->delta = optarg; break;
		case 'w':
			if (parse_uint(optarg, INT32_MAX, &v) < 0 || v < 3)
				return -1;
			o->wait_fd = (int)v;
			break;
		case 'H':
			if (parse_uint(optarg, 3600, &v) < 0)
				return -1;
			o->hold_cold_s = (int)v;
			break;
		case 'v': o->verbose = true; break;
		case 'n':
			if (parse_uint(optarg, UINT32_MAX, &v) < 0)
				return -1;
			o->stream = (uint32_t)v;
			o->stream_set = true;
			break;
		case 'c':
			if (parse_uint(optarg, VY_CHUNK_SIZE_MAX, &v) < 0 ||
			    v < VY_CHUNK_SIZE_MIN || v % 4096)
				return -1;
			o->chunk_size = (uint32_t)v;
			break;
		case 't':
			if (parse_uint(optarg, 24 * 3600, &v) < 0)
				return -1;
			o->fetch_timeout_s = (int)v;
			break;
		case 'r':
			if (parse_uint(optarg, UINT64_MAX / 2, &o->hydrate_rate) < 0)
				return -1;
			break;
		case 'h': usage(stdout); exit(0);
		default: return -1;
		}
	}
	if (optind != argc - 1 || !o->backing || !o->state || !o->manifest ||
	    !o->source || !o->key || !o->stream_set || (o->wait_fd >= 0 && !o->delta))
		return -1;
	o->mountpoint = argv[optind];
	return 0;
}

static int load_manifest(struct vyfs *fs, const char *path, uint8_t sha[32],
			 vy_error *err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (vy_read_file(path, (size_t)4 << 30, &buf, &len, err) < 0)
		return -1;
	unsigned dlen = 0;
	EVP_Digest(buf, len, sha, &dlen, EVP_sha256(), NULL);
	if (vy_manifest_decode((const uint8_t *)buf, len, &fs->man, err) < 0)
		return vy_error_wrap(err, "manifest %s", path);
	return 0;
}

/* Tracked entries are sorted by directory, then name, so that each
 * directory is read once (getdents gives the inode numbers: no stat and no
 * path walk per file; this runs while the container waits to restore). */
static size_t dir_len(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? (size_t)(slash - path) : 0;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

static int by_dir_then_name(const void *a, const void *b, void *arg)
{
	const struct vy_manifest *m = arg;
	const char *pa = m->entries[*(const uint32_t *)a].path;
	const char *pb = m->entries[*(const uint32_t *)b].path;
	size_t la = dir_len(pa), lb = dir_len(pb);
	int c = memcmp(pa, pb, la < lb ? la : lb);
	if (c || la != lb)
		return c ? c : (la < lb ? -1 : 1);
	return strcmp(base_name(pa), base_name(pb));
}

/* One directory's entries, found by name through a hash table: names in
 * one arena, no allocation per entry and no sort (a 100 000-file tree is
 * read here while the container waits to restore). */
struct dent {
	size_t name;            /* offset in names */
	uint32_t hash;
	unsigned char type;
	uint64_t ino;
};

struct dir_index {
	char *names;
	size_t len, cap;
	struct dent *v;
	size_t n, vcap;
	uint32_t *slot;         /* entry index + 1; 0 = empty */
	size_t nslot;
};

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static void dir_index_free(struct dir_index *x)
{
	free(x->names);
	free(x->v);
	free(x->slot);
}

static int add_dent(struct dir_index *x, const char *name, unsigned char type, uint64_t ino)
{
	size_t l = strlen(name) + 1;
	if (x->len + l > x->cap) {
		size_t cap = x->cap ? x->cap : 4096;
		while (x->len + l > cap)
			cap *= 2;
		char *p = realloc(x->names, cap);
		if (!p)
			return -1;
		x->names = p;
		x->cap = cap;
	}
	if (x->n == x->vcap) {
		size_t cap = x->vcap ? x->vcap * 2 : 64;
		struct dent *v = realloc(x->v, cap * sizeof(*v));
		if (!v)
			return -1;
		x->v = v;
		x->vcap = cap;
	}
	memcpy(x->names + x->len, name, l);
	x->v[x->n++] = (struct dent){ .name = x->len, .hash = name_hash(name),
				     .type = type, .ino = ino };
	x->len += l;
	return 0;
}

static int index_dents(struct dir_index *x)
{
	size_t want = 16;
	while (want < 2 * x->n)
		want *= 2;
	if (want > x->nslot) {
		uint32_t *s = realloc(x->slot, want * sizeof(*s));
		if (!s)
			return -1;
		x->slot = s;
		x->nslot = want;
	}
	memset(x->slot, 0, x->nslot * sizeof(*x->slot));
	for (size_t i = 0; i < x->n; i++) {
		size_t k = x->v[i].hash & (x->nslot - 1);
		while (x->slot[k])
			k = (k + 1) & (x->nslot - 1);
		x->slot[k] = (uint32_t)i + 1;
	}
	return 0;
}

static const struct dent *find_dent(const struct dir_index *x, const char *name)
{
	if (!x->nslot)
		return NULL;
	uint32_t h = name_hash(name);
	for (size_t k = h & (x->nslot - 1); x->slot[k]; k = (k + 1) & (x->nslot - 1)) {
		const struct dent *d = &x->v[x->slot[k] - 1];
		if (d->hash == h && !strcmp(x->names + d->name, name))
			return d;
	}
	return NULL;
}

/* Read directory dir (relative to the backing root) into x. */
static int read_dir(struct vyfs *fs, const char *dir, struct dir_index *x, vy_error *err)
{
	x->len = 0;
	x->n = 0;
	int fd = vy_manifest_open_entry(fs->backing_fd, dir, O_RDONLY | O_DIRECTORY, err);
	if (fd < 0)
		return -1;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return vy_error_sys(err, errno, "read directory '%s'", dir);
	}
	struct dirent *de;
	int rc = 0;
	while (rc == 0 && (de = readdir(d))) {
		unsigned char type = de->d_type;
		uint64_t ino = de->d_ino;
		if (de->d_type == DT_UNKNOWN || fs->stat_inos) {
			struct stat st;
			if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
				type = S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
				ino = st.st_ino;
			}
		}
		if (add_dent(x, de->d_name, type, ino) < 0)
			rc = vy_error_set(err, ENOMEM, "out of memory");
	}
	closedir(d);
	if (rc == 0 && index_dents(x) < 0)
		rc = vy_error_set(err, ENOMEM, "out of memory");
	return rc;
}

static bool is_tracked(const struct vy_entry *e)
{
	return e->type == VY_ENTRY_REG && e->link_of == VY_NO_LINK && e->size;
}

/* For a fresh state: every tracked file's backing inode (*out[i] for
 * entry i), by its manifest path. */
static int backing_inos(struct vyfs *fs, uint64_t **out, vy_error *err)
{
	cleanup_free uint64_t *inos = calloc(fs->man.count ? fs->man.count : 1, sizeof(*inos));
	cleanup_free uint32_t *order = malloc((fs->man.count ? fs->man.count : 1) * sizeof(*order));
	if (!inos || !order)
		return vy_error_set(err, ENOMEM, "out of memory");
	uint32_t n = 0;
	for (uint32_t i = 0; i < fs->man.count; i++) {
		if (is_tracked(&fs->man.entries[i]))
			order[n++] = i;
	}
	qsort_r(order, n, sizeof(*order), by_dir_then_name, &fs->man);
	struct dir_index dents = { 0 };
	int rc = 0;
	for (uint32_t k = 0; rc == 0 && k < n; k++) {
		const char *p = fs->man.entries[order[k]].path;
		size_t dl = dir_len(p);
		if (k == 0 || dl != dir_len(fs->man.entries[order[k - 1]].path) ||
		    memcmp(p, fs->man.entries[order[k - 1]].path, dl)) {
			char *dir = strndup(p, dl);
			rc = dir ? read_dir(fs, dir, &dents, err)
				 : vy_error_set(err, ENOMEM, "out of memory");
			free(dir);
			if (rc < 0)
				break;
		}
		const struct dent *hit = find_dent(&dents, base_name(p));
		if (!hit || hit->type != DT_REG)
			rc = vy_error_set(err, EINVAL, "backing tree does not match the manifest: "
					  "no regular file %s", p);
		else
			inos[order[k]] = hit->ino;
	}
	dir_index_free(&dents);
	if (rc < 0)
		return -1;
	*out = take_ptr(inos);
	return 0;
}

/* Bring fs->man up to date with the delta at path: *sha, the base's, becomes
 * the SHA-256 of it and the delta's bytes, which keys the chunk state.  With
 * inos (the base's backing inodes), they follow their entries, the entries
 * the delta touched are looked up again, and *map_out says where each base
 * entry went (vy_manifest_delta_apply). */
static int apply_delta(struct vyfs *fs, const char *path, uint8_t sha[32], uint64_t **inos,
		       uint32_t **map_out, vy_error *err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	struct vy_manifest_delta d;
	if (vy_read_file(path, (size_t)1 << 30, &buf, &len, err) < 0 ||
	    vy_manifest_delta_decode((const uint8_t *)buf, len, &d, err) < 0)
		return vy_error_wrap(err, "delta %s", path);
	if (memcmp(d.base_sha, sha, 32)) {
		vy_manifest_delta_free(&d);
		return vy_error_set(err, EINVAL, "delta %s is not for this manifest", path);
	}
	unsigned dlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
		 EVP_DigestUpdate(ctx, sha, 32) && EVP_DigestUpdate(ctx, buf, len) &&
		 EVP_DigestFinal_ex(ctx, sha, &dlen);
	EVP_MD_CTX_free(ctx);
	/* where each put entry lands: see vy_manifest_delta_apply() */
	uint32_t count = fs->man.count, nput = d.put.count, ngone = d.ngone, w = count - ngone;
	cleanup_free uint32_t *at = malloc((nput ? nput : 1) * sizeof(*at));
	cleanup_free uint32_t *map = NULL;
	if (!ok || !at) {
		vy_manifest_delta_free(&d);
		return vy_error_set(err, ENOMEM, "delta %s", path);
	}
	memcpy(at, d.at, nput * sizeof(*at));
	if (vy_manifest_delta_apply(&fs->man, &d, &map, err) < 0) {
		vy_manifest_delta_free(&d);
		return vy_error_wrap(err, "delta %s", path);
	}
	vy_info("delta %s: %u entries changed or new, %u gone; %u entries now", path, nput,
		ngone, fs->man.count);
	if (!inos)
		return 0;
	uint64_t *moved;
	if (!ngone) { /* nothing moved: the new entries are at the end */
		moved = realloc(*inos, (fs->man.count ? fs->man.count : 1) * sizeof(*moved));
		if (!moved)
			return vy_error_set(err, ENOMEM, "out of memory");
		*inos = moved;
	} else {
		moved = calloc(fs->man.count ? fs->man.count : 1, sizeof(*moved));
		if (!moved)
			return vy_error_set(err, ENOMEM, "out of memory");
		for (uint32_t i = 0; i < count; i++)
			if (map[i] != VY_DELTA_NEW)
				moved[map[i]] = (*inos)[i];
		free(*inos);
		*inos = moved;
	}
	for (uint32_t k = 0; k < nput; k++) {
		uint32_t i = at[k] == VY_DELTA_NEW ? w++ : map[at[k]];
		const struct vy_entry *e = &fs->man.entries[i];
		moved[i] = 0;
		if (!is_tracked(e))
			continue;
		struct stat st;
		cleanup_close int fd = vy_manifest_open_entry(fs->backing_fd, e->path, O_PATH, err);
		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
			return vy_error_set(err, EINVAL, "backing tree does not match the delta: "
					    "no regular file %s", e->path);
		moved[i] = st.st_ino;
	}
	/* A file the delta changed starts with nothing local, whatever came
	 * before the freeze (--present): its old record goes, and a new one is
	 * made for it. */
	for (uint32_t k = 0; k < nput; k++)
		if (at[k] != VY_DELTA_NEW)
			map[at[k]] = UINT32_MAX;
	if (map_out)
		*map_out = take_ptr(map);
	return 0;
}

/* Say "ready" on fd and wait for "go" (see the top of this file). */
static int wait_for_go(int fd, vy_error *err)
{
	static const char ready[] = "ready\n";
	if (write(fd, ready, sizeof(ready) - 1) != (ssize_t)sizeof(ready) - 1)
		return vy_error_sys(err, errno, "tell voyagerd we are ready");
	char line[8];
	size_t n = 0;
	while (n < sizeof(line) - 1) {
		ssize_t r = read(fd, line + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return vy_error_set(err, ECANCELED, "voyagerd let go of the migration "
					    "before the freeze; nothing was mounted");
		if (line[n++] == '\n')
			break;
	}
	line[n] = '\0';
	if (strcmp(line, "go\n"))
		return vy_error_set(err, EPROTO, "voyagerd said '%.6s', not go", line);
	return 0;
}

static struct vyfs *walk_fs; /* nftw has no user pointer; under resolve_lock */

static int find_renamed(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (flag != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	int64_t f = vy_chunkmap_find_ino(walk_fs->cm, st->st_ino);
	if (f < 0 || walk_fs->tracks[f].handle)
		return 0;
	struct file_handle *h = malloc(sizeof(*h) + MAX_HANDLE_SZ);
	int mount_id;
	if (!h)
		return 0;
	h->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, path, h, &mount_id, 0) < 0)
		free(h);
	else
		walk_fs->tracks[f].handle = h;
	return 0;
}

/* The handle of tracked file f by its manifest path, if the inode there is
 * still the one we track. */
static struct file_handle *handle_by_path(struct vyfs *fs, uint32_t f)
{
	const struct vy_entry *e = &fs->man.entries[vy_chunkmap_entry(fs->cm, f)];
	vy_error ignore;
	cleanup_close int fd = vy_manifest_open_entry(fs->backing_fd, e->path, O_PATH, &ignore);
	struct stat st;
	struct file_handle *h = malloc(sizeof(*h) + MAX_HANDLE_SZ);
	int mount_id;
	if (!h)
		return NULL;
	h->handle_bytes = MAX_HANDLE_SZ;
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == vy_chunkmap_ino(fs->cm, f) &&
	    name_to_handle_at(fd, "", h, &mount_id, AT_EMPTY_PATH) == 0)
		return h;
	free(h);
	return NULL;
}

/* A fresh start resolves handles when first needed (nothing can have been
 * renamed before the mount); a file renamed since, or a directory above
 * it, is found by one walk of the backing tree, by inode. */
int vyfs_resolve_track(struct vyfs *fs, uint32_t f)
{
	struct vyfs_track *t = &fs->tracks[f];
	pthread_mutex_lock(&fs->resolve_lock);
	if (!t->handle)
		t->handle = handle_by_path(fs, f);
	if (!t->handle && fs->backing_path) {
		walk_fs = fs;
		nftw(fs->backing_path, find_renamed, 64, FTW_PHYS | FTW_MOUNT);
	}
	int rc = t->handle ? 0 : -ENOENT;
	pthread_mutex_unlock(&fs->resolve_lock);
	return rc;
}

/* A handle per incomplete tracked file, so fetched bytes reach it under
 * whatever name it has now.  Files renamed while we were down are found by
 * a walk; a file whose inode is nowhere lost its last name: dropped.  With
 * eager false (a fresh state), handles are made when first needed. */
static int resolve_tracks(struct vyfs *fs, const char *backing, bool eager, vy_error *err)
{
	pthread_mutex_init(&fs->resolve_lock, NULL);
	fs->backing_path = backing;
	uint32_t count = vy_chunkmap_count(fs->cm), unresolved = 0;
	fs->tracks = calloc(count ? count : 1, sizeof(*fs->tracks));
	if (!fs->tracks)
		return vy_error_set(err, ENOMEM, "out of memory");
	for (uint32_t f = 0; f < count; f++) {
		struct vyfs_track *t = &fs->tracks[f];
		pthread_mutex_init(&t->lock, NULL);
		t->data_fd = -1;
		if (!eager || vy_chunkmap_complete(fs->cm, f))
			continue;
		if (!(t->handle = handle_by_path(fs, f)))
			unresolved++;
	}
	if (!eager)
		return 0;
	if (unresolved) {
		walk_fs = fs;
		nftw(backing, find_renamed, 64, FTW_PHYS | FTW_MOUNT);
	}
	for (uint32_t f = 0; f < count; f++)
		if (!vy_chunkmap_complete(fs->cm, f) && !fs->tracks[f].handle) {
			vy_warn("%s: gone from the backing tree; forgetting it",
				fs->man.entries[vy_chunkmap_entry(fs->cm, f)].path);
			if (vy_chunkmap_drop(fs->cm, f, err) < 0)
				return -1;
		}
	return 0;
}

/* The tracked file at path (a line of a --priority or --present file), or
 * -1.  Found by the backing file's inode, not by comparing every path:
 * this runs while the container waits to restore. */
static int64_t tracked_at(struct vyfs *fs, char *line)
{
	line[strcspn(line, "\n")] = '\0';
	vy_error ignore;
	struct stat st;
	if (!vy_path_is_safe(line, strlen(line)) || !*line)
		return -1;
	cleanup_close int fd = vy_manifest_open_entry(fs->backing_fd, line, O_PATH, &ignore);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return -1;
	int64_t f = vy_chunkmap_find_ino(fs->cm, st.st_ino);
	if (f >= 0 && !strcmp(fs->man.entries[vy_chunkmap_entry(fs->cm, (uint32_t)f)].path, line))
		return f;
	return -1;
}

static int load_priority(struct vyfs *fs, const char *path, vy_error *err)
{
	cleanup_fclose FILE *fp = fopen(path, "re");
	if (!fp)
		return vy_error_sys(err, errno, "open %s", path);
	fs->priority = calloc(vy_chunkmap_count(fs->cm) + 1, sizeof(*fs->priority));
	if (!fs->priority)
		return vy_error_set(err, ENOMEM, "out of memory");
	char line[VY_PATH_MAX + 2];
	while (fgets(line, sizeof(line), fp) && fs->npriority < vy_chunkmap_count(fs->cm)) {
		int64_t f = tracked_at(fs, line);
		if (f >= 0)
			fs->priority[fs->npriority++] = (uint32_t)f;
	}
	return 0;
}

/* --present: files of the manifest whose whole content voyagerd wrote into
 * the backing tree, durably, before we started (the mapped files it
 * fetched before the freeze): every chunk of them is local.  Only for a
 * fresh chunk state; the delta then takes back any file it changed. */
static int load_present(struct vyfs *fs, const char *path, uint32_t *files, vy_error *err)
{
	cleanup_fclose FILE *fp = fopen(path, "re");
	if (!fp)
		return vy_error_sys(err, errno, "open %s", path);
	char line[VY_PATH_MAX + 2];
	*files = 0;
	while (fgets(line, sizeof(line), fp)) {
		int64_t f = tracked_at(fs, line);
		if (f < 0)
			continue;
		vy_chunkmap_mark(fs->cm, (uint32_t)f, 0, UINT64_MAX);
		(*files)++;
	}
	return 0;
}

static int prepare(struct vyfs *fs, const struct options *o, vy_error *err)
{
	uint8_t sha[32];
	fs->source = o->source;
	fs->migration = o->migration;
	fs->stream = o->stream;
	fs->chunk_size = o->chunk_size;
	fs->fetch_timeout_ms = o->fetch_timeout_s * 1000;
	atomic_store(&fs->hydrate_rate, o->hydrate_rate);
	if (vy_key_load(o->key, fs->key, err) < 0 || load_manifest(fs, o->manifest, sha, err) < 0)
		return -1;
	fs->backing_fd = open(o->backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
	fs->backing_dir_fd = open(o->backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fs->backing_fd < 0 || fs->backing_dir_fd < 0)
		return vy_error_sys(err, errno, "open backing directory %s", o->backing);
	bool resumed = access(o->state, F_OK) == 0;
	cleanup_free uint64_t *inos = NULL;
	cleanup_free uint32_t *map = NULL;
	uint32_t base_count = fs->man.count;
	if (!resumed) {
		/* overlayfs may give readdir inode numbers that stat does not */
		struct statfs sf;
		fs->stat_inos = fstatfs(fs->backing_dir_fd, &sf) < 0 || sf.f_type == 0x794c7630;
		/* the state for the manifest as it is now, written now: at the
		 * go, a rebase writes only what the delta changed */
		uint32_t present = 0;
		if (backing_inos(fs, &inos, err) < 0 ||
		    vy_chunkmap_prepare(&fs->man, fs->chunk_size, inos, &fs->cm, err) < 0 ||
		    (o->present && load_present(fs, o->present, &present, err) < 0) ||
		    (o->wait_fd >= 0 && vy_chunkmap_commit(fs->cm, o->state, sha, err) < 0))
			return -1;
		if (o->present)
			vy_info("%u files whole here before the freeze (%s)", present, o->present);
	}
	if (o->wait_fd >= 0 && !resumed && wait_for_go(o->wait_fd, err) < 0)
		return -1;
	if (o->wait_fd >= 0)
		close(o->wait_fd);
	/* From here on, with --wait-fd, the container waits for us. */
	uint64_t t[5];
	t[0] = vy_now_ms();
	if (o->delta && apply_delta(fs, o->delta, sha, resumed ? NULL : &inos, &map, err) < 0)
		return -1;
	t[1] = vy_now_ms();
	int rc;
	if (resumed)
		rc = vy_chunkmap_load(o->state, &fs->man, sha, fs->chunk_size, &fs->cm, err);
	else if (map && vy_chunkmap_rebase(fs->cm, &fs->man, map, base_count, inos, err) < 0)
		rc = -1;
	else
		rc = vy_chunkmap_commit(fs->cm, o->state, sha, err);
	t[2] = vy_now_ms();
	if (rc < 0 || resolve_tracks(fs, o->backing, resumed, err) < 0)
		return -1;
	t[3] = vy_now_ms();
	if (o->priority && load_priority(fs, o->priority, err) < 0)
		return -1;
	t[4] = vy_now_ms();
	struct vy_chunkmap_stats s;
	vy_chunkmap_stats(fs->cm, &s);
	fs->resumed_chunks = s.chunks_present;
	fs->resumed_bytes = s.bytes_present;
	vy_info("%u files, %" PRIu64 " of %" PRIu64 " chunks local at start; ms: delta %" PRIu64
		", chunk state %" PRIu64 ", files %" PRIu64 ", priority %" PRIu64,
		s.files_total, s.chunks_present, s.chunks_total, t[1] - t[0], t[2] - t[1],
		t[3] - t[2], t[4] - t[3]);
	return vyfs_table_init(fs, err);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct vyfs *fs = userdata;
	fs->passthrough = fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH);
	if (fs->passthrough)
		conn->max_backing_stack_depth = 1;
	else
		vy_warn("the kernel offers no FUSE passthrough: complete files are "
			"served through the daemon");
	/* We clear setuid/setgid on writes ourselves (data.c), so the kernel
	 * marks inodes without them S_NOSEC and stops asking us for
	 * security.capability before every write: without this, each 4 KiB
	 * write, even a passthrough one, cost a round trip through us. */
	fs->killpriv = fuse_set_feature_flag(conn, FUSE_CAP_HANDLE_KILLPRIV_V2);
	/* Every directory read comes with attributes (READDIRPLUS), not just
	 * the first buffer of it ("auto"): a `find` reads a whole directory
	 * before anyone stats its entries, and each of those would otherwise
	 * cost a LOOKUP round trip. */
	fuse_unset_feature_flag(conn, FUSE_CAP_READDIRPLUS_AUTO);
	/* Truncation must pass through vyfs_truncate(); writeback caching and
	 * passthrough exclude each other. */
	fuse_unset_feature_flag(conn, FUSE_CAP_ATOMIC_O_TRUNC);
	fuse_unset_feature_flag(conn, FUSE_CAP_WRITEBACK_CACHE);
}

static int serve(struct vyfs *fs, const struct options *o)
{
	struct fuse_lowlevel_ops ops = { .init = op_init };
	vyfs_meta_ops(&ops);
	vyfs_data_ops(&ops);
	char *fargv[] = { "voyager-fs", "-o",
			  "fsname=voyager-fs,subtype=voyager,allow_other,"
			  "default_permissions,dev,suid", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), fs);
	if (!se)
		return 1;
	fs->se = se;
	int rc = 1;
	vy_error err;
	if (fuse_set_signal_handlers(se) == 0) {
		if (fuse_session_mount(se, o->mountpoint) == 0) {
			if (o->hold_cold_s)
				atomic_store(&fs->cold_until_ms,
					     vy_now_ms() + (uint64_t)o->hold_cold_s * 1000);
			if (vyfs_hydrate_start(fs, &err) == 0) {
				vy_info("mounted %s on %s, source %s", o->backing,
					o->mountpoint, o->source);
				struct fuse_loop_config *cfg = fuse_loop_cfg_create();
				fuse_loop_cfg_set_max_threads(cfg, 32);
				fuse_loop_cfg_set_clone_fd(cfg, 1);
				rc = fuse_session_loop_mt(se, cfg) ? 1 : 0;
				fuse_loop_cfg_destroy(cfg);
				vyfs_hydrate_stop(fs);
			} else {
				vy_err("%s", err.msg);
			}
			fuse_session_unmount(se);
		}
		fuse_remove_signal_handlers(se);
	}
	fuse_session_destroy(se);
	return rc;
}

int main(int argc, char **argv)
{
	struct options o;
	signal(SIGPIPE, SIG_IGN); /* a peer that left is an error return */
	vy_log_set_tag("voyager-fs");
	if (parse_args(argc, argv, &o) < 0) {
		usage(stderr);
		return 2;
	}
	if (o.verbose)
		vy_log_set_level(VY_LOG_DEBUG);
	/* One descriptor per inode the kernel has cached: take all we may.
	 * As root (CAP_SYS_RESOURCE) that is the kernel's own ceiling,
	 * fs.nr_open, not the hard limit we were started with (often a few
	 * thousand, which a find over a big tree uses up in a second). */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
		uint64_t ceiling = 0;
		cleanup_fclose FILE *fp = fopen("/proc/sys/fs/nr_open", "re");
		if (!fp || fscanf(fp, "%" SCNu64, &ceiling) != 1)
			ceiling = 0;
		struct rlimit want = nofile;
		if (ceiling > want.rlim_max)
			want.rlim_cur = want.rlim_max = ceiling;
		else
			want.rlim_cur = want.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &want) < 0 && nofile.rlim_cur < nofile.rlim_max) {
			nofile.rlim_cur = nofile.rlim_max;
			setrlimit(RLIMIT_NOFILE, &nofile);
		}
	}
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0)
		vy_info("open-file limit %llu: inodes keep a descriptor up to about three "
			"quarters of it, then a file handle", (unsigned long long)nofile.rlim_cur);
	static struct vyfs fs;
	vy_error err;
	if (prepare(&fs, &o, &err) < 0) {
		vy_err("%s", err.msg);
		return 1;
	}
	int rc = serve(&fs, &o);
	if (vy_chunkmap_close(fs.cm, &err) < 0) {
		vy_err("%s", err.msg);
		rc = 1;
	}
	return rc;
}
