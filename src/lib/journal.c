/* journal.c - see journal.h. */
#include "journal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "util.h"

int vy_journal_id_is_valid(const char *id)
{
	if (!id || strlen(id) != 16)
		return 0;
	for (int i = 0; i < 16; i++)
		if (!isxdigit((unsigned char)id[i]) || isupper((unsigned char)id[i]))
			return 0;
	return 1;
}

static int journal_dir(const char *state_dir, char *out, size_t len, vy_error *err)
{
	if (snprintf(out, len, "%s/journal", state_dir) >= (int)len)
		return vy_error_set(err, ENAMETOOLONG, "state dir path too long");
	return vy_mkdir_p(out, 0700, err);
}

int vy_journal_create(const char *state_dir, const char *id, const char *role,
		      const char *container, const char *peer,
		      struct vy_journal **out, vy_error *err)
{
	char dir[PATH_MAX];
	if (!vy_journal_id_is_valid(id))
		return vy_error_set(err, EINVAL, "invalid migration id '%s'", id);
	if (journal_dir(state_dir, dir, sizeof(dir), err) < 0)
		return vy_error_wrap(err, "journal");
	struct vy_journal *j = calloc(1, sizeof(*j));
	if (!j)
		return vy_error_set(err, ENOMEM, "out of memory");
	snprintf(j->path, sizeof(j->path), "%s/%s.json", dir, id);
	pthread_mutex_init(&j->lock, NULL);
	j->started_mono = vy_now_ms();
	j->doc = json_object_new_object();
	json_object_object_add(j->doc, "id", json_object_new_string(id));
	json_object_object_add(j->doc, "role", json_object_new_string(role));
	json_object_object_add(j->doc, "container", json_object_new_string(container));
	json_object_object_add(j->doc, "peer", json_object_new_string(peer ? peer : ""));
	json_object_object_add(j->doc, "started_ms", json_object_new_int64((int64_t)vy_wall_ms()));
	json_object_object_add(j->doc, "phases", json_object_new_array());
	*out = j;
	return 0;
}

static int save_locked(struct vy_journal *j, vy_error *err)
{
	json_object_object_add(j->doc, "updated_ms", json_object_new_int64((int64_t)vy_wall_ms()));
	const char *s = json_object_to_json_string_ext(j->doc, JSON_C_TO_STRING_PRETTY);
	if (vy_write_file_atomic(j->path, s, strlen(s), 0600, err) < 0)
		return vy_error_wrap(err, "write journal");
	return 0;
}

int vy_journal_save(struct vy_journal *j, vy_error *err)
{
	pthread_mutex_lock(&j->lock);
	int rc = save_locked(j, err);
	pthread_mutex_unlock(&j->lock);
	return rc;
}

int vy_journal_phase(struct vy_journal *j, const char *phase, vy_error *err)
{
	pthread_mutex_lock(&j->lock);
	json_object *phases;
	if (json_object_object_get_ex(j->doc, "phases", &phases)) {
		json_object *p = json_object_new_object();
		json_object_object_add(p, "phase", json_object_new_string(phase));
		json_object_object_add(p, "at_ms", json_object_new_int64((int64_t)vy_wall_ms()));
		json_object_object_add(p, "elapsed_ms",
				       json_object_new_int64((int64_t)(vy_now_ms() - j->started_mono)));
		json_object_array_add(phases, p);
	}
	json_object_object_add(j->doc, "phase", json_object_new_string(phase));
	int rc = save_locked(j, err);
	pthread_mutex_unlock(&j->lock);
	return rc;
}

void vy_journal_set(struct vy_journal *j, const char *key, json_object *val)
{
	pthread_mutex_lock(&j->lock);
	json_object_object_add(j->doc, key, val);
	pthread_mutex_unlock(&j->lock);
}

const char *vy_journal_get_phase(struct vy_journal *j)
{
	return vy_json_str(j->doc, "phase", "");
}

int vy_journal_finish(struct vy_journal *j, const char *result,
		      const char *error, vy_error *err)
{
	pthread_mutex_lock(&j->lock);
	json_object_object_add(j->doc, "result", json_object_new_string(result));
	if (error)
		json_object_object_add(j->doc, "error", json_object_new_string(error));
	json_object_object_add(j->doc, "finished_ms", json_object_new_int64((int64_t)vy_wall_ms()));
	int rc = save_locked(j, err);
	pthread_mutex_unlock(&j->lock);
	return rc;
}

void vy_journal_free(struct vy_journal *j)
{
	if (!j)
		return;
	json_object_put(j->doc);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

int vy_journal_adopt(const char *state_dir, json_object *doc,
		     struct vy_journal **out, vy_error *err)
{
	const char *id = vy_json_str(doc, "id", "");
	if (!vy_journal_id_is_valid(id)) {
		json_object_put(doc);
		return vy_error_set(err, EINVAL, "journal without a valid id");
	}
	struct vy_journal *j = calloc(1, sizeof(*j));
	if (!j) {
		json_object_put(doc);
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	snprintf(j->path, sizeof(j->path), "%s/journal/%s.json", state_dir, id);
	pthread_mutex_init(&j->lock, NULL);
	j->started_mono = vy_now_ms();
	j->doc = doc;
	*out = j;
	return 0;
}

int vy_journal_load(const char *state_dir, const char *id, json_object **out,
		    vy_error *err)
{
	if (!vy_journal_id_is_valid(id))
		return vy_error_set(err, EINVAL, "invalid migration id '%s'", id);
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/journal/%s.json", state_dir, id);
	cleanup_free char *text = NULL;
	if (vy_read_file(path, 16u << 20, &text, NULL, err) < 0)
		return vy_error_wrap(err, "no migration %s", id);
	json_object *o = json_tokener_parse(text);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return vy_error_set(err, EINVAL, "journal %s is corrupt", path);
	}
	*out = o;
	return 0;
}

static int by_start_desc(const void *a, const void *b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	int64_t sx = vy_json_int(x, "started_ms", 0), sy = vy_json_int(y, "started_ms", 0);
	return sx < sy ? 1 : sx > sy ? -1 : 0;
}

int vy_journal_load_all(const char *state_dir, json_object **out, vy_error *err)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/journal", state_dir);
	json_object *arr = json_object_new_array();
	cleanup_closedir DIR *d = opendir(dir);
	if (!d) {
		*out = arr;
		return errno == ENOENT ? 0 : vy_error_sys(err, errno, "open %s", dir);
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n != 21 || strcmp(de->d_name + 16, ".json") != 0)
			continue;
		char id[17];
		memcpy(id, de->d_name, 16);
		id[16] = '\0';
		json_object *o;
		if (vy_journal_load(state_dir, id, &o, NULL) == 0)
			json_object_array_add(arr, o);
	}
	json_object_array_sort(arr, by_start_desc);
	*out = arr;
	return 0;
}
