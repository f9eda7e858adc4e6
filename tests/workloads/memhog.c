/*
 * memhog: hold M MiB of non-zero pseudo-random memory, for migration
 * benchmarks (gcc -static -O2).
 *
 * Usage: memhog MIB [DIR]   (DIR defaults to /data)
 *
 * Fills MIB MiB with xorshift bytes (never zero, so no page is empty or
 * deduplicated), writes "MIB CHECKSUM\n" to DIR/memhog, then sleeps.
 * SIGUSR1: re-check the memory and write "MIB CHECKSUM ok|BAD\n" to
 * DIR/memhog.verify.  SIGTERM or SIGINT: exit 0.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t stop, verify;

static void on_term(int sig) { (void)sig; stop = 1; }
static void on_usr1(int sig) { (void)sig; verify = 1; }

static uint64_t sum(const uint64_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static void put(const char *dir, const char *name, const char *text)
{
	char tmp[4096], path[4096];
	FILE *f;
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	rename(tmp, path);
}

int main(int argc, char **argv)
{
	size_t mib, n;
	uint64_t *p, x = 0x2545f4914f6cdd1dULL, h;
	const char *dir = argc > 2 ? argv[2] : "/data";
	char buf[128];
	struct sigaction sa;

	if (argc < 2) {
		fprintf(stderr, "usage: memhog MIB [DIR]\n");
		return 2;
	}
	mib = strtoul(argv[1], NULL, 10);
	n = mib * 1024 * 1024 / 8;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);

	p = mmap(NULL, n ? n * 8 : 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("memhog: mmap");
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t v;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		v = x | 0x0101010101010101ULL; /* every byte non-zero */
		p[i] = v;
	}
	h = sum(p, n);
	snprintf(buf, sizeof(buf), "%zu %016" PRIx64 "\n", mib, h);
	put(dir, "memhog", buf);

	while (!stop) {
		pause();
		if (verify) {
			uint64_t h2 = sum(p, n);
			verify = 0;
			snprintf(buf, sizeof(buf), "%zu %016" PRIx64 " %s\n", mib, h2, h2 == h ? "ok" : "BAD");
			put(dir, "memhog.verify", buf);
		}
	}
	return 0;
}
