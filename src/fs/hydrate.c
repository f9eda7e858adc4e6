/* hydrate.c - voyager-fs's fetch lanes, the state flusher and the status.
 *
 * Two lanes, each with its own authenticated channel to the source:
 *   - demand: FUSE worker threads that need chunks now take the lane in
 *     turn, fetch exactly what they need plus a little read-ahead, and
 *     wait at most --fetch-timeout for a source that is away;
 *   - background: threads (VYFS_BG_LANES) pull every missing chunk,
 *     files that are open first (they are marked hot), then the priority
 *     list, then manifest order, VY_FETCH_MAX bytes per request, and
 *     reconnect on their own when the source comes back.  Small files
 *     (one chunk) go in batches: up to BATCH_FILES requests sent at once
 *     and answered in order, and their bytes made durable together.
 * Neither lane ever waits for the other: they share only the per-file lock,
 * held while fetched bytes are written (never across the network).
 *
 * Commit order, which is what makes the state crash-safe: write the
 * chunk's bytes, fdatasync the backing file, then set the chunk's bit; the
 * flusher writes bits to the state file later.  A batch writes every
 * file and starts its writeback first, then fdatasyncs and marks each:
 * the fdatasyncs go from SYNC_THREADS threads at once, and ext4 commits
 * its journal once for many of them (one at a time, each waited for a
 * journal commit of its own, which is where the time went).  A chunk that was present
 * (or that a local write covered) is never written again by a fetch.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chunkserve.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"
#include "vyfs.h"

#define FLUSH_INTERVAL_MS 200
#define RETRY_MS 200
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 3000
#define BATCH_FILES 64       /* small files fetched together */
#define SYNC_THREADS 8       /* a batch's fdatasyncs at once: ext4 commits them together */
#define BATCH_WINDOW 1024    /* records looked at to gather them */

void vyfs_wake_background(struct vyfs *fs)
{
	pthread_mutex_lock(&fs->wake_lock);
	pthread_cond_broadcast(&fs->wake);
	pthread_mutex_unlock(&fs->wake_lock);
}

static void nap(struct vyfs *fs, int ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&fs->wake_lock);
	if (!atomic_load(&fs->stopping))
		pthread_cond_timedwait(&fs->wake, &fs->wake_lock, &ts);
	pthread_mutex_unlock(&fs->wake_lock);
}

int vyfs_track_fd(struct vyfs *fs, uint32_t f)
{
	struct vyfs_track *t = &fs->tracks[f];
	if (t->data_fd < 0 && vyfs_resolve_track(fs, f) == 0)
		t->data_fd = open_by_handle_at(fs->backing_dir_fd, t->handle,
					       O_RDWR | O_CLOEXEC);
	return t->data_fd;
}

/* Write what is still missing of a fetched range, make it durable, mark it.
 * Caller holds no lock. */
static int commit(struct vyfs *fs, uint32_t f, uint64_t off, uint32_t len,
		  const uint8_t *buf, vy_error *err)
{
	struct vyfs_track *t = &fs->tracks[f];
	uint64_t cs = fs->chunk_size, first = off / cs;
	uint64_t last = (off + len - 1) / cs, done = 0;
	pthread_mutex_lock(&t->lock);
	uint64_t remote = vy_chunkmap_remote_size(fs->cm, f);
	int fd = remote ? vyfs_track_fd(fs, f) : -1;
	int rc = remote && fd < 0 ? vy_error_sys(err, errno, "reopen the backing file") : 0;
	uint64_t marks[VY_FETCH_MAX / VY_CHUNK_SIZE_MIN];
	/* Landing bytes is not a change the container made: the file keeps
	 * its times. */
	struct stat before;
	bool keep_times = rc == 0 && fd >= 0 && fstat(fd, &before) == 0;
	for (uint64_t c = first; rc == 0 && c <= last; c++) {
		uint64_t start = c * cs, end = start + cs;
		if (start >= remote || vy_chunkmap_present(fs->cm, f, c))
			continue;
		end = end < off + len ? end : off + len;
		end = end < remote ? end : remote;
		ssize_t n = pwrite(fd, buf + (start - off), end - start, (off_t)start);
		if (n != (ssize_t)(end - start))
			rc = vy_error_sys(err, n < 0 ? errno : EIO, "write fetched bytes");
		marks[done++] = c;
	}
	if (rc == 0 && done && keep_times) {
		struct timespec tv[2] = { before.st_atim, before.st_mtim };
		if (futimens(fd, tv) < 0)
			rc = vy_error_sys(err, errno, "keep the times of the backing file");
	}
	if (rc == 0 && done && fdatasync(fd) < 0)
		rc = vy_error_sys(err, errno, "fdatasync fetched bytes");
	for (uint64_t i = 0; rc == 0 && i < done; i++)
		vy_chunkmap_mark(fs->cm, f, marks[i], 1);
	if (rc == 0 && t->data_fd >= 0 && vy_chunkmap_complete(fs->cm, f)) {
		close(t->data_fd);
		t->data_fd = -1;
	}
	pthread_mutex_unlock(&t->lock);
	if (rc < 0)
		return vy_error_wrap(err, "%s", fs->man.entries[vy_chunkmap_entry(fs->cm, f)].path);
	return 0;
}

