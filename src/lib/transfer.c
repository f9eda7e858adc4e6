/* transfer.c - moving a tree's file contents over a channel.
 *
 * After the manifest (manifest.c) has been sent and materialised as a
 * skeleton, vy_tree_send() streams the data of each regular file, each inode
 * once, and a tree sink on the target writes it into the skeleton.  Holes
 * are never sent: the skeleton's files are already sparse at the right
 * size.  Each file ends with its SHA-256 over the whole logical content
 * (holes hash as zeros), which the sink checks against what it wrote, so
 * corruption anywhere between the source's disk and the target's shows up
 * as an error naming the file, not as a container that misbehaves later.
 */
#include "transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanup.h"
#include "log.h"

#define ZERO_BLOCK (64 * 1024)

/* Holes hash as zeros; one static block serves every hole. */
static const uint8_t zeros[ZERO_BLOCK];

void vy_sha256_hex(const uint8_t digest[32], char out[65])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[digest[i] >> 4];
		out[2 * i + 1] = hex[digest[i] & 15];
	}
	out[64] = '\0';
}

static int hash_zeros(EVP_MD_CTX *ctx, uint64_t n)
{
	while (n > 0) {
		size_t take = n < ZERO_BLOCK ? (size_t)n : ZERO_BLOCK;
		if (!EVP_DigestUpdate(ctx, zeros, take))
			return -1;
		n -= take;
	}
	return 0;
}

static void hash_final_hex(EVP_MD_CTX *ctx, char hex[65])
{
	uint8_t digest[32];
	unsigned int len = 0;
	EVP_DigestFinal_ex(ctx, digest, &len);
	vy_sha256_hex(digest, hex);
}

static bool entry_has_data(const struct vy_entry *e)
{
	return e->type == VY_ENTRY_REG && e->link_of == VY_NO_LINK;
}

/* ---- sending ---- */

struct sender {
	vy_channel *ch;
	uint32_t stream;
	struct vy_progress *progress;
	EVP_MD_CTX *ctx;
	uint8_t *buf;
	uint8_t *skipped; /* live tree: files that moved under us are skipped here */
	bool channel_failed; /* a send failed: the tree fails, whatever the file did */
	/* keeping chunk digests (vy_tree_send_live_sums): per entry, and the
	 * file being sent's, with its chunk hash and how far it got */
	struct vy_chunk_sums *sums;
	struct vy_chunk_sums cur;
	EVP_MD_CTX *cctx;
	uint64_t cpos;
	/* patches (vy_tree_send_patched): per entry, the receiver's digests */
	const struct vy_chunk_sums *const *base;
	bool patching;       /* the file being sent is a patch */
	uint64_t patch_bytes;
};

/* The chunk digest of the bytes hashed into ctx, into out. */
static int sum_final(EVP_MD_CTX *ctx, uint8_t out[VY_SUM_LEN])
{
	uint8_t digest[32];
	unsigned int len = 0;
	if (!EVP_DigestFinal_ex(ctx, digest, &len))
		return -1;
	memcpy(out, digest, VY_SUM_LEN);
	return 0;
}

/* n bytes of the file being sent (data, or zeros for a hole when data is
 * NULL) into its chunk digests, when they are kept. */
static int sum_feed(struct sender *s, const uint8_t *data, uint64_t n)
{
	while (s->cur.n && n > 0) {
		uint64_t room = VY_CHUNK_SIZE - s->cpos % VY_CHUNK_SIZE;
		size_t take = (size_t)(n < room ? n : room);
		if (!data && take > ZERO_BLOCK)
			take = ZERO_BLOCK;
		if ((s->cpos % VY_CHUNK_SIZE == 0 && !EVP_DigestInit_ex(s->cctx, EVP_sha256(), NULL)) ||
		    !EVP_DigestUpdate(s->cctx, data ? data : zeros, take))
			return -1;
		s->cpos += take;
		n -= take;
		if (data)
			data += take;
		if (s->cpos % VY_CHUNK_SIZE == 0 &&
		    sum_final(s->cctx, s->cur.sum[s->cpos / VY_CHUNK_SIZE - 1]) < 0)
			return -1;
	}
	return 0;
}

/* The chunk digests of a file, as a patch has them, read and hashed by
 * up to four threads (as many as there are CPUs): in the freeze a patch
 * reads the whole file, on each side.  The threads take chunks in order,
 * so that a consumer (the sender of a patch) can use each digest as soon
 * as it is there, while the threads go on. */
#define DIGEST_THREADS 4

struct digest_pool {
	int fd;
	uint64_t size, chunks;
	uint8_t (*out)[VY_SUM_LEN];
	_Atomic uint64_t next; /* the next chunk to take */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *done;         /* per chunk, under mu */
	int err_no;            /* the first failure, under mu: errno, or EIO with */
	uint64_t err_off;      /* where (UINT64_MAX: hashing) */
	bool stop;             /* the consumer is done, under mu */
	pthread_t tids[DIGEST_THREADS];
	unsigned nthreads;
};

