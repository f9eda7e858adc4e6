/* manifest_codec.c - manifest bytes: the encoder and the one parser.
 *
 * vy_manifest_encode() writes the format described in manifest.h.
 * vy_manifest_decode() reads it back from untrusted bytes (it is also a
 * fuzz target): every length is bounds-checked, and every path must be safe,
 * unique and placed under an earlier directory before it is accepted.
 */
#include "manifest.h"
#include "manifest_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cleanup.h"
#include "wire.h"

/* Fixed bytes of one encoded entry, without path, target and xattrs. */
#define ENTRY_FIXED_LEN 56

/* ---- encoding ---- */

static size_t entry_encoded_len(const struct vy_entry *e)
{
	size_t n = ENTRY_FIXED_LEN + strlen(e->path);
	if (e->target)
		n += strlen(e->target);
	for (uint16_t i = 0; i < e->nxattr; i++)
		n += 6 + strlen(e->xattrs[i].name) + e->xattrs[i].len;
	return n;
}

static bool entry_fits(const struct vy_entry *e)
{
	if (strlen(e->path) > UINT16_MAX)
		return false;
	if (e->target && strlen(e->target) > UINT16_MAX)
		return false;
	for (uint16_t i = 0; i < e->nxattr; i++) {
		if (strlen(e->xattrs[i].name) > UINT16_MAX)
			return false;
	}
	return true;
}

static uint8_t *put_bytes(uint8_t *p, const void *data, size_t len)
{
	if (len)
		memcpy(p, data, len);
	return p + len;
}

static uint8_t *encode_entry(uint8_t *p, const struct vy_entry *e)
{
	size_t plen = strlen(e->path), tlen = e->target ? strlen(e->target) : 0;
	p[0] = e->type;
	p[1] = 0;
	vy_put_u16(p + 2, (uint16_t)plen);
	p = put_bytes(p + 4, e->path, plen);
	vy_put_u32(p, e->mode);
	vy_put_u32(p + 4, e->uid);
	vy_put_u32(p + 8, e->gid);
	vy_put_u64(p + 12, e->size);
	vy_put_u64(p + 20, e->rdev);
	vy_put_u64(p + 28, (uint64_t)e->atime_ns);
	vy_put_u64(p + 36, (uint64_t)e->mtime_ns);
	vy_put_u32(p + 44, e->link_of);
	vy_put_u16(p + 48, (uint16_t)tlen);
	p = put_bytes(p + 50, e->target, tlen);
	vy_put_u16(p, e->nxattr);
	p += 2;
	for (uint16_t i = 0; i < e->nxattr; i++) {
		const struct vy_xattr *x = &e->xattrs[i];
		size_t nlen = strlen(x->name);
		vy_put_u16(p, (uint16_t)nlen);
		p = put_bytes(p + 2, x->name, nlen);
		vy_put_u32(p, x->len);
		p = put_bytes(p + 4, x->value, x->len);
	}
	return p;
}

int vy_manifest_encode(const struct vy_manifest *m, uint8_t **buf,
		       size_t *len, vy_error *err)
{
	size_t total = 12;
	for (uint32_t i = 0; i < m->count; i++) {
		if (!entry_fits(&m->entries[i]))
			return vy_error_set(err, EINVAL,
					    "encode manifest: entry %u too large", i);
		total += entry_encoded_len(&m->entries[i]);
	}
	uint8_t *out = malloc(total);
	if (!out)
		return vy_error_sys(err, ENOMEM, "encode manifest");
	vy_put_u32(out, VY_MANIFEST_MAGIC);
	vy_put_u16(out + 4, VY_MANIFEST_VERSION);
	vy_put_u16(out + 6, 0);
	vy_put_u32(out + 8, m->count);
	uint8_t *p = out + 12;
	for (uint32_t i = 0; i < m->count; i++)
		p = encode_entry(p, &m->entries[i]);
	*buf = out;
	*len = total;
	return 0;
}