/* Connect a lane.  An agent serves many trees: name ours first. */
static int open_lane(struct vyfs *fs, struct vyfs_lane *lane, int connect_ms,
		     vy_error *err)
{
	if (vy_channel_connect(fs->source, fs->key, connect_ms, &lane->ch, err) < 0)
		return -1;
	if (!fs->migration)
		return 0;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "migration", json_object_new_string(fs->migration));
	json_object_object_add(o, "stream", json_object_new_int64(fs->stream));
	struct vy_message msg = { 0 };
	int rc = vy_channel_set_timeout(lane->ch, 30000, err);
	if (rc == 0)
		rc = vy_channel_send_json(lane->ch, VY_MSG_FETCH_OPEN, o, err);
	if (rc == 0)
		rc = vy_channel_expect(lane->ch, VY_MSG_ACK, &msg, err);
	vy_message_free(&msg);
	json_object_put(o);
	if (rc < 0) {
		vy_channel_close(lane->ch);
		lane->ch = NULL;
	}
	return rc;
}

/* Fetch chunks [first, first+n) of f on lane (held by the caller). */
static int lane_fetch(struct vyfs *fs, struct vyfs_lane *lane, uint32_t f,
		      uint64_t first, uint64_t n, int connect_ms, vy_error *err)
{
	uint64_t size = vy_chunkmap_size(fs->cm, f), off = first * fs->chunk_size;
	uint64_t len = n * fs->chunk_size;
	if (len > size - off)
		len = size - off;
	struct vy_fetch_req req = { fs->stream, vy_chunkmap_entry(fs->cm, f), off,
				    (uint32_t)len };
	if (!lane->ch && open_lane(fs, lane, connect_ms, err) < 0)
		return vy_error_wrap(err, "%s lane", lane->name);
	if (vy_channel_set_timeout(lane->ch, 30000, err) < 0 ||
	    vy_chunk_fetch(lane->ch, &req, lane->buf, err) < 0) {
		/* The stream may be out of step: start afresh next time. */
		vy_channel_close(lane->ch);
		lane->ch = NULL;
		return vy_error_wrap(err, "%s lane", lane->name);
	}
	return commit(fs, f, off, (uint32_t)len, lane->buf, err);
}

/* Missing chunks from c on, contiguous, at most max of them, below until. */
static uint64_t missing_run(struct vyfs *fs, uint32_t f, uint64_t c,
			    uint64_t until, uint64_t max)
{
	uint64_t n = 0;
	while (n < max && c + n < until && !vy_chunkmap_present(fs->cm, f, c + n))
		n++;
	return n;
}

static uint64_t max_chunks(const struct vyfs *fs)
{
	return VY_FETCH_MAX / fs->chunk_size;
}

static uint64_t remote_chunks(struct vyfs *fs, uint32_t f)
{
	uint64_t r = vy_chunkmap_remote_size(fs->cm, f);
	return r / fs->chunk_size + (r % fs->chunk_size != 0);
}

