/* manifest_delta.c - the change from one manifest to another, and bringing
 * a manifest up to date with it (manifest.h, "deltas").
 *
 * A jit migration's freeze sends only this change: the manifest itself
 * went before the freeze.  vy_manifest_diff() runs on the source; both
 * sides then apply the same delta to the same base, so that they agree on
 * every entry's index (voyager-fs fetches by index).  The target checks an
 * untrusted delta with vy_manifest_delta_check() before it touches anything.
 * Applying is linear in the base but only moves entries, never copies or
 * hashes them; hashing the base happens only for a delta with new entries,
 * to check where they go.
 */
#include "manifest.h"
#include "manifest_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"

void vy_manifest_delta_free(struct vy_manifest_delta *d)
{
	if (!d)
		return;
	free(d->gone);
	free(d->at);
	vy_manifest_free(&d->put);
	memset(d, 0, sizeof(*d));
}

/* 1 for each entry that is part of a hard-link group. */
static uint8_t *linked_entries(const struct vy_manifest *m)
{
	uint8_t *l = calloc(m->count ? m->count : 1, 1);
	for (uint32_t i = 0; l && i < m->count; i++) {
		uint32_t f = m->entries[i].link_of;
		if (f != VY_NO_LINK) {
			l[i] = 1;
			if (f < m->count)
				l[f] = 1;
		}
	}
	return l;
}

/* Both first names, or later names of first names at the same path. */
static bool same_link(const struct vy_manifest *base, const struct vy_entry *b,
		      const struct vy_manifest *cur, const struct vy_entry *c)
{
	if (b->link_of == VY_NO_LINK || c->link_of == VY_NO_LINK)
		return b->link_of == c->link_of;
	return b->link_of < base->count && c->link_of < cur->count &&
	       !strcmp(base->entries[b->link_of].path, cur->entries[c->link_of].path);
}

static int put_entry(struct vy_manifest_delta *d, const struct vy_entry *e, uint32_t at,
		     vy_error *err)
{
	uint32_t cap = d->put.cap;
	if (manifest_copy_entry(&d->put, e, err) < 0)
		return -1;
	if (d->put.cap != cap || !d->at) {
		uint32_t *more = realloc(d->at, d->put.cap * sizeof(*more));
		if (!more)
			return vy_error_sys(err, ENOMEM, "manifest delta");
		d->at = more;
	}
	d->at[d->put.count - 1] = at;
	return 0;
}

static int diff(const struct vy_manifest *base, const struct vy_manifest *cur,
		struct vy_manifest_delta *d, vy_error *err)
{
	if (!base->count || !cur->count || base->entries[0].type != VY_ENTRY_DIR ||
	    cur->entries[0].type != VY_ENTRY_DIR || *base->entries[0].path ||
	    *cur->entries[0].path)
		return 0;
	cleanup_free uint8_t *blink = linked_entries(base);
	cleanup_free uint8_t *clink = linked_entries(cur);
	cleanup_free uint8_t *seen = calloc(base->count, 1);
	struct path_index idx = { 0 };
	if (!blink || !clink || !seen || path_index_init(&idx, base->count) < 0)
		return vy_error_sys(err, ENOMEM, "manifest delta");
	for (uint32_t i = 0; i < base->count; i++) {
		const char *p = base->entries[i].path;
		*path_index_slot(&idx, base->entries, p, strlen(p)) = i + 1;
	}
	d->base_count = base->count;
	int rc = 1;
	for (uint32_t i = 0; rc == 1 && i < cur->count; i++) {
		const struct vy_entry *e = &cur->entries[i];
		uint32_t slot = *path_index_slot(&idx, base->entries, e->path, strlen(e->path));
		const struct vy_entry *b = slot ? &base->entries[slot - 1] : NULL;
		if (b && manifest_same_shape(b, e)) {
			seen[slot - 1] = 1;
			bool linked = blink[slot - 1] || clink[i];
			/* reading a linked file must not cost the whole manifest:
			 * its access time is the one change a delta leaves out */
			bool same = (linked ? manifest_same_meta_but_atime(b, e)
					    : manifest_same_meta(b, e)) &&
				    same_link(base, b, cur, e);
			if (same)
				continue;
			if (linked)
				rc = 0; /* a hard link changed */
			else if (put_entry(d, e, slot - 1, err) < 0)
				rc = -1;
		} else if (clink[i]) {
			rc = 0;
		} else if (put_entry(d, e, VY_DELTA_NEW, err) < 0) {
			rc = -1;
		}
	}
	free(idx.slots);
	if (rc == 1 && !seen[0])
		rc = 0;
	for (uint32_t i = 1; rc == 1 && i < base->count; i++) {
		if (seen[i])
			continue;
		if (blink[i]) {
			rc = 0;
			break;
		}
		if (!d->gone || d->ngone % 1024 == 0) {
			uint32_t *more = realloc(d->gone, ((size_t)d->ngone + 1024) * sizeof(*more));
			if (!more)
				return vy_error_sys(err, ENOMEM, "manifest delta");
			d->gone = more;
		}
		d->gone[d->ngone++] = i;
	}
	return rc;
}

