/* error.h - one error type for all of Voyager.
 *
 * Functions that can fail return int (0 on success, -1 on failure) and fill
 * a vy_error supplied by the caller.  The error carries the errno of the
 * first failure and a message.  Callers add context on the way up with
 * vy_error_wrap(), so the user sees the whole chain, e.g.
 * "restore on target: runc restore: exit 1: <last lines of restore.log>".
 */
#ifndef VY_ERROR_H
#define VY_ERROR_H

#include <stddef.h>

#define VY_ERROR_MSG_MAX 2048

typedef struct vy_error {
	int code;                     /* errno-style code, 0 if none */
	char msg[VY_ERROR_MSG_MAX];   /* human-readable chain */
} vy_error;

/* Set err (if not NULL) to errnum and a formatted message; return -1. */
int vy_error_set(vy_error *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Like vy_error_set() but appends ": strerror(errnum)". */
int vy_error_sys(vy_error *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix err's message with formatted context and ": "; return -1. */
int vy_error_wrap(vy_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

void vy_error_clear(vy_error *err);

#endif