int vyfs_ensure(struct vyfs *fs, uint32_t f, uint64_t off, uint64_t len,
		uint32_t readahead)
{
	/* Once a demand fetch has waited out the timeout, later ones try once
	 * and fail at once until the source answers again: the kernel retries
	 * a failed readahead page by page, and each retry must not wait anew. */
	uint64_t wait = atomic_load(&fs->demand_gave_up) ? 0 : (uint64_t)fs->fetch_timeout_ms;
	uint64_t deadline = vy_now_ms() + wait;
	uint64_t last = (off + (len ? len : 1) - 1) / fs->chunk_size + readahead;
	const char *path = fs->man.entries[vy_chunkmap_entry(fs->cm, f)].path;
	bool said = false;
	for (;;) {
		uint64_t c;
		if (vy_chunkmap_range_present(fs->cm, f, off, len ? len : 1, &c))
			return 0;
		vy_error err;
		pthread_mutex_lock(&fs->demand.lock);
		uint64_t n = missing_run(fs, f, c, last + 1 < remote_chunks(fs, f)
					 ? last + 1 : remote_chunks(fs, f), max_chunks(fs));
		uint64_t left = deadline > vy_now_ms() ? deadline - vy_now_ms() : 1;
		int rc = n ? lane_fetch(fs, &fs->demand, f, c, n,
					left < CONNECT_TIMEOUT_MS ? (int)left : CONNECT_TIMEOUT_MS,
					&err) : 0;
		pthread_mutex_unlock(&fs->demand.lock);
		if (rc == 0) {
			if (n)
				atomic_store(&fs->demand_gave_up, false);
			atomic_fetch_add(&fs->n.demand_fetches, n != 0);
			if (n) {
				uint64_t b = n * fs->chunk_size, sz = vy_chunkmap_size(fs->cm, f);
				atomic_fetch_add(&fs->n.demand_bytes,
						 c * fs->chunk_size + b > sz ? sz - c * fs->chunk_size : b);
			}
			continue;
		}
		atomic_fetch_add(&fs->n.fetch_errors, 1);
		if (!said)
			vy_warn("demand fetch of %s chunk %" PRIu64 " failed, retrying "
				"for up to %d ms: %s", path, c, fs->fetch_timeout_ms, err.msg);
		said = true;
		if (err.code == EREMOTEIO || err.code == EBADMSG || vy_now_ms() >= deadline) {
			if (err.code != EREMOTEIO && err.code != EBADMSG)
				atomic_store(&fs->demand_gave_up, true);
			atomic_fetch_add(&fs->n.demand_failures, 1);
			vy_err("read of %s chunk %" PRIu64 " fails with EIO: %s", path, c,
			       err.msg);
			return -EIO;
		}
		usleep(RETRY_MS * 1000);
	}
}

/* ---- background lane ------------------------------------------------------ */

static bool cold_held(struct vyfs *fs)
{
	uint64_t until = atomic_load(&fs->cold_until_ms);
	if (until && vy_now_ms() >= until) {
		atomic_store(&fs->cold_until_ms, 0);
		vy_info("no word from voyagerd: the other files are hydrated now too");
		return false;
	}
	return until != 0;
}

void vyfs_release_cold(struct vyfs *fs)
{
	if (atomic_exchange(&fs->cold_until_ms, 0))
		vy_info("the container runs: the other files are hydrated now too");
	vyfs_wake_background(fs);
}

/* Whether f lies in a batch another lane than k is fetching (claim_lock
 * held). */
static bool in_other_batch(struct vyfs *fs, int k, uint32_t f)
{
	for (int o = 0; o < VYFS_BG_LANES; o++)
		if (o != k && fs->claim[o].end > fs->claim[o].f && (int64_t)f >= fs->claim[o].f &&
		    (int64_t)f < fs->claim[o].end)
			return true;
	return false;
}

static void free_run(struct vyfs *fs, int k, uint32_t f, uint64_t *c, uint64_t *n);

/* Whether f has a missing run that no other lane holds: a file whose
 * every missing chunk is another lane's is passed over, or a lane would
 * wait on each file of one request (4 MiB or less) that the other lane
 * took, and the two would fetch one at a time. */
static bool free_for(struct vyfs *fs, int k, uint32_t f)
{
	uint64_t c, n;
	pthread_mutex_lock(&fs->claim_lock);
	free_run(fs, k, f, &c, &n);
	pthread_mutex_unlock(&fs->claim_lock);
	return n > 0;
}

/* The next file to hydrate: hot files, then the priority list, then
 * record order from *cursor, passing over what other lanes hold whole
 * (their batches, and files all of whose missing chunks are in their
 * runs).  -1 when every file is complete, -2 when the rest waits for the
 * container to run (--hold-cold), -3 when what is left is other lanes'. */