int vy_manifest_sha256(const struct vy_manifest *m, uint8_t sha[32], vy_error *err)
{
	cleanup_free uint8_t *buf = NULL;
	size_t len;
	unsigned dlen = 0;
	if (vy_manifest_encode(m, &buf, &len, err) < 0)
		return -1;
	if (!EVP_Digest(buf, len, sha, &dlen, EVP_sha256(), NULL))
		return vy_error_set(err, EIO, "SHA-256 of a manifest");
	return 0;
}

/* ---- decoding: the one parser of manifest bytes ---- */

struct reader {
	const uint8_t *p, *end;
};

static const uint8_t *take(struct reader *r, size_t n)
{
	if ((size_t)(r->end - r->p) < n)
		return NULL;
	const uint8_t *at = r->p;
	r->p += n;
	return at;
}

static bool take_u16(struct reader *r, uint16_t *v)
{
	const uint8_t *p = take(r, 2);
	return p ? (*v = vy_get_u16(p), true) : false;
}

static bool take_u32(struct reader *r, uint32_t *v)
{
	const uint8_t *p = take(r, 4);
	return p ? (*v = vy_get_u32(p), true) : false;
}

/* A length-prefixed string copied out as a C string; NUL bytes refused. */
static int take_string(struct reader *r, size_t len, char **out)
{
	const uint8_t *p = take(r, len);
	if (!p)
		return -1;
	if (memchr(p, '\0', len))
		return -2;
	if (!(*out = malloc(len + 1)))
		return -3;
	memcpy(*out, p, len);
	(*out)[len] = '\0';
	return 0;
}

static int decode_xattrs(struct reader *r, struct vy_entry *e, uint32_t i,
			 vy_error *err)
{
	uint16_t count;
	if (!take_u16(r, &count))
		return vy_error_set(err, EINVAL, "entry %u: truncated", i);
	if (count > VY_XATTR_COUNT_MAX)
		return vy_error_set(err, EINVAL, "entry %u: %u xattrs", i, count);
	if (count && !(e->xattrs = calloc(count, sizeof(*e->xattrs))))
		return vy_error_sys(err, ENOMEM, "entry %u", i);
	e->nxattr = count; /* so that a failure part-way frees what was read */
	for (uint16_t k = 0; k < count; k++) {
		struct vy_xattr *x = &e->xattrs[k];
		uint16_t nlen;
		if (!take_u16(r, &nlen))
			return vy_error_set(err, EINVAL, "entry %u: truncated", i);
		if (nlen == 0 || nlen > VY_XATTR_NAME_MAX)
			return vy_error_set(err, EINVAL,
					    "entry %u: bad xattr name length", i);
		int rc = take_string(r, nlen, &x->name);
		if (rc < 0)
			return vy_error_set(err, EINVAL, "entry %u: %s", i,
					    rc == -2 ? "NUL in xattr name"
						     : "truncated");
		if (!take_u32(r, &x->len))
			return vy_error_set(err, EINVAL, "entry %u: truncated", i);
		if (x->len > VY_XATTR_VALUE_MAX)
			return vy_error_set(err, EINVAL,
					    "entry %u: xattr %s value too large", i,
					    x->name);
		const uint8_t *v = take(r, x->len);
		if (!v)
			return vy_error_set(err, EINVAL, "entry %u: truncated", i);
		if (!(x->value = malloc(x->len ? x->len : 1)))
			return vy_error_sys(err, ENOMEM, "entry %u", i);
		memcpy(x->value, v, x->len);
	}
	return 0;
}

