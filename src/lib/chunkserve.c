/* chunkserve.c - FETCH and FETCH_REPLY: serving and fetching byte ranges
 * of a frozen tree (see chunkserve.h for the exchange).
 *
 * The server trusts nothing in a request: it is parsed by
 * vy_fetch_parse_request(), checked against the manifest, and only then
 * turned into a pread() of a file opened beneath the tree's root without
 * following symlinks.  The client trusts nothing in a reply: the JSON must
 * echo the request, the DATA frames must tile the range exactly, and the
 * bytes must hash to what the reply said.
 */
#include "chunkserve.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanup.h"
#include "log.h"
#include "transfer.h"

/* ---- parsers ----------------------------------------------------------- */

static int get_u64(json_object *obj, const char *key, uint64_t max,
		   uint64_t *out, vy_error *err)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(obj, key, &v))
		return vy_error_set(err, EPROTO, "missing \"%s\"", key);
	if (!json_object_is_type(v, json_type_int))
		return vy_error_set(err, EPROTO, "\"%s\" is not an integer", key);
	errno = 0;
	int64_t n = json_object_get_int64(v);
	/* json-c saturates out-of-range numbers; treat that as out of range. */
	if (n < 0 || (uint64_t)n > max || (errno == ERANGE) || n == INT64_MAX)
		return vy_error_set(err, ERANGE, "\"%s\" out of range", key);
	*out = (uint64_t)n;
	return 0;
}

static int parse_range(json_object *obj, struct vy_fetch_req *out,
		       vy_error *err)
{
	uint64_t stream, entry, offset, length;
	if (!obj || !json_object_is_type(obj, json_type_object))
		return vy_error_set(err, EPROTO, "not a JSON object");
	if (get_u64(obj, "stream", UINT32_MAX, &stream, err) < 0 ||
	    get_u64(obj, "entry", UINT32_MAX, &entry, err) < 0 ||
	    get_u64(obj, "offset", (uint64_t)INT64_MAX - 1, &offset, err) < 0 ||
	    get_u64(obj, "length", VY_FETCH_MAX, &length, err) < 0)
		return -1;
	if (length > (uint64_t)INT64_MAX - offset)
		return vy_error_set(err, EOVERFLOW,
				   "offset %" PRIu64 " + length %" PRIu64
				   " overflows a file offset",
				   offset, length);
	out->stream = (uint32_t)stream;
	out->entry = (uint32_t)entry;
	out->offset = offset;
	out->length = (uint32_t)length;
	return 0;
}

int vy_fetch_parse_request(json_object *obj, struct vy_fetch_req *out,
			   vy_error *err)
{
	if (parse_range(obj, out, err) < 0)
		return vy_error_wrap(err, "FETCH");
	if (out->length == 0)
		return vy_error_set(err, EINVAL, "FETCH: empty range");
	return 0;
}

int vy_fetch_parse_reply(json_object *obj, struct vy_fetch_reply *out,
			 vy_error *err)
{
	memset(out, 0, sizeof(*out));
	if (parse_range(obj, &out->req, err) < 0)
		return vy_error_wrap(err, "FETCH_REPLY");
	json_object *v = NULL;
	if (json_object_object_get_ex(obj, "error", &v)) {
		const char *text = json_object_is_type(v, json_type_string)
					   ? json_object_get_string(v)
					   : "(error is not a string)";
		snprintf(out->error, sizeof(out->error), "%s", text);
		if (!out->error[0])
			snprintf(out->error, sizeof(out->error), "(empty error)");
		return 0;
	}
	if (!json_object_object_get_ex(obj, "sha256", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    json_object_get_string_len(v) != 64)
		return vy_error_set(err, EPROTO, "FETCH_REPLY: missing or "
						 "malformed \"sha256\"");
	const char *hex = json_object_get_string(v);
	for (int i = 0; i < 64; i++)
		if (!strchr("0123456789abcdef", hex[i]) || !hex[i])
			return vy_error_set(err, EPROTO, "FETCH_REPLY: "
							 "\"sha256\" is not "
							 "lower-case hex");
	memcpy(out->sha256, hex, 65);
	return 0;
}

int vy_fetch_check(const struct vy_fetch_req *req, uint32_t stream,
		   const struct vy_manifest *m, vy_error *err)
{
	if (req->stream != stream)
		return vy_error_set(err, EINVAL, "stream %u is not served here "
						 "(this is stream %u)",
				   req->stream, stream);
	if (req->entry >= m->count)
		return vy_error_set(err, ENOENT, "entry %u does not exist (the "
						 "manifest has %u)",
				   req->entry, m->count);
	const struct vy_entry *e = &m->entries[req->entry];
	if (e->type != VY_ENTRY_REG || e->link_of != VY_NO_LINK)
		return vy_error_set(err, EINVAL, "entry %u is not a regular "
						 "file's first name",
				   req->entry);
	if (req->length == 0 || req->length > VY_FETCH_MAX)
		return vy_error_set(err, EINVAL, "length %u not in 1..%u",
				   req->length, VY_FETCH_MAX);
	if (req->offset > e->size || req->length > e->size - req->offset)
		return vy_error_set(err, ERANGE,
				   "range %" PRIu64 "+%u lies past the end of "
				   "entry %u (%" PRIu64 " bytes)",
				   req->offset, req->length, req->entry,
				   e->size);
	return 0;
}

/* ---- server ------------------------------------------------------------ */

static json_object *range_object(const struct vy_fetch_req *r)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "stream", json_object_new_int64(r->stream));
	json_object_object_add(o, "entry", json_object_new_int64(r->entry));
	json_object_object_add(o, "offset", json_object_new_int64((int64_t)r->offset));
	json_object_object_add(o, "length", json_object_new_int64(r->length));
	return o;
}

