/* test_transfer.c - unit tests for transfer.c.
 *
 * The tree sink is fed by hand (chunks read from a real source tree, with
 * holes skipped), then made to refuse every kind of bad input; a tiny tmpfs
 * shows what a full disk looks like; and a socketpair carries a whole tree
 * through vy_tree_send() and a receive loop over a real TLS channel.
 * Trees live in /tmp/vytest-XXXXXX and are removed whatever happens.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "channel.h"
#include "manifest.h"
#include "transfer.h"
#include "tmptree.h"
#include "unit.h"
#include "wire.h"

#define STREAM 7

/* ---- temporary trees ---- */

/* Pseudo-random bytes, so that a misplaced chunk cannot go unnoticed. */
static int write_random(const char *path, off_t off, size_t len, unsigned seed)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	uint8_t *buf = malloc(len ? len : 1);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(rand_r(&seed) >> 7);
	ssize_t n = pwrite(fd, buf, len, off);
	free(buf);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

static const uint8_t cap_net_raw[20] = { 0x01, 0x00, 0x00, 0x02,
					 0x00, 0x20, 0x00, 0x00 };

static int build_tree(const char *d, size_t big)
{
	int rc = 0;
	rc |= mkdir(join(d, "d"), 0755);
	rc |= write_random(join(d, "big"), 0, big, 1);
	rc |= write_random(join(d, "d/sparse"), 0, 100000, 2);
	rc |= write_random(join(d, "d/sparse"), 5 << 20, 300000, 3);
	rc |= truncate(join(d, "d/sparse"), 12 << 20);
	rc |= write_random(join(d, "empty"), 0, 0, 4);
	rc |= write_random(join(d, "allhole"), 0, 0, 4);
	rc |= truncate(join(d, "allhole"), 3 << 20);
	rc |= write_random(join(d, "d/h1"), 0, 70000, 5);
	rc |= link(join(d, "d/h1"), join(d, "h2"));
	rc |= write_random(join(d, "cap"), 0, 5000, 6);
	rc |= setxattr(join(d, "cap"), "security.capability", cap_net_raw,
		       sizeof(cap_net_raw), 0);
	rc |= write_random(join(d, "suid"), 0, 4096, 7);
	rc |= chown(join(d, "suid"), 1234, 5678) | chmod(join(d, "suid"), 06755);
	rc |= write_random(join(d, "small"), 0, 6, 8);
	rc |= symlink("big", join(d, "link"));
	return rc ? -1 : 0;
}

/* A source tree, its manifest (through the codec, as the target sees it)
 * and a materialised skeleton at dst. */
struct fixture {
	char *src, *dst;
	int srcfd, dstfd;
	struct vy_manifest m;
	bool ready;
};

static void fixture_free(struct fixture *f)
{
	if (f->srcfd >= 0)
		close(f->srcfd);
	if (f->dstfd >= 0)
		close(f->dstfd);
	vy_manifest_free(&f->m);
	remove_tree(&f->src);
	remove_tree(&f->dst);
}

#define cleanup_fixture __attribute__((cleanup(fixture_free)))