static void *digest_worker(void *arg)
{
	struct digest_pool *p = arg;
	uint8_t *buf = malloc(VY_CHUNK_SIZE);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int e = !buf || !ctx ? ENOMEM : 0;
	uint64_t eoff = 0;
	for (;;) {
		uint64_t k = e ? p->chunks : atomic_fetch_add(&p->next, 1);
		if (k < p->chunks) {
			uint64_t off = k * VY_CHUNK_SIZE;
			size_t want = p->size - off < VY_CHUNK_SIZE ? (size_t)(p->size - off)
								    : VY_CHUNK_SIZE;
			for (size_t have = 0; !e && have < want;) {
				ssize_t n = pread(p->fd, buf + have, want - have, (off_t)(off + have));
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0) {
					e = n < 0 ? errno : EIO;
					eoff = off + have;
				}
				have += n > 0 ? (size_t)n : 0;
			}
			if (!e && (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
				   !EVP_DigestUpdate(ctx, buf, want) || sum_final(ctx, p->out[k]) < 0)) {
				e = EIO;
				eoff = UINT64_MAX;
			}
		}
		pthread_mutex_lock(&p->mu);
		if (k < p->chunks && !e)
			p->done[k] = 1;
		if (e && !p->err_no) {
			p->err_no = e;
			p->err_off = eoff;
		}
		bool quit = k >= p->chunks || p->stop || p->err_no;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		if (quit)
			break;
	}
	EVP_MD_CTX_free(ctx);
	free(buf);
	return NULL;
}

static int pool_start(struct digest_pool *p, int fd, uint64_t size, uint8_t (*out)[VY_SUM_LEN],
		      vy_error *err)
{
	*p = (struct digest_pool){ .fd = fd, .size = size, .out = out };
	p->chunks = (size + VY_CHUNK_SIZE - 1) / VY_CHUNK_SIZE;
	p->done = calloc(p->chunks ? p->chunks : 1, 1);
	if (!p->done)
		return vy_error_sys(err, ENOMEM, "chunk digests");
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = cpus > 0 && cpus < DIGEST_THREADS ? (unsigned)cpus : DIGEST_THREADS;
	if (p->chunks < want)
		want = p->chunks ? (unsigned)p->chunks : 1;
	for (unsigned t = 0; t < want; t++)
		if (pthread_create(&p->tids[p->nthreads], NULL, digest_worker, p) == 0)
			p->nthreads++;
	if (!p->nthreads) /* no thread: here, all of it, before any is used */
		digest_worker(p);
	return 0;
}

/* Waits for chunk k's digest; -1 with err when reading or hashing failed. */
static int pool_wait(struct digest_pool *p, uint64_t k, const char *path, vy_error *err)
{
	pthread_mutex_lock(&p->mu);
	while (!p->done[k] && !p->err_no)
		pthread_cond_wait(&p->cv, &p->mu);
	int e = p->done[k] ? 0 : p->err_no;
	uint64_t off = p->err_off;
	pthread_mutex_unlock(&p->mu);
	if (!e)
		return 0;
	if (off == UINT64_MAX)
		return vy_error_set(err, EIO, "'%s': sha256 failed", path);
	if (e == EIO)
		return vy_error_set(err, EIO, "'%s' shrank while being read (end at %llu, expected "
				    "%llu)", path, (unsigned long long)off, (unsigned long long)p->size);
	return vy_error_sys(err, e, "'%s': read at %llu", path, (unsigned long long)off);
}

static void pool_finish(struct digest_pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_mutex_unlock(&p->mu);
	for (unsigned t = 0; t < p->nthreads; t++)
		pthread_join(p->tids[t], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->done);
	p->done = NULL;
}

/* All of a file's chunk digests into out. */
static int chunk_digests(int fd, uint64_t size, const char *path, uint8_t (*out)[VY_SUM_LEN],
			 vy_error *err)
{
	struct digest_pool p;
	if (pool_start(&p, fd, size, out, err) < 0)
		return -1;
	int rc = 0;
	for (uint64_t k = 0; rc == 0 && k < p.chunks; k++)
		rc = pool_wait(&p, k, path, err);
	pool_finish(&p);
	return rc;
}

void vy_chunk_sums_free(struct vy_chunk_sums *sums, uint32_t count)
{
	for (uint32_t i = 0; sums && i < count; i++)
		free(sums[i].sum);
	free(sums);
}

/* The next data region at or after off, as [*data, *hole), both clamped to
 * size.  A file system without SEEK_DATA is treated as all data. */
