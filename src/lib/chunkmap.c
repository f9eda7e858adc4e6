/* chunkmap.c - voyager-fs's persistent chunk bitmaps (see chunkmap.h).
 *
 * The whole state file is kept in memory as one image, in its on-disk
 * layout; each tracked file's record is a fixed slice of it.  Marking a
 * chunk flips a bit in the image and queues the record; a flush writes the
 * queued records back in place and fdatasyncs.  Bits only ever go from 0
 * to 1, so a torn write of a record can at worst lose fresh bits; the
 * remote size, which does shrink, is made durable before the caller acts
 * on it.  One mutex guards everything: the callers are FUSE worker threads,
 * the fetch lanes and the flusher.
 */
#include "chunkmap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"
#include "wire.h"

#define REC_HDR_LEN 24

struct cm_file {
	uint32_t entry;
	uint64_t size;     /* manifest size */
	uint64_t nchunks;  /* chunks of the manifest size */
	uint64_t present;  /* present chunks below the remote size */
	size_t rec_off;    /* record's offset in the image */
	bool dirty;
};

struct cm_ino {
	uint64_t ino;
	uint32_t f1;           /* file number + 1; 0: an empty slot */
};

struct vy_chunkmap {
	pthread_mutex_t lock;
	int fd;
	uint32_t chunk_size;
	uint32_t count;
	struct cm_file *files;
	struct cm_ino *by_ino; /* hash table by ino, ino_mask + 1 slots */
	size_t ino_mask;
	uint8_t *image;
	size_t image_len;
	uint32_t *dirty;       /* queued file numbers */
	uint32_t ndirty;
	bool moved;            /* a rebase renumbered records: write it whole */
};

static void queue(struct vy_chunkmap *cm, uint32_t f);
static int flush_records(struct vy_chunkmap *cm, vy_error *err);

static bool tracked(const struct vy_entry *e)
{
	return e->type == VY_ENTRY_REG && e->link_of == VY_NO_LINK && e->size > 0;
}

static uint64_t chunks_of(uint64_t size, uint32_t cs)
{
	return size / cs + (size % cs != 0);
}

static size_t bitmap_len(uint64_t nchunks)
{
	return (size_t)((nchunks + 63) / 64 * 8);
}

static uint8_t *rec(const struct vy_chunkmap *cm, uint32_t f)
{
	return cm->image + cm->files[f].rec_off;
}

static uint64_t rec_ino(const struct vy_chunkmap *cm, uint32_t f)
{
	return vy_get_u64(rec(cm, f) + 8);
}

static uint64_t rec_remote(const struct vy_chunkmap *cm, uint32_t f)
{
	return vy_get_u64(rec(cm, f) + 16);
}

static bool bit(const struct vy_chunkmap *cm, uint32_t f, uint64_t c)
{
	const uint8_t *b = rec(cm, f) + REC_HDR_LEN;
	return b[c / 8] & (1u << (c % 8));
}

static uint64_t need_chunks(const struct vy_chunkmap *cm, uint32_t f)
{
	return chunks_of(rec_remote(cm, f), cm->chunk_size);
}

static void count_present(struct vy_chunkmap *cm, uint32_t f)
{
	uint64_t need = need_chunks(cm, f), n = 0;
	for (uint64_t c = 0; c < need; c++)
		n += bit(cm, f, c);
	cm->files[f].present = n;
}

/* Open addressing, at most half full: built in one pass (no sort; this
 * runs while the container waits to restore). */
static size_t ino_slot(const struct vy_chunkmap *cm, uint64_t ino)
{
	uint64_t h = ino * 0x9e3779b97f4a7c15ull;
	return (size_t)(h ^ (h >> 29)) & cm->ino_mask;
}

