/* manifest.c - describing a file tree, encoding it, and laying it out again.
 *
 * The source calls vy_manifest_scan() and vy_manifest_encode().  The target
 * calls vy_manifest_decode() (the one parser of manifest bytes, and a fuzz
 * target), vy_manifest_materialise() to lay out a skeleton, lets transfer.c
 * write the file data into it, and ends with vy_manifest_finish().
 *
 * Manifest bytes come from the network, so the target trusts nothing in
 * them: the decoder checks every bound and the shape of the tree, and every
 * lookup on the target goes through openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), so that neither a hostile manifest nor a tree
 * altered under us can make us touch anything outside the root.
 */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "wire.h"

/* Fixed bytes of one encoded entry, without path, target and xattrs. */
#define ENTRY_FIXED_LEN 56
/* The file capability xattr: the kernel drops it whenever the file is
 * chowned or written, so it is applied again once the data is in. */
#define CAPABILITY_XATTR "security.capability"

/* ---- paths ---- */

bool vy_path_is_safe(const char *rel, size_t len)
{
	if (len == 0)
		return true;
	if (!rel || len > VY_PATH_MAX)
		return false;
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && rel[i] == '\0')
			return false;
		if (i < len && rel[i] != '/')
			continue;
		size_t n = i - start;
		if (n == 0)
			return false;
		if (rel[start] == '.' && (n == 1 || (n == 2 && rel[start + 1] == '.')))
			return false;
		start = i + 1;
	}
	return true;
}

static uint64_t hash_bytes(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h ^ (h >> 29);
}

/* Open-addressing set of entry indices keyed by path, so the decoder finds
 * parents and duplicates in constant time however large the manifest. */
struct path_index {
	uint32_t *slots; /* entry index + 1; 0 = empty */
	size_t mask;
};

static int path_index_init(struct path_index *t, uint32_t count)
{
	size_t size = 16;
	while (size < (size_t)count * 2)
		size <<= 1;
	t->slots = calloc(size, sizeof(*t->slots));
	t->mask = size - 1;
	return t->slots ? 0 : -1;
}

/* Returns the slot holding path, or the empty slot where it would go. */
static uint32_t *path_index_slot(const struct path_index *t,
				 const struct vy_entry *entries,
				 const char *path, size_t len)
{
	size_t i = hash_bytes(path, len) & t->mask;
	for (;; i = (i + 1) & t->mask) {
		uint32_t *slot = &t->slots[i];
		if (*slot == 0)
			return slot;
		const char *p = entries[*slot - 1].path;
		if (strncmp(p, path, len) == 0 && p[len] == '\0')
			return slot;
	}
}

/* (dev, ino) -> first entry index, for hard-link detection while scanning. */
struct inode_slot {
	uint64_t dev, ino;
	uint32_t index; /* entry index + 1; 0 = empty */
};

struct inode_index {
	struct inode_slot *slots;
	size_t size, used;
};

static struct inode_slot *inode_index_slot(struct inode_slot *slots,
					   size_t size, uint64_t dev,
					   uint64_t ino)
{
	uint64_t key[2] = { dev, ino };
	size_t i = hash_bytes(key, sizeof(key)) & (size - 1);
	while (slots[i].index && (slots[i].dev != dev || slots[i].ino != ino))
		i = (i + 1) & (size - 1);
	return &slots[i];
}

static int inode_index_grow(struct inode_index *t)
{
	size_t size = t->size ? t->size * 2 : 64;
	struct inode_slot *slots = calloc(size, sizeof(*slots));
	if (!slots)
		return -1;
	for (size_t i = 0; i < t->size; i++) {
		if (t->slots[i].index)
			*inode_index_slot(slots, size, t->slots[i].dev,
					  t->slots[i].ino) = t->slots[i];
	}
	free(t->slots);
	t->slots = slots;
	t->size = size;
	return 0;
}

/* ---- memory ---- */

static void entry_free(struct vy_entry *e)
{
	free(e->path);
	free(e->target);
	for (uint16_t i = 0; i < e->nxattr; i++) {
		free(e->xattrs[i].name);
		free(e->xattrs[i].value);
	}
	free(e->xattrs);
}

void vy_manifest_free(struct vy_manifest *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->count; i++)
		entry_free(&m->entries[i]);
	free(m->entries);
	memset(m, 0, sizeof(*m));
}