int vy_manifest_diff(const struct vy_manifest *base, const struct vy_manifest *cur,
		     struct vy_manifest_delta *d, vy_error *err)
{
	memset(d, 0, sizeof(*d));
	int rc = diff(base, cur, d, err);
	if (rc != 1)
		vy_manifest_delta_free(d);
	return rc;
}

struct vy_manifest_paths {
	const struct vy_entry *entries; /* the manifest it was built for */
	uint32_t count;
	struct path_index idx;
	uint32_t *children;             /* per entry: entries right below it */
};

void vy_manifest_paths_free(struct vy_manifest_paths *p)
{
	if (!p)
		return;
	free(p->idx.slots);
	free(p->children);
	free(p);
}

static uint32_t parent_of(const struct vy_manifest_paths *p, const char *path)
{
	const char *slash = strrchr(path, '/');
	return *path ? *path_index_slot(&p->idx, p->entries, path, slash ? (size_t)(slash - path) : 0)
		     : 0;
}

int vy_manifest_paths_build(const struct vy_manifest *m, struct vy_manifest_paths **out,
			    vy_error *err)
{
	struct vy_manifest_paths *p = calloc(1, sizeof(*p));
	if (!p || path_index_init(&p->idx, m->count) < 0 ||
	    !(p->children = calloc(m->count ? m->count : 1, sizeof(uint32_t)))) {
		vy_manifest_paths_free(p);
		return vy_error_sys(err, ENOMEM, "index a manifest");
	}
	p->entries = m->entries;
	p->count = m->count;
	for (uint32_t i = 0; i < m->count; i++) {
		const char *path = m->entries[i].path;
		*path_index_slot(&p->idx, m->entries, path, strlen(path)) = i + 1;
	}
	for (uint32_t i = 1; i < m->count; i++) {
		uint32_t parent = parent_of(p, m->entries[i].path);
		if (parent)
			p->children[parent - 1]++;
	}
	*out = p;
	return 0;
}

/* Nothing stays below a directory that goes: each gone directory has as
 * many gone entries right below it as it has entries. */
static int check_gone_dirs(const struct vy_manifest *base, const struct vy_manifest_paths *p,
			   const struct vy_manifest_delta *d, vy_error *err)
{
	bool dirs = false;
	for (uint32_t k = 0; k < d->ngone && !dirs; k++)
		dirs = base->entries[d->gone[k]].type == VY_ENTRY_DIR;
	if (!dirs)
		return 0;
	cleanup_free uint32_t *below = calloc(base->count, sizeof(uint32_t));
	if (!below)
		return vy_error_sys(err, ENOMEM, "manifest delta");
	for (uint32_t k = 0; k < d->ngone; k++) {
		uint32_t parent = parent_of(p, base->entries[d->gone[k]].path);
		if (parent)
			below[parent - 1]++;
	}
	for (uint32_t k = 0; k < d->ngone; k++) {
		uint32_t g = d->gone[k];
		if (base->entries[g].type == VY_ENTRY_DIR && below[g] != p->children[g])
			return vy_error_set(err, EINVAL, "delta: the directory '%s' goes, but %u "
					    "entries right below it stay", base->entries[g].path,
					    p->children[g] - below[g]);
	}
	return 0;
}