static int fixture_skeleton(struct fixture *f, const char *dst)
{
	vy_error err = { 0 };
	f->dstfd = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (f->dstfd < 0 || vy_manifest_materialise(&f->m, f->dstfd, &err) < 0) {
		fprintf(stderr, "  skeleton: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static bool fixture_init(struct fixture *f, size_t big)
{
	memset(f, 0, sizeof(*f));
	f->srcfd = f->dstfd = -1;
	f->src = make_tmpdir();
	f->dst = make_tmpdir();
	struct vy_manifest scanned;
	vy_error err = { 0 };
	uint8_t *buf = NULL;
	size_t len;
	if (!f->src || !f->dst || build_tree(f->src, big) < 0 ||
	    vy_manifest_scan(f->src, &scanned, &err) < 0)
		return false;
	int rc = vy_manifest_encode(&scanned, &buf, &len, &err);
	vy_manifest_free(&scanned);
	if (rc < 0 || vy_manifest_decode(buf, len, &f->m, &err) < 0) {
		free(buf);
		return false;
	}
	free(buf);
	f->srcfd = open(f->src, O_PATH | O_DIRECTORY | O_CLOEXEC);
	f->ready = f->srcfd >= 0 && fixture_skeleton(f, f->dst) == 0;
	return f->ready;
}

static uint32_t index_of(const struct vy_manifest *m, const char *path)
{
	for (uint32_t i = 0; i < m->count; i++) {
		if (!strcmp(m->entries[i].path, path))
			return i;
	}
	return VY_NO_LINK;
}

static json_object *file_end(uint32_t stream, uint32_t entry, int64_t size,
			     const char *hex)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "stream", json_object_new_int64(stream));
	json_object_object_add(o, "entry", json_object_new_int64(entry));
	json_object_object_add(o, "size", json_object_new_int64(size));
	if (hex)
		json_object_object_add(o, "sha256", json_object_new_string(hex));
	return o;
}

static int sink_file_end(struct vy_tree_sink *s, uint32_t stream,
			 uint32_t entry, int64_t size, const char *hex,
			 vy_error *err)
{
	json_object *o = file_end(stream, entry, size, hex);
	int rc = vy_tree_sink_file_end(s, o, err);
	json_object_put(o);
	return rc;
}

/* Feed one file of the source to the sink the way the sender would, but in
 * chunks of odd size; the hash is computed here independently. */
static int feed_file(struct vy_tree_sink *s, struct fixture *f, uint32_t index,
		     size_t chunk, vy_error *err)
{
	const struct vy_entry *e = &f->m.entries[index];
	int fd = openat(f->srcfd, e->path, O_RDONLY | O_CLOEXEC);
	uint8_t *buf = malloc(chunk);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	int rc = fd < 0 ? -1 : 0;
	for (off_t off = 0; rc == 0 && (uint64_t)off < e->size;) {
		off_t data = lseek(fd, off, SEEK_DATA);
		if (data < 0)
			data = (off_t)e->size;
		off_t hole = data < (off_t)e->size ? lseek(fd, data, SEEK_HOLE) : data;
		for (off_t z = off; z < data; z++)
			EVP_DigestUpdate(ctx, "", 1); /* slow but obviously right */
		for (off = data; rc == 0 && off < hole;) {
			ssize_t n = pread(fd, buf, chunk, off);
			struct vy_data_chunk c = { STREAM, index, (uint64_t)off, buf,
						   n > 0 ? (size_t)n : 0 };
			EVP_DigestUpdate(ctx, buf, c.len);
			rc = n > 0 ? vy_tree_sink_data(s, &c, err) : -1;
			off += n;
		}
		off = hole > off ? hole : off;
	}
	uint8_t digest[32];
	char hex[65];
	EVP_DigestFinal_ex(ctx, digest, NULL);
	vy_sha256_hex(digest, hex);
	if (rc == 0)
		rc = sink_file_end(s, STREAM, index, (int64_t)e->size, hex, err);
	EVP_MD_CTX_free(ctx);
	free(buf);
	if (fd >= 0)
		close(fd);
	return rc;
}

static int feed_tree(struct vy_tree_sink *s, struct fixture *f, uint32_t skip,
		     vy_error *err)
{
	for (uint32_t i = 0; i < f->m.count; i++) {
		const struct vy_entry *e = &f->m.entries[i];
		if (i == skip || e->type != VY_ENTRY_REG || e->link_of != VY_NO_LINK)
			continue;
		if (feed_file(s, f, i, 100003, err) < 0)
			return -1;
	}
	return 0;
}

static bool same_content(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rbe"), *fb = fopen(b, "rbe");
	bool same = fa && fb;
	static uint8_t x[65536], y[65536];
	while (same) {
		size_t na = fread(x, 1, sizeof(x), fa), nb = fread(y, 1, sizeof(y), fb);
		same = na == nb && !memcmp(x, y, na);
		if (na == 0)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

/* Contents equal the source, holes stayed holes, metadata survived the
 * writes (file capability, setuid) and times were applied last. */
static void check_received(struct fixture *f)
{
	for (uint32_t i = 0; i < f->m.count; i++) {
		const struct vy_entry *e = &f->m.entries[i];
		struct stat st;
		const char *path = join(f->dst, e->path);
		CHECK(lstat(path, &st) == 0);
		CHECK(st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec == e->mtime_ns);
		if (e->type == VY_ENTRY_REG) {
			CHECK(same_content(join(f->src, e->path), path));
			CHECK((st.st_mode & 07777) == e->mode);
		}
	}
	struct stat st;
	CHECK(stat(join(f->dst, "d/sparse"), &st) == 0 &&
	      st.st_blocks * 512 < 2 * 1024 * 1024);
	CHECK(stat(join(f->dst, "allhole"), &st) == 0 && st.st_blocks == 0);
	CHECK(stat(join(f->dst, "suid"), &st) == 0 && (st.st_mode & 07777) == 06755 &&
	      st.st_uid == 1234);
	uint8_t cap[64];
	ssize_t n = getxattr(join(f->dst, "cap"), "security.capability", cap, sizeof(cap));
	CHECK(n == sizeof(cap_net_raw) && !memcmp(cap, cap_net_raw, sizeof(cap_net_raw)));
}

static void zeros_sha256(size_t len, char hex[65])
{
	uint8_t *z = calloc(1, len), digest[32];
	EVP_Digest(z, len, digest, NULL, EVP_sha256(), NULL);
	vy_sha256_hex(digest, hex);
	free(z);
}

/* The data bytes of the tree built with a "big" file of that size.  The
 * file system may report its data regions a little larger than what was
 * written (whole blocks, preallocation), but the 15 MiB of holes in
 * d/sparse and allhole must not have been sent. */
static bool plausible_data_bytes(uint64_t bytes, uint64_t big)
{
	uint64_t least = big + 100000 + 300000 + 70000 + 5000 + 4096 + 6;
	return bytes >= least && bytes <= least + (1 << 20);
}

/* ---- tests ---- */

static void test_sha256_hex(void)
{
	uint8_t digest[32];
	for (int i = 0; i < 32; i++)
		digest[i] = (uint8_t)(i * 8 + 1);
	char hex[65];
	vy_sha256_hex(digest, hex);
	CHECK(!strcmp(hex, "0109111921293139414951596169717981899199a1a9b1b9c1c9d1d9e1e9f1f9"));
}

static void test_sink_roundtrip(void)
{
	cleanup_fixture struct fixture f;
	CHECK(fixture_init(&f, (3 << 20) + 12345));
	if (!f.ready)
		return;
	struct vy_tree_sink *s = NULL;
	vy_error err = { 0 };
	CHECK(vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err) == 0);
	int rc = feed_tree(s, &f, VY_NO_LINK, &err);
	CHECK(rc == 0);
	if (rc == 0)
		CHECK(vy_tree_sink_finish(s, &err) == 0);
	if (err.code)
		fprintf(stderr, "  %s\n", err.msg);
	CHECK(plausible_data_bytes(vy_tree_sink_bytes(s), (3 << 20) + 12345));
	vy_tree_sink_free(s);
	check_received(&f);
}

/* One chunk into a fresh sink; returns the sink's verdict. */
static int one_chunk(struct fixture *f, uint32_t stream, uint32_t entry,
		     uint64_t offset, size_t len, vy_error *err)
{
	static const uint8_t data[64];
	struct vy_tree_sink *s = NULL;
	if (vy_tree_sink_new(f->dstfd, &f->m, STREAM, &s, err) < 0)
		return 0; /* reported as "accepted", so the CHECK fails */
	struct vy_data_chunk c = { stream, entry, offset, data, len };
	int rc = vy_tree_sink_data(s, &c, err);
	vy_tree_sink_free(s);
	return rc;
}

static void refused(int rc, const vy_error *err, const char *what)
{
	CHECK(rc < 0);
	if (rc < 0)
		printf("     %-26s -> %.120s\n", what, err->msg);
}

static void test_sink_rejects_chunks(void)
{
	cleanup_fixture struct fixture f;
	CHECK(fixture_init(&f, 1000));
	if (!f.ready)
		return;
	vy_error err = { 0 };
	uint32_t big = index_of(&f.m, "big"), dir = index_of(&f.m, "d");
	uint32_t h1 = index_of(&f.m, "d/h1"), h2 = index_of(&f.m, "h2");
	uint32_t second = f.m.entries[h1].link_of == VY_NO_LINK ? h2 : h1;
	CHECK(f.m.entries[second].link_of != VY_NO_LINK);
	CHECK(one_chunk(&f, STREAM, big, 0, 64, &err) == 0); /* the control */
	refused(one_chunk(&f, STREAM, f.m.count, 0, 8, &err), &err, "unknown entry");
	refused(one_chunk(&f, STREAM, dir, 0, 8, &err), &err, "directory");
	refused(one_chunk(&f, STREAM, index_of(&f.m, "link"), 0, 1, &err), &err,
		"symlink");
	refused(one_chunk(&f, STREAM, second, 0, 8, &err), &err, "hard-link second name");
	refused(one_chunk(&f, STREAM + 1, big, 0, 8, &err), &err, "other stream");
	refused(one_chunk(&f, STREAM, big, 1000 - 8, 9, &err), &err, "past size");
	refused(one_chunk(&f, STREAM, big, UINT64_MAX - 4, 8, &err), &err,
		"offset overflow");
	refused(one_chunk(&f, STREAM, index_of(&f.m, "empty"), 0, 1, &err), &err,
		"data for empty file");

	struct vy_tree_sink *s = NULL;
	static const uint8_t data[64];
	CHECK(vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err) == 0);
	struct vy_data_chunk c = { STREAM, big, 100, data, 16 };
	CHECK(vy_tree_sink_data(s, &c, &err) == 0);
	c.offset = 50;
	refused(vy_tree_sink_data(s, &c, &err), &err, "out of order");
	c.offset = 115;
	refused(vy_tree_sink_data(s, &c, &err), &err, "overlapping");
	c.offset = 116;
	CHECK(vy_tree_sink_data(s, &c, &err) == 0);
	struct vy_data_chunk other = { STREAM, index_of(&f.m, "small"), 0, data, 6 };
	refused(vy_tree_sink_data(s, &other, &err), &err, "interleaved files");
	refused(vy_tree_sink_finish(s, &err), &err, "finish with file open");
	vy_tree_sink_free(s);
}

static void test_sink_rejects_file_end(void)
{
	cleanup_fixture struct fixture f;
	CHECK(fixture_init(&f, 1000));
	if (!f.ready)
		return;
	vy_error err = { 0 };
	uint32_t small = index_of(&f.m, "small"), hole = index_of(&f.m, "allhole");
	struct vy_tree_sink *s = NULL;
	CHECK(vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err) == 0);
	CHECK(feed_file(s, &f, small, 4, &err) == 0);
	static const uint8_t data[8];
	struct vy_data_chunk c = { STREAM, small, 6, data, 0 };
	refused(vy_tree_sink_data(s, &c, &err), &err, "data after FILE_END");
	char zeros[65];
	memset(zeros, '0', 64);
	zeros[64] = '\0';
	refused(sink_file_end(s, STREAM, small, 6, zeros, &err), &err,
		"second FILE_END");
	refused(sink_file_end(s, STREAM, hole, 3 << 20, zeros, &err), &err,
		"hash mismatch");
	/* the message names the file, the sender's hash and the one computed
	 * over what was written: here 3 MiB of zeros */
	char expected[65];
	zeros_sha256(3 << 20, expected);
	CHECK(strstr(err.msg, "allhole") && strstr(err.msg, zeros) &&
	      strstr(err.msg, expected));
	vy_tree_sink_free(s);

	CHECK(vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err) == 0);
	refused(sink_file_end(s, STREAM, small, 5, zeros, &err), &err, "size mismatch");
	refused(sink_file_end(s, STREAM, small, -1, zeros, &err), &err, "negative size");
	refused(sink_file_end(s, STREAM, small, 6, NULL, &err), &err, "no sha256");
	refused(sink_file_end(s, STREAM, small, 6, "abc", &err), &err, "short sha256");
	refused(sink_file_end(s, STREAM + 1, small, 6, zeros, &err), &err,
		"other stream");
	vy_tree_sink_free(s);

	/* every file needs FILE_END, even one that is all hole */
	CHECK(vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err) == 0);
	CHECK(feed_tree(s, &f, hole, &err) == 0);
	refused(vy_tree_sink_finish(s, &err), &err, "missing FILE_END");
	CHECK(strstr(err.msg, "allhole") != NULL);
	CHECK(feed_file(s, &f, hole, 4096, &err) == 0);
	CHECK(vy_tree_sink_finish(s, &err) == 0);
	vy_tree_sink_free(s);
}