static int next_data_region(int fd, uint64_t off, uint64_t size,
			    bool *can_seek, uint64_t *data, uint64_t *hole)
{
	*data = off;
	*hole = size;
	if (!*can_seek)
		return 0;
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);
	if (d < 0 && errno == ENXIO) {
		*data = size; /* only a hole remains */
		return 0;
	}
	if (d < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
		*can_seek = false;
		return 0;
	}
	if (d < 0)
		return -1;
	off_t h = lseek(fd, d, SEEK_HOLE);
	if (h < 0)
		return -1;
	*data = (uint64_t)d < size ? (uint64_t)d : size;
	*hole = (uint64_t)h < size ? (uint64_t)h : size;
	if (*hole <= *data && *data < size)
		*hole = size; /* never loop without progress */
	return 0;
}

static int send_region(struct sender *s, int fd, uint32_t index,
		       const struct vy_entry *e, uint64_t start, uint64_t end,
		       vy_error *err)
{
	for (uint64_t off = start; off < end;) {
		size_t want = end - off < VY_CHUNK_SIZE ? (size_t)(end - off)
							: VY_CHUNK_SIZE;
		ssize_t got = pread(fd, s->buf, want, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return vy_error_sys(err, errno, "'%s': read at %llu", e->path,
					    (unsigned long long)off);
		if (got == 0)
			return vy_error_set(err, EIO,
					    "'%s' shrank while being sent (end at %llu, expected %llu)",
					    e->path, (unsigned long long)off,
					    (unsigned long long)e->size);
		if (!EVP_DigestUpdate(s->ctx, s->buf, (size_t)got) ||
		    sum_feed(s, s->buf, (uint64_t)got) < 0)
			return vy_error_set(err, EIO, "'%s': sha256 failed", e->path);
		if (vy_channel_send_data(s->ch, s->stream, index, off, s->buf,
					 (size_t)got, err) < 0) {
			s->channel_failed = true;
			return vy_error_wrap(err, "'%s'", e->path);
		}
		off += (uint64_t)got;
		if (s->progress)
			atomic_fetch_add_explicit(&s->progress->bytes, (uint64_t)got,
						  memory_order_relaxed);
	}
	return 0;
}

static int send_file_end(struct sender *s, uint32_t index,
			 const struct vy_entry *e, const char *hex,
			 vy_error *err)
{
	json_object *obj = json_object_new_object();
	if (!obj)
		return vy_error_sys(err, ENOMEM, "FILE_END");
	json_object_object_add(obj, "stream", json_object_new_int64(s->stream));
	json_object_object_add(obj, "entry", json_object_new_int64(index));
	json_object_object_add(obj, "size", json_object_new_int64((int64_t)e->size));
	json_object_object_add(obj, "sha256", json_object_new_string(hex));
	if (s->patching)
		json_object_object_add(obj, "patch", json_object_new_boolean(1));
	int rc = vy_channel_send_json(s->ch, VY_MSG_FILE_END, obj, err);
	json_object_put(obj);
	if (rc < 0) {
		s->channel_failed = true;
		return vy_error_wrap(err, "'%s': FILE_END", e->path);
	}
	if (s->progress)
		atomic_fetch_add_explicit(&s->progress->files, 1,
					  memory_order_relaxed);
	return 0;
}

static int check_size(int fd, const struct vy_entry *e, const char *when,
		      vy_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return vy_error_sys(err, errno, "'%s': fstat", e->path);
	if (!S_ISREG(st.st_mode))
		return vy_error_set(err, EINVAL, "'%s' is no longer a regular file",
				    e->path);
	if ((uint64_t)st.st_size != e->size)
		return vy_error_set(err, EBUSY,
				    "'%s' changed size %s (manifest %llu, now %llu)",
				    e->path, when, (unsigned long long)e->size,
				    (unsigned long long)st.st_size);
	return 0;
}

/* A file of a live tree that vanished or changed size: tell the receiver
 * its copy is not to be trusted (a later delta sends it again). */
static int send_skip(struct sender *s, uint32_t index, const struct vy_entry *e, vy_error *err)
{
	s->skipped[index] = 1;
	json_object *obj = json_object_new_object();
	json_object_object_add(obj, "stream", json_object_new_int64(s->stream));
	json_object_object_add(obj, "entry", json_object_new_int64(index));
	json_object_object_add(obj, "skipped", json_object_new_boolean(1));
	int rc = vy_channel_send_json(s->ch, VY_MSG_FILE_END, obj, err);
	json_object_put(obj);
	return rc < 0 ? vy_error_wrap(err, "'%s': FILE_END", e->path) : 0;
}

static int send_file_data(struct sender *s, int fd, uint32_t index,
			  const struct vy_entry *e, vy_error *err);
static int send_file_patch(struct sender *s, int fd, uint32_t index, const struct vy_entry *e,
			   const struct vy_chunk_sums *base, vy_error *err);

static int send_file(struct sender *s, int rootfd, uint32_t index,
		     const struct vy_entry *e, vy_error *err)
{
	vy_error local;
	/* O_NOATIME: our read is no access by the container, and an access
	 * time it moved would make the freeze's scan after a pre-sync see
	 * every file as changed (owners and CAP_FOWNER only: else plainly) */
	cleanup_close int fd =
		vy_manifest_open_entry(rootfd, e->path, O_RDONLY | O_NOATIME, s->skipped ? &local : err);
	if (fd < 0 && (s->skipped ? &local : err)->code == EPERM)
		fd = vy_manifest_open_entry(rootfd, e->path, O_RDONLY, s->skipped ? &local : err);
	if (fd < 0)
		return s->skipped ? send_skip(s, index, e, err) : -1;
	if (check_size(fd, e, "since the scan", s->skipped ? &local : err) < 0)
		return s->skipped ? send_skip(s, index, e, err) : -1;
	const struct vy_chunk_sums *base = s->base ? s->base[index] : NULL;
	if (base && base->n)
		return send_file_patch(s, fd, index, e, base, err);
	/* chunk digests, for a patch of this file later */
	free(s->cur.sum);
	s->cur = (struct vy_chunk_sums){ 0 };
	s->cpos = 0;
	if (s->sums && e->size >= VY_PATCH_MIN) {
		uint64_t n = (e->size + VY_CHUNK_SIZE - 1) / VY_CHUNK_SIZE;
		s->cur.sum = n <= UINT32_MAX ? malloc(n * VY_SUM_LEN) : NULL;
		s->cur.n = s->cur.sum ? (uint32_t)n : 0;
	}
	int rc = send_file_data(s, fd, index, e, s->skipped ? &local : err);
	if (rc == 0 && s->cur.n && s->cpos % VY_CHUNK_SIZE &&
	    sum_final(s->cctx, s->cur.sum[s->cur.n - 1]) < 0)
		s->cur.n = 0; /* no digests, no patch: sent whole next time */
	if (rc == 0 && s->cur.n && s->cpos == e->size && !(s->skipped && s->skipped[index])) {
		s->sums[index] = s->cur;
		s->cur = (struct vy_chunk_sums){ 0 };
	}
	if (rc < 0 && s->skipped && !s->channel_failed)
		return send_skip(s, index, e, err);
	if (rc < 0 && s->skipped)
		*err = local;
	return rc;
}

/* send_file_patch's chunks, each once its digest is there. */
static int send_patch_chunks(struct sender *s, int fd, uint32_t index, const struct vy_entry *e,
			     const struct vy_chunk_sums *base, struct digest_pool *pool,
			     uint8_t (*sums)[VY_SUM_LEN], vy_error *err)
{
	for (uint64_t off = 0, k = 0; off < e->size; off += VY_CHUNK_SIZE, k++) {
		size_t want = e->size - off < VY_CHUNK_SIZE ? (size_t)(e->size - off) : VY_CHUNK_SIZE;
		if (pool_wait(pool, k, e->path, err) < 0)
			return -1;
		if (!EVP_DigestUpdate(s->ctx, sums[k], VY_SUM_LEN))
			return vy_error_set(err, EIO, "'%s': sha256 failed", e->path);
		/* progress counts what is done with: each chunk, sent or not */
		if (s->progress)
			atomic_fetch_add_explicit(&s->progress->bytes, want, memory_order_relaxed);
		if (k < base->n && !memcmp(sums[k], base->sum[k], VY_SUM_LEN))
			continue;
		for (size_t have = 0; have < want;) {
			ssize_t got = pread(fd, s->buf + have, want - have, (off_t)(off + have));
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				return got < 0 ? vy_error_sys(err, errno, "'%s': read at %llu", e->path,
							      (unsigned long long)(off + have))
					       : vy_error_set(err, EIO, "'%s' shrank while being sent",
							      e->path);
			have += (size_t)got;
		}
		if (vy_channel_send_data(s->ch, s->stream, index, off, s->buf, want, err) < 0) {
			s->channel_failed = true;
			return vy_error_wrap(err, "'%s'", e->path);
		}
		s->patch_bytes += want;
	}
	return 0;
}

/* A patch: every chunk read, and sent whole where its digest is not the
 * one the receiver's copy has (base); FILE_END with the SHA-256 of all the
 * chunk digests. */
static int send_file_patch(struct sender *s, int fd, uint32_t index, const struct vy_entry *e,
			   const struct vy_chunk_sums *base, vy_error *err)
{
	uint64_t chunks = (e->size + VY_CHUNK_SIZE - 1) / VY_CHUNK_SIZE;
	cleanup_free uint8_t(*sums)[VY_SUM_LEN] = malloc((chunks ? chunks : 1) * VY_SUM_LEN);
	if (!sums)
		return vy_error_sys(err, ENOMEM, "'%s'", e->path);
	if (!EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL))
		return vy_error_set(err, EIO, "sha256 init failed");
	/* the digests come from threads, in order; a chunk whose digest
	 * differs is read again and sent while they go on */
	struct digest_pool pool;
	if (pool_start(&pool, fd, e->size, sums, err) < 0)
		return -1;
	int rc = send_patch_chunks(s, fd, index, e, base, &pool, sums, err);
	pool_finish(&pool);
	if (rc < 0)
		return -1;
	if (check_size(fd, e, "while being sent", err) < 0)
		return -1;
	char hex[65];
	hash_final_hex(s->ctx, hex);
	s->patching = true;
	rc = send_file_end(s, index, e, hex, err);
	s->patching = false;
	return rc;
}

