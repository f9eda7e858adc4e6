/* test_kparam.c - the lease registry of kernel settings that migrations
 * borrow, over a plain file standing in for the /proc/sys or /sys one. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kparam.h"
#include "unit.h"
#include "util.h"

static char dir[64], value[128], registry[128];

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static int64_t got(const struct vy_kparam *p)
{
	return vy_kparam_read(p);
}

static void test_raise_and_put_back(void)
{
	struct vy_kparam p = VY_KPARAM_INIT("test.setting", value, registry, 100, 400);
	int64_t was, now;
	bool raised;
	put(value, "50\n");
	CHECK(vy_kparam_acquire(&p, &was, &now, &raised, NULL) == 0);
	CHECK(was == 50 && now == 400 && raised);
	CHECK(got(&p) == 400);
	/* a second lease of this process changes nothing */
	CHECK(vy_kparam_acquire(&p, &was, &now, &raised, NULL) == 0);
	CHECK(was == 400 && now == 400 && !raised);
	vy_kparam_release(&p);
	CHECK(got(&p) == 400); /* one lease left */
	vy_kparam_release(&p);
	CHECK(got(&p) == 50);  /* the last one out put it back */
	char saved[160];
	snprintf(saved, sizeof(saved), "%s/saved", registry);
	CHECK(access(saved, F_OK) != 0);
	/* an extra release is harmless */
	vy_kparam_release(&p);
	CHECK(got(&p) == 50);
}

static void test_high_enough_untouched(void)
{
	struct vy_kparam p = VY_KPARAM_INIT("test.setting", value, registry, 100, 400);
	int64_t was, now;
	bool raised;
	put(value, "1000\n");
	CHECK(vy_kparam_acquire(&p, &was, &now, &raised, NULL) == 0);
	CHECK(was == 1000 && now == 1000 && !raised);
	vy_kparam_release(&p);
	CHECK(got(&p) == 1000);
}

static void test_changed_meanwhile_kept(void)
{
	struct vy_kparam p = VY_KPARAM_INIT("test.setting", value, registry, 100, 400);
	int64_t was, now;
	bool raised;
	put(value, "50\n");
	CHECK(vy_kparam_acquire(&p, &was, &now, &raised, NULL) == 0 && raised);
	put(value, "777\n"); /* an operator set it meanwhile */
	vy_kparam_release(&p);
	CHECK(got(&p) == 777);
}

/* A holder that is alive keeps the value; one that died does not. */
static void test_other_holders(void)
{
	struct vy_kparam p = VY_KPARAM_INIT("test.setting", value, registry, 100, 400);
	int64_t was, now;
	bool raised;
	put(value, "50\n");
	int ready[2], go[2];
	CHECK(pipe(ready) == 0 && pipe(go) == 0);
	pid_t child = fork();
	if (child == 0) {
		struct vy_kparam c = VY_KPARAM_INIT("test.setting", value, registry, 100, 400);
		int64_t w, n;
		bool r;
		char b = vy_kparam_acquire(&c, &w, &n, &r, NULL) == 0 && r ? 'y' : 'n';
		if (write(ready[1], &b, 1) != 1)
			_exit(1);
		if (read(go[0], &b, 1) != 1)
			_exit(1);
		_exit(0); /* dies holding its lease */
	}
	char b = 0;
	CHECK(read(ready[0], &b, 1) == 1 && b == 'y');
	CHECK(got(&p) == 400);
	CHECK(vy_kparam_acquire(&p, &was, &now, &raised, NULL) == 0 && !raised);
	vy_kparam_release(&p);
	CHECK(got(&p) == 400); /* the child, alive, still holds it */
	CHECK(write(go[1], "x", 1) == 1);
	int st;
	CHECK(waitpid(child, &st, 0) == child);
	CHECK(got(&p) == 400); /* it died without letting go */
	vy_kparam_sweep(&p);   /* what an agent's start does */
	CHECK(got(&p) == 50);
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
}

static void test_unreadable(void)
{
	struct vy_kparam p = VY_KPARAM_INIT("test.setting", "/nonexistent/vy-kparam", registry,
					    100, 400);
	int64_t was, now;
	bool raised;
	CHECK(vy_kparam_acquire(&p, &was, &now, &raised, NULL) == 0);
	CHECK(was == -1 && !raised);
	vy_kparam_release(&p);
}

static int32_t latency_now(void)
{
	int32_t v = -1;
	int fd = open("/dev/cpu_dma_latency", O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		v = -1;
	if (fd >= 0)
		close(fd);
	return v;
}

/* The PM QoS request: 0 while held, what it was once the fd is closed;
 * and the switch that turns it off. */
static void test_cpu_latency(void)
{
	char how[256];
	setenv("VOYAGER_NO_CPU_LATENCY", "1", 1);
	CHECK(vy_cpu_latency_hold(how, sizeof(how)) == -1);
	CHECK(!strcmp(how, "off: VOYAGER_NO_CPU_LATENCY"));
	unsetenv("VOYAGER_NO_CPU_LATENCY");
	int32_t before = latency_now();
	int fd = vy_cpu_latency_hold(how, sizeof(how));
	if (access("/dev/cpu_dma_latency", W_OK) != 0) {
		CHECK(fd == -1 && !strncmp(how, "off: /dev/cpu_dma_latency: ", 27));
		return;
	}
	CHECK(fd >= 0);
	CHECK(!strcmp(how, before == 0 ? "already 0" : "set"));
	CHECK(latency_now() == 0);
	vy_cpu_latency_release(&fd);
	CHECK(fd == -1);
	CHECK(latency_now() == before);
	vy_cpu_latency_release(&fd); /* a second release is a no-op */
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/vy-kparam-XXXXXX");
	if (!mkdtemp(dir))
		return 2;
	snprintf(value, sizeof(value), "%s/value", dir);
	snprintf(registry, sizeof(registry), "%s/registry", dir);
	RUN(test_raise_and_put_back);
	RUN(test_high_enough_untouched);
	RUN(test_changed_meanwhile_kept);
	RUN(test_other_holders);
	RUN(test_unreadable);
	RUN(test_cpu_latency);
	vy_rm_rf(dir, NULL);
	return unit_summary();
}