/* A full target disk is reported as such, with the file's name. */
static void test_sink_disk_full(void)
{
	cleanup_fixture struct fixture f;
	CHECK(fixture_init(&f, 1 << 20));
	if (!f.ready)
		return;
	cleanup_tree char *small_disk = make_tmpdir();
	if (!small_disk || mount("tmpfs", small_disk, "tmpfs", 0, "size=256k") < 0) {
		fprintf(stderr, "  cannot mount tmpfs: %s\n", strerror(errno));
		CHECK(!"mount tmpfs");
		return;
	}
	close(f.dstfd);
	CHECK(fixture_skeleton(&f, small_disk) == 0);
	struct vy_tree_sink *s = NULL;
	vy_error err = { 0 };
	CHECK(vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err) == 0);
	int rc = feed_file(s, &f, index_of(&f.m, "big"), 65536, &err);
	refused(rc, &err, "disk full");
	CHECK(err.code == ENOSPC);
	CHECK(strstr(err.msg, "disk is full") && strstr(err.msg, "'big'"));
	vy_tree_sink_free(s);
	close(f.dstfd);
	f.dstfd = -1;
}

/* ---- over a real channel ---- */

static const uint8_t test_key[VY_KEY_LEN] = "0123456789abcdef0123456789abcde";

struct sender {
	int fd;
	struct fixture *f;
	struct vy_progress progress;
	int rc;
	vy_error err;
};