static struct vy_entry *manifest_add(struct vy_manifest *m, vy_error *err)
{
	if (m->count >= VY_MANIFEST_MAX_ENTRIES) {
		vy_error_set(err, EFBIG, "more than %u entries",
			     VY_MANIFEST_MAX_ENTRIES);
		return NULL;
	}
	if (m->count == m->cap) {
		uint32_t cap = m->cap ? m->cap * 2 : 64;
		struct vy_entry *e = realloc(m->entries, cap * sizeof(*e));
		if (!e) {
			vy_error_sys(err, ENOMEM, "manifest");
			return NULL;
		}
		m->entries = e;
		m->cap = cap;
	}
	struct vy_entry *e = &m->entries[m->count++];
	memset(e, 0, sizeof(*e));
	e->link_of = VY_NO_LINK;
	return e;
}

/* ---- scanning ---- */

struct scan {
	struct vy_manifest *m;
	int rootfd;
	dev_t dev;
	struct inode_index links;
};

/* The xattr calls have no *at() form on older kernels, so we name the
 * entry through its parent's fd in /proc and use the l*() calls, which do
 * not follow a final symlink.  The root (name "") is the fd itself. */
static void proc_path(char *out, size_t len, int dirfd, const char *name)
{
	snprintf(out, len, "/proc/self/fd/%d%s%s", dirfd, *name ? "/" : "",
		 name);
}

static ssize_t list_names(const char *path, bool follow, char **out)
{
	for (;;) {
		ssize_t n = follow ? listxattr(path, NULL, 0)
				   : llistxattr(path, NULL, 0);
		if (n <= 0)
			return n;
		char *buf = malloc(n);
		if (!buf)
			return -1;
		ssize_t got = follow ? listxattr(path, buf, n)
				     : llistxattr(path, buf, n);
		if (got >= 0) {
			*out = buf;
			return got;
		}
		free(buf);
		if (errno != ERANGE)
			return -1;
	}
}

static int read_value(const char *path, bool follow, struct vy_xattr *x,
		      vy_error *err)
{
	for (;;) {
		ssize_t n = follow ? getxattr(path, x->name, NULL, 0)
				   : lgetxattr(path, x->name, NULL, 0);
		if (n < 0)
			return vy_error_sys(err, errno, "getxattr %s", x->name);
		if (n > VY_XATTR_VALUE_MAX)
			return vy_error_set(err, EFBIG, "xattr %s: value too large",
					    x->name);
		free(x->value);
		x->value = malloc(n ? n : 1);
		if (!x->value)
			return vy_error_sys(err, ENOMEM, "xattr");
		ssize_t got = follow ? getxattr(path, x->name, x->value, n)
				     : lgetxattr(path, x->name, x->value, n);
		if (got >= 0) {
			x->len = (uint32_t)got;
			return 0;
		}
		if (errno != ERANGE)
			return vy_error_sys(err, errno, "getxattr %s", x->name);
	}
}

static int scan_xattrs(int dirfd, const char *name, struct vy_entry *e,
		       vy_error *err)
{
	char path[64 + NAME_MAX];
	proc_path(path, sizeof(path), dirfd, name);
	bool follow = !*name;
	cleanup_free char *names = NULL;
	ssize_t len = list_names(path, follow, &names);
	if (len < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))
		return 0;
	if (len < 0)
		return vy_error_sys(err, errno, "listxattr");
	size_t count = 0;
	for (ssize_t i = 0; i < len; i += strlen(names + i) + 1)
		count++;
	if (count > VY_XATTR_COUNT_MAX)
		return vy_error_set(err, EFBIG, "%zu xattrs, limit %d", count,
				    VY_XATTR_COUNT_MAX);
	if (count == 0)
		return 0;
	e->xattrs = calloc(count, sizeof(*e->xattrs));
	if (!e->xattrs)
		return vy_error_sys(err, ENOMEM, "xattrs");
	for (ssize_t i = 0; i < len; i += strlen(names + i) + 1) {
		struct vy_xattr *x = &e->xattrs[e->nxattr++];
		if (strlen(names + i) > VY_XATTR_NAME_MAX)
			return vy_error_set(err, EFBIG, "xattr name too long");
		x->name = strdup(names + i);
		if (!x->name)
			return vy_error_sys(err, ENOMEM, "xattr");
		if (read_value(path, follow, x, err) < 0)
			return -1;
	}
	return 0;
}

