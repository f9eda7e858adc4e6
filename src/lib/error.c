/* error.c - building error chains (see error.h). */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void vformat(vy_error *err, int errnum, const char *suffix,
		    const char *fmt, va_list ap)
{
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (n < 0)
		err->msg[0] = '\0';
	if (suffix) {
		size_t used = strnlen(err->msg, sizeof(err->msg));
		snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", suffix);
	}
	err->code = errnum;
}

int vy_error_set(vy_error *err, int errnum, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vformat(err, errnum, NULL, fmt, ap);
	va_end(ap);
	return -1;
}

int vy_error_sys(vy_error *err, int errnum, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vformat(err, errnum, strerror(errnum), fmt, ap);
	va_end(ap);
	return -1;
}

int vy_error_wrap(vy_error *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char prefix[512];
	char old[VY_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	old[sizeof(old) - 1] = '\0';
	size_t plen = strnlen(prefix, sizeof(prefix));
	size_t room = sizeof(err->msg) - 1;
	size_t n = 0;
	memcpy(err->msg, prefix, plen < room ? plen : room);
	n = plen < room ? plen : room;
	if (n + 2 <= room) {
		memcpy(err->msg + n, ": ", 2);
		n += 2;
	}
	size_t olen = strnlen(old, sizeof(old));
	size_t take = olen < room - n ? olen : room - n;
	memcpy(err->msg + n, old, take);
	err->msg[n + take] = '\0';
	return -1;
}

void vy_error_clear(vy_error *err)
{
	if (!err)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