static void *run_sender(void *arg)
{
	struct sender *a = arg;
	vy_channel *ch = NULL;
	a->rc = vy_channel_client_fd(a->fd, test_key, 5000, &ch, &a->err);
	if (a->rc == 0)
		a->rc = vy_tree_send(ch, STREAM, a->f->srcfd, &a->f->m, &a->progress,
				     &a->err);
	vy_channel_close(ch);
	return NULL;
}

static int receive_one(vy_channel *ch, struct vy_tree_sink *s, bool *done,
		       vy_error *err)
{
	struct vy_message msg;
	if (vy_channel_recv(ch, &msg, err) < 0)
		return -1;
	int rc = 0;
	struct vy_data_chunk c;
	json_object *obj = NULL;
	if (msg.type == VY_MSG_DATA)
		rc = vy_wire_parse_data(msg.payload, msg.length, &c, err) < 0 ? -1
		     : vy_tree_sink_data(s, &c, err);
	else if (msg.type == VY_MSG_FILE_END)
		rc = vy_message_json(&msg, &obj, err) < 0 ? -1
		     : vy_tree_sink_file_end(s, obj, err);
	else if (msg.type == VY_MSG_TREE_END)
		*done = true;
	else
		rc = vy_error_set(err, EPROTO, "unexpected %s", vy_msg_type_name(msg.type));
	json_object_put(obj);
	vy_message_free(&msg);
	return rc;
}