static int decode_fields(struct reader *r, struct vy_entry *e, uint32_t i,
			 vy_error *err)
{
	const uint8_t *p = take(r, ENTRY_FIXED_LEN - 6);
	if (!p)
		return vy_error_set(err, EINVAL, "entry %u: truncated", i);
	e->mode = vy_get_u32(p);
	e->uid = vy_get_u32(p + 4);
	e->gid = vy_get_u32(p + 8);
	e->size = vy_get_u64(p + 12);
	e->rdev = vy_get_u64(p + 20);
	e->atime_ns = (int64_t)vy_get_u64(p + 28);
	e->mtime_ns = (int64_t)vy_get_u64(p + 36);
	e->link_of = vy_get_u32(p + 44);
	uint16_t tlen = vy_get_u16(p + 48);
	if (e->mode & ~07777u)
		return vy_error_set(err, EINVAL, "entry %u: bad mode %o", i, e->mode);
	if ((e->type == VY_ENTRY_SYMLINK) != (tlen > 0))
		return vy_error_set(err, EINVAL, "entry %u: %s", i,
				    tlen ? "target on a non-symlink"
					 : "symlink without a target");
	if (tlen > VY_PATH_MAX)
		return vy_error_set(err, EINVAL, "entry %u: target too long", i);
	if (tlen) {
		int rc = take_string(r, tlen, &e->target);
		if (rc < 0)
			return vy_error_set(err, EINVAL, "entry %u: %s", i,
					    rc == -2 ? "NUL in symlink target"
						     : "truncated");
		if (e->size != tlen)
			return vy_error_set(err, EINVAL,
					    "entry %u: symlink size mismatch", i);
	}
	return decode_xattrs(r, e, i, err);
}

/* Where entry i sits in the tree: the root first, each parent an earlier
 * directory, no duplicates, hard links to an earlier first name. */
static int check_placement(struct vy_manifest *m, struct path_index *idx,
			   uint32_t i, vy_error *err)
{
	struct vy_entry *e = &m->entries[i];
	size_t len = strlen(e->path);
	if (i == 0 && (e->type != VY_ENTRY_DIR || len != 0))
		return vy_error_set(err, EINVAL, "entry 0 is not the root directory");
	if (i > 0 && len == 0)
		return vy_error_set(err, EINVAL, "entry %u: empty path", i);
	if (i > 0) {
		const char *slash = strrchr(e->path, '/');
		size_t plen = slash ? (size_t)(slash - e->path) : 0;
		uint32_t *parent = path_index_slot(idx, m->entries, e->path, plen);
		if (*parent == 0 || m->entries[*parent - 1].type != VY_ENTRY_DIR)
			return vy_error_set(err, EINVAL,
					    "entry %u '%s': parent is not an earlier directory",
					    i, e->path);
	}
	uint32_t *slot = path_index_slot(idx, m->entries, e->path, len);
	if (*slot)
		return vy_error_set(err, EINVAL, "entry %u '%s': duplicate path",
				    i, e->path);
	*slot = i + 1;
	if (e->link_of != VY_NO_LINK) {
		const struct vy_entry *first =
			e->link_of < i ? &m->entries[e->link_of] : NULL;
		if (e->type != VY_ENTRY_REG || !first ||
		    first->type != VY_ENTRY_REG || first->link_of != VY_NO_LINK)
			return vy_error_set(err, EINVAL, "entry %u '%s': bad link_of %u",
					    i, e->path, e->link_of);
	} else if (e->type == VY_ENTRY_REG) {
		if (e->size > UINT64_MAX - m->data_bytes)
			return vy_error_set(err, EINVAL, "entry %u: size overflow", i);
		m->data_bytes += e->size;
	}
	return 0;
}

/* Type, path and fields of entry i (appended to m): everything but its
 * place in the tree. */
static int decode_entry_body(struct reader *r, struct vy_manifest *m, vy_error *err)
{
	uint32_t i = m->count;
	struct vy_entry *e = manifest_add(m, err);
	if (!e)
		return -1;
	const uint8_t *p = take(r, 4);
	if (!p)
		return vy_error_set(err, EINVAL, "entry %u: truncated", i);
	e->type = p[0];
	if (e->type < VY_ENTRY_DIR || e->type > VY_ENTRY_SOCK)
		return vy_error_set(err, EINVAL, "entry %u: unknown type %u", i,
				    e->type);
	if (p[1] != 0)
		return vy_error_set(err, EINVAL, "entry %u: reserved byte set", i);
	uint16_t plen = vy_get_u16(p + 2);
	const uint8_t *path = take(r, plen);
	if (!path)
		return vy_error_set(err, EINVAL, "entry %u: truncated", i);
	if (!vy_path_is_safe((const char *)path, plen))
		return vy_error_set(err, EINVAL, "entry %u: unsafe path '%.*s'",
				    i, plen > 200 ? 200 : (int)plen,
				    (const char *)path);
	if (!(e->path = strndup((const char *)path, plen)))
		return vy_error_sys(err, ENOMEM, "entry %u", i);
	return decode_fields(r, e, i, err);
}