/* Lay out the files and the image for m; the image is zeroed. */
static int layout(struct vy_chunkmap *cm, const struct vy_manifest *m,
		  uint32_t chunk_size, vy_error *err)
{
	if (chunk_size < VY_CHUNK_SIZE_MIN || chunk_size > VY_CHUNK_SIZE_MAX ||
	    chunk_size % 4096)
		return vy_error_set(err, EINVAL, "chunk size %u is not a multiple "
						 "of 4096 in %u..%u",
				   chunk_size, VY_CHUNK_SIZE_MIN, VY_CHUNK_SIZE_MAX);
	cm->chunk_size = chunk_size;
	for (uint32_t i = 0; i < m->count; i++)
		cm->count += tracked(&m->entries[i]);
	cm->files = calloc(cm->count ? cm->count : 1, sizeof(*cm->files));
	cm->dirty = calloc(cm->count ? cm->count : 1, sizeof(*cm->dirty));
	if (!cm->files || !cm->dirty)
		return vy_error_set(err, ENOMEM, "out of memory");
	size_t off = VY_CHUNKMAP_HDR_LEN;
	for (uint32_t i = 0, f = 0; i < m->count; i++) {
		const struct vy_entry *e = &m->entries[i];
		if (!tracked(e))
			continue;
		struct cm_file *cf = &cm->files[f++];
		cf->entry = i;
		cf->size = e->size;
		cf->nchunks = chunks_of(e->size, chunk_size);
		cf->rec_off = off;
		if (cf->nchunks > UINT32_MAX)
			return vy_error_set(err, EFBIG, "%s: too many chunks", e->path);
		off += REC_HDR_LEN + bitmap_len(cf->nchunks);
	}
	cm->image_len = off;
	cm->image = calloc(1, off);
	if (!cm->image)
		return vy_error_set(err, ENOMEM, "out of memory (%zu bytes of "
						 "chunk state)", off);
	return 0;
}

/* Point slot of ino at record f (a dropped record's slot may be taken
 * over: its inode number can come back as another record's). */
static void index_one(struct vy_chunkmap *cm, uint64_t ino, uint32_t f)
{
	size_t k = ino_slot(cm, ino);
	while (cm->by_ino[k].f1 && cm->by_ino[k].ino != ino)
		k = (k + 1) & cm->ino_mask;
	cm->by_ino[k] = (struct cm_ino){ ino, f + 1 };
}

static int index_inos(struct vy_chunkmap *cm)
{
	size_t slots = 16;
	while (slots < (size_t)cm->count * 2)
		slots <<= 1;
	if (slots != cm->ino_mask + 1 || !cm->by_ino) {
		struct cm_ino *t = calloc(slots, sizeof(*t));
		if (!t)
			return -1;
		free(cm->by_ino);
		cm->by_ino = t;
		cm->ino_mask = slots - 1;
	} else {
		memset(cm->by_ino, 0, slots * sizeof(*cm->by_ino));
	}
	for (uint32_t f = 0; f < cm->count; f++) {
		uint64_t ino = rec_ino(cm, f);
		if (ino) /* 0: dropped */
			index_one(cm, ino, f);
		count_present(cm, f);
	}
	return 0;
}

static struct vy_chunkmap *chunkmap_new(void)
{
	struct vy_chunkmap *cm = calloc(1, sizeof(*cm));
	if (cm) {
		pthread_mutex_init(&cm->lock, NULL);
		cm->fd = -1;
	}
	return cm;
}

static void chunkmap_free(struct vy_chunkmap *cm)
{
	if (!cm)
		return;
	if (cm->fd >= 0)
		close(cm->fd);
	pthread_mutex_destroy(&cm->lock);
	free(cm->files);
	free(cm->by_ino);
	free(cm->dirty);
	free(cm->image);
	free(cm);
}

static void chunkmap_freep(struct vy_chunkmap **cm)
{
	chunkmap_free(*cm);
}
#define cleanup_chunkmap __attribute__((cleanup(chunkmap_freep)))

static int open_state(struct vy_chunkmap *cm, const char *path, vy_error *err)
{
	cm->fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (cm->fd < 0)
		return vy_error_sys(err, errno, "open %s", path);
	return 0;
}