int vy_manifest_delta_check(const struct vy_manifest *base,
			    const struct vy_manifest_delta *d, vy_error *err)
{
	return vy_manifest_delta_check_with(base, NULL, d, err);
}

int vy_manifest_delta_check_with(const struct vy_manifest *base,
				 const struct vy_manifest_paths *paths,
				 const struct vy_manifest_delta *d, vy_error *err)
{
	if (d->base_count != base->count)
		return vy_error_set(err, EINVAL, "the delta is for a manifest of %u entries, "
				    "not this one of %u", d->base_count, base->count);
	/* 1: gone, 2: replaced */
	cleanup_free uint8_t *named = calloc(base->count, 1);
	if (!named)
		return vy_error_sys(err, ENOMEM, "manifest delta");
	for (uint32_t k = 0; k < d->ngone; k++) {
		uint32_t g = d->gone[k];
		if (g == 0 || g >= base->count || (k && g <= d->gone[k - 1]))
			return vy_error_set(err, EINVAL, "delta: bad gone index %u", g);
		named[g] = 1;
	}
	uint32_t nnew = 0;
	for (uint32_t k = 0; k < d->put.count; k++) {
		const struct vy_entry *e = &d->put.entries[k];
		uint32_t at = d->at[k];
		if (e->link_of != VY_NO_LINK)
			return vy_error_set(err, EINVAL, "delta: '%s' is a hard link", e->path);
		if (at == VY_DELTA_NEW) {
			if (!*e->path)
				return vy_error_set(err, EINVAL, "delta: a second root");
			nnew++;
			continue;
		}
		if (at >= base->count || named[at])
			return vy_error_set(err, EINVAL, "delta: entry %u named twice or out of "
					    "range", at);
		named[at] = 2;
		const struct vy_entry *b = &base->entries[at];
		if (strcmp(b->path, e->path))
			return vy_error_set(err, EINVAL, "delta: entry %u is '%s', not '%s'", at,
					    b->path, e->path);
		if (b->type != e->type)
			return vy_error_set(err, EINVAL, "delta: '%s' changes type in place",
					    e->path);
	}
	for (uint32_t i = 0; i < base->count; i++) {
		uint32_t f = base->entries[i].link_of;
		if (f != VY_NO_LINK && (named[i] || f >= base->count || named[f]))
			return vy_error_set(err, EINVAL, "delta: touches the hard link '%s'",
					    base->entries[i].path);
	}
	struct vy_manifest_paths *own = NULL;
	if (!paths || paths->entries != base->entries || paths->count != base->count) {
		if (vy_manifest_paths_build(base, &own, err) < 0)
			return -1;
		paths = own;
	}
	int rc = check_gone_dirs(base, paths, d, err);
	/* Where new entries go: under a directory that exists by then (of the
	 * base and not gone, or new before), at a path that does not. */
	struct path_index fresh = { 0 };
	if (rc == 0 && nnew && path_index_init(&fresh, nnew) < 0)
		rc = vy_error_sys(err, ENOMEM, "manifest delta");
	for (uint32_t k = 0; rc == 0 && k < d->put.count; k++) {
		const struct vy_entry *e = &d->put.entries[k];
		if (d->at[k] != VY_DELTA_NEW)
			continue;
		const char *slash = strrchr(e->path, '/');
		size_t plen = slash ? (size_t)(slash - e->path) : 0, len = strlen(e->path);
		const struct vy_entry *parent = NULL;
		uint32_t b = *path_index_slot(&paths->idx, base->entries, e->path, plen);
		uint32_t n = *path_index_slot(&fresh, d->put.entries, e->path, plen);
		if (b && named[b - 1] != 1)
			parent = &base->entries[b - 1];
		else if (n)
			parent = &d->put.entries[n - 1];
		b = *path_index_slot(&paths->idx, base->entries, e->path, len);
		uint32_t *self = path_index_slot(&fresh, d->put.entries, e->path, len);
		if (!parent || parent->type != VY_ENTRY_DIR)
			rc = vy_error_set(err, EINVAL, "delta: '%s' is not under a directory",
					  e->path);
		else if ((b && named[b - 1] != 1) || *self)
			rc = vy_error_set(err, EINVAL, "delta: '%s' exists already", e->path);
		else
			*self = k + 1;
	}
	free(fresh.slots);
	vy_manifest_paths_free(own);
	return rc;
}