static int send_refusal(vy_channel *ch, const struct vy_fetch_req *r,
			const char *why, vy_error *err)
{
	json_object *o = range_object(r);
	json_object_object_add(o, "error", json_object_new_string(why));
	int rc = vy_channel_send_json(ch, VY_MSG_FETCH_REPLY, o, err);
	json_object_put(o);
	return rc;
}

/* Read exactly the range; holes read as zeros, a short file is an error. */
static int read_range(int rootfd, const struct vy_entry *e,
		      const struct vy_fetch_req *r, uint8_t *buf,
		      vy_error *err)
{
	cleanup_close int fd = vy_manifest_open_entry(rootfd, e->path, O_RDONLY,
						      err);
	if (fd < 0)
		return -1;
	size_t done = 0;
	while (done < r->length) {
		ssize_t n = pread(fd, buf + done, r->length - done,
				  (off_t)(r->offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return vy_error_sys(err, errno, "read %s", e->path);
		if (n == 0)
			return vy_error_set(err, EIO, "%s is shorter than its "
						      "manifest says (%" PRIu64
						      " bytes)",
					   e->path, e->size);
		done += (size_t)n;
	}
	return 0;
}

static int send_range(vy_channel *ch, const struct vy_fetch_req *r,
		      const uint8_t *buf, vy_error *err)
{
	uint8_t digest[32];
	char hex[65];
	unsigned dlen = 0;
	EVP_Digest(buf, r->length, digest, &dlen, EVP_sha256(), NULL);
	vy_sha256_hex(digest, hex);
	json_object *o = range_object(r);
	json_object_object_add(o, "sha256", json_object_new_string(hex));
	int rc = vy_channel_send_json(ch, VY_MSG_FETCH_REPLY, o, err);
	json_object_put(o);
	for (uint32_t off = 0; rc == 0 && off < r->length; off += VY_FETCH_FRAME) {
		uint32_t n = r->length - off < VY_FETCH_FRAME ? r->length - off
							      : VY_FETCH_FRAME;
		rc = vy_channel_send_data(ch, r->stream, r->entry,
					  r->offset + off, buf + off, n, err);
	}
	return rc;
}

/* One request: returns -1 only when the channel failed. */
static int serve_one(vy_channel *ch, uint32_t stream, int rootfd,
		     const struct vy_manifest *m, const struct vy_message *msg,
		     uint8_t *buf, uint64_t *served, vy_error *err)
{
	json_object *o = NULL;
	struct vy_fetch_req r = { 0 };
	vy_error why;
	int rc = vy_message_json(msg, &o, &why);
	if (rc == 0)
		rc = vy_fetch_parse_request(o, &r, &why);
	if (rc == 0)
		rc = vy_fetch_check(&r, stream, m, &why);
	if (rc == 0)
		rc = read_range(rootfd, &m->entries[r.entry], &r, buf, &why);
	json_object_put(o);
	if (rc < 0) {
		vy_warn("FETCH from %s refused: %s", vy_channel_peer(ch), why.msg);
		return send_refusal(ch, &r, why.msg, err);
	}
	if (send_range(ch, &r, buf, err) < 0)
		return -1;
	if (served)
		*served += r.length;
	return 0;
}

int vy_chunk_serve(vy_channel *ch, uint32_t stream, int rootfd,
		   const struct vy_manifest *m, uint64_t *bytes_served,
		   vy_error *err)
{
	cleanup_free uint8_t *buf = malloc(VY_FETCH_MAX);
	if (!buf)
		return vy_error_set(err, ENOMEM, "allocating the FETCH buffer");
	for (;;) {
		struct vy_message msg = { 0 };
		vy_error rerr;
		if (vy_channel_recv(ch, &msg, &rerr) < 0) {
			if (rerr.code == ECONNRESET)
				return 0; /* the peer is done */
			*err = rerr;
			return vy_error_wrap(err, "serving chunks");
		}
		int rc;
		if (msg.type != VY_MSG_FETCH)
			rc = vy_error_set(err, EPROTO, "serving chunks: "
						       "unexpected message type %u",
					  msg.type);
		else
			rc = serve_one(ch, stream, rootfd, m, &msg, buf,
				       bytes_served, err);
		vy_message_free(&msg);
		if (rc < 0)
			return rc;
	}
}

/* ---- client ------------------------------------------------------------ */

static int check_echo(const struct vy_fetch_req *want,
		      const struct vy_fetch_req *got, vy_error *err)
{
	if (want->stream != got->stream || want->entry != got->entry ||
	    want->offset != got->offset || want->length != got->length)
		return vy_error_set(err, EPROTO,
				   "FETCH_REPLY for %u/%u %" PRIu64 "+%u answers "
				   "a different request (%u/%u %" PRIu64 "+%u)",
				   want->stream, want->entry, want->offset,
				   want->length, got->stream, got->entry,
				   got->offset, got->length);
	return 0;
}

static int recv_bytes(vy_channel *ch, const struct vy_fetch_req *r,
		      uint8_t *buf, vy_error *err)
{
	uint64_t done = 0;
	while (done < r->length) {
		struct vy_message msg = { 0 };
		struct vy_data_chunk c;
		if (vy_channel_expect(ch, VY_MSG_DATA, &msg, err) < 0)
			return -1;
		int rc = vy_wire_parse_data(msg.payload, msg.length, &c, err);
		if (rc == 0 && (c.stream != r->stream || c.entry != r->entry ||
				c.offset != r->offset + done ||
				c.len > r->length - done || c.len == 0))
			rc = vy_error_set(err, EPROTO,
					  "DATA %u/%u at %" PRIu64 " (%zu bytes)"
					  " does not continue the FETCH range",
					  c.stream, c.entry, c.offset, c.len);
		if (rc == 0)
			memcpy(buf + done, c.data, c.len);
		done += rc == 0 ? c.len : 0;
		vy_message_free(&msg);
		if (rc < 0)
			return -1;
	}
	return 0;
}

int vy_chunk_fetch(vy_channel *ch, const struct vy_fetch_req *req,
		   uint8_t *buf, vy_error *err)
{
	if (vy_chunk_fetch_send(ch, req, err) < 0)
		return -1;
	return vy_chunk_fetch_recv(ch, req, buf, err);
}

int vy_chunk_fetch_send(vy_channel *ch, const struct vy_fetch_req *req, vy_error *err)
{
	json_object *o = range_object(req);
	int rc = vy_channel_send_json(ch, VY_MSG_FETCH, o, err);
	json_object_put(o);
	return rc;
}

int vy_chunk_fetch_recv(vy_channel *ch, const struct vy_fetch_req *req, uint8_t *buf,
			vy_error *err)
{
	int rc;
	json_object *o = NULL;
	struct vy_message msg = { 0 };
	struct vy_fetch_reply rep;
	if (vy_channel_expect(ch, VY_MSG_FETCH_REPLY, &msg, err) < 0)
		return -1;
	rc = vy_message_json(&msg, &o, err);
	vy_message_free(&msg);
	if (rc == 0)
		rc = vy_fetch_parse_reply(o, &rep, err);
	json_object_put(o);
	if (rc == 0)
		rc = check_echo(req, &rep.req, err);
	if (rc < 0)
		return -1;
	if (rep.error[0])
		return vy_error_set(err, EREMOTEIO, "source refused %u/%u %" PRIu64
						    "+%u: %s",
				   req->stream, req->entry, req->offset,
				   req->length, rep.error);
	if (recv_bytes(ch, req, buf, err) < 0)
		return -1;
	uint8_t digest[32];
	char hex[65];
	unsigned dlen = 0;
	EVP_Digest(buf, req->length, digest, &dlen, EVP_sha256(), NULL);
	vy_sha256_hex(digest, hex);
	if (strcmp(hex, rep.sha256))
		return vy_error_set(err, EBADMSG, "entry %u %" PRIu64 "+%u: "
						  "SHA-256 mismatch (got %s, "
						  "source said %s)",
				   req->entry, req->offset, req->length, hex,
				   rep.sha256);
	return 0;
}