int vy_chunkmap_prepare(const struct vy_manifest *m, uint32_t chunk_size,
			const uint64_t *inos, struct vy_chunkmap **out, vy_error *err)
{
	cleanup_chunkmap struct vy_chunkmap *cm = chunkmap_new();
	if (!cm)
		return vy_error_set(err, ENOMEM, "out of memory");
	if (layout(cm, m, chunk_size, err) < 0)
		return vy_error_wrap(err, "chunk state");
	vy_put_u32(cm->image, VY_CHUNKMAP_MAGIC);
	vy_put_u32(cm->image + 4, VY_CHUNKMAP_VERSION);
	vy_put_u32(cm->image + 8, chunk_size);
	for (uint32_t f = 0; f < cm->count; f++) {
		uint8_t *r = rec(cm, f);
		vy_put_u32(r, cm->files[f].entry);
		vy_put_u32(r + 4, (uint32_t)cm->files[f].nchunks);
		vy_put_u64(r + 8, inos[cm->files[f].entry]);
		vy_put_u64(r + 16, cm->files[f].size);
	}
	if (index_inos(cm) < 0)
		return vy_error_set(err, ENOMEM, "out of memory");
	*out = take_ptr(cm);
	return 0;
}

/* Make record f a dropped one: no file, nothing to fetch. */
static void drop_record(struct vy_chunkmap *cm, uint32_t f)
{
	uint8_t *r = rec(cm, f);
	cm->files[f].entry = 0;
	cm->files[f].size = 0;
	cm->files[f].present = 0;
	vy_put_u32(r, 0);
	vy_put_u64(r + 8, 0);
	vy_put_u64(r + 16, 0);
}

int vy_chunkmap_rebase(struct vy_chunkmap *cm, const struct vy_manifest *m,
		       const uint32_t *map, uint32_t base_count, const uint64_t *inos,
		       vy_error *err)
{
	cleanup_free uint8_t *covered = calloc(m->count ? m->count : 1, 1);
	if (!covered)
		return vy_error_set(err, ENOMEM, "out of memory");
	for (uint32_t f = 0; f < cm->count; f++) {
		uint32_t e = cm->files[f].entry, to = e < base_count ? map[e] : UINT32_MAX;
		bool keep = to < m->count && tracked(&m->entries[to]) && !covered[to] &&
			    m->entries[to].size == cm->files[f].size && inos[to] == rec_ino(cm, f);
		if (!keep) {
			drop_record(cm, f);
			queue(cm, f);
			continue;
		}
		if (to != e) {
			cm->files[f].entry = to;
			vy_put_u32(rec(cm, f), to);
			cm->moved = true;
		}
		covered[to] = 1;
	}
	uint32_t add = 0;
	size_t more = 0;
	for (uint32_t i = 0; i < m->count; i++)
		if (tracked(&m->entries[i]) && !covered[i]) {
			if (chunks_of(m->entries[i].size, cm->chunk_size) > UINT32_MAX)
				return vy_error_set(err, EFBIG, "%s: too many chunks",
						    m->entries[i].path);
			add++;
			more += REC_HDR_LEN + bitmap_len(chunks_of(m->entries[i].size,
								   cm->chunk_size));
		}
	if (!add)
		return 0;
	if ((uint64_t)cm->count + add > UINT32_MAX)
		return vy_error_set(err, EFBIG, "too many files");
	uint32_t count = cm->count + add;
	struct cm_file *files = realloc(cm->files, count * sizeof(*files));
	if (files)
		cm->files = files;
	uint32_t *dirty = realloc(cm->dirty, count * sizeof(*dirty));
	if (dirty)
		cm->dirty = dirty;
	uint8_t *image = realloc(cm->image, cm->image_len + more);
	if (image)
		cm->image = image;
	if (!files || !dirty || !image)
		return vy_error_set(err, ENOMEM, "out of memory");
	memset(cm->image + cm->image_len, 0, more);
	size_t off = cm->image_len;
	for (uint32_t i = 0, f = cm->count; i < m->count; i++) {
		const struct vy_entry *e = &m->entries[i];
		if (!tracked(e) || covered[i])
			continue;
		struct cm_file *cf = &cm->files[f];
		*cf = (struct cm_file){ .entry = i, .size = e->size,
					.nchunks = chunks_of(e->size, cm->chunk_size),
					.rec_off = off };
		off += REC_HDR_LEN + bitmap_len(cf->nchunks);
		uint8_t *r = rec(cm, f);
		vy_put_u32(r, i);
		vy_put_u32(r + 4, (uint32_t)cf->nchunks);
		vy_put_u64(r + 8, inos[i]);
		vy_put_u64(r + 16, e->size);
		f++;
	}
	uint32_t first = cm->count;
	cm->count = count;
	for (uint32_t f = first; f < count; f++)
		queue(cm, f);
	cm->image_len = off;
	if ((size_t)count * 2 > cm->ino_mask + 1)
		return index_inos(cm) < 0 ? vy_error_set(err, ENOMEM, "out of memory") : 0;
	for (uint32_t f = first; f < count; f++)
		if (rec_ino(cm, f))
			index_one(cm, rec_ino(cm, f), f);
	return 0;
}

