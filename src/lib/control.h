/* control.h - the local control socket between `voyager` and `voyagerd`.
 *
 * A unix stream socket, mode 0600 in a 0700 directory, so only root can
 * drive the agent.  Messages are single-line JSON objects terminated by
 * '\n', at most VY_CONTROL_MAX_LINE bytes.  The CLI sends one request
 * ({"cmd": "migrate" | "list" | "status" | "check", ...}); the agent
 * answers with zero or more {"event": "progress" | "phase", ...} lines and
 * ends with one {"event": "result", ...} line.
 */
#ifndef VY_CONTROL_H
#define VY_CONTROL_H

#include <json-c/json.h>

#include "error.h"

#define VY_CONTROL_MAX_LINE (4u << 20)
#define VY_DEFAULT_SOCKET "/run/voyager/voyagerd.sock"

int vy_control_listen(const char *path, int *fd_out, vy_error *err);
int vy_control_connect(const char *path, int *fd_out, vy_error *err);
/* Write obj as one line. */
int vy_control_send(int fd, json_object *obj, vy_error *err);

/* A line reader over a socket. */
struct vy_line_reader {
	int fd;
	char *buf;
	size_t len, cap;
};
void vy_line_reader_init(struct vy_line_reader *r, int fd);
/* Read one JSON object; EOF is an error with code ECONNRESET. */
int vy_control_recv(struct vy_line_reader *r, json_object **out, vy_error *err);
void vy_line_reader_free(struct vy_line_reader *r);

#endif