static int64_t next_file(struct vyfs *fs, int k, uint32_t *cursor, uint32_t *prio)
{
	uint32_t count = vy_chunkmap_count(fs->cm);
	bool held = false; /* a hot or priority file that another lane has */
	for (uint32_t f = 0; atomic_load(&fs->nhot) && f < count; f++)
		if (atomic_load(&fs->tracks[f].hot)) {
			if (!vy_chunkmap_complete(fs->cm, f)) {
				if (free_for(fs, k, f))
					return f;
				held = true;
				continue;
			}
			if (atomic_exchange(&fs->tracks[f].hot, false))
				atomic_fetch_sub(&fs->nhot, 1);
		}
	for (uint32_t j = *prio; j < fs->npriority; j++) {
		uint32_t p = fs->priority[j];
		if (vy_chunkmap_complete(fs->cm, p)) {
			if (j == *prio)
				(*prio)++;
		} else if (free_for(fs, k, p)) {
			return p;
		} else {
			held = true;
		}
	}
	if (cold_held(fs))
		return held ? -3 : -2;
	/* a file once complete stays so: the cursor passes only those */
	while (*cursor < count && vy_chunkmap_complete(fs->cm, *cursor))
		(*cursor)++;
	for (uint32_t g = *cursor; g < count; g++)
		if (!vy_chunkmap_complete(fs->cm, g) && free_for(fs, k, g))
			return g;
	return *cursor < count || held ? -3 : -1;
}

static void became_independent(struct vyfs *fs)
{
	vy_error err;
	if (atomic_exchange(&fs->becoming_independent, true))
		return; /* the other lane is at it */
	if (vy_chunkmap_flush(fs->cm, &err) < 0) {
		vy_warn("%s", err.msg);
		atomic_store(&fs->becoming_independent, false);
		return;
	}
	syncfs(fs->backing_dir_fd);
	atomic_store(&fs->independent, true);
	vy_info("every chunk is local and durable: independent of the source");
	/* Nothing will be fetched again: let the source close the tree. */
	pthread_mutex_lock(&fs->demand.lock);
	vy_channel_close(fs->demand.ch);
	fs->demand.ch = NULL;
	pthread_mutex_unlock(&fs->demand.lock);
}

/* Hold the background lane to --hydrate-rate, if one is set. */
static void pace(struct vyfs *fs, uint64_t bytes, uint64_t *next_ms)
{
	uint64_t rate = atomic_load(&fs->hydrate_rate), now = vy_now_ms();
	if (!rate) {
		*next_ms = 0;
		return;
	}
	*next_ms = (*next_ms > now ? *next_ms : now) + bytes * 1000 / rate;
	while (!atomic_load(&fs->stopping) && atomic_load(&fs->hydrate_rate) &&
	       (now = vy_now_ms()) < *next_ms)
		nap(fs, (int)(*next_ms - now < 1000 ? *next_ms - now : 1000));
}

/* The first missing run of f that no other lane holds: its first chunk in
 * *c and length in *n (0: nothing free here now).  claim_lock held. */
static void free_run(struct vyfs *fs, int k, uint32_t f, uint64_t *c, uint64_t *n)
{
	uint64_t until = remote_chunks(fs, f), from = 0;
	*n = 0;
	if (in_other_batch(fs, k, f))
		until = 0; /* the other lane has the whole file */
	while ((*c = vy_chunkmap_next_missing(fs->cm, f, from)) != UINT64_MAX && *c < until) {
		uint64_t stop = until;
		bool taken = false;
		for (int o = 0; o < VYFS_BG_LANES; o++) {
			if (o == k || fs->claim[o].f != (int64_t)f || !fs->claim[o].n)
				continue;
			uint64_t oc = fs->claim[o].c, oe = oc + fs->claim[o].n;
			if (*c >= oc && *c < oe) {
				from = oe; /* inside the other's run: look past it */
				taken = true;
				break;
			}
			if (oc > *c && oc < stop)
				stop = oc; /* stop where the other's run starts */
		}
		if (taken)
			continue;
		*n = missing_run(fs, f, *c, stop, max_chunks(fs));
		break;
	}
}

/* Claim for lane k the first missing run of f that no other lane holds
 * (free_run). */
static void claim_run(struct vyfs *fs, int k, uint32_t f, uint64_t *c, uint64_t *n)
{
	pthread_mutex_lock(&fs->claim_lock);
	free_run(fs, k, f, c, n);
	fs->claim[k].f = (int64_t)f;
	fs->claim[k].c = *c;
	fs->claim[k].n = *n;
	fs->claim[k].end = 0;
	pthread_mutex_unlock(&fs->claim_lock);
}

