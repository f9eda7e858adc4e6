/* control.c - see control.h. */
#include "control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

static int fill_addr(const char *path, struct sockaddr_un *sa, vy_error *err)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return vy_error_set(err, ENAMETOOLONG, "socket path too long: %s", path);
	strcpy(sa->sun_path, path);
	return 0;
}

int vy_control_listen(const char *path, int *fd_out, vy_error *err)
{
	struct sockaddr_un sa;
	if (fill_addr(path, &sa, err) < 0)
		return -1;
	char dir[sizeof(sa.sun_path)];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (vy_mkdir_p(dir, 0700, err) < 0)
			return vy_error_wrap(err, "control socket directory");
	}
	cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vy_error_sys(err, errno, "socket");
	/* A stale socket from a dead agent is replaced; a live one is not. */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		int live = connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(probe);
		if (live)
			return vy_error_set(err, EADDRINUSE,
					    "another voyagerd is already listening on %s", path);
	}
	unlink(path);
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0)
		return vy_error_sys(err, errno, "bind %s", path);
	if (chmod(path, 0600) < 0)
		return vy_error_sys(err, errno, "chmod %s", path);
	if (listen(fd, 16) < 0)
		return vy_error_sys(err, errno, "listen %s", path);
	*fd_out = take_fd(fd);
	return 0;
}

int vy_control_connect(const char *path, int *fd_out, vy_error *err)
{
	struct sockaddr_un sa;
	if (fill_addr(path, &sa, err) < 0)
		return -1;
	cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vy_error_sys(err, errno, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return vy_error_sys(err, errno,
				    "cannot reach voyagerd at %s (is it running? --socket picks another)",
				    path);
	*fd_out = take_fd(fd);
	return 0;
}

int vy_control_send(int fd, json_object *obj, vy_error *err)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
								    JSON_C_TO_STRING_NOSLASHESCAPE);
	size_t len = strlen(s);
	cleanup_free char *line = malloc(len + 2);
	if (!line)
		return vy_error_set(err, ENOMEM, "out of memory");
	memcpy(line, s, len);
	line[len++] = '\n';
	size_t off = 0;
	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return vy_error_sys(err, errno, "control socket write");
		}
		off += (size_t)n;
	}
	return 0;
}

void vy_line_reader_init(struct vy_line_reader *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
}

void vy_line_reader_free(struct vy_line_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->len = r->cap = 0;
}

static int parse_line(struct vy_line_reader *r, size_t nl, json_object **out,
		      vy_error *err)
{
	json_tokener *tok = json_tokener_new();
	json_object *o = json_tokener_parse_ex(tok, r->buf, (int)nl);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	json_tokener_free(tok);
	memmove(r->buf, r->buf + nl + 1, r->len - nl - 1);
	r->len -= nl + 1;
	if (!o || jerr != json_tokener_success || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return vy_error_set(err, EINVAL, "malformed control message");
	}
	*out = o;
	return 0;
}

int vy_control_recv(struct vy_line_reader *r, json_object **out, vy_error *err)
{
	for (;;) {
		char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
		if (nl)
			return parse_line(r, (size_t)(nl - r->buf), out, err);
		if (r->len >= VY_CONTROL_MAX_LINE)
			return vy_error_set(err, E2BIG, "control message too long");
		if (r->cap - r->len < 65536) {
			size_t ncap = r->cap ? r->cap * 2 : 65536 * 2;
			char *nb = realloc(r->buf, ncap);
			if (!nb)
				return vy_error_set(err, ENOMEM, "out of memory");
			r->buf = nb;
			r->cap = ncap;
		}
		ssize_t n = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return vy_error_sys(err, errno, "control socket read");
		}
		if (n == 0)
			return vy_error_set(err, ECONNRESET, "voyagerd closed the control connection");
		r->len += (size_t)n;
	}
}