static int decode_entry(struct reader *r, struct vy_manifest *m,
			struct path_index *idx, vy_error *err)
{
	if (decode_entry_body(r, m, err) < 0)
		return -1;
	return check_placement(m, idx, m->count - 1, err);
}

int vy_manifest_decode(const uint8_t *buf, size_t len, struct vy_manifest *m,
		       vy_error *err)
{
	memset(m, 0, sizeof(*m));
	struct reader r = { buf, buf + len };
	const uint8_t *h = take(&r, 12);
	if (!h)
		return vy_error_set(err, EINVAL, "manifest: truncated header");
	if (vy_get_u32(h) != VY_MANIFEST_MAGIC)
		return vy_error_set(err, EINVAL, "manifest: bad magic");
	if (vy_get_u16(h + 4) != VY_MANIFEST_VERSION || vy_get_u16(h + 6) != 0)
		return vy_error_set(err, EINVAL,
				    "manifest: unsupported version %u (reserved %u)",
				    vy_get_u16(h + 4), vy_get_u16(h + 6));
	uint32_t count = vy_get_u32(h + 8);
	if (count == 0 || count > VY_MANIFEST_MAX_ENTRIES ||
	    count > (len - 12) / ENTRY_FIXED_LEN)
		return vy_error_set(err, EINVAL, "manifest: bad entry count %u",
				    count);
	struct path_index idx;
	if (path_index_init(&idx, count) < 0)
		return vy_error_sys(err, ENOMEM, "manifest");
	m->entries = malloc(count * sizeof(*m->entries));
	m->cap = m->entries ? count : 0;
	int rc = 0;
	while (rc == 0 && m->count < count)
		rc = decode_entry(&r, m, &idx, err);
	if (rc == 0 && r.p != r.end)
		rc = vy_error_set(err, EINVAL, "%zu bytes of trailing garbage",
				  (size_t)(r.end - r.p));
	free(idx.slots);
	if (rc < 0) {
		vy_manifest_free(m);
		return vy_error_wrap(err, "manifest");
	}
	return 0;
}

/* ---- deltas (manifest.h) ---- */

#define DELTA_HEADER_LEN 52

int vy_manifest_delta_encode(const struct vy_manifest_delta *d, uint8_t **buf,
			     size_t *len, vy_error *err)
{
	size_t total = DELTA_HEADER_LEN + 4 * (size_t)d->ngone;
	for (uint32_t k = 0; k < d->put.count; k++) {
		if (!entry_fits(&d->put.entries[k]))
			return vy_error_set(err, EINVAL, "encode delta: entry %u too large", k);
		total += 4 + entry_encoded_len(&d->put.entries[k]);
	}
	uint8_t *out = malloc(total);
	if (!out)
		return vy_error_sys(err, ENOMEM, "encode delta");
	vy_put_u32(out, VY_DELTA_MAGIC);
	vy_put_u16(out + 4, VY_DELTA_VERSION);
	vy_put_u16(out + 6, 0);
	memcpy(out + 8, d->base_sha, 32);
	vy_put_u32(out + 40, d->base_count);
	vy_put_u32(out + 44, d->ngone);
	vy_put_u32(out + 48, d->put.count);
	uint8_t *p = out + DELTA_HEADER_LEN;
	for (uint32_t k = 0; k < d->ngone; k++, p += 4)
		vy_put_u32(p, d->gone[k]);
	for (uint32_t k = 0; k < d->put.count; k++) {
		vy_put_u32(p, d->at[k]);
		p = encode_entry(p + 4, &d->put.entries[k]);
	}
	*buf = out;
	*len = total;
	return 0;
}

