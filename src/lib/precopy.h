/* precopy.h - when iterative pre-copy should stop copying and freeze.
 *
 * Pre-copy dumps memory in rounds while the container runs (CRIU
 * --pre-dump); each round sends only the pages dirtied since the last
 * one, and the final dump, inside the freeze, sends what the last round
 * left.  That only pays while the rounds shrink: a workload that dirties
 * memory as fast as the link moves it never converges.  The rule is a
 * pure function of the round sizes so that it can be tested where
 * pre-copy itself cannot run (no soft-dirty tracking on this kernel).
 */
#ifndef VY_PRECOPY_H
#define VY_PRECOPY_H

#include <stddef.h>
#include <stdint.h>

struct vy_precopy_limits {
	int max_rounds;         /* bound on the number of rounds (>= 1) */
	uint64_t small_bytes;   /* a round this small: freeze now */
	int min_shrink_pct;     /* a round must be this much smaller than
				 * the one before it (percent) to go on */
};

enum vy_precopy_verdict {
	VY_PRECOPY_AGAIN = 0,  /* run another round */
	VY_PRECOPY_SMALL,      /* the last round was small enough */
	VY_PRECOPY_NO_SHRINK,  /* the last round did not shrink enough */
	VY_PRECOPY_BOUND,      /* max_rounds reached */
};

/* Defaults: 8 rounds, 16 MiB, 10 %. */
void vy_precopy_default_limits(struct vy_precopy_limits *lim);

/* round_bytes[0..rounds-1]: bytes each finished round sent.  What next? */
enum vy_precopy_verdict vy_precopy_next(const uint64_t *round_bytes, int rounds,
					const struct vy_precopy_limits *lim);

const char *vy_precopy_verdict_name(enum vy_precopy_verdict v);

#endif