/* What an entry adds to data_bytes. */
static uint64_t data_of(const struct vy_entry *e)
{
	return e->type == VY_ENTRY_REG && e->link_of == VY_NO_LINK ? e->size : 0;
}

int vy_manifest_delta_apply(struct vy_manifest *base, struct vy_manifest_delta *d,
			    uint32_t **map_out, vy_error *err)
{
	uint32_t count = base->count, nnew = 0;
	if (d->base_count != count)
		return vy_error_set(err, EINVAL, "the delta is for a manifest of %u entries, "
				    "not this one of %u", d->base_count, count);
	for (uint32_t k = 0; k < d->put.count; k++) {
		if (d->at[k] == VY_DELTA_NEW)
			nnew++;
		else if (d->at[k] >= count)
			return vy_error_set(err, EINVAL, "delta: entry %u out of range", d->at[k]);
	}
	for (uint32_t k = 0; k < d->ngone; k++)
		if (d->gone[k] == 0 || d->gone[k] >= count || (k && d->gone[k] <= d->gone[k - 1]))
			return vy_error_set(err, EINVAL, "delta: bad gone index %u", d->gone[k]);
	if ((uint64_t)count - d->ngone + nnew > VY_MANIFEST_MAX_ENTRIES)
		return vy_error_set(err, EFBIG, "delta: more than %u entries",
				    VY_MANIFEST_MAX_ENTRIES);
	cleanup_free uint32_t *map = malloc(count * sizeof(*map));
	uint32_t want = count - d->ngone + nnew;
	if (!map)
		return vy_error_sys(err, ENOMEM, "manifest delta");
	if (want > base->cap || count > base->cap) {
		want = want > count ? want : count;
		struct vy_entry *more = realloc(base->entries, want * sizeof(*more));
		if (!more)
			return vy_error_sys(err, ENOMEM, "manifest delta");
		base->entries = more;
		base->cap = want;
	}
	/* Nothing fails past this point.  Without gone entries nothing moves:
	 * the work is the change's, not the tree's. */
	uint64_t bytes = base->data_bytes;
	for (uint32_t k = 0; k < d->put.count; k++) {
		struct vy_entry *e = &d->put.entries[k];
		if (d->at[k] == VY_DELTA_NEW)
			continue;
		bytes -= data_of(&base->entries[d->at[k]]);
		bytes += data_of(e);
		manifest_entry_free(&base->entries[d->at[k]]);
		base->entries[d->at[k]] = *e;
		memset(e, 0, sizeof(*e));
	}
	uint32_t w = 0;
	if (!d->ngone) {
		for (uint32_t i = 0; i < count; i++)
			map[i] = i;
		w = count;
	}
	for (uint32_t i = 0, g = 0; d->ngone && i < count; i++) {
		if (g < d->ngone && d->gone[g] == i) {
			bytes -= data_of(&base->entries[i]);
			manifest_entry_free(&base->entries[i]);
			map[i] = VY_DELTA_NEW;
			g++;
			continue;
		}
		map[i] = w;
		base->entries[w++] = base->entries[i];
	}
	for (uint32_t i = 0; d->ngone && i < w; i++) {
		uint32_t *f = &base->entries[i].link_of;
		/* vy_manifest_delta_check() refused deltas that touch a link */
		if (*f != VY_NO_LINK)
			*f = *f < count && map[*f] != VY_DELTA_NEW ? map[*f] : VY_NO_LINK;
	}
	for (uint32_t k = 0; k < d->put.count; k++) {
		struct vy_entry *e = &d->put.entries[k];
		if (d->at[k] != VY_DELTA_NEW)
			continue;
		bytes += data_of(e);
		base->entries[w++] = *e;
		memset(e, 0, sizeof(*e));
	}
	base->count = w;
	base->data_bytes = bytes;
	d->put.count = 0; /* what it held was moved */
	vy_manifest_delta_free(d);
	if (map_out) {
		*map_out = map;
		map = NULL;
	}
	return 0;
}