static void release_claim(struct vyfs *fs, int k)
{
	pthread_mutex_lock(&fs->claim_lock);
	fs->claim[k].n = 0;
	fs->claim[k].f = -1;
	fs->claim[k].end = 0;
	pthread_mutex_unlock(&fs->claim_lock);
}

/* A file of one chunk that is still missing: batched. */
static bool small_missing(struct vyfs *fs, uint32_t f)
{
	uint64_t size = vy_chunkmap_size(fs->cm, f);
	return size && size <= fs->chunk_size && vy_chunkmap_remote_size(fs->cm, f) &&
	       !vy_chunkmap_present(fs->cm, f, 0);
}

/* Whether another lane's single-run claim is on f (claim_lock held). */
static bool in_other_run(struct vyfs *fs, int k, uint32_t f)
{
	for (int o = 0; o < VYFS_BG_LANES; o++)
		if (o != k && fs->claim[o].f == (int64_t)f && fs->claim[o].n)
			return true;
	return false;
}

/* From f on (record order), the small missing files lane k takes as one
 * batch: at most BATCH_FILES, VY_FETCH_MAX bytes, within BATCH_WINDOW
 * records, up to the first file another lane holds.  Claims [f, last+1)
 * and returns how many went into files[] (0: no batch, nothing claimed). */
static uint32_t claim_batch(struct vyfs *fs, int k, uint32_t f, uint32_t *files)
{
	uint32_t count = vy_chunkmap_count(fs->cm), n = 0;
	uint64_t bytes = 0;
	pthread_mutex_lock(&fs->claim_lock);
	for (uint32_t g = f; g < count && g - f < BATCH_WINDOW && n < BATCH_FILES; g++) {
		if (in_other_batch(fs, k, g) || in_other_run(fs, k, g))
			break;
		if (!small_missing(fs, g))
			continue;
		uint64_t size = vy_chunkmap_size(fs->cm, g);
		if (bytes + size > VY_FETCH_MAX)
			break;
		files[n++] = g;
		bytes += size;
	}
	if (n >= 2) {
		fs->claim[k].f = (int64_t)f;
		fs->claim[k].n = 0;
		fs->claim[k].end = (int64_t)files[n - 1] + 1;
	}
	pthread_mutex_unlock(&fs->claim_lock);
	return n >= 2 ? n : 0;
}

/* fdatasync and mark every nj-th file of a batch from the j-th on. */
struct sync_job {
	struct vyfs *fs;
	const uint32_t *files, *len;
	bool *wrote;
	uint32_t n, j, nj;
	uint64_t done;
	vy_error err;
};

static void *sync_slice(void *arg)
{
	struct sync_job *s = arg;
	struct vyfs *fs = s->fs;
	for (uint32_t i = s->j; i < s->n; i += s->nj) {
		uint32_t f = s->files[i];
		struct vyfs_track *t = &fs->tracks[f];
		if (!s->wrote[i])
			continue;
		pthread_mutex_lock(&t->lock);
		/* present already: another lane committed it meanwhile */
		if (!vy_chunkmap_present(fs->cm, f, 0)) {
			int fd = vyfs_track_fd(fs, f);
			if (fd >= 0 && fdatasync(fd) == 0) {
				vy_chunkmap_mark(fs->cm, f, 0, 1);
				s->done += s->len[i];
			} else {
				s->wrote[i] = false;
				vy_error_sys(&s->err, errno, "%s: fdatasync fetched bytes",
					     fs->man.entries[vy_chunkmap_entry(fs->cm, f)].path);
			}
		}
		if (t->data_fd >= 0 && vy_chunkmap_complete(fs->cm, f)) {
			close(t->data_fd);
			t->data_fd = -1;
		}
		pthread_mutex_unlock(&t->lock);
	}
	return NULL;
}

/* Write the fetched bytes of a batch (files[i] at buf + at[i], len[i]
 * bytes; len 0: not fetched), then make each durable and mark it, the
 * fdatasyncs from SYNC_THREADS threads at once; see the top of this file.
 * Returns the bytes committed. */