static int send_file_data(struct sender *s, int fd, uint32_t index,
			  const struct vy_entry *e, vy_error *err)
{
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (!EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL))
		return vy_error_set(err, EIO, "sha256 init failed");
	bool can_seek = true;
	for (uint64_t off = 0; off < e->size;) {
		uint64_t data, hole;
		if (next_data_region(fd, off, e->size, &can_seek, &data, &hole) < 0)
			return vy_error_sys(err, errno, "'%s': lseek", e->path);
		if (hash_zeros(s->ctx, data - off) < 0 || sum_feed(s, NULL, data - off) < 0)
			return vy_error_set(err, EIO, "sha256 failed");
		if (send_region(s, fd, index, e, data, hole, err) < 0)
			return -1;
		off = hole > data ? hole : data;
	}
	if (check_size(fd, e, "while being sent", err) < 0)
		return -1;
	char hex[65];
	hash_final_hex(s->ctx, hex);
	return send_file_end(s, index, e, hex, err);
}

int vy_tree_send(vy_channel *ch, uint32_t stream, int rootfd,
		 const struct vy_manifest *m, struct vy_progress *progress,
		 vy_error *err)
{
	return vy_tree_send_some(ch, stream, rootfd, m, NULL, progress, err);
}

static int send_tree(struct sender *s, int rootfd, const struct vy_manifest *m,
		     const uint8_t *skip, vy_error *err);