static int scan_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: return VY_ENTRY_DIR;
	case S_IFREG: return VY_ENTRY_REG;
	case S_IFLNK: return VY_ENTRY_SYMLINK;
	case S_IFCHR: return VY_ENTRY_CHR;
	case S_IFBLK: return VY_ENTRY_BLK;
	case S_IFIFO: return VY_ENTRY_FIFO;
	case S_IFSOCK: return VY_ENTRY_SOCK;
	default: return -1;
	}
}

/* A regular file seen before under another name becomes a link to it, and
 * its bytes are counted once. */
static int scan_hard_link(struct scan *s, struct vy_entry *e,
			  const struct stat *st, vy_error *err)
{
	if (st->st_nlink > 1) {
		if ((s->links.used + 1) * 2 > s->links.size &&
		    inode_index_grow(&s->links) < 0)
			return vy_error_sys(err, ENOMEM, "hard links");
		struct inode_slot *slot = inode_index_slot(
			s->links.slots, s->links.size, st->st_dev, st->st_ino);
		if (slot->index) {
			e->link_of = slot->index - 1;
			e->size = s->m->entries[e->link_of].size;
			return 0;
		}
		*slot = (struct inode_slot){ st->st_dev, st->st_ino,
					     s->m->count };
		s->links.used++;
	}
	s->m->data_bytes += e->size;
	return 0;
}

/* Record one entry; path is taken over (freed on failure). */
static int scan_entry(struct scan *s, char *path, int dirfd, const char *name,
		      const struct stat *st, vy_error *err)
{
	int type = scan_type(st->st_mode);
	if (type < 0) {
		free(path);
		return vy_error_set(err, EINVAL, "unknown file type");
	}
	struct vy_entry *e = manifest_add(s->m, err);
	if (!e) {
		free(path);
		return -1;
	}
	e->path = path;
	e->type = (uint8_t)type;
	e->mode = st->st_mode & 07777;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	e->atime_ns = st->st_atim.tv_sec * 1000000000ll + st->st_atim.tv_nsec;
	e->mtime_ns = st->st_mtim.tv_sec * 1000000000ll + st->st_mtim.tv_nsec;
	if (type == VY_ENTRY_CHR || type == VY_ENTRY_BLK)
		e->rdev = st->st_rdev;
	if (type == VY_ENTRY_REG) {
		e->size = st->st_size;
		if (scan_hard_link(s, e, st, err) < 0)
			return -1;
	}
	if (type == VY_ENTRY_SYMLINK) {
		char target[VY_PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target));
		if (n < 0)
			return vy_error_sys(err, errno, "readlinkat");
		if (n == 0 || n > VY_PATH_MAX)
			return vy_error_set(err, EINVAL, "bad symlink target length");
		e->target = strndup(target, n);
		if (!e->target)
			return vy_error_sys(err, ENOMEM, "symlink");
		e->size = (uint64_t)n;
	}
	return scan_xattrs(dirfd, name, e, err);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read a directory's names, sorted so that manifests are reproducible. */
static int read_names(DIR *d, char ***out, size_t *count, vy_error *err)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **more = realloc(names, cap * sizeof(*names));
			if (!more)
				goto oom;
			names = more;
		}
		if (!(names[n] = strdup(de->d_name)))
			goto oom;
		n++;
	}
	if (errno) {
		int saved = errno;
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return vy_error_sys(err, saved, "readdir");
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), compare_names);
	*out = names;
	*count = n;
	return 0;
oom:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return vy_error_sys(err, ENOMEM, "readdir");
}

static int open_beneath(int rootfd, const char *path, int flags);

/* List directory entry dir_index and append its children.  A directory on
 * another device is a mount point: it is recorded but not entered. */
