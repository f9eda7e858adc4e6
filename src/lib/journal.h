/* journal.h - the crash-safe record of each migration.
 *
 * One JSON document per migration under STATE/journal/ID.json, rewritten
 * atomically (temp file, fsync, rename, fsync of the directory) at every
 * phase change, so an agent that restarts knows where each migration stood
 * and can finish or undo it.  The source's journal is the authority on a
 * migration's outcome: "committed" there means the target owns the
 * container.
 */
#ifndef VY_JOURNAL_H
#define VY_JOURNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#include <json-c/json.h>

#include "error.h"

struct vy_journal {
	char path[PATH_MAX];
	json_object *doc;
	uint64_t started_mono;
	pthread_mutex_t lock;
};

int vy_journal_create(const char *state_dir, const char *id, const char *role,
		      const char *container, const char *peer,
		      struct vy_journal **out, vy_error *err);
/* Record a phase change (with wall time and ms since start) and persist. */
int vy_journal_phase(struct vy_journal *j, const char *phase, vy_error *err);
/* Set a top-level member (takes the reference) without persisting. */
void vy_journal_set(struct vy_journal *j, const char *key, json_object *val);
int vy_journal_save(struct vy_journal *j, vy_error *err);
/* Final outcome: result and optional error; persists. */
int vy_journal_finish(struct vy_journal *j, const char *result,
		      const char *error, vy_error *err);
const char *vy_journal_get_phase(struct vy_journal *j);
void vy_journal_free(struct vy_journal *j);

/* Take over doc (a journal loaded with vy_journal_load or _load_all; the
 * reference is taken) to update and save it like one made here. */
int vy_journal_adopt(const char *state_dir, json_object *doc,
		     struct vy_journal **out, vy_error *err);

/* Load one (by id) or all journals (array, newest first). */
int vy_journal_load(const char *state_dir, const char *id, json_object **out,
		    vy_error *err);
int vy_journal_load_all(const char *state_dir, json_object **out, vy_error *err);
/* true if id is 16 lowercase hex characters. */
int vy_journal_id_is_valid(const char *id);

#endif