int vy_tree_send_live_sums(vy_channel *ch, uint32_t stream, int rootfd,
			   const struct vy_manifest *m, uint8_t *skipped,
			   struct vy_chunk_sums *sums, struct vy_progress *progress,
			   vy_error *err)
{
	struct sender s = { .ch = ch, .stream = stream, .progress = progress,
			    .skipped = skipped, .sums = sums };
	return send_tree(&s, rootfd, m, NULL, err);
}

int vy_tree_send_patched(vy_channel *ch, uint32_t stream, int rootfd,
			 const struct vy_manifest *m, const uint8_t *skip,
			 const struct vy_chunk_sums *const *base, uint64_t *patch_bytes,
			 struct vy_progress *progress, vy_error *err)
{
	struct sender s = { .ch = ch, .stream = stream, .progress = progress, .base = base };
	int rc = send_tree(&s, rootfd, m, skip, err);
	if (patch_bytes)
		*patch_bytes = s.patch_bytes;
	return rc;
}

int vy_tree_send_some(vy_channel *ch, uint32_t stream, int rootfd,
		      const struct vy_manifest *m, const uint8_t *skip,
		      struct vy_progress *progress, vy_error *err)
{
	struct sender s = { .ch = ch, .stream = stream, .progress = progress };
	return send_tree(&s, rootfd, m, skip, err);
}

int vy_tree_send_live(vy_channel *ch, uint32_t stream, int rootfd,
		      const struct vy_manifest *m, uint8_t *skipped,
		      struct vy_progress *progress, vy_error *err)
{
	struct sender s = { .ch = ch, .stream = stream, .progress = progress,
			    .skipped = skipped };
	return send_tree(&s, rootfd, m, NULL, err);
}

int vy_tree_send_live_some(vy_channel *ch, uint32_t stream, int rootfd,
			   const struct vy_manifest *m, const uint8_t *skip, uint8_t *skipped,
			   struct vy_progress *progress, vy_error *err)
{
	struct sender s = { .ch = ch, .stream = stream, .progress = progress,
			    .skipped = skipped };
	return send_tree(&s, rootfd, m, skip, err);
}

static int send_tree(struct sender *s_in, int rootfd, const struct vy_manifest *m,
		     const uint8_t *skip, vy_error *err)
{
	struct sender s = *s_in;
	uint32_t stream = s.stream;
	vy_channel *ch = s.ch;
	s.ctx = EVP_MD_CTX_new();
	s.cctx = EVP_MD_CTX_new();
	s.buf = malloc(VY_CHUNK_SIZE);
	int rc = 0;
	if (!s.ctx || !s.cctx || !s.buf)
		rc = vy_error_sys(err, ENOMEM, "send tree");
	for (uint32_t i = 0; rc == 0 && i < m->count; i++) {
		if (entry_has_data(&m->entries[i]) && !(skip && skip[i]))
			rc = send_file(&s, rootfd, i, &m->entries[i], err);
	}
	if (rc == 0) {
		json_object *obj = json_object_new_object();
		json_object_object_add(obj, "stream", json_object_new_int64(stream));
		rc = vy_channel_send_json(ch, VY_MSG_TREE_END, obj, err);
		json_object_put(obj);
	}
	EVP_MD_CTX_free(s.ctx);
	EVP_MD_CTX_free(s.cctx);
	free(s.buf);
	free(s.cur.sum);
	s_in->patch_bytes = s.patch_bytes;
	return rc < 0 ? vy_error_wrap(err, "send tree %u", stream) : 0;
}

