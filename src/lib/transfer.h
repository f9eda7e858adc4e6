/* transfer.h - moving a tree's file contents over a channel.
 *
 * Sender: for each regular file of a manifest (each inode once), sends its
 * data regions (holes are skipped with SEEK_DATA/SEEK_HOLE) as DATA frames
 * in increasing offset order, then FILE_END with the SHA-256 of the whole
 * content (holes hash as zeros), and finally TREE_END.
 *
 * Receiver (a sink): writes each chunk into the skeleton made by
 * vy_manifest_materialise(), hashes as it goes (gaps hash as zeros, since
 * data arrives in offset order), and on FILE_END checks size and hash.  A
 * chunk for an unknown entry, past the file's size, or out of order, is an
 * error.  vy_tree_sink_finish() fails unless every file was ended and
 * verified, then applies final metadata.
 */
#ifndef VY_TRANSFER_H
#define VY_TRANSFER_H

#include <stdatomic.h>
#include <stdint.h>

#include <json-c/json.h>

#include "channel.h"
#include "error.h"
#include "manifest.h"

#define VY_CHUNK_SIZE (256 * 1024)

/* Shared progress counter, read by another thread for progress reports. */
struct vy_progress {
	_Atomic uint64_t bytes; /* file data bytes moved (a patch: read) */
	_Atomic uint64_t files; /* files completed */
};

int vy_tree_send(vy_channel *ch, uint32_t stream, int rootfd,
		 const struct vy_manifest *m, struct vy_progress *progress,
		 vy_error *err);

/* Like vy_tree_send() but skips entries with skip[i] set (the receiver
 * already has them: see delta.h).  skip may be NULL. */
int vy_tree_send_some(vy_channel *ch, uint32_t stream, int rootfd,
		      const struct vy_manifest *m, const uint8_t *skip,
		      struct vy_progress *progress, vy_error *err);

/* For a tree that may change while it is sent (the container still runs):
 * a file that vanished or changed size is skipped (skipped[i] set, and the
 * receiver told) instead of failing the transfer. */
int vy_tree_send_live(vy_channel *ch, uint32_t stream, int rootfd,
		      const struct vy_manifest *m, uint8_t *skipped,
		      struct vy_progress *progress, vy_error *err);

/* vy_tree_send_live() of the entries with skip[i] clear only. */
int vy_tree_send_live_some(vy_channel *ch, uint32_t stream, int rootfd,
			   const struct vy_manifest *m, const uint8_t *skip, uint8_t *skipped,
			   struct vy_progress *progress, vy_error *err);

/* Patches (presync).  While a live tree is sent, the sender can keep, for
 * each file of at least VY_PATCH_MIN bytes it sent whole, a digest of each
 * VY_CHUNK_SIZE chunk as it sent it (holes as zeros; SHA-256 cut to
 * VY_SUM_LEN bytes).  At the freeze such a file, changed since, can go as
 * a patch: only the chunks whose digest differs, each whole (zeros
 * included), then FILE_END with "patch": true and, as "sha256", the
 * SHA-256 of the digests of all its chunks in order (each chunk is hashed
 * once), which the sink checks against the file as it then is on its
 * disk, read back: a chunk wrongly taken as unchanged cannot pass. */
#define VY_PATCH_MIN (1024 * 1024)
#define VY_SUM_LEN 16
struct vy_chunk_sums {
	uint32_t n;                  /* chunks; 0: none kept */
	uint8_t (*sum)[VY_SUM_LEN];
};

/* vy_tree_send_live(), keeping sums[i] (one slot per entry of m, zeroed by
 * the caller) for each file of at least VY_PATCH_MIN bytes sent whole. */
int vy_tree_send_live_sums(vy_channel *ch, uint32_t stream, int rootfd,
			   const struct vy_manifest *m, uint8_t *skipped,
			   struct vy_chunk_sums *sums, struct vy_progress *progress,
			   vy_error *err);
void vy_chunk_sums_free(struct vy_chunk_sums *sums, uint32_t count);

/* vy_tree_send_some(), where an entry with base[i] (not NULL: its digests
 * as the pre-sync sent it, the receiver's copy) goes as a patch.
 * *patch_bytes, when not NULL: the bytes the patches sent. */
int vy_tree_send_patched(vy_channel *ch, uint32_t stream, int rootfd,
			 const struct vy_manifest *m, const uint8_t *skip,
			 const struct vy_chunk_sums *const *base, uint64_t *patch_bytes,
			 struct vy_progress *progress, vy_error *err);

struct vy_tree_sink;

/* rootfd is borrowed and must stay open until vy_tree_sink_free(). */
int vy_tree_sink_new(int rootfd, const struct vy_manifest *m, uint32_t stream,
		     struct vy_tree_sink **out, vy_error *err);
/* Entries with have[i] set are already complete here: no data comes for
 * them, and data for them is refused. */
void vy_tree_sink_have(struct vy_tree_sink *s, const uint8_t *have);
/* Entries with patch[i] set come as patches (see above): their data is
 * written where it says, not hashed on the way, and at FILE_END the file
 * is read back and its SHA-256 checked. */
void vy_tree_sink_patches(struct vy_tree_sink *s, const uint8_t *patch);
/* Accept skipped files (see vy_tree_send_live), recording them. */
void vy_tree_sink_allow_skips(struct vy_tree_sink *s, uint8_t *skipped);
int vy_tree_sink_data(struct vy_tree_sink *s, const struct vy_data_chunk *c,
		      vy_error *err);
/* obj is the parsed FILE_END JSON: {"stream", "entry", "size", "sha256"}. */
int vy_tree_sink_file_end(struct vy_tree_sink *s, json_object *obj,
			  vy_error *err);
int vy_tree_sink_finish(struct vy_tree_sink *s, vy_error *err);
/* For a sink told what it has (vy_tree_sink_have): fails unless every other
 * file was ended; then, with durable, makes the files that received data
 * durable (fdatasync), and gives them their metadata back (times, a
 * capability the writes dropped), and nothing else of the tree.  *files and
 * *bytes, when not NULL: the files and bytes now complete here. */
int vy_tree_sink_finish_some(struct vy_tree_sink *s, bool durable, uint32_t *files,
			     uint64_t *bytes, vy_error *err);
uint64_t vy_tree_sink_bytes(const struct vy_tree_sink *s);
void vy_tree_sink_free(struct vy_tree_sink *s);

/* Hex SHA-256 helper (out must hold 65 bytes). */
void vy_sha256_hex(const uint8_t digest[32], char out[65]);

#endif