static int decode_delta(struct reader *r, struct vy_manifest_delta *d, vy_error *err)
{
	const uint8_t *h = take(r, DELTA_HEADER_LEN);
	if (!h)
		return vy_error_set(err, EINVAL, "truncated header");
	if (vy_get_u32(h) != VY_DELTA_MAGIC)
		return vy_error_set(err, EINVAL, "bad magic");
	if (vy_get_u16(h + 4) != VY_DELTA_VERSION || vy_get_u16(h + 6) != 0)
		return vy_error_set(err, EINVAL, "unsupported version %u (reserved %u)",
				    vy_get_u16(h + 4), vy_get_u16(h + 6));
	memcpy(d->base_sha, h + 8, 32);
	d->base_count = vy_get_u32(h + 40);
	uint32_t ngone = vy_get_u32(h + 44), nput = vy_get_u32(h + 48);
	size_t left = (size_t)(r->end - r->p);
	if (d->base_count == 0 || d->base_count > VY_MANIFEST_MAX_ENTRIES)
		return vy_error_set(err, EINVAL, "bad base count %u", d->base_count);
	if (ngone >= d->base_count || ngone > left / 4)
		return vy_error_set(err, EINVAL, "bad gone count %u", ngone);
	if (nput > VY_MANIFEST_MAX_ENTRIES || nput > (left - 4 * (size_t)ngone) / (4 + ENTRY_FIXED_LEN))
		return vy_error_set(err, EINVAL, "bad entry count %u", nput);
	d->gone = malloc((ngone ? ngone : 1) * sizeof(*d->gone));
	d->at = malloc((nput ? nput : 1) * sizeof(*d->at));
	d->put.entries = malloc((nput ? nput : 1) * sizeof(*d->put.entries));
	if (!d->gone || !d->at || !d->put.entries)
		return vy_error_sys(err, ENOMEM, "delta");
	d->put.cap = nput ? nput : 1;
	for (; d->ngone < ngone; d->ngone++) {
		uint32_t g = 0;
		if (!take_u32(r, &g) || g == 0 || g >= d->base_count || (d->ngone && g <= d->gone[d->ngone - 1]))
			return vy_error_set(err, EINVAL, "gone entry %u: bad index %u", d->ngone, g);
		d->gone[d->ngone] = g;
	}
	while (d->put.count < nput) {
		uint32_t k = d->put.count;
		const uint8_t *a = take(r, 4);
		if (!a)
			return vy_error_set(err, EINVAL, "entry %u: truncated", k);
		uint32_t at = vy_get_u32(a);
		if (decode_entry_body(r, &d->put, err) < 0)
			return -1;
		const struct vy_entry *e = &d->put.entries[k];
		d->at[k] = at;
		if (at != VY_DELTA_NEW && at >= d->base_count)
			return vy_error_set(err, EINVAL, "entry %u: bad index %u", k, at);
		if ((at == 0) != (*e->path == '\0') || (at == 0 && e->type != VY_ENTRY_DIR))
			return vy_error_set(err, EINVAL, "entry %u '%s': %s", k, e->path,
					    at == 0 ? "the root is a directory with an empty path"
						    : "empty path");
		if (e->link_of != VY_NO_LINK)
			return vy_error_set(err, EINVAL, "entry %u '%s': a hard link", k, e->path);
	}
	if (r->p != r->end)
		return vy_error_set(err, EINVAL, "%zu bytes of trailing garbage",
				    (size_t)(r->end - r->p));
	return 0;
}

int vy_manifest_delta_decode(const uint8_t *buf, size_t len,
			     struct vy_manifest_delta *d, vy_error *err)
{
	memset(d, 0, sizeof(*d));
	struct reader r = { buf, buf + len };
	if (decode_delta(&r, d, err) < 0) {
		vy_manifest_delta_free(d);
		return vy_error_wrap(err, "manifest delta");
	}
	return 0;
}