/* ---- receiving ---- */

/* Files arrive one at a time, each in increasing offset order: `current`
 * is the file being written and `next_offset` how much of it is hashed. */
struct vy_tree_sink {
	int rootfd;
	const struct vy_manifest *m;
	uint32_t stream;
	uint8_t *ended;       /* per entry: FILE_END received and verified */
	uint32_t current;     /* entry index, or VY_NO_LINK between files */
	int fd;               /* current file, opened at its first chunk */
	uint64_t next_offset;
	EVP_MD_CTX *ctx;
	uint64_t bytes;
	uint8_t *skipped; /* set: a live tree, whose sender may skip files */
	const uint8_t *had; /* vy_tree_sink_have()'s: no data came for these */
	const uint8_t *patch; /* vy_tree_sink_patches()'s: these come as patches */
};

void vy_tree_sink_patches(struct vy_tree_sink *s, const uint8_t *patch)
{
	s->patch = patch;
}

/* Into s->ctx: the digest of each chunk of fd (e's file, which must be
 * e->size bytes long), in order. */
static int hash_chunks(struct vy_tree_sink *s, int fd, const struct vy_entry *e,
		       struct stat *st, vy_error *err)
{
	if (fd < 0)
		return -1;
	if (fstat(fd, st) < 0)
		return vy_error_sys(err, errno, "'%s': fstat", e->path);
	if ((uint64_t)st->st_size != e->size)
		return vy_error_set(err, EIO, "'%s': %llu bytes here after its patch, not %llu",
				    e->path, (unsigned long long)st->st_size,
				    (unsigned long long)e->size);
	uint64_t chunks = (e->size + VY_CHUNK_SIZE - 1) / VY_CHUNK_SIZE;
	cleanup_free uint8_t(*sums)[VY_SUM_LEN] = malloc((chunks ? chunks : 1) * VY_SUM_LEN);
	if (!sums)
		return vy_error_sys(err, ENOMEM, "'%s'", e->path);
	if (chunk_digests(fd, e->size, e->path, sums, err) < 0)
		return -1;
	if (!EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) ||
	    (chunks && !EVP_DigestUpdate(s->ctx, sums, chunks * VY_SUM_LEN)))
		return vy_error_set(err, EIO, "'%s': sha256 failed", e->path);
	return 0;
}

/* Entry e's file as it is on our disk now, as a patch's FILE_END hashes
 * it: the SHA-256 of its chunk digests, as hex. */
static int hash_on_disk(struct vy_tree_sink *s, const struct vy_entry *e, char hex[65],
			vy_error *err)
{
	cleanup_close int fd = vy_manifest_open_entry(s->rootfd, e->path, O_RDONLY, err);
	struct stat st;
	int rc = hash_chunks(s, fd, e, &st, err);
	if (rc == 0)
		hash_final_hex(s->ctx, hex);
	return rc;
}


int vy_tree_sink_new(int rootfd, const struct vy_manifest *m, uint32_t stream,
		     struct vy_tree_sink **out, vy_error *err)
{
	struct vy_tree_sink *s = calloc(1, sizeof(*s));
	if (!s)
		return vy_error_sys(err, ENOMEM, "tree sink");
	s->rootfd = rootfd;
	s->m = m;
	s->stream = stream;
	s->current = VY_NO_LINK;
	s->fd = -1;
	s->ended = calloc(m->count ? m->count : 1, 1);
	s->ctx = EVP_MD_CTX_new();
	if (!s->ended || !s->ctx) {
		vy_tree_sink_free(s);
		return vy_error_sys(err, ENOMEM, "tree sink");
	}
	*out = s;
	return 0;
}

/* The manifest entry a DATA or FILE_END names, if it may carry data now. */
static const struct vy_entry *sink_entry(struct vy_tree_sink *s,
					 uint32_t stream, uint32_t index,
					 const char *what, vy_error *err)
{
	if (stream != s->stream) {
		vy_error_set(err, EPROTO, "%s for stream %u on stream %u", what,
			     stream, s->stream);
		return NULL;
	}
	if (index >= s->m->count) {
		vy_error_set(err, EPROTO, "%s for unknown entry %u", what, index);
		return NULL;
	}
	const struct vy_entry *e = &s->m->entries[index];
	if (e->type != VY_ENTRY_REG) {
		vy_error_set(err, EPROTO, "%s for '%s', which is not a regular file",
			     what, e->path);
		return NULL;
	}
	if (e->link_of != VY_NO_LINK) {
		vy_error_set(err, EPROTO,
			     "%s for '%s', a second name of a hard link (its data goes to entry %u)",
			     what, e->path, e->link_of);
		return NULL;
	}
	if (s->ended[index]) {
		vy_error_set(err, EPROTO, "%s for '%s' after its FILE_END", what,
			     e->path);
		return NULL;
	}
	if (s->current != VY_NO_LINK && s->current != index) {
		vy_error_set(err, EPROTO, "%s for '%s' before '%s' was ended",
			     what, e->path, s->m->entries[s->current].path);
		return NULL;
	}
	if (s->current != index) {
		s->current = index;
		s->next_offset = 0;
		if (!EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL)) {
			vy_error_set(err, EIO, "sha256 init failed");
			return NULL;
		}
	}
	return e;
}

