/* chunkmap.h - which chunks of a federated tree are local: the hydration
 * state of voyager-fs, persistent and crash-safe.
 *
 * Every regular file of the manifest that has data (first name only, size
 * > 0) is *tracked*: it is cut into chunks of chunk_size bytes and has one
 * bit per chunk.  A bit is set only after the chunk's bytes were written to
 * the backing file and made durable (the caller's job, see
 * vy_chunkmap_mark()), so a bit on disk always means "this chunk is whole
 * here".  Losing a bit (a crash before the next flush) only costs a
 * refetch.
 *
 * Each tracked file also has a remote size: the part of the file that
 * still holds the source's bytes.  It starts at the manifest size and only
 * shrinks (truncate, unlink).  Chunks at or past it are never fetched.  A
 * file is complete when every chunk below its remote size is present.
 * Files are known by their backing inode number, which survives renames
 * and restarts of the daemon.
 *
 * State file layout (all integers big-endian, records 8-byte aligned):
 *   header, 64 bytes: u32 magic "VYCM", u32 version (2), u32 chunk_size,
 *     u32 record count, u8[32] SHA-256 of the manifest (the caller's
 *     choice of bytes: voyager-fs hashes its manifest and delta), 16
 *     reserved
 *   per record: u32 entry, u32 nchunks, u64 backing inode, u64 remote
 *     size, bitmap of nchunks bits (bit c = byte c/8, mask 1 << (c%8))
 *     padded to 8 bytes
 * Every tracked file of the manifest has exactly one record (nchunks =
 * ceil(size/chunk_size)); a record whose inode is 0 is dropped (its file's
 * last name went, or it was made for a file that changed before the state
 * was made; then its entry is 0 and it names no file).  A fresh state has
 * the records in manifest order; one made with vy_chunkmap_rebase() adds
 * records at the end.  Records never move, so each is updated in place.
 * vy_chunkmap_load() is the one parser of these bytes and checks all of
 * them.
 */
#ifndef VY_CHUNKMAP_H
#define VY_CHUNKMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "manifest.h"

#define VY_CHUNKMAP_MAGIC 0x56594d43u /* "VYCM" */
#define VY_CHUNKMAP_VERSION 2
#define VY_CHUNKMAP_HDR_LEN 64
#define VY_CHUNK_SIZE_MIN 4096u
#define VY_CHUNK_SIZE_MAX (4u * 1024 * 1024)

struct vy_chunkmap;

struct vy_chunkmap_stats {
	uint64_t chunks_total;   /* chunks below the remote sizes */
	uint64_t chunks_present; /* of those, present */
	uint64_t bytes_total;    /* sum of remote sizes */
	uint64_t bytes_present;  /* bytes of present chunks below remote sizes */
	uint32_t files_total;    /* tracked files with remote data */
	uint32_t files_complete;
};

/* Make a fresh state file at path (atomically: temporary file, fsync,
 * rename).  inos[i] is the backing inode of entry i (read for tracked
 * entries only).  chunk_size is a multiple of 4096 in
 * VY_CHUNK_SIZE_MIN..VY_CHUNK_SIZE_MAX. */
int vy_chunkmap_create(const char *path, const struct vy_manifest *m,
		       const uint8_t manifest_sha256[32], uint32_t chunk_size,
		       const uint64_t *inos, struct vy_chunkmap **out,
		       vy_error *err);
/* The same in steps, so that the work that grows with the tree can be
 * done before the tree is final: prepare (in memory only), commit, then at
 * most one rebase and a commit again. */
int vy_chunkmap_prepare(const struct vy_manifest *m, uint32_t chunk_size,
			const uint64_t *inos, struct vy_chunkmap **out, vy_error *err);
/* The prepared state follows m, which a delta made from the manifest it
 * was prepared for: map[i] is where that manifest's entry i went (or
 * VY_DELTA_NEW: gone), inos[j] the backing inode of m's entry j.  A file
 * whose entry moved keeps its record; one that changed size or inode, or
 * went, leaves a dropped record; new and changed files get records at the
 * end.  Work in the number of records, with no allocation per file. */
int vy_chunkmap_rebase(struct vy_chunkmap *cm, const struct vy_manifest *m,
		       const uint32_t *map, uint32_t base_count, const uint64_t *inos,
		       vy_error *err);
/* Write the state to path; once written, a commit after a rebase that
 * only dropped and added records writes just those and the header. */
int vy_chunkmap_commit(struct vy_chunkmap *cm, const char *path,
		       const uint8_t manifest_sha256[32], vy_error *err);
/* Open an existing state file, refusing one made for another manifest or
 * chunk size, or whose bytes do not follow the layout. */
int vy_chunkmap_load(const char *path, const struct vy_manifest *m,
		     const uint8_t manifest_sha256[32], uint32_t chunk_size,
		     struct vy_chunkmap **out, vy_error *err);
/* Flush and close. */
int vy_chunkmap_close(struct vy_chunkmap *cm, vy_error *err);

uint32_t vy_chunkmap_chunk_size(const struct vy_chunkmap *cm);
/* Records are numbered 0..count-1 (see the layout above: a dropped
 * record names no file). */
uint32_t vy_chunkmap_count(const struct vy_chunkmap *cm);
uint32_t vy_chunkmap_entry(const struct vy_chunkmap *cm, uint32_t f);
uint64_t vy_chunkmap_size(const struct vy_chunkmap *cm, uint32_t f); /* manifest size */
uint64_t vy_chunkmap_remote_size(const struct vy_chunkmap *cm, uint32_t f);
uint64_t vy_chunkmap_ino(const struct vy_chunkmap *cm, uint32_t f); /* 0 once dropped */
/* The tracked file with this backing inode, or -1. */
int64_t vy_chunkmap_find_ino(const struct vy_chunkmap *cm, uint64_t ino);

bool vy_chunkmap_present(const struct vy_chunkmap *cm, uint32_t f,
			 uint64_t chunk);
/* True when every chunk covering [off, off+len) below the remote size is
 * present; otherwise *first_missing is the first one that is not. */
bool vy_chunkmap_range_present(const struct vy_chunkmap *cm, uint32_t f,
			       uint64_t off, uint64_t len,
			       uint64_t *first_missing);
bool vy_chunkmap_complete(const struct vy_chunkmap *cm, uint32_t f);
/* First missing chunk at or after chunk `from`, or UINT64_MAX. */
uint64_t vy_chunkmap_next_missing(const struct vy_chunkmap *cm, uint32_t f,
				  uint64_t from);

/* Set chunks [first, first+n) present in memory; they reach the disk at
 * the next flush.  Call only once their data is durable in the backing
 * file. */
void vy_chunkmap_mark(struct vy_chunkmap *cm, uint32_t f, uint64_t first,
		      uint64_t n);
/* Lower a file's remote size (never raises it) and make that durable
 * before returning: the caller truncates the backing file only after. */
int vy_chunkmap_shrink(struct vy_chunkmap *cm, uint32_t f, uint64_t size,
		       vy_error *err);
/* Forget a file whose last name is gone: remote size 0, inode unlinked. */
int vy_chunkmap_drop(struct vy_chunkmap *cm, uint32_t f, vy_error *err);
/* Write the changed records and fdatasync the state file. */
int vy_chunkmap_flush(struct vy_chunkmap *cm, vy_error *err);

void vy_chunkmap_stats(const struct vy_chunkmap *cm,
		       struct vy_chunkmap_stats *out);

#endif