int vy_chunkmap_commit(struct vy_chunkmap *cm, const char *path,
		       const uint8_t manifest_sha256[32], vy_error *err)
{
	vy_put_u32(cm->image + 12, cm->count);
	memcpy(cm->image + 16, manifest_sha256, 32);
	if (cm->fd >= 0 && !cm->moved) {
		/* Written before, then rebased without renumbering: only the
		 * records that changed, then the header, then one sync.  Torn,
		 * it is refused at load (another manifest's); it only can be
		 * before the migration committed. */
		int rc = flush_records(cm, err);
		if (rc == 0 && pwrite(cm->fd, cm->image, VY_CHUNKMAP_HDR_LEN, 0) !=
				       VY_CHUNKMAP_HDR_LEN)
			rc = vy_error_sys(err, errno, "write chunk state");
		if (rc == 0 && fdatasync(cm->fd) < 0)
			rc = vy_error_sys(err, errno, "fdatasync chunk state");
		return rc;
	}
	if (cm->fd >= 0)
		close(cm->fd);
	cm->fd = -1;
	cm->moved = false;
	for (uint32_t i = 0; i < cm->ndirty; i++)
		cm->files[cm->dirty[i]].dirty = false;
	cm->ndirty = 0;
	if (vy_write_file_atomic(path, cm->image, cm->image_len, 0600, err) < 0 ||
	    open_state(cm, path, err) < 0)
		return vy_error_wrap(err, "create chunk state");
	return 0;
}

int vy_chunkmap_create(const char *path, const struct vy_manifest *m,
		       const uint8_t manifest_sha256[32], uint32_t chunk_size,
		       const uint64_t *inos, struct vy_chunkmap **out,
		       vy_error *err)
{
	cleanup_chunkmap struct vy_chunkmap *cm = NULL;
	if (vy_chunkmap_prepare(m, chunk_size, inos, &cm, err) < 0 ||
	    vy_chunkmap_commit(cm, path, manifest_sha256, err) < 0)
		return vy_error_wrap(err, "chunk state %s", path);
	*out = take_ptr(cm);
	return 0;
}

/* Read the records of a loaded image against m: every tracked file of m
 * has exactly one record, live or dropped (inode 0); a record of anything
 * else is a dropped one. */