/* Send the fixture's tree across a socketpair; returns the receiver's rc
 * and leaves the sender's outcome in *a. */
static int send_tree(struct fixture *f, struct sender *a, vy_error *err)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return vy_error_sys(err, errno, "socketpair");
	memset(a, 0, sizeof(*a));
	a->fd = sv[0];
	a->f = f;
	pthread_t thread;
	pthread_create(&thread, NULL, run_sender, a);
	vy_channel *ch = NULL;
	struct vy_tree_sink *s = NULL;
	bool done = false;
	int rc = vy_channel_accept(sv[1], test_key, 5000, &ch, err);
	if (rc == 0)
		rc = vy_tree_sink_new(f->dstfd, &f->m, STREAM, &s, err);
	while (rc == 0 && !done)
		rc = receive_one(ch, s, &done, err);
	if (rc == 0)
		rc = vy_tree_sink_finish(s, err);
	vy_channel_close(ch); /* unblocks a sender still writing */
	pthread_join(thread, NULL);
	vy_tree_sink_free(s);
	return rc;
}

static double seconds_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_send_over_channel(void)
{
	cleanup_fixture struct fixture f;
	size_t big = 64 << 20;
	CHECK(fixture_init(&f, big));
	if (!f.ready)
		return;
	struct sender a;
	vy_error err = { 0 };
	double t0 = seconds_now();
	int rc = send_tree(&f, &a, &err);
	double secs = seconds_now() - t0;
	CHECK(rc == 0 && a.rc == 0);
	if (rc < 0 || a.rc < 0)
		fprintf(stderr, "  receiver: %s\n  sender: %s\n", err.msg, a.err.msg);
	uint64_t sent = atomic_load(&a.progress.bytes);
	CHECK(plausible_data_bytes(sent, big));
	CHECK(atomic_load(&a.progress.files) == 8);
	check_received(&f);
	printf("     %.0f MB in %.2fs over TLS on a socketpair: %.0f MB/s\n",
	       sent / 1e6, secs, sent / 1e6 / secs);
}