static int scan_directory(struct scan *s, uint32_t dir_index, vy_error *err)
{
	const char *dpath = s->m->entries[dir_index].path; /* stable string */
	int fd = *dpath ? open_beneath(s->rootfd, dpath, O_RDONLY | O_DIRECTORY)
			: openat(s->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': open directory", dpath);
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_dev != s->dev) {
		close(fd);
		return 0;
	}
	cleanup_closedir DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return vy_error_sys(err, errno, "'%s': fdopendir", dpath);
	}
	char **names = NULL;
	size_t count = 0;
	if (read_names(d, &names, &count, err) < 0)
		return vy_error_wrap(err, "'%s'", dpath);
	int rc = 0;
	size_t dlen = strlen(dpath);
	for (size_t i = 0; i < count && rc == 0; i++) {
		size_t plen = dlen + !!dlen + strlen(names[i]);
		if (plen > VY_PATH_MAX) {
			rc = vy_error_set(err, ENAMETOOLONG, "'%s/%s': path too long",
					  dpath, names[i]);
			break;
		}
		if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* removed while we looked */
			rc = vy_error_sys(err, errno, "'%s/%s': fstatat", dpath,
					  names[i]);
			break;
		}
		char *path = malloc(plen + 1);
		if (!path) {
			rc = vy_error_sys(err, ENOMEM, "scan");
			break;
		}
		snprintf(path, plen + 1, "%s%s%s", dpath, dlen ? "/" : "",
			 names[i]);
		if ((rc = scan_entry(s, path, dirfd(d), names[i], &st, err)) < 0)
			vy_error_wrap(err, "'%s%s%s'", dpath, dlen ? "/" : "",
				      names[i]);
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return rc;
}

int vy_manifest_scan(const char *root, struct vy_manifest *m, vy_error *err)
{
	memset(m, 0, sizeof(*m));
	cleanup_close int rootfd =
		open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rootfd < 0)
		return vy_error_sys(err, errno, "scan '%s': open", root);
	struct stat st;
	if (fstat(rootfd, &st) < 0)
		return vy_error_sys(err, errno, "scan '%s': fstat", root);
	struct scan s = { .m = m, .rootfd = rootfd, .dev = st.st_dev };
	char *rootpath = strdup("");
	int rc = rootpath ? scan_entry(&s, rootpath, rootfd, "", &st, err)
			  : vy_error_sys(err, ENOMEM, "scan");
	for (uint32_t i = 0; rc == 0 && i < m->count; i++) {
		if (m->entries[i].type == VY_ENTRY_DIR)
			rc = scan_directory(&s, i, err);
	}
	free(s.links.slots);
	if (rc < 0) {
		vy_manifest_free(m);
		return vy_error_wrap(err, "scan '%s'", root);
	}
	return 0;
}

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

static int decode_entry(struct reader *r, struct vy_manifest *m,
			struct path_index *idx, vy_error *err)
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
	if (decode_fields(r, e, i, err) < 0)
		return -1;
	return check_placement(m, idx, i, err);
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

/* ---- laying out the tree on the target ---- */

static int open_beneath(int rootfd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	for (int tries = 0;; tries++) {
		long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		if (fd >= 0 || errno != EAGAIN || tries == 16)
			return (int)fd;
	}
}

int vy_manifest_open_entry(int rootfd, const char *path, int flags,
			   vy_error *err)
{
	int fd = *path ? open_beneath(rootfd, path, flags)
		       : openat(rootfd, ".", flags | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return vy_error_sys(err, errno, "open '%s'", path);
	return fd;
}

/* Consecutive entries usually share a parent, so its fd is kept. */
struct parent_cache {
	int fd;
	const char *path; /* the entry path whose first len bytes name it */
	size_t len;
};

static int parent_fd(struct parent_cache *pc, int rootfd, const char *path,
		     const char **name, vy_error *err)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash ? (size_t)(slash - path) : 0;
	*name = slash ? slash + 1 : path;
	if (pc->fd >= 0 && pc->len == len && !memcmp(pc->path, path, len))
		return pc->fd;
	if (pc->fd >= 0)
		close(pc->fd);
	pc->fd = -1;
	char *dir = strndup(path, len);
	if (!dir)
		return vy_error_sys(err, ENOMEM, "'%s'", path);
	pc->fd = vy_manifest_open_entry(rootfd, dir, O_PATH | O_DIRECTORY, err);
	free(dir);
	pc->path = path;
	pc->len = len;
	return pc->fd < 0 ? vy_error_wrap(err, "parent of '%s'", path) : pc->fd;
}

static int set_xattrs_fd(int fd, const struct vy_entry *e, vy_error *err)
{
	for (uint16_t i = 0; i < e->nxattr; i++) {
		const struct vy_xattr *x = &e->xattrs[i];
		if (fsetxattr(fd, x->name, x->value, x->len, 0) < 0)
			return vy_error_sys(err, errno, "'%s': fsetxattr %s",
					    e->path, x->name);
	}
	return 0;
}

/* chown first: it clears setuid/setgid and file capabilities, which the
 * chmod and xattrs then put back. */