static int parse_image(struct vy_chunkmap *cm, const struct vy_manifest *m,
		       const uint8_t manifest_sha256[32], vy_error *err)
{
	const uint8_t *h = cm->image;
	if (cm->image_len < VY_CHUNKMAP_HDR_LEN || vy_get_u32(h) != VY_CHUNKMAP_MAGIC ||
	    vy_get_u32(h + 4) != VY_CHUNKMAP_VERSION)
		return vy_error_set(err, EINVAL, "not a version %d chunk state file",
				   VY_CHUNKMAP_VERSION);
	if (vy_get_u32(h + 8) != cm->chunk_size)
		return vy_error_set(err, EINVAL, "made with chunk size %u, not %u",
				   vy_get_u32(h + 8), cm->chunk_size);
	if (memcmp(h + 16, manifest_sha256, 32))
		return vy_error_set(err, EINVAL, "made for another manifest");
	uint32_t count = vy_get_u32(h + 12);
	if (count > (cm->image_len - VY_CHUNKMAP_HDR_LEN) / REC_HDR_LEN)
		return vy_error_set(err, EINVAL, "record count %u is damaged", count);
	cm->files = calloc(count ? count : 1, sizeof(*cm->files));
	cm->dirty = calloc(count ? count : 1, sizeof(*cm->dirty));
	cleanup_free uint8_t *seen = calloc(m->count ? m->count : 1, 1);
	if (!cm->files || !cm->dirty || !seen)
		return vy_error_set(err, ENOMEM, "out of memory");
	size_t off = VY_CHUNKMAP_HDR_LEN;
	for (uint32_t f = 0; f < count; f++) {
		if (cm->image_len - off < REC_HDR_LEN)
			return vy_error_set(err, EINVAL, "record %u is damaged (truncated)", f);
		const uint8_t *r = cm->image + off;
		uint32_t entry = vy_get_u32(r), nchunks = vy_get_u32(r + 4);
		uint64_t ino = vy_get_u64(r + 8), remote = vy_get_u64(r + 16);
		size_t blen = bitmap_len(nchunks);
		if (entry >= m->count || cm->image_len - off - REC_HDR_LEN < blen)
			return vy_error_set(err, EINVAL, "record %u is damaged", f);
		const struct vy_entry *e = &m->entries[entry];
		uint64_t size = 0;
		if (tracked(e)) {
			if (seen[entry] || nchunks != chunks_of(e->size, cm->chunk_size))
				return vy_error_set(err, EINVAL, "record %u is damaged", f);
			seen[entry] = 1;
			size = e->size;
			if (remote > size)
				return vy_error_set(err, EINVAL, "record %u: remote size %" PRIu64
						       " exceeds the file's %" PRIu64, f, remote, size);
		} else if (ino || remote) {
			return vy_error_set(err, EINVAL, "record %u is damaged (not a file)", f);
		}
		cm->files[f] = (struct cm_file){ .entry = entry, .size = size,
						 .nchunks = nchunks, .rec_off = off };
		off += REC_HDR_LEN + blen;
	}
	if (off != cm->image_len)
		return vy_error_set(err, EINVAL, "%zu bytes after the last record",
				   cm->image_len - off);
	cm->count = count;
	for (uint32_t i = 0; i < m->count; i++)
		if (tracked(&m->entries[i]) && !seen[i])
			return vy_error_set(err, EINVAL, "made for another manifest (no record "
					   "for entry %u)", i);
	return 0;
}

int vy_chunkmap_load(const char *path, const struct vy_manifest *m,
		     const uint8_t manifest_sha256[32], uint32_t chunk_size,
		     struct vy_chunkmap **out, vy_error *err)
{
	cleanup_chunkmap struct vy_chunkmap *cm = chunkmap_new();
	if (!cm)
		return vy_error_set(err, ENOMEM, "out of memory");
	if (chunk_size < VY_CHUNK_SIZE_MIN || chunk_size > VY_CHUNK_SIZE_MAX || chunk_size % 4096)
		return vy_error_set(err, EINVAL, "chunk state %s: chunk size %u is not a "
				   "multiple of 4096 in %u..%u", path, chunk_size,
				   VY_CHUNK_SIZE_MIN, VY_CHUNK_SIZE_MAX);
	cm->chunk_size = chunk_size;
	if (open_state(cm, path, err) < 0)
		return vy_error_wrap(err, "chunk state %s", path);
	struct stat st;
	if (fstat(cm->fd, &st) < 0)
		return vy_error_sys(err, errno, "stat %s", path);
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)1 << 40)
		return vy_error_set(err, EINVAL, "chunk state %s: not a state file", path);
	cm->image_len = (size_t)st.st_size;
	cm->image = malloc(cm->image_len ? cm->image_len : 1);
	if (!cm->image)
		return vy_error_set(err, ENOMEM, "out of memory");
	size_t done = 0;
	while (done < cm->image_len) {
		ssize_t n = pread(cm->fd, cm->image + done, cm->image_len - done,
				  (off_t)done);
		if (n <= 0)
			return vy_error_sys(err, n < 0 ? errno : EIO, "read %s", path);
		done += (size_t)n;
	}
	if (parse_image(cm, m, manifest_sha256, err) < 0)
		return vy_error_wrap(err, "chunk state %s", path);
	if (index_inos(cm) < 0)
		return vy_error_set(err, ENOMEM, "out of memory");
	*out = take_ptr(cm);
	return 0;
}