static void test_send_refuses_changed_file(void)
{
	cleanup_fixture struct fixture f;
	CHECK(fixture_init(&f, 1000));
	if (!f.ready)
		return;
	CHECK(write_random(join(f.src, "big"), 1000, 10, 9) == 0); /* grew */
	struct sender a;
	vy_error err = { 0 };
	CHECK(send_tree(&f, &a, &err) < 0);
	refused(a.rc, &a.err, "file changed size");
	CHECK(strstr(a.err.msg, "'big'") && strstr(a.err.msg, "changed size"));
}

/* A live send of some files only (vy_tree_send_live_some), into a sink
 * that has the rest (vy_tree_sink_have) and finishes only what it got
 * (vy_tree_sink_finish_some): jit's files sent with the skeleton. */
struct some_sender {
	int fd;
	struct fixture *f;
	const uint8_t *skip;
	uint8_t *skipped;
	int rc;
	vy_error err;
};

static void *run_some_sender(void *arg)
{
	struct some_sender *a = arg;
	vy_channel *ch = NULL;
	a->rc = vy_channel_client_fd(a->fd, test_key, 5000, &ch, &a->err);
	if (a->rc == 0)
		a->rc = vy_tree_send_live_some(ch, STREAM, a->f->srcfd, &a->f->m, a->skip,
					       a->skipped, NULL, &a->err);
	vy_channel_close(ch);
	return NULL;
}

