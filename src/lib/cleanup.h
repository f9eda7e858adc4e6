/* cleanup.h - scope-bound release of resources.
 *
 * Declare a variable with one of these and it is released when it goes out
 * of scope, on every return path.  Steal it with take_ptr()/take_fd() to
 * hand ownership on.
 */
#ifndef VY_CLEANUP_H
#define VY_CLEANUP_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>

static inline void vy_freep(void *p)
{
	free(*(void **)p);
}

static inline void vy_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void vy_fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

static inline void vy_closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

#define cleanup_free __attribute__((cleanup(vy_freep)))
#define cleanup_close __attribute__((cleanup(vy_closep)))
#define cleanup_fclose __attribute__((cleanup(vy_fclosep)))
#define cleanup_closedir __attribute__((cleanup(vy_closedirp)))

#define take_ptr(p)                         \
	({                                  \
		__typeof__(p) _tmp_ = (p);  \
		(p) = NULL;                 \
		_tmp_;                      \
	})

#define take_fd(fd)                 \
	({                          \
		int _tmp_ = (fd);   \
		(fd) = -1;          \
		_tmp_;              \
	})

#endif
