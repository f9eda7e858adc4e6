/* unit.h - a tiny test harness for Voyager's C unit tests.
 *
 * Each test file defines test functions and calls RUN(fn) from main(), then
 * returns unit_summary().  Every CHECK that fails prints file:line and the
 * expression; a test passes when none of its CHECKs failed.  The last line
 * printed is "N passed, N failed" (tests, not checks).
 */
#ifndef VY_UNIT_H
#define VY_UNIT_H

#include <stdio.h>

static int unit_passed, unit_failed;
static int unit_current_failed __attribute__((unused));

#define CHECK(expr)                                                        \
	do {                                                               \
		if (!(expr)) {                                             \
			fprintf(stderr, "  %s:%d: CHECK failed: %s\n",     \
				__FILE__, __LINE__, #expr);                \
			unit_current_failed++;                             \
		}                                                          \
	} while (0)

#define RUN(fn)                                                            \
	do {                                                               \
		unit_current_failed = 0;                                   \
		fn();                                                      \
		if (unit_current_failed) {                                 \
			unit_failed++;                                     \
			printf("FAIL %s\n", #fn);                          \
		} else {                                                   \
			unit_passed++;                                     \
			printf("ok   %s\n", #fn);                          \
		}                                                          \
		fflush(stdout);                                            \
	} while (0)

static inline int unit_summary(void)
{
	printf("%d passed, %d failed\n", unit_passed, unit_failed);
	fflush(stdout); /* before any sanitizer report at exit */
	return unit_failed ? 1 : 0;
}

#endif