static void test_send_some_live(void)
{
	cleanup_fixture struct fixture f;
	CHECK(fixture_init(&f, 200000));
	if (!f.ready)
		return;
	uint32_t cap = index_of(&f.m, "cap"), small = index_of(&f.m, "small"),
		 big = index_of(&f.m, "big");
	uint8_t *skip = malloc(f.m.count), *sent_skipped = calloc(f.m.count, 1),
		*got_skipped = calloc(f.m.count, 1);
	memset(skip, 1, f.m.count);
	skip[cap] = skip[small] = skip[big] = 0;
	/* big changes size after the scan: the live sender skips it */
	CHECK(write_random(join(f.src, "big"), 200000, 10, 9) == 0);
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	struct some_sender a = { .fd = sv[0], .f = &f, .skip = skip, .skipped = sent_skipped };
	pthread_t thread;
	pthread_create(&thread, NULL, run_some_sender, &a);
	vy_channel *ch = NULL;
	struct vy_tree_sink *s = NULL;
	vy_error err = { 0 };
	bool done = false;
	int rc = vy_channel_accept(sv[1], test_key, 5000, &ch, &err);
	if (rc == 0)
		rc = vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err);
	if (rc == 0) {
		vy_tree_sink_have(s, skip);
		vy_tree_sink_allow_skips(s, got_skipped);
	}
	while (rc == 0 && !done)
		rc = receive_one(ch, s, &done, &err);
	uint32_t files = 0;
	uint64_t bytes = 0;
	if (rc == 0)
		rc = vy_tree_sink_finish_some(s, true, &files, &bytes, &err);
	vy_channel_close(ch);
	pthread_join(thread, NULL);
	vy_tree_sink_free(s);
	CHECK(rc == 0 && a.rc == 0);
	if (rc < 0 || a.rc < 0)
		fprintf(stderr, "  receiver: %s\n  sender: %s\n", err.msg, a.err.msg);
	CHECK(files == 2 && bytes == 5000 + 6);
	CHECK(sent_skipped[big] && got_skipped[big] && !got_skipped[cap] && !got_skipped[small]);
	CHECK(same_content(join(f.src, "cap"), join(f.dst, "cap")));
	CHECK(same_content(join(f.src, "small"), join(f.dst, "small")));
	struct stat st;
	const struct vy_entry *e = &f.m.entries[cap];
	CHECK(stat(join(f.dst, "cap"), &st) == 0 &&
	      st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec == e->mtime_ns);
	uint8_t v[64];
	ssize_t n = getxattr(join(f.dst, "cap"), "security.capability", v, sizeof(v));
	CHECK(n == sizeof(cap_net_raw) && !memcmp(v, cap_net_raw, sizeof(cap_net_raw)));
	/* nothing was written into the files the sink already had */
	CHECK(stat(join(f.dst, "d/h1"), &st) == 0 && st.st_blocks == 0);
	CHECK(stat(join(f.dst, "big"), &st) == 0 && st.st_blocks == 0);

	/* A file it should have got and never ended: refused. */
	memset(skip, 1, f.m.count);
	skip[small] = 0;
	CHECK(vy_tree_sink_new(f.dstfd, &f.m, STREAM, &s, &err) == 0);
	vy_tree_sink_have(s, skip);
	refused(vy_tree_sink_finish_some(s, true, NULL, NULL, &err), &err, "a file never ended");
	CHECK(err.code == EPROTO && strstr(err.msg, "'small'"));
	vy_tree_sink_free(s);
	free(skip);
	free(sent_skipped);
	free(got_skipped);
}

/* Patches (presync's freeze): the pre-sync keeps chunk digests of what it
 * sends whole; later only changed chunks of those files go, whole, and the
 * sink checks each file read back from its disk. */
struct patch_sender {
	int fd;
	struct fixture *f;
	struct vy_chunk_sums *sums;              /* live send: kept here */
	const uint8_t *skip;                     /* patch send: what is not sent */
	const struct vy_chunk_sums *const *base; /* and the patches' digests */
	uint64_t patch_bytes;
	int rc;
	vy_error err;
};

static void *run_patch_sender(void *arg)
{
	struct patch_sender *a = arg;
	vy_channel *ch = NULL;
	uint8_t *skipped = calloc(a->f->m.count, 1);
	a->rc = vy_channel_client_fd(a->fd, test_key, 5000, &ch, &a->err);
	if (a->rc == 0 && a->sums)
		a->rc = vy_tree_send_live_sums(ch, STREAM, a->f->srcfd, &a->f->m, skipped, a->sums,
					       NULL, &a->err);
	else if (a->rc == 0)
		a->rc = vy_tree_send_patched(ch, STREAM, a->f->srcfd, &a->f->m, a->skip, a->base,
					     &a->patch_bytes, NULL, &a->err);
	vy_channel_close(ch);
	free(skipped);
	return NULL;
}

/* One tree from a (a thread) into the fixture's skeleton; have and patch
 * as the sink takes them (NULL: a whole tree). */
static int patch_round(struct fixture *f, struct patch_sender *a, const uint8_t *have,
		       const uint8_t *patch, vy_error *err)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return vy_error_sys(err, errno, "socketpair");
	a->fd = sv[0];
	a->f = f;
	pthread_t thread;
	pthread_create(&thread, NULL, run_patch_sender, a);
	vy_channel *ch = NULL;
	struct vy_tree_sink *s = NULL;
	bool done = false;
	uint8_t *skipped = calloc(f->m.count, 1);
	int rc = vy_channel_accept(sv[1], test_key, 5000, &ch, err);
	if (rc == 0)
		rc = vy_tree_sink_new(f->dstfd, &f->m, STREAM, &s, err);
	if (rc == 0) {
		vy_tree_sink_allow_skips(s, skipped);
		if (have)
			vy_tree_sink_have(s, have);
		if (patch)
			vy_tree_sink_patches(s, patch);
	}
	while (rc == 0 && !done)
		rc = receive_one(ch, s, &done, err);
	if (rc == 0)
		rc = have ? vy_tree_sink_finish_some(s, false, NULL, NULL, err)
			  : vy_tree_sink_finish(s, err);
	vy_channel_close(ch);
	pthread_join(thread, NULL);
	vy_tree_sink_free(s);
	free(skipped);
	return rc;
}

