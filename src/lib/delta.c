/* delta.c - see delta.h. */
#include "delta.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"

static int by_path(const void *a, const void *b, void *arg)
{
	const struct vy_manifest *m = arg;
	return strcmp(m->entries[*(const uint32_t *)a].path, m->entries[*(const uint32_t *)b].path);
}

/* Which entries belong to a hard-link group (first name or later). */
static uint8_t *linked_entries(const struct vy_manifest *m)
{
	uint8_t *linked = calloc(m->count ? m->count : 1, 1);
	if (!linked)
		return NULL;
	for (uint32_t i = 0; i < m->count; i++) {
		uint32_t first = m->entries[i].link_of;
		if (first != VY_NO_LINK && first < m->count) {
			linked[i] = 1;
			linked[first] = 1;
		}
	}
	return linked;
}

static bool same_xattrs(const struct vy_entry *a, const struct vy_entry *b)
{
	if (a->nxattr != b->nxattr)
		return false;
	for (uint16_t i = 0; i < a->nxattr; i++) {
		bool found = false;
		for (uint16_t k = 0; k < b->nxattr && !found; k++)
			found = !strcmp(a->xattrs[i].name, b->xattrs[k].name) &&
				a->xattrs[i].len == b->xattrs[k].len &&
				!memcmp(a->xattrs[i].value, b->xattrs[k].value, a->xattrs[i].len);
		if (!found)
			return false;
	}
	return true;
}

static bool same_file(const struct vy_entry *a, const struct vy_entry *b)
{
	return a->type == VY_ENTRY_REG && b->type == VY_ENTRY_REG && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->mode == b->mode && a->uid == b->uid &&
	       a->gid == b->gid && same_xattrs(a, b);
}

int vy_delta_unchanged(const struct vy_manifest *old, const struct vy_manifest *cur,
		       uint8_t **unchanged, uint32_t *count, vy_error *err)
{
	cleanup_free uint32_t *order = malloc((old->count ? old->count : 1) * sizeof(uint32_t));
	cleanup_free uint8_t *old_linked = linked_entries(old);
	cleanup_free uint8_t *cur_linked = linked_entries(cur);
	uint8_t *out = calloc(cur->count ? cur->count : 1, 1);
	if (!order || !old_linked || !cur_linked || !out) {
		free(out);
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < old->count; i++)
		order[i] = i;
	qsort_r(order, old->count, sizeof(uint32_t), by_path, (void *)old);
	uint32_t n = 0;
	for (uint32_t i = 0; i < cur->count; i++) {
		const struct vy_entry *e = &cur->entries[i];
		if (e->type != VY_ENTRY_REG || cur_linked[i])
			continue;
		uint32_t lo = 0, hi = old->count;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			int c = strcmp(old->entries[order[mid]].path, e->path);
			if (c == 0) {
				lo = mid;
				break;
			}
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < old->count && !strcmp(old->entries[order[lo]].path, e->path) &&
		    !old_linked[order[lo]] && same_file(&old->entries[order[lo]], e)) {
			out[i] = 1;
			n++;
		}
	}
	*unchanged = out;
	if (count)
		*count = n;
	return 0;
}

void vy_delta_forget(struct vy_manifest *m, const uint8_t *skipped)
{
	for (uint32_t i = 0; i < m->count; i++)
		if (skipped[i])
			m->entries[i].mtime_ns = INT64_MIN;
}

int vy_delta_need(const struct vy_manifest *base, const struct vy_manifest_delta *d,
		  uint8_t **need, uint32_t *files, uint64_t *bytes, uint32_t **base_of,
		  vy_error *err)
{
	uint32_t nnew = 0, nfiles = 0;
	uint64_t nbytes = 0;
	if (d->base_count != base->count || d->ngone > base->count)
		return vy_error_set(err, EINVAL, "the delta is not for this manifest");
	for (uint32_t k = 0; k < d->put.count; k++)
		nnew += d->at[k] == VY_DELTA_NEW;
	uint32_t kept = base->count - d->ngone;
	size_t total = (size_t)kept + nnew;
	uint8_t *out = calloc(total ? total : 1, 1);
	uint32_t *from = base_of ? malloc((total ? total : 1) * sizeof(*from)) : NULL;
	if (!out || (base_of && !from)) {
		free(out);
		free(from);
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	/* where each base entry goes: it moves down by the gone ones before it */
	for (uint32_t i = 0, g = 0, w = 0; from && i < base->count; i++) {
		if (g < d->ngone && d->gone[g] == i) {
			g++;
			continue;
		}
		if (w < total)
			from[w++] = i;
	}
	for (uint32_t k = 0, j = 0; from && k < d->put.count; k++)
		if (d->at[k] == VY_DELTA_NEW && kept + j < total)
			from[kept + j++] = VY_DELTA_NEW;
	for (uint32_t k = 0, j = 0; k < d->put.count; k++) {
		const struct vy_entry *e = &d->put.entries[k];
		uint32_t at = d->at[k];
		uint64_t where;
		if (at == VY_DELTA_NEW) {
			where = (uint64_t)kept + j++;
		} else {
			if (at >= base->count) {
				free(out);
				free(from);
				return vy_error_set(err, EINVAL, "delta: entry %u out of range", at);
			}
			/* base entry at moves down by the gone entries before it */
			uint32_t lo = 0, hi = d->ngone;
			while (lo < hi) {
				uint32_t mid = lo + (hi - lo) / 2;
				if (d->gone[mid] < at)
					lo = mid + 1;
				else
					hi = mid;
			}
			where = at - lo;
		}
		if (e->type != VY_ENTRY_REG || e->link_of != VY_NO_LINK)
			continue;
		const struct vy_entry *was = at == VY_DELTA_NEW ? NULL : &base->entries[at];
		if (was && was->type == VY_ENTRY_REG && was->size == e->size &&
		    was->mtime_ns == e->mtime_ns)
			continue;
		out[where] = 1;
		nfiles++;
		nbytes += e->size;
	}
	*need = out;
	if (base_of)
		*base_of = from;
	if (files)
		*files = nfiles;
	if (bytes)
		*bytes = nbytes;
	return 0;
}