static int sink_open(struct vy_tree_sink *s, const struct vy_entry *e,
		     vy_error *err)
{
	s->fd = vy_manifest_open_entry(s->rootfd, e->path, O_WRONLY, err);
	if (s->fd < 0)
		return -1;
	struct stat st;
	if (fstat(s->fd, &st) < 0)
		return vy_error_sys(err, errno, "'%s': fstat", e->path);
	if (!S_ISREG(st.st_mode))
		return vy_error_set(err, EINVAL, "'%s' is not a regular file",
				    e->path);
	return 0;
}

static int sink_write(struct vy_tree_sink *s, const struct vy_entry *e,
		      const uint8_t *data, size_t len, uint64_t off,
		      vy_error *err)
{
	while (len > 0) {
		ssize_t n = pwrite(s->fd, data, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == ENOSPC || errno == EDQUOT))
			return vy_error_sys(err, errno,
					    "target disk is full: cannot write '%s' at offset %llu",
					    e->path, (unsigned long long)off);
		if (n <= 0)
			return vy_error_sys(err, n < 0 ? errno : EIO,
					    "'%s': write at offset %llu", e->path,
					    (unsigned long long)off);
		data += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int vy_tree_sink_data(struct vy_tree_sink *s, const struct vy_data_chunk *c,
		      vy_error *err)
{
	const struct vy_entry *e = sink_entry(s, c->stream, c->entry, "data", err);
	if (!e)
		return -1;
	if (c->len > e->size || c->offset > e->size - c->len)
		return vy_error_set(err, EPROTO,
				    "'%s': data at %llu+%zu past its size %llu",
				    e->path, (unsigned long long)c->offset, c->len,
				    (unsigned long long)e->size);
	if (c->offset < s->next_offset)
		return vy_error_set(err, EPROTO,
				    "'%s': data at %llu out of order (expected at least %llu)",
				    e->path, (unsigned long long)c->offset,
				    (unsigned long long)s->next_offset);
	if (s->fd < 0 && sink_open(s, e, err) < 0)
		return -1;
	/* a patch is hashed from our disk at its FILE_END */
	bool patch = s->patch && s->patch[c->entry];
	if (!patch && (hash_zeros(s->ctx, c->offset - s->next_offset) < 0 ||
		       !EVP_DigestUpdate(s->ctx, c->data, c->len)))
		return vy_error_set(err, EIO, "'%s': sha256 failed", e->path);
	if (sink_write(s, e, c->data, c->len, c->offset, err) < 0)
		return -1;
	s->next_offset = c->offset + c->len;
	s->bytes += c->len;
	return 0;
}

static bool json_get_u64(json_object *obj, const char *key, uint64_t *out)
{
	json_object *v;
	if (!json_object_object_get_ex(obj, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return false;
	int64_t n = json_object_get_int64(v);
	if (n < 0)
		return false;
	*out = (uint64_t)n;
	return true;
}

void vy_tree_sink_allow_skips(struct vy_tree_sink *s, uint8_t *skipped)
{
	s->skipped = skipped;
}

/* The sender gave up on a file of a live tree: what we wrote is void. */
static int sink_skip(struct vy_tree_sink *s, json_object *obj, vy_error *err)
{
	uint64_t stream, index;
	if (!s->skipped)
		return vy_error_set(err, EPROTO, "a file was skipped in a tree that must be whole");
	if (!json_get_u64(obj, "stream", &stream) || stream > UINT32_MAX ||
	    !json_get_u64(obj, "entry", &index) || index > UINT32_MAX)
		return vy_error_set(err, EPROTO, "malformed FILE_END");
	const struct vy_entry *e = sink_entry(s, (uint32_t)stream, (uint32_t)index, "FILE_END", err);
	if (!e)
		return -1;
	s->current = VY_NO_LINK;
	int fd = take_fd(s->fd);
	if (fd >= 0)
		close(fd);
	s->ended[index] = 1;
	s->skipped[index] = 1;
	return 0;
}

int vy_tree_sink_file_end(struct vy_tree_sink *s, json_object *obj,
			  vy_error *err)
{
	uint64_t stream, index, size;
	json_object *hv;
	if (json_object_get_boolean(json_object_object_get(obj, "skipped")))
		return sink_skip(s, obj, err);
	if (!json_get_u64(obj, "stream", &stream) || stream > UINT32_MAX ||
	    !json_get_u64(obj, "entry", &index) || index > UINT32_MAX ||
	    !json_get_u64(obj, "size", &size) ||
	    !json_object_object_get_ex(obj, "sha256", &hv) ||
	    !json_object_is_type(hv, json_type_string) ||
	    json_object_get_string_len(hv) != 64)
		return vy_error_set(err, EPROTO, "malformed FILE_END");
	const struct vy_entry *e =
		sink_entry(s, (uint32_t)stream, (uint32_t)index, "FILE_END", err);
	if (!e)
		return -1;
	if (size != e->size)
		return vy_error_set(err, EPROTO,
				    "'%s': FILE_END says %llu bytes, manifest %llu",
				    e->path, (unsigned long long)size,
				    (unsigned long long)e->size);
	bool patch = json_object_get_boolean(json_object_object_get(obj, "patch"));
	if (patch != (s->patch && s->patch[index]))
		return vy_error_set(err, EPROTO, "'%s': %s", e->path,
				    patch ? "a patch where the whole file was due"
					  : "the whole file where a patch was due");
	char hex[65];
	int fd = take_fd(s->fd);
	s->current = VY_NO_LINK; /* the hash is spent either way */
	if (patch) {
		/* closed first: an error there is the writes' */
		int rc = fd >= 0 && close(fd) < 0 ? vy_error_sys(err, errno, "'%s': close", e->path)
						  : hash_on_disk(s, e, hex, err);
		fd = -1;
		if (rc < 0)
			return -1;
	} else {
		if (hash_zeros(s->ctx, e->size - s->next_offset) < 0) {
			if (fd >= 0)
				close(fd);
			return vy_error_set(err, EIO, "'%s': sha256 failed", e->path);
		}
		hash_final_hex(s->ctx, hex);
	}
	const char *sent = json_object_get_string(hv);
	if (strcasecmp(sent, hex) != 0) {
		if (fd >= 0)
			close(fd);
		return vy_error_set(err, EIO,
				    "'%s': content hash mismatch: sender %s, written %s",
				    e->path, sent, hex);
	}
	if (fd >= 0 && close(fd) < 0)
		return vy_error_sys(err, errno, "'%s': close", e->path);
	s->ended[index] = 1;
	return 0;
}

int vy_tree_sink_finish(struct vy_tree_sink *s, vy_error *err)
{
	uint32_t missing = 0, first = VY_NO_LINK;
	for (uint32_t i = 0; i < s->m->count; i++) {
		if (entry_has_data(&s->m->entries[i]) && !s->ended[i]) {
			if (first == VY_NO_LINK)
				first = i;
			missing++;
		}
	}
	if (missing)
		return vy_error_set(err, EPROTO,
				    "tree %u incomplete: %u files never ended, first '%s'",
				    s->stream, missing, s->m->entries[first].path);
	if (vy_manifest_finish(s->m, s->rootfd, err) < 0)
		return vy_error_wrap(err, "tree %u", s->stream);
	return 0;
}

int vy_tree_sink_finish_some(struct vy_tree_sink *s, bool durable, uint32_t *files,
			     uint64_t *bytes, vy_error *err)
{
	const struct vy_manifest *m = s->m;
	cleanup_free uint8_t *wrote = calloc(m->count ? m->count : 1, 1);
	uint32_t n = 0;
	uint64_t b = 0;
	if (!wrote)
		return vy_error_sys(err, ENOMEM, "tree sink");
	for (uint32_t i = 0; i < m->count; i++) {
		if (!entry_has_data(&m->entries[i]) || (s->had && s->had[i]))
			continue;
		if (!s->ended[i])
			return vy_error_set(err, EPROTO, "tree %u incomplete: '%s' never ended",
					    s->stream, m->entries[i].path);
		if (s->skipped && s->skipped[i])
			continue;
		cleanup_close int fd = durable ? vy_manifest_open_entry(s->rootfd, m->entries[i].path,
									O_RDONLY, err) : -1;
		if (durable && (fd < 0 || fdatasync(fd) < 0))
			return fd < 0 ? -1 : vy_error_sys(err, errno, "'%s': fdatasync",
							  m->entries[i].path);
		wrote[i] = 1;
		n++;
		b += m->entries[i].size;
	}
	if (vy_manifest_finish_some(m, s->rootfd, wrote, err) < 0)
		return vy_error_wrap(err, "tree %u", s->stream);
	if (files)
		*files = n;
	if (bytes)
		*bytes = b;
	return 0;
}

void vy_tree_sink_have(struct vy_tree_sink *s, const uint8_t *have)
{
	s->had = have;
	for (uint32_t i = 0; i < s->m->count; i++)
		if (have[i])
			s->ended[i] = 1;
}

uint64_t vy_tree_sink_bytes(const struct vy_tree_sink *s)
{
	return s->bytes;
}

void vy_tree_sink_free(struct vy_tree_sink *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	EVP_MD_CTX_free(s->ctx);
	free(s->ended);
	free(s);
}
