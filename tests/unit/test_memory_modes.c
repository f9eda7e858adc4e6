/* test_memory_modes.c - the memory-mode choice (preflight.c) and the
 * pre-copy round-stopping rule (precopy.c), both pure functions. */
#include <string.h>

#include "preflight.h"
#include "precopy.h"
#include "unit.h"

#define MIB (1ull << 20)

static const char *choose(const char *req, bool sd, bool uffd, bool lazy, const char *rt,
			  char *reason, vy_error *err)
{
	struct vy_memory_caps c = { .soft_dirty = sd, .uffd = uffd, .lazy_pages = lazy,
				    .runtime = rt };
	const char *chosen = NULL;
	reason[0] = '\0';
	if (vy_memory_mode_choose(req, &c, &chosen, reason, 256, err) < 0)
		return NULL;
	return chosen;
}

static void test_auto_here_is_post_copy(void)
{
	char why[256];
	vy_error e;
	/* this kernel: no soft-dirty, userfaultfd; runc has lazy pages */
	const char *m = choose("auto", false, true, true, "runc", why, &e);
	CHECK(m && !strcmp(m, "post-copy"));
	CHECK(strstr(why, "soft-dirty") && strstr(why, "userfaultfd"));
}

static void test_auto_falls_back(void)
{
	char why[256];
	vy_error e;
	const char *m = choose("auto", false, true, false, "crun", why, &e);
	CHECK(m && !strcmp(m, "stop-copy"));
	CHECK(strstr(why, "crun") != NULL);
	m = choose("auto", false, false, true, "runc", why, &e);
	CHECK(m && !strcmp(m, "stop-copy"));
	CHECK(strstr(why, "no userfaultfd") != NULL);
	/* soft-dirty alone: pre-copy is not implemented, so post-copy */
	m = choose("auto", true, true, true, "runc", why, &e);
	CHECK(m && !strcmp(m, "post-copy"));
	CHECK(strstr(why, "not implemented") != NULL);
}

static void test_auto_small_memory_stays_stop_copy(void)
{
	char why[256];
	vy_error e;
	const char *chosen = NULL;
	struct vy_memory_caps c = { .uffd = true, .lazy_pages = true, .runtime = "runc",
				    .memory_bytes = 8 * MIB };
	CHECK(vy_memory_mode_choose("auto", &c, &chosen, why, sizeof(why), &e) == 0);
	CHECK(chosen && !strcmp(chosen, "stop-copy") && strstr(why, "8 MiB"));
	c.memory_bytes = 512 * MIB;
	CHECK(vy_memory_mode_choose("auto", &c, &chosen, why, sizeof(why), &e) == 0);
	CHECK(chosen && !strcmp(chosen, "post-copy"));
	/* an explicit request is honoured whatever the size */
	c.memory_bytes = 8 * MIB;
	CHECK(vy_memory_mode_choose("post-copy", &c, &chosen, why, sizeof(why), &e) == 0);
	CHECK(chosen && !strcmp(chosen, "post-copy"));
}

static void test_explicit_requests(void)
{
	char why[256];
	vy_error e;
	CHECK(!choose("pre-copy", false, true, true, "runc", why, &e));
	CHECK(strstr(e.msg, "soft-dirty") != NULL);
	CHECK(!choose("post-copy", false, true, false, "crun", why, &e));
	CHECK(strstr(e.msg, "crun") && strstr(e.msg, "--lazy-pages"));
	CHECK(!choose("post-copy", false, false, true, "runc", why, &e));
	CHECK(strstr(e.msg, "userfaultfd") != NULL);
	const char *m = choose("post-copy", false, true, true, "runc", why, &e);
	CHECK(m && !strcmp(m, "post-copy") && !strcmp(why, "requested"));
	m = choose("stop-copy", false, false, false, "crun", why, &e);
	CHECK(m && !strcmp(m, "stop-copy"));
	CHECK(!choose("sideways", false, true, true, "runc", why, &e));
	CHECK(strstr(e.msg, "unknown memory mode") != NULL);
}

static void test_precopy_shrinking_rounds_go_on(void)
{
	struct vy_precopy_limits l;
	vy_precopy_default_limits(&l);
	uint64_t r[] = { 1024 * MIB, 400 * MIB, 100 * MIB };
	CHECK(vy_precopy_next(r, 0, &l) == VY_PRECOPY_AGAIN);
	CHECK(vy_precopy_next(r, 1, &l) == VY_PRECOPY_AGAIN);
	CHECK(vy_precopy_next(r, 2, &l) == VY_PRECOPY_AGAIN);
	CHECK(vy_precopy_next(r, 3, &l) == VY_PRECOPY_AGAIN);
}

static void test_precopy_stops_when_no_longer_shrinking(void)
{
	struct vy_precopy_limits l;
	vy_precopy_default_limits(&l);
	uint64_t flat[] = { 1024 * MIB, 300 * MIB, 290 * MIB }; /* -3 %: under 10 % */
	CHECK(vy_precopy_next(flat, 3, &l) == VY_PRECOPY_NO_SHRINK);
	uint64_t grows[] = { 1024 * MIB, 300 * MIB, 310 * MIB };
	CHECK(vy_precopy_next(grows, 3, &l) == VY_PRECOPY_NO_SHRINK);
	uint64_t exact[] = { 1000 * MIB, 900 * MIB }; /* exactly 10 %: still shrinks */
	CHECK(vy_precopy_next(exact, 2, &l) == VY_PRECOPY_AGAIN);
	uint64_t huge[] = { UINT64_MAX / 2, UINT64_MAX / 2 }; /* no overflow */
	CHECK(vy_precopy_next(huge, 2, &l) == VY_PRECOPY_NO_SHRINK);
}

static void test_precopy_stops_when_small_or_bounded(void)
{
	struct vy_precopy_limits l;
	vy_precopy_default_limits(&l);
	uint64_t small[] = { 1024 * MIB, 8 * MIB };
	CHECK(vy_precopy_next(small, 2, &l) == VY_PRECOPY_SMALL);
	l.max_rounds = 3;
	uint64_t r[] = { 4096 * MIB, 2048 * MIB, 1024 * MIB };
	CHECK(vy_precopy_next(r, 2, &l) == VY_PRECOPY_AGAIN);
	CHECK(vy_precopy_next(r, 3, &l) == VY_PRECOPY_BOUND);
	CHECK(!strcmp(vy_precopy_verdict_name(VY_PRECOPY_BOUND), "round bound reached"));
}

int main(void)
{
	RUN(test_auto_here_is_post_copy);
	RUN(test_auto_falls_back);
	RUN(test_auto_small_memory_stays_stop_copy);
	RUN(test_explicit_requests);
	RUN(test_precopy_shrinking_rounds_go_on);
	RUN(test_precopy_stops_when_no_longer_shrinking);
	RUN(test_precopy_stops_when_small_or_bounded);
	return unit_summary();
}