static uint64_t commit_batch(struct vyfs *fs, const uint32_t *files, uint32_t n,
			     const uint8_t *buf, const uint64_t *at, const uint32_t *len,
			     bool *wrote, vy_error *err)
{
	uint64_t done = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t f = files[i];
		struct vyfs_track *t = &fs->tracks[f];
		wrote[i] = false;
		if (!len[i])
			continue;
		pthread_mutex_lock(&t->lock);
		uint64_t remote = vy_chunkmap_remote_size(fs->cm, f);
		int fd = remote && !vy_chunkmap_present(fs->cm, f, 0) ? vyfs_track_fd(fs, f) : -1;
		struct stat before;
		if (fd >= 0 && fstat(fd, &before) == 0) {
			size_t w = remote < len[i] ? (size_t)remote : len[i];
			struct timespec tv[2] = { before.st_atim, before.st_mtim };
			if (pwrite(fd, buf + at[i], w, 0) == (ssize_t)w && futimens(fd, tv) == 0) {
				sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
				wrote[i] = true;
			} else {
				vy_error_sys(err, errno, "%s: write fetched bytes",
					     fs->man.entries[vy_chunkmap_entry(fs->cm, f)].path);
			}
		}
		pthread_mutex_unlock(&t->lock);
	}
	struct sync_job jobs[SYNC_THREADS];
	pthread_t tid[SYNC_THREADS];
	bool started[SYNC_THREADS] = { false };
	uint32_t nj = n < SYNC_THREADS ? n : SYNC_THREADS;
	for (uint32_t j = 0; j < nj; j++) {
		jobs[j] = (struct sync_job){ fs, files, len, wrote, n, j, nj, 0, { 0 } };
		/* the first slice on this thread; a thread that cannot start
		 * leaves its slice to this one too */
		started[j] = j > 0 && pthread_create(&tid[j], NULL, sync_slice, &jobs[j]) == 0;
	}
	for (uint32_t j = 0; j < nj; j++)
		if (!started[j])
			sync_slice(&jobs[j]);
	for (uint32_t j = 0; j < nj; j++) {
		if (started[j])
			pthread_join(tid[j], NULL);
		done += jobs[j].done;
		if (jobs[j].err.code && !err->code)
			*err = jobs[j].err;
	}
	return done;
}

/* Fetch and commit a batch on lane k: every request first, then the
 * replies in order.  A file the source refuses (EREMOTEIO) is left for
 * later; anything else drops the lane's channel.  0, or -1 with err. */
static int fetch_batch(struct vyfs *fs, int k, const uint32_t *files, uint32_t n,
		       uint64_t *bytes, vy_error *err)
{
	struct vyfs_lane *lane = &fs->background[k];
	struct vy_fetch_req req[BATCH_FILES];
	uint64_t at[BATCH_FILES], off = 0;
	uint32_t len[BATCH_FILES];
	bool wrote[BATCH_FILES];
	int rc = 0;
	*bytes = 0;
	pthread_mutex_lock(&lane->lock);
	if (!lane->ch && open_lane(fs, lane, CONNECT_TIMEOUT_MS, err) < 0)
		rc = vy_error_wrap(err, "%s lane", lane->name);
	if (rc == 0)
		rc = vy_channel_set_timeout(lane->ch, 30000, err);
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		uint64_t size = vy_chunkmap_size(fs->cm, files[i]);
		req[i] = (struct vy_fetch_req){ fs->stream, vy_chunkmap_entry(fs->cm, files[i]),
						0, (uint32_t)size };
		at[i] = off;
		off += size;
		rc = vy_chunk_fetch_send(lane->ch, &req[i], err);
	}
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		vy_error one;
		len[i] = req[i].length;
		if (vy_chunk_fetch_recv(lane->ch, &req[i], lane->buf + at[i], &one) == 0)
			continue;
		len[i] = 0;
		if (one.code != EREMOTEIO) {
			*err = one;
			rc = -1;
		}
	}
	if (rc < 0 && lane->ch) {
		/* out of step: start afresh next time */
		vy_channel_close(lane->ch);
		lane->ch = NULL;
	}
	if (rc == 0) {
		vy_error werr = { 0 };
		*bytes = commit_batch(fs, files, n, lane->buf, at, len, wrote, &werr);
		if (werr.code) {
			*err = werr;
			rc = -1;
		}
	}
	pthread_mutex_unlock(&lane->lock);
	return rc < 0 ? vy_error_wrap(err, "%s lane, a batch of %u files", lane->name, n) : 0;
}