/* Write the queued records (no sync). */
static int flush_records(struct vy_chunkmap *cm, vy_error *err)
{
	for (uint32_t i = 0; i < cm->ndirty; i++) {
		const struct cm_file *cf = &cm->files[cm->dirty[i]];
		size_t len = REC_HDR_LEN + bitmap_len(cf->nchunks);
		ssize_t n = pwrite(cm->fd, cm->image + cf->rec_off, len,
				   (off_t)cf->rec_off);
		if (n != (ssize_t)len)
			return vy_error_sys(err, n < 0 ? errno : EIO,
					    "write chunk state");
	}
	for (uint32_t i = 0; i < cm->ndirty; i++)
		cm->files[cm->dirty[i]].dirty = false;
	cm->ndirty = 0;
	return 0;
}

static int flush_locked(struct vy_chunkmap *cm, vy_error *err)
{
	if (!cm->ndirty)
		return 0;
	/* Records that fail to reach the disk stay queued (flush_records
	 * forgets them only once written), and are written again next time. */
	uint32_t n = cm->ndirty;
	if (flush_records(cm, err) < 0)
		return -1;
	if (fdatasync(cm->fd) < 0) {
		vy_error_sys(err, errno, "fdatasync chunk state");
		/* not known to be durable: queue them again */
		for (uint32_t i = 0; i < n; i++)
			queue(cm, cm->dirty[i]);
		return -1;
	}
	return 0;
}

int vy_chunkmap_flush(struct vy_chunkmap *cm, vy_error *err)
{
	pthread_mutex_lock(&cm->lock);
	int rc = flush_locked(cm, err);
	pthread_mutex_unlock(&cm->lock);
	return rc;
}

int vy_chunkmap_close(struct vy_chunkmap *cm, vy_error *err)
{
	if (!cm)
		return 0;
	int rc = vy_chunkmap_flush(cm, err);
	chunkmap_free(cm);
	return rc;
}

static void queue(struct vy_chunkmap *cm, uint32_t f)
{
	if (!cm->files[f].dirty) {
		cm->files[f].dirty = true;
		cm->dirty[cm->ndirty++] = f;
	}
}

void vy_chunkmap_mark(struct vy_chunkmap *cm, uint32_t f, uint64_t first,
		      uint64_t n)
{
	pthread_mutex_lock(&cm->lock);
	uint64_t need = need_chunks(cm, f);
	uint8_t *b = rec(cm, f) + REC_HDR_LEN;
	for (uint64_t c = first; c < first + n && c < cm->files[f].nchunks; c++) {
		if (b[c / 8] & (1u << (c % 8)))
			continue;
		b[c / 8] |= (uint8_t)(1u << (c % 8));
		cm->files[f].present += c < need;
		queue(cm, f);
	}
	pthread_mutex_unlock(&cm->lock);
}

static int set_remote(struct vy_chunkmap *cm, uint32_t f, uint64_t size,
		      bool drop, vy_error *err)
{
	pthread_mutex_lock(&cm->lock);
	if (size < rec_remote(cm, f) || drop) {
		vy_put_u64(rec(cm, f) + 16, size < rec_remote(cm, f) ? size : rec_remote(cm, f));
		if (drop)
			vy_put_u64(rec(cm, f) + 8, 0);
		count_present(cm, f);
		queue(cm, f);
	}
	int rc = flush_locked(cm, err);
	pthread_mutex_unlock(&cm->lock);
	return rc;
}

int vy_chunkmap_shrink(struct vy_chunkmap *cm, uint32_t f, uint64_t size,
		       vy_error *err)
{
	return set_remote(cm, f, size, false, err);
}

int vy_chunkmap_drop(struct vy_chunkmap *cm, uint32_t f, vy_error *err)
{
	return set_remote(cm, f, 0, true, err);
}

uint32_t vy_chunkmap_chunk_size(const struct vy_chunkmap *cm)
{
	return cm->chunk_size;
}

uint32_t vy_chunkmap_count(const struct vy_chunkmap *cm)
{
	return cm->count;
}

uint32_t vy_chunkmap_entry(const struct vy_chunkmap *cm, uint32_t f)
{
	return cm->files[f].entry;
}

