/* precopy.c - see precopy.h. */
#include "precopy.h"

void vy_precopy_default_limits(struct vy_precopy_limits *lim)
{
	lim->max_rounds = 8;
	lim->small_bytes = 16u << 20;
	lim->min_shrink_pct = 10;
}

enum vy_precopy_verdict vy_precopy_next(const uint64_t *round_bytes, int rounds,
					const struct vy_precopy_limits *lim)
{
	if (rounds <= 0)
		return VY_PRECOPY_AGAIN;
	uint64_t last = round_bytes[rounds - 1];
	if (last <= lim->small_bytes)
		return VY_PRECOPY_SMALL;
	if (rounds >= lim->max_rounds)
		return VY_PRECOPY_BOUND;
	if (rounds >= 2) {
		uint64_t prev = round_bytes[rounds - 2];
		int pct = lim->min_shrink_pct < 0 ? 0 : lim->min_shrink_pct > 100 ? 100
											    : lim->min_shrink_pct;
		/* last <= prev * (100 - pct) / 100, in 128 bits (no overflow) */
		unsigned __int128 l = (unsigned __int128)last * 100;
		unsigned __int128 p = (unsigned __int128)prev * (unsigned)(100 - pct);
		if (l > p)
			return VY_PRECOPY_NO_SHRINK;
	}
	return VY_PRECOPY_AGAIN;
}

const char *vy_precopy_verdict_name(enum vy_precopy_verdict v)
{
	switch (v) {
	case VY_PRECOPY_AGAIN: return "again";
	case VY_PRECOPY_SMALL: return "small enough";
	case VY_PRECOPY_NO_SHRINK: return "no longer shrinks";
	case VY_PRECOPY_BOUND: return "round bound reached";
	}
	return "?";
}