/* After a fetch on lane k: its outcome into the counters, the pause
 * before the next try, and the pace.  False when it failed. */
static bool after_fetch(struct vyfs *fs, int rc, const vy_error *err, uint64_t fetches,
			uint64_t bytes, int *backoff, uint64_t *next_ms)
{
	if (rc < 0) {
		atomic_fetch_add(&fs->n.fetch_errors, 1);
		if (atomic_exchange(&fs->source_up, false))
			vy_warn("background hydration paused, retrying: %s", err->msg);
		nap(fs, *backoff);
		*backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
		return false;
	}
	atomic_store(&fs->demand_gave_up, false);
	if (!atomic_exchange(&fs->source_up, true))
		vy_info("source %s reachable: background hydration running", fs->source);
	*backoff = RETRY_MS;
	atomic_fetch_add(&fs->n.background_fetches, fetches);
	atomic_fetch_add(&fs->n.background_bytes, bytes);
	pace(fs, bytes * VYFS_BG_LANES, next_ms); /* the limit is for all lanes together */
	return true;
}

static void background_step(struct vyfs *fs, int k, uint32_t f, int *backoff,
			    uint64_t *next_ms)
{
	uint64_t c, n;
	uint32_t batch[BATCH_FILES], nb = 0;
	if (small_missing(fs, f) && !cold_held(fs))
		nb = claim_batch(fs, k, f, batch);
	if (nb) {
		vy_error err;
		uint64_t bytes = 0;
		int rc = fetch_batch(fs, k, batch, nb, &bytes, &err);
		release_claim(fs, k);
		after_fetch(fs, rc, &err, nb, bytes, backoff, next_ms);
		return;
	}
	claim_run(fs, k, f, &c, &n);
	if (!n) {
		/* all that is missing here is the other lane's: wait for it */
		release_claim(fs, k);
		nap(fs, 5);
		return;
	}
	vy_error err;
	struct vyfs_lane *lane = &fs->background[k];
	pthread_mutex_lock(&lane->lock);
	int rc = lane_fetch(fs, lane, f, c, n, CONNECT_TIMEOUT_MS, &err);
	pthread_mutex_unlock(&lane->lock);
	release_claim(fs, k);
	uint64_t b = n * fs->chunk_size, sz = vy_chunkmap_size(fs->cm, f);
	b = c * fs->chunk_size + b > sz ? sz - c * fs->chunk_size : b;
	after_fetch(fs, rc, &err, 1, rc < 0 ? 0 : b, backoff, next_ms);
}

static struct vyfs *lane_fs;

static void *background_main(void *arg)
{
	int k = (int)(intptr_t)arg;
	struct vyfs *fs = lane_fs;
	uint32_t cursor = 0, prio = 0;
	int backoff = RETRY_MS;
	uint64_t next_ms = 0;
	while (!atomic_load(&fs->stopping)) {
		int64_t f = next_file(fs, k, &cursor, &prio);
		if (f == -2 || f == -3) {
			nap(fs, f == -2 ? 50 : 5);
			continue;
		}
		if (f < 0) {
			if (!atomic_load(&fs->independent))
				became_independent(fs);
			if (atomic_load(&fs->independent) && fs->background[k].ch) {
				pthread_mutex_lock(&fs->background[k].lock);
				vy_channel_close(fs->background[k].ch);
				fs->background[k].ch = NULL;
				pthread_mutex_unlock(&fs->background[k].lock);
			}
			nap(fs, 1000);
			continue;
		}
		background_step(fs, k, (uint32_t)f, &backoff, &next_ms);
	}
	return NULL;
}

static void *flush_main(void *arg)
{
	struct vyfs *fs = arg;
	while (!atomic_load(&fs->stopping)) {
		vy_error err;
		if (vy_chunkmap_flush(fs->cm, &err) < 0)
			vy_warn("%s", err.msg);
		nap(fs, FLUSH_INTERVAL_MS);
	}
	return NULL;
}

static int lane_init(struct vyfs_lane *lane, const char *name, vy_error *err)
{
	lane->name = name;
	pthread_mutex_init(&lane->lock, NULL);
	lane->buf = malloc(VY_FETCH_MAX);
	if (!lane->buf)
		return vy_error_set(err, ENOMEM, "out of memory");
	return 0;
}