uint64_t vy_chunkmap_size(const struct vy_chunkmap *cm, uint32_t f)
{
	return cm->files[f].size;
}

#define LOCKED(cm, type, expr)                                              \
	({                                                                  \
		pthread_mutex_lock((pthread_mutex_t *)&(cm)->lock);         \
		type _v_ = (expr);                                          \
		pthread_mutex_unlock((pthread_mutex_t *)&(cm)->lock);       \
		_v_;                                                        \
	})

uint64_t vy_chunkmap_remote_size(const struct vy_chunkmap *cm, uint32_t f)
{
	return LOCKED(cm, uint64_t, rec_remote(cm, f));
}

uint64_t vy_chunkmap_ino(const struct vy_chunkmap *cm, uint32_t f)
{
	return LOCKED(cm, uint64_t, rec_ino(cm, f));
}

int64_t vy_chunkmap_find_ino(const struct vy_chunkmap *cm, uint64_t ino)
{
	if (ino == 0)
		return -1;
	pthread_mutex_lock((pthread_mutex_t *)&cm->lock);
	size_t k = ino_slot(cm, ino);
	while (cm->by_ino[k].f1 && cm->by_ino[k].ino != ino)
		k = (k + 1) & cm->ino_mask;
	uint32_t f1 = cm->by_ino[k].f1;
	/* A dropped record keeps its place in the index with inode 0 on
	 * disk; the index entry is stale then and must not match. */
	int64_t f = f1 && rec_ino(cm, f1 - 1) == ino ? (int64_t)f1 - 1 : -1;
	pthread_mutex_unlock((pthread_mutex_t *)&cm->lock);
	return f;
}

bool vy_chunkmap_present(const struct vy_chunkmap *cm, uint32_t f,
			 uint64_t chunk)
{
	return LOCKED(cm, bool, chunk >= need_chunks(cm, f) || bit(cm, f, chunk));
}

bool vy_chunkmap_complete(const struct vy_chunkmap *cm, uint32_t f)
{
	return LOCKED(cm, bool, cm->files[f].present == need_chunks(cm, f));
}

bool vy_chunkmap_range_present(const struct vy_chunkmap *cm, uint32_t f,
			       uint64_t off, uint64_t len,
			       uint64_t *first_missing)
{
	if (len == 0)
		return true;
	pthread_mutex_lock((pthread_mutex_t *)&cm->lock);
	uint64_t need = need_chunks(cm, f);
	uint64_t last = (off + len - 1) / cm->chunk_size;
	bool ok = true;
	for (uint64_t c = off / cm->chunk_size; c <= last && c < need; c++) {
		if (!bit(cm, f, c)) {
			*first_missing = c;
			ok = false;
			break;
		}
	}
	pthread_mutex_unlock((pthread_mutex_t *)&cm->lock);
	return ok;
}

uint64_t vy_chunkmap_next_missing(const struct vy_chunkmap *cm, uint32_t f,
				  uint64_t from)
{
	pthread_mutex_lock((pthread_mutex_t *)&cm->lock);
	uint64_t need = need_chunks(cm, f), found = UINT64_MAX;
	if (cm->files[f].present < need)
		for (uint64_t c = from; c < need; c++)
			if (!bit(cm, f, c)) {
				found = c;
				break;
			}
	pthread_mutex_unlock((pthread_mutex_t *)&cm->lock);
	return found;
}

void vy_chunkmap_stats(const struct vy_chunkmap *cm,
		       struct vy_chunkmap_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock((pthread_mutex_t *)&cm->lock);
	for (uint32_t f = 0; f < cm->count; f++) {
		uint64_t remote = rec_remote(cm, f), need = need_chunks(cm, f);
		if (remote == 0)
			continue;
		out->files_total++;
		out->chunks_total += need;
		out->chunks_present += cm->files[f].present;
		out->bytes_total += remote;
		out->files_complete += cm->files[f].present == need;
		uint64_t bytes = cm->files[f].present * cm->chunk_size;
		/* The last chunk may be short. */
		if (need && bit(cm, f, need - 1))
			bytes -= need * cm->chunk_size - remote;
		out->bytes_present += bytes;
	}
	pthread_mutex_unlock((pthread_mutex_t *)&cm->lock);
}