static int apply_meta_fd(int fd, const struct vy_entry *e, uint32_t mode,
			 vy_error *err)
{
	if (fchown(fd, e->uid, e->gid) < 0)
		return vy_error_sys(err, errno, "'%s': fchown", e->path);
	if (fchmod(fd, mode) < 0)
		return vy_error_sys(err, errno, "'%s': fchmod", e->path);
	return set_xattrs_fd(fd, e, err);
}

/* For entries we cannot open (symlinks, devices, fifos, sockets). */
static int apply_meta_at(int pfd, const char *name, const struct vy_entry *e,
			 vy_error *err)
{
	if (fchownat(pfd, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': fchownat", e->path);
	if (e->type != VY_ENTRY_SYMLINK &&
	    fchmodat(pfd, name, e->mode, AT_SYMLINK_NOFOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': fchmodat", e->path);
	char path[64 + NAME_MAX];
	proc_path(path, sizeof(path), pfd, name);
	for (uint16_t i = 0; i < e->nxattr; i++) {
		const struct vy_xattr *x = &e->xattrs[i];
		if (lsetxattr(path, x->name, x->value, x->len, 0) < 0)
			return vy_error_sys(err, errno, "'%s': lsetxattr %s",
					    e->path, x->name);
	}
	return 0;
}

/* Directories stay writable by us until vy_manifest_finish(). */
static int make_dir(int rootfd, int pfd, const char *name,
		    const struct vy_entry *e, vy_error *err)
{
	if (*e->path && mkdirat(pfd, name, 0700) < 0)
		return vy_error_sys(err, errno, "'%s': mkdirat", e->path);
	cleanup_close int fd =
		*e->path ? openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
			 : openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': open directory", e->path);
	return apply_meta_fd(fd, e, e->mode | S_IRWXU, err);
}

static int make_file(int pfd, const char *name, const struct vy_entry *e,
		     vy_error *err)
{
	cleanup_close int fd = openat(
		pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': openat O_CREAT", e->path);
	if (e->size > INT64_MAX)
		return vy_error_set(err, EFBIG, "'%s': size too large", e->path);
	if (ftruncate(fd, (off_t)e->size) < 0)
		return vy_error_sys(err, errno, "'%s': ftruncate to %llu", e->path,
				    (unsigned long long)e->size);
	return apply_meta_fd(fd, e, e->mode, err);
}

static int make_hard_link(const struct vy_manifest *m, int rootfd, int pfd,
			  const char *name, const struct vy_entry *e,
			  vy_error *err)
{
	const struct vy_entry *first = &m->entries[e->link_of];
	cleanup_close int fd =
		vy_manifest_open_entry(rootfd, first->path, O_PATH, err);
	if (fd < 0)
		return vy_error_wrap(err, "'%s': hard link", e->path);
	char proc[64];
	proc_path(proc, sizeof(proc), fd, "");
	if (linkat(AT_FDCWD, proc, pfd, name, AT_SYMLINK_FOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': linkat to '%s'", e->path,
				    first->path);
	return 0;
}

static int make_node(int pfd, const char *name, const struct vy_entry *e,
		     vy_error *err)
{
	if (e->type == VY_ENTRY_SYMLINK) {
		if (symlinkat(e->target, pfd, name) < 0)
			return vy_error_sys(err, errno, "'%s': symlinkat", e->path);
	} else {
		static const mode_t kinds[] = {
			[VY_ENTRY_CHR] = S_IFCHR, [VY_ENTRY_BLK] = S_IFBLK,
			[VY_ENTRY_FIFO] = S_IFIFO, [VY_ENTRY_SOCK] = S_IFSOCK,
		};
		dev_t rdev = (e->type == VY_ENTRY_CHR || e->type == VY_ENTRY_BLK)
				     ? (dev_t)e->rdev : 0;
		if (mknodat(pfd, name, kinds[e->type] | 0600, rdev) < 0)
			return vy_error_sys(err, errno, "'%s': mknodat", e->path);
	}
	return apply_meta_at(pfd, name, e, err);
}

static int make_entry(const struct vy_manifest *m, uint32_t i, int rootfd,
		      struct parent_cache *pc, vy_error *err)
{
	const struct vy_entry *e = &m->entries[i];
	const char *name = "";
	int pfd = -1;
	if (i > 0 && (pfd = parent_fd(pc, rootfd, e->path, &name, err)) < 0)
		return -1;
	switch (e->type) {
	case VY_ENTRY_DIR:
		return make_dir(rootfd, pfd, name, e, err);
	case VY_ENTRY_REG:
		if (e->link_of != VY_NO_LINK)
			return make_hard_link(m, rootfd, pfd, name, e, err);
		return make_file(pfd, name, e, err);
	case VY_ENTRY_SYMLINK:
	case VY_ENTRY_CHR:
	case VY_ENTRY_BLK:
	case VY_ENTRY_FIFO:
	case VY_ENTRY_SOCK:
		return make_node(pfd, name, e, err);
	default:
		return vy_error_set(err, EINVAL, "'%s': unknown type %u", e->path,
				    e->type);
	}
}

int vy_manifest_materialise(const struct vy_manifest *m, int rootfd,
			    vy_error *err)
{
	if (m->count == 0 || m->entries[0].type != VY_ENTRY_DIR ||
	    *m->entries[0].path)
		return vy_error_set(err, EINVAL,
				    "materialise: manifest has no root directory");
	struct parent_cache pc = { .fd = -1 };
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i < m->count; i++)
		rc = make_entry(m, i, rootfd, &pc, err);
	if (pc.fd >= 0)
		close(pc.fd);
	return rc < 0 ? vy_error_wrap(err, "materialise") : 0;
}

/* ---- final metadata ---- */

static struct timespec ns_to_timespec(int64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

static const struct vy_xattr *find_xattr(const struct vy_entry *e,
					 const char *name)
{
	for (uint16_t i = 0; i < e->nxattr; i++) {
		if (!strcmp(e->xattrs[i].name, name))
			return &e->xattrs[i];
	}
	return NULL;
}

/* Writing the data dropped any file capability; put it back. */
static int restore_capability(int pfd, const char *name,
			      const struct vy_entry *e, const struct timespec *ts,
			      vy_error *err)
{
	const struct vy_xattr *cap = find_xattr(e, CAPABILITY_XATTR);
	cleanup_close int fd = openat(pfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "'%s': open", e->path);
	if (fsetxattr(fd, cap->name, cap->value, cap->len, 0) < 0)
		return vy_error_sys(err, errno, "'%s': fsetxattr %s", e->path,
				    cap->name);
	if (fchmod(fd, e->mode) < 0)
		return vy_error_sys(err, errno, "'%s': fchmod", e->path);
	if (futimens(fd, ts) < 0)
		return vy_error_sys(err, errno, "'%s': futimens", e->path);
	return 0;
}

static int finish_entry(const struct vy_entry *e, int rootfd,
			struct parent_cache *pc, vy_error *err)
{
	struct timespec ts[2] = { ns_to_timespec(e->atime_ns),
				  ns_to_timespec(e->mtime_ns) };
	const char *name = "";
	int pfd = -1;
	if (*e->path && (pfd = parent_fd(pc, rootfd, e->path, &name, err)) < 0)
		return -1;
	if (e->type == VY_ENTRY_DIR) {
		cleanup_close int fd =
			*e->path ? openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
				 : openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return vy_error_sys(err, errno, "'%s': open directory", e->path);
		if (fchmod(fd, e->mode) < 0)
			return vy_error_sys(err, errno, "'%s': fchmod", e->path);
		if (futimens(fd, ts) < 0)
			return vy_error_sys(err, errno, "'%s': futimens", e->path);
		return 0;
	}
	if (e->type == VY_ENTRY_REG && e->link_of != VY_NO_LINK)
		return 0; /* the first name carries the inode's times */
	if (e->type == VY_ENTRY_REG && find_xattr(e, CAPABILITY_XATTR))
		return restore_capability(pfd, name, e, ts, err);
	if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return vy_error_sys(err, errno, "'%s': utimensat", e->path);
	return 0;
}

/* Children before parents (the reverse of manifest order), so that setting
 * a child's metadata never disturbs a parent already finished. */
int vy_manifest_finish(const struct vy_manifest *m, int rootfd, vy_error *err)
{
	struct parent_cache pc = { .fd = -1 };
	int rc = 0;
	for (uint32_t i = m->count; rc == 0 && i-- > 0;)
		rc = finish_entry(&m->entries[i], rootfd, &pc, err);
	if (pc.fd >= 0)
		close(pc.fd);
	return rc < 0 ? vy_error_wrap(err, "finish metadata") : 0;
}