int vyfs_hydrate_start(struct vyfs *fs, vy_error *err)
{
	pthread_mutex_init(&fs->wake_lock, NULL);
	pthread_cond_init(&fs->wake, NULL);
	atomic_store(&fs->source_up, true);
	pthread_mutex_init(&fs->claim_lock, NULL);
	if (lane_init(&fs->demand, "demand", err) < 0)
		return -1;
	for (int k = 0; k < VYFS_BG_LANES; k++) {
		fs->claim[k].f = -1;
		if (lane_init(&fs->background[k], "background", err) < 0)
			return -1;
	}
	int rc = pthread_create(&fs->flush_thread, NULL, flush_main, fs);
	lane_fs = fs;
	for (int k = 0; rc == 0 && k < VYFS_BG_LANES; k++)
		rc = pthread_create(&fs->background_thread[k], NULL, background_main,
				    (void *)(intptr_t)k);
	if (rc)
		return vy_error_sys(err, rc, "starting the hydration threads");
	return 0;
}

void vyfs_hydrate_stop(struct vyfs *fs)
{
	atomic_store(&fs->stopping, true);
	vyfs_wake_background(fs);
	for (int k = 0; k < VYFS_BG_LANES; k++)
		pthread_join(fs->background_thread[k], NULL);
	pthread_join(fs->flush_thread, NULL);
	vy_channel_close(fs->demand.ch);
	free(fs->demand.buf);
	for (int k = 0; k < VYFS_BG_LANES; k++) {
		vy_channel_close(fs->background[k].ch);
		free(fs->background[k].buf);
	}
}

#define ADD_U64(o, k, v) json_object_object_add(o, k, json_object_new_int64((int64_t)(v)))

char *vyfs_status_json(struct vyfs *fs)
{
	struct vy_chunkmap_stats s;
	vy_chunkmap_stats(fs->cm, &s);
	json_object *o = json_object_new_object();
	ADD_U64(o, "stream", fs->stream);
	json_object_object_add(o, "source", json_object_new_string(fs->source));
	json_object_object_add(o, "source_up", json_object_new_boolean(atomic_load(&fs->source_up)));
	json_object_object_add(o, "independent",
			       json_object_new_boolean(atomic_load(&fs->independent) &&
						       s.chunks_present == s.chunks_total));
	json_object_object_add(o, "passthrough", json_object_new_boolean(fs->passthrough));
	json_object_object_add(o, "killpriv", json_object_new_boolean(fs->killpriv));
	ADD_U64(o, "chunk_size", fs->chunk_size);
	ADD_U64(o, "chunks_total", s.chunks_total);
	ADD_U64(o, "chunks_present", s.chunks_present);
	ADD_U64(o, "bytes_total", s.bytes_total);
	ADD_U64(o, "bytes_present", s.bytes_present);
	ADD_U64(o, "files_total", s.files_total);
	ADD_U64(o, "files_complete", s.files_complete);
	ADD_U64(o, "resumed_chunks", fs->resumed_chunks);
	ADD_U64(o, "resumed_bytes", fs->resumed_bytes);
	ADD_U64(o, "demand_bytes", atomic_load(&fs->n.demand_bytes));
	ADD_U64(o, "demand_fetches", atomic_load(&fs->n.demand_fetches));
	ADD_U64(o, "background_bytes", atomic_load(&fs->n.background_bytes));
	ADD_U64(o, "background_fetches", atomic_load(&fs->n.background_fetches));
	ADD_U64(o, "fetch_errors", atomic_load(&fs->n.fetch_errors));
	ADD_U64(o, "demand_failures", atomic_load(&fs->n.demand_failures));
	ADD_U64(o, "passthrough_opens", atomic_load(&fs->n.passthrough_opens));
	ADD_U64(o, "cached_opens", atomic_load(&fs->n.cached_opens));
	ADD_U64(o, "passthrough_refused", atomic_load(&fs->n.refused_passthrough));
	ADD_U64(o, "hydrate_rate", atomic_load(&fs->hydrate_rate));
	json_object_object_add(o, "cold_held",
			       json_object_new_boolean(atomic_load(&fs->cold_until_ms) != 0));
	ADD_U64(o, "local_write_bytes", atomic_load(&fs->n.local_write_bytes));
	ADD_U64(o, "fd_exhausted", atomic_load(&fs->n.fd_exhausted));
	ADD_U64(o, "handle_inodes", atomic_load(&fs->n.handle_inodes));

	char *text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}