static void test_patch(void)
{
	cleanup_fixture struct fixture f;
	/* big: 40 MiB, 160 chunks: its digests are taken on more than one
	 * thread where there is more than one CPU */
	CHECK(fixture_init(&f, 40 << 20));
	if (!f.ready)
		return;
	uint32_t n = f.m.count, big = index_of(&f.m, "big"), sparse = index_of(&f.m, "d/sparse"),
		 hole = index_of(&f.m, "allhole"), small = index_of(&f.m, "small");
	struct vy_chunk_sums *sums = calloc(n, sizeof(*sums));
	struct patch_sender a = { .sums = sums };
	vy_error err = { 0 };
	CHECK(patch_round(&f, &a, NULL, NULL, &err) == 0 && a.rc == 0);
	/* digests for the files of 1 MiB and more only */
	CHECK(sums[big].n == 160 && sums[sparse].n == 48 && sums[hole].n == 12 && sums[small].n == 0);

	/* big: 10 bytes in chunk 10 and in chunk 159, the last; d/sparse: its data at 5 MiB punched out
	 * (chunks 20 and 21 now zeros) and 10 bytes in chunk 32, a hole till
	 * now; allhole: unchanged */
	CHECK(write_random(join(f.src, "big"), (10 << 18) + 1000, 10, 11) == 0);
	CHECK(write_random(join(f.src, "big"), (159 << 18) + 5, 10, 14) == 0);
	int fd = open(join(f.src, "d/sparse"), O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 << 20,
				   300000) == 0);
	if (fd >= 0)
		close(fd);
	CHECK(write_random(join(f.src, "d/sparse"), 8 << 20, 10, 12) == 0);
	uint8_t *skip = malloc(n), *patch = calloc(n, 1);
	const struct vy_chunk_sums **base = calloc(n, sizeof(*base));
	memset(skip, 1, n);
	uint32_t files[3] = { big, sparse, hole };
	for (int k = 0; k < 3; k++) {
		skip[files[k]] = 0;
		patch[files[k]] = 1;
		base[files[k]] = &sums[files[k]];
	}
	struct patch_sender b = { .skip = skip, .base = base };
	int rc = patch_round(&f, &b, skip, patch, &err);
	CHECK(rc == 0 && b.rc == 0);
	if (rc < 0 || b.rc < 0)
		fprintf(stderr, "  receiver: %s\n  sender: %s\n", err.msg, b.err.msg);
	CHECK(b.patch_bytes == 5 * VY_CHUNK_SIZE);
	CHECK(same_content(join(f.src, "big"), join(f.dst, "big")));
	CHECK(same_content(join(f.src, "d/sparse"), join(f.dst, "d/sparse")));
	CHECK(same_content(join(f.src, "allhole"), join(f.dst, "allhole")));

	/* A byte of the receiver's copy that is not what the digests say (in
	 * a chunk the patch leaves out): the read-back catches it. */
	CHECK(write_random(join(f.dst, "big"), 3 << 20, 1, 13) == 0);
	struct patch_sender c = { .skip = skip, .base = base };
	vy_error err2 = { 0 };
	refused(patch_round(&f, &c, skip, patch, &err2), &err2, "a copy unlike its digests");
	CHECK(strstr(err2.msg, "'big'") && strstr(err2.msg, "hash mismatch"));
	free(skip);
	free(patch);
	free(base);
	vy_chunk_sums_free(sums, n);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(test_sha256_hex);
	RUN(test_sink_roundtrip);
	RUN(test_sink_rejects_chunks);
	RUN(test_sink_rejects_file_end);
	RUN(test_sink_disk_full);
	RUN(test_send_over_channel);
	RUN(test_send_refuses_changed_file);
	RUN(test_send_some_live);
	RUN(test_patch);
	return unit_summary();
}
